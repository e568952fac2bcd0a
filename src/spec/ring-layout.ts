// Virtqueue memory layouts (virtio 1.x, "Split Virtqueues" and "Packed Virtqueues"), as byte offsets and
// sizes. Every field is little-endian; the ring engines view these areas through typed arrays, which is only
// correct on a little-endian host (checked once in src/ring/host.ts).

/** Split ring descriptor (`struct vring_desc`): 16 bytes. */
export const SPLIT_DESC_SIZE = 16;
export const SPLIT_DESC = {
  /** u64 guest/IO virtual address of the buffer. */
  addr: 0,
  /** u32 buffer length in bytes. */
  len: 8,
  /** u16 VRING_DESC_F_* flags. */
  flags: 12,
  /** u16 index of the next descriptor when flags has NEXT. */
  next: 14,
} as const;

/** Descriptor flags shared by both formats (VRING_DESC_F_*). */
export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
/** Packed ring only: availability and use are tracked by these two bits against the wrap counters. */
export const VRING_PACKED_DESC_F_AVAIL = 1 << 7;
export const VRING_PACKED_DESC_F_USED = 1 << 15;

/** Split ring driver area (`struct vring_avail`): flags u16, idx u16, ring[num] u16, used_event u16. */
export const SPLIT_AVAIL = {
  flags: 0,
  idx: 2,
  ring: 4,
  /** Offset of used_event, present when VIRTIO_F_EVENT_IDX is negotiated: 4 + 2 * num. */
  usedEvent: (num: number): number => 4 + 2 * num,
} as const;
/** VRING_AVAIL_F_NO_INTERRUPT: the driver asks the device not to send used-buffer notifications. */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;

/** Split ring device area (`struct vring_used`): flags u16, idx u16, ring[num] {id u32, len u32}, avail_event. */
export const SPLIT_USED = {
  flags: 0,
  idx: 2,
  ring: 4,
  elemSize: 8,
  /** Offset of avail_event, present when VIRTIO_F_EVENT_IDX is negotiated: 4 + 8 * num. */
  availEvent: (num: number): number => 4 + 8 * num,
} as const;
/** VRING_USED_F_NO_NOTIFY: the device asks the driver not to send available-buffer notifications. */
export const VRING_USED_F_NO_NOTIFY = 1;

/** Required alignment of each split ring area (virtio 1.x, "Virtqueue alignment"). */
export const SPLIT_ALIGN = { desc: 16, avail: 2, used: 4 } as const;

/** Byte sizes of the three split ring areas for a queue of `num` entries, event-index fields included. */
export function splitRingSizes(num: number): { desc: number; avail: number; used: number } {
  return { desc: SPLIT_DESC_SIZE * num, avail: 6 + 2 * num, used: 6 + 8 * num };
}

/** Packed ring descriptor (`struct vring_packed_desc`): 16 bytes. */
export const PACKED_DESC_SIZE = 16;
export const PACKED_DESC = {
  addr: 0,
  len: 8,
  /** u16 buffer id: the driver's handle, returned by the device in the used descriptor. */
  id: 12,
  flags: 14,
} as const;

/**
 * Packed ring event suppression structure (`struct vring_packed_desc_event`): 4 bytes, one written by the
 * driver (driver area: when the device should notify) and one by the device (device area: when the driver
 * should kick).
 */
export const PACKED_EVENT_SIZE = 4;
export const PACKED_EVENT = {
  /** u16: bits 0-14 descriptor offset, bit 15 wrap counter; meaningful with flags = DESC. */
  offWrap: 0,
  /** u16: one of the RING_EVENT_FLAGS_* values. */
  flags: 2,
} as const;
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Notify at a specific descriptor: only valid when VIRTIO_F_RING_EVENT_IDX (bit 29) is negotiated. */
export const RING_EVENT_FLAGS_DESC = 2;
export const RING_EVENT_WRAP_SHIFT = 15;

/** Required alignment of each packed ring area. */
export const PACKED_ALIGN = { desc: 16, driverEvent: 4, deviceEvent: 4 } as const;

/** Largest queue size the spec allows: split sizes are powers of two up to this; packed sizes any 1..32768. */
export const VIRTQUEUE_MAX_SIZE = 32768;

/**
 * The spec's vring_need_event(): true when `eventIdx` lies in the half-open window [old, newIdx) of 16-bit
 * free-running indices: the other side asked to be told once entry `eventIdx` is published, and this
 * update (which published entries old .. newIdx - 1) did so.
 */
export function vringNeedEvent(eventIdx: number, newIdx: number, old: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - old) & 0xffff);
}
