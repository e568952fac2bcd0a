// The contract between a vDPA device and everything that uses it: Linux 6.12's `struct vdpa_config_ops`
// (include/linux/vdpa.h), one method per op.
//
// How vDPA works, in one paragraph: a vDPA device has a virtio datapath (virtqueues in memory, following
// the virtio spec) and a vendor control path. This interface *is* that control path, made uniform. A bus
// driver (virtio_vdpa, which turns the device into a virtio device for ordinary drivers; or vhost_vdpa,
// which hands it to a vhost user such as QEMU) configures each virtqueue (size, ring addresses, state,
// callback, ready), negotiates features, walks the status byte to DRIVER_OK, and from then on only kicks:
// the device reads and writes rings and buffers directly, translating every address through DMA mappings
// (see "DMA" below) and calling back when it has used buffers.
//
// Conventions here:
// - Where Linux returns -errno, these methods throw a VdpaError with that errno name.
// - Queue indices are 0-based and checked by the caller against the device's nvqs (vhost_vdpa answers
//   ENOBUFS past it); a device may still check and throw EINVAL.
// - Features are bigint: they are negotiated a few times per device life (control path), and virtio
//   feature words already go past bit 63.
// - Every op is mandatory unless marked optional ("?"), as in Linux.
//
// DMA: a device translates IOVAs either through the platform IOMMU domain the bus gives it (it implements
// none of setMap/dmaMap), or itself: `setMap` (the whole table per address space, like on-chip IOMMUs that
// load a full table) or `dmaMap`/`dmaUnmap` (incremental). Virtqueues belong to groups; each group is
// bound to an address space (ASID) with setGroupAsid; every group starts on ASID 0.

import type { Iotlb, MemoryRegion, Perm } from "../memory/index.js";

/** A callback the device fires: used buffers on a queue, or a config change (Linux `struct vdpa_callback`). */
export interface VdpaCallback {
  callback: () => void;
}

/** Split ring state: the next available index the device will process. */
export interface VqStateSplit {
  availIndex: number;
}

/** Packed ring state: 15-bit indices and their wrap counters, for both directions. */
export interface VqStatePacked {
  lastAvailCounter: number;
  lastAvailIdx: number;
  lastUsedCounter: number;
  lastUsedIdx: number;
}

/** Linux's `union vdpa_vq_state`: the member that applies depends on whether RING_PACKED was negotiated. */
export interface VqState {
  split?: VqStateSplit;
  packed?: VqStatePacked;
}

/** Inclusive IOVA window the device can translate (Linux `struct vdpa_iova_range`). */
export interface IovaRange {
  first: number;
  last: number;
}

/** A doorbell's address and size (Linux `struct vdpa_notification_area`). */
export interface NotificationArea {
  addr: number;
  size: number;
}

/** One vendor statistic: a name as Linux prints it ("rx packets") and a 64-bit value. */
export interface VendorStat {
  name: string;
  value: bigint;
}

/** `compat_reset` flag: also drop the IOTLB mappings, as parents that historically did so on reset. */
export const VDPA_RESET_F_CLEAN_MAP = 1;

export interface VdpaConfigOps {
  // ---- Virtqueues ----

  /** Sets the IOVAs of queue `idx`'s descriptor area, driver area and device area. */
  setVqAddress(idx: number, descArea: number, driverArea: number, deviceArea: number): void;
  /** Sets the size (number of entries) of queue `idx`. */
  setVqNum(idx: number, num: number): void;
  /**
   * The driver's notification that queue `idx` has new buffers. Devices must not process the queue inside
   * this call: they schedule the work (in vdpa-ts, on the event loop) and return.
   */
  kickVq(idx: number): void;
  /**
   * Optional. A kick carrying notification data (VIRTIO_F_NOTIFICATION_DATA): split: queue index in bits
   * 0-15, next avail index in 16-31; packed: queue index, 15-bit next offset, wrap bit.
   */
  kickVqWithData?(data: number): void;
  /** Installs (or with null removes) the used-buffer callback of queue `idx`. */
  setVqCb(idx: number, cb: VdpaCallback | null): void;
  /** Enables or disables queue `idx`. A device processes only ready queues. */
  setVqReady(idx: number, ready: boolean): void;
  /** Whether queue `idx` is ready. virtio_vdpa refuses to set up a queue that already is. */
  getVqReady(idx: number): boolean;
  /** Sets where queue `idx` resumes (vhost SET_VRING_BASE; virtio_vdpa sets 0 / wrap counters 1). */
  setVqState(idx: number, state: VqState): void;
  /** Reads the ring position of queue `idx`; stable only when the device is suspended or stopped. */
  getVqState(idx: number): VqState;
  /**
   * Optional. Vendor statistics of queue `idx`, in order (for `vdpa dev vstats show`). Throws EINVAL for a
   * queue without statistics; absent means EOPNOTSUPP.
   */
  getVendorVqStats?(idx: number): VendorStat[];
  /**
   * Optional. The doorbell page of queue `idx`, for mapping into a guest. There is no MMIO in a Node
   * process, so vdpa-ts devices leave this out (vhost_vdpa answers EOPNOTSUPP); kept for parity.
   */
  getVqNotification?(idx: number): NotificationArea;
  /**
   * Optional. The interrupt line of queue `idx`, for irq bypass. No interrupts exist here: left out by
   * every vdpa-ts device; kept for parity.
   */
  getVqIrq?(idx: number): number;
  /** Optional. The actual size of queue `idx` (Linux 6.10+); without it users take getVqNumMax(). */
  getVqSize?(idx: number): number;
  /** Required alignment of ring areas, in bytes. */
  getVqAlign(): number;
  /** Optional. The group queue `idx` belongs to; a group is the unit bound to an address space. */
  getVqGroup?(idx: number): number;
  /**
   * Optional. The group of queue `idx`'s ring areas (descriptor, driver and device areas), when they may
   * live in another address space than its buffers (vhost DESC_ASID).
   */
  getVqDescGroup?(idx: number): number;
  /** Optional. Per-queue affinity hint. No CPUs to pin to here: a stored no-op where present. */
  setVqAffinity?(idx: number, cpus: readonly number[]): void;
  /** Optional. The stored affinity hint of queue `idx`. */
  getVqAffinity?(idx: number): readonly number[];

