// The shapes both ring formats share, so devices and drivers are written once for split and packed.

import type { AddressSpace, DmaPool } from "../memory/index.js";
import type { BufferList, Chain } from "./chain.js";

export type RingFormat = "split" | "packed";

/** Where a queue's three areas are, in IOVA space (vDPA's set_vq_address: desc, driver, device). */
export interface RingAddresses {
  /** Descriptor area: the descriptor table (split) or the descriptor ring (packed). */
  desc: number;
  /** Driver area: the available ring (split) or the driver event suppression structure (packed). */
  driver: number;
  /** Device area: the used ring (split) or the device event suppression structure (packed). */
  device: number;
}

/**
 * Ring position, as vDPA's get/set_vq_state and vhost's vring base carry it. Split rings use only
 * availIdx (free-running 16-bit) and usedIdx; packed rings use 15-bit indices plus wrap counters.
 */
export interface RingState {
  availIdx: number;
  usedIdx: number;
  availWrap?: number;
  usedWrap?: number;
}

export interface DeviceRingOptions {
  num: number;
  addresses: RingAddresses;
  /** Translates the ring areas (the queue's descriptor group's address space). */
  ringSpace: AddressSpace;
  /** Translates buffers and indirect tables (the queue's group's address space); defaults to ringSpace. */
  bufferSpace?: AddressSpace;
  /** VIRTIO_F_EVENT_IDX (bit 29) negotiated. */
  eventIdx: boolean;
  /**
   * Most entries an indirect table may have (default 1024). A direct chain is bounded by the queue size
   * instead (longer is a loop: DESC_LOOP, or CHAIN_TOO_LONG for packed rings).
   */
  maxChain?: number;
}

/** The device side of a virtqueue (Linux vringh, rust-vmm virtio-queue). */
export interface DeviceRing {
  readonly format: RingFormat;
  readonly num: number;
  /** The fault that stopped this ring, if any; pop() rethrows it until reset. */
  readonly broken: Error | null;
  /** Fills `chain` with the next available buffer; false when none. Throws RingError or DmaFault. */
  pop(chain: Chain): boolean;
  /** Whether a buffer is available, without consuming it. */
  hasAvailable(): boolean;
  /** Queues a used element for `chain` (its id and slot count) with `len` bytes written. */
  push(chain: Chain, len: number): void;
  /** Makes pushed elements visible to the driver; true when the driver must be notified. */
  publishUsed(): boolean;
  /** Asks the driver not to kick (the device is polling). */
  disableNotify(): void;
  /** Asks the driver to kick again; true when buffers arrived meanwhile (keep polling). */
  enableNotify(): boolean;
  getState(): RingState;
  setState(state: RingState): void;
}

export interface DriverRingOptions {
  num: number;
  /** Rings and indirect tables are allocated from this pool. */
  pool: DmaPool;
  /** VIRTIO_F_EVENT_IDX (bit 29) negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC (bit 28) negotiated: multi-buffer requests use one indirect descriptor. */
  indirect: boolean;
  /** Entries in each preallocated indirect table (one table per ring slot). Default 16. */
  maxIndirect?: number;
}

/** The driver side of a virtqueue (Linux virtio_ring). Tokens are the caller's handles for requests. */
export interface DriverRing<T> {
  readonly format: RingFormat;
  readonly num: number;
  readonly addresses: RingAddresses;
  /** Free descriptor slots. */
  readonly numFree: number;
  /** Buffers in flight. */
  readonly inFlight: number;
  /** Length the device reported for the buffer most recently returned by getUsed(). */
  readonly usedLen: number;
  /** Adds a request; false when the ring has no room. Nothing is visible to the device before publishAvail(). */
  add(bufs: BufferList, token: T, indirect?: boolean): boolean;
  /** Makes added buffers visible; true when the device must be kicked. */
  publishAvail(): boolean;
  /** The token of the next used buffer (its length in usedLen), or undefined. Throws on a broken device. */
  getUsed(): T | undefined;
  /** Asks the device not to notify. */
  disableCallbacks(): void;
  /** Asks the device to notify again; true when used buffers are already pending (keep polling). */
  enableCallbacks(): boolean;
  /** After a device reset: every token still in flight, and the ring back to its initial state. */
  detachUnused(): T[];
}
