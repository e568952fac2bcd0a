// What a virtio driver sees of its device: Linux's `struct virtio_config_ops` plus DMA allocation. The
// net and blk drivers are written against this interface only, so they run on virtio_vdpa (any vDPA
// device), on a fake transport in tests, and later on any other transport, without knowing which.

import type { DmaBuffer } from "../memory/index.js";
import type { DriverRing } from "../ring/index.js";

/** One queue a driver asks for (Linux `struct virtqueue_info`). A null name skips the index. */
export interface VirtqueueInfo {
  name: string | null;
  /** Called when the device returned used buffers on this queue (from the event loop). */
  callback: (() => void) | null;
}

/**
 * A queue set up by the transport. Tokens are numbers: drivers keep preallocated request slots and
 * pass the slot index, so nothing is allocated per request.
 */
export interface TransportQueue {
  readonly index: number;
  readonly name: string;
  /** Entries in the ring. */
  readonly size: number;
  /** The driver side of the ring, in the negotiated format, in memory the device can reach. */
  readonly ring: DriverRing<number>;
  /** Tells the device there are new buffers (Linux virtqueue_notify). */
  notify(): void;
}

export interface VirtioTransport {
  /** The device's name on its bus (Linux bus_name: the vDPA device name). */
  readonly name: string;
  /** Virtio device id (1 net, 2 block). */
  readonly deviceId: number;
  readonly vendorId: number;
  /** Features the device offers. */
  getFeatures(): bigint;
  /**
   * Accepts the driver's features. The transport keeps the ring features it supports (INDIRECT_DESC,
   * EVENT_IDX, RING_PACKED, VERSION_1, ACCESS_PLATFORM) and hands the result to the device; returns what
   * was set. The driver then sets FEATURES_OK and re-reads the status.
   */
  finalizeFeatures(features: bigint): bigint;
  /** Features in effect after finalizeFeatures. */
  readonly features: bigint;
  getStatus(): number;
  /** Adds status bits (never clears them: reset() does). */
  setStatus(status: number): void;
  /** Resets the device: status 0. Queues may still exist; delete them with delVqs() after the reset. */
  reset(): void;
  /** Reads `len` bytes of config space at `offset`. */
  getConfig(offset: number, len: number): Uint8Array;
  setConfig(offset: number, data: Uint8Array): void;
  /** Config generation: re-read fields that span several reads until it is stable. */
  generation(): number;
  /**
   * Sets up queues in order (Linux find_vqs): entries with a null name get null and use no index.
   * `size` caps the ring size (the device's maximum otherwise).
   */
  findVqs(infos: VirtqueueInfo[], opts?: { size?: number }): (TransportQueue | null)[];
  /** Tears every queue down (after a reset, or before one). */
  delVqs(): void;
  /** Config-change notifications, NEEDS_RESET included; null removes. */
  onConfigChange(cb: (() => void) | null): void;
  /** Memory the device can reach, for request buffers. */
  allocDma(size: number, align?: number): DmaBuffer;
  freeDma(buf: DmaBuffer): void;
}

/** A virtio driver (virtio-net, virtio-blk): bound by the virtio bus to transports of its device id. */
export interface VirtioDriver {
  readonly name: string;
  readonly deviceIds: readonly number[];
  probe(transport: VirtioTransport): void;
  remove(transport: VirtioTransport): void;
}