  // ---- Features, status, config ----

  /** Features the device offers (after provisioning, e.g. `vdpa dev add ... device_features`). */
  getDeviceFeatures(): bigint;
  /**
   * Optional. Parent-specific vhost backend feature bits, e.g. ENABLE_AFTER_DRIVER_OK, IOTLB_PERSIST
   * (numbered as in Linux's vhost_types.h).
   */
  getBackendFeatures?(): bigint;
  /** Accepts the driver's features; throws EINVAL for a set the device cannot work with. */
  setDriverFeatures(features: bigint): void;
  /** The features in effect. */
  getDriverFeatures(): bigint;
  /** Installs (or with null removes) the config-change callback (also how NEEDS_RESET is signalled). */
  setConfigCb(cb: VdpaCallback | null): void;
  /** Largest queue size the device supports. */
  getVqNumMax(): number;
  /** Optional. Smallest queue size (1 when absent). The bus refuses a device whose max < min. */
  getVqNumMin?(): number;
  /** Virtio device id (1 net, 2 block, ...); 0 means none, and virtio_vdpa refuses it. */
  getDeviceId(): number;
  /** Virtio vendor id. */
  getVendorId(): number;
  /** The virtio status byte. */
  getStatus(): number;
  /** Writes the status byte. Never 0: resetting is reset()'s job. */
  setStatus(status: number): void;
  /** Resets the device: status 0, every queue back to its initial state, features cleared. */
  reset(): void;
  /**
   * Optional. reset() with compatibility flags; VDPA_RESET_F_CLEAN_MAP also drops IOTLB mappings, for
   * parents that used to do so on every reset. Only called with flags != 0.
   */
  compatReset?(flags: number): void;
  /**
   * Optional. Stops processing descriptors, keeping all state; getVqState() is then stable and the device
   * changes no config. Kicks that arrive meanwhile are remembered.
   */
  suspend?(): void;
  /** Optional. Resumes processing after suspend(), acting on kicks that arrived meanwhile. */
  resume?(): void;
  /** Size of the device config space, feature-conditional fields included. */
  getConfigSize(): number;
  /** Copies `len` bytes of config space from `offset` into `buf`. The caller checks bounds. */
  getConfig(offset: number, buf: Uint8Array, len: number): void;
  /** Writes `len` bytes of `buf` into config space at `offset`. The caller checks bounds. */
  setConfig(offset: number, buf: Uint8Array, len: number): void;
  /** Optional. Config generation, bumped on every device-side config change (0 when absent). */
  getGeneration?(): number;
  /** Optional. The IOVA window the device translates; vdpa-ts devices translate [0, 2^53 - 1]. */
  getIovaRange?(): IovaRange;

  // ---- DMA (see the header) ----

  /** Optional (own translation, full table). Replaces ASID `asid`'s whole mapping with `iotlb`'s entries. */
  setMap?(asid: number, iotlb: Iotlb): void;
  /**
   * Optional (own translation, incremental; dmaUnmap must come with it). Maps [iova, iova + size) to
   * `region` at `offset` with `perm` in ASID `asid`. Linux passes a physical address (or a user VA plus a
   * file in VA mode); here the backing memory is a region and an offset in it.
   */
  dmaMap?(asid: number, iova: number, size: number, region: MemoryRegion, offset: number, perm: Perm): void;
  /** Optional, exactly when dmaMap is. Removes mappings of [iova, iova + size) in ASID `asid`. */
  dmaUnmap?(asid: number, iova: number, size: number): void;
  /** Optional. Restores ASID `asid`'s default mapping (empty in vdpa-ts: there is no identity map). */
  resetMap?(asid: number): void;
  /** Optional. Binds group `group` to address space `asid`. Must not race with setStatus (callers see to it). */
  setGroupAsid?(group: number, asid: number): void;
  /**
   * Optional. Linux: the DMA device (or map token) of queue `idx`. Local meaning: none; virtio_vdpa maps
   * its DMA pool into every ASID the device's groups use instead of asking. Kept for parity.
   */
  getVqDmaDev?(idx: number): unknown;
  /**
   * Optional. Binds the owner's address space so user VAs can be used (use_va parents). A Node process has
   * no second address space to bind: vdpa-ts devices leave it out; kept for parity.
   */
  bindMm?(owner: unknown): void;
  /** Optional. Undoes bindMm. */
  unbindMm?(): void;

  /** Optional. Releases the device's resources when it is unregistered for good. */
  free?(): void;
}
