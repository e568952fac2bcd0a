// virtio-blk driver: the part of Linux's drivers/block/virtio_blk.c a vDPA block device needs. One request
// queue; requests are an out header {type u32, reserved u32, sector u64}, the data (or one 16-byte
// discard / write-zeroes segment), and an in status byte.
//
// Two layers:
// - The hot path, submit(), works on request slots allocated once at start (queue depth = ring size): each
//   slot has its header, segment and status bytes, a data buffer of maxTransferBytes, a BufferList and its
//   bookkeeping; the ring token is the slot index. A completion callback gets the slot's data buffer as a
//   view. Requests that find a free slot but no free descriptors (no INDIRECT_DESC, a full ring) wait in a
//   preallocated FIFO and go out as completions free descriptors. kick() publishes and notifies once per
//   batch. Nothing is allocated per request.
// - read(), write(), flush(), discard(), writeZeroes() and getId() return promises; they split large
//   requests into slot-sized pieces, wait for slots, and kick once per microtask turn.
//
// The driver sees its device only through VirtioTransport.

import type { DmaBuffer } from "../memory/index.js";
import { BufferList, isDatapathFault } from "../ring/index.js";
import { featureBit } from "../spec/features.js";
import {
  VIRTIO_BLK_CONFIG,
  VIRTIO_BLK_DISCARD_SEGMENT,
  VIRTIO_BLK_DISCARD_SEGMENT_SIZE,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_OUTHDR,
  VIRTIO_BLK_OUTHDR_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BLOCK,
  VIRTIO_RING_F_EVENT_IDX,
} from "../spec/index.js";
import { driverFailed, driverOk, negotiateFeatures, PerDeviceDriver, readConfigUint } from "./bring-up.js";
import type { TransportQueue, VirtioTransport } from "./transport.js";

/** Feature bit n as a mask (control path: bigint). */
const bit = featureBit;

/**
 * Every feature this driver can use. Linux's virtio_blk also takes GEOMETRY, TOPOLOGY, CONFIG_WCE, MQ,
 * SECURE_ERASE and ZONED; this driver uses one queue and no topology, so it leaves them (a device must work
 * without them).
 */
export const VIRTIO_BLK_DRIVER_FEATURES: bigint =
  bit(VIRTIO_BLK_F_SIZE_MAX) |
  bit(VIRTIO_BLK_F_SEG_MAX) |
  bit(VIRTIO_BLK_F_BLK_SIZE) |
  bit(VIRTIO_BLK_F_RO) |
  bit(VIRTIO_BLK_F_FLUSH) |
  bit(VIRTIO_BLK_F_DISCARD) |
  bit(VIRTIO_BLK_F_WRITE_ZEROES) |
  bit(VIRTIO_F_VERSION_1) |
  bit(VIRTIO_F_ACCESS_PLATFORM) |
  bit(VIRTIO_F_RING_PACKED) |
  bit(VIRTIO_RING_F_EVENT_IDX) |
  bit(VIRTIO_F_INDIRECT_DESC);

const SECTOR = VIRTIO_BLK_SECTOR_SIZE;
const TWO_32 = 2 ** 32;
/** Per-slot metadata: out header at 0, discard / write-zeroes segment at 16, status byte at 32. */
const META_STRIDE = 64;
const META_SEGMENT = VIRTIO_BLK_OUTHDR_SIZE;
const META_STATUS = 32;
/** Written into the status byte before a request, so a device that never answers reads as an error. */
const STATUS_UNSET = 0xff;
/** Default data buffer per slot. */
const DEFAULT_MAX_TRANSFER = 32 * 1024;
const EMPTY = new Uint8Array(0);

/** Request type names, for errors and logs. */
export function blkOpName(op: number): string {
  switch (op) {
    case VIRTIO_BLK_T_IN:
      return "IN";
    case VIRTIO_BLK_T_OUT:
      return "OUT";
    case VIRTIO_BLK_T_FLUSH:
      return "FLUSH";
    case VIRTIO_BLK_T_GET_ID:
      return "GET_ID";
    case VIRTIO_BLK_T_DISCARD:
      return "DISCARD";
    case VIRTIO_BLK_T_WRITE_ZEROES:
      return "WRITE_ZEROES";
    default:
      return `type ${op}`;
  }
}

export type VirtioBlkErrorCode =
  /** The device answered VIRTIO_BLK_S_IOERR (or no valid status). */
  | "IOERR"
  /** The device answered VIRTIO_BLK_S_UNSUPP, or the driver refused locally: the feature was not
   * negotiated, or the device is read-only. */
  | "UNSUPP"
  /** The device was reset (NEEDS_RESET or a ring fault) while the request was in flight. */
  | "RESET"
  /** The driver was removed. */
  | "REMOVED"
  /** Bring-up failed, or the device could not be set up again after a reset. */
  | "FAILED";

/** A failed block request: `code` says why, `op` and `sector` which request. */
export class VirtioBlkError extends Error {
  override readonly name = "VirtioBlkError";
  constructor(
    readonly code: VirtioBlkErrorCode,
    /** VIRTIO_BLK_T_* of the request (-1 for bring-up). */
    readonly op: number,
    /** The request's first sector (for DISCARD / WRITE_ZEROES the segment's). */
    readonly sector: number,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }

  get opName(): string {
    return blkOpName(this.op);
  }
}

/**
 * A request's completion. `data` is the slot's data buffer: for IN bytes [0, len) are what was read, for
 * GET_ID the raw id; len is 0 for the other types and on error. The slot is free again when this runs,
 * so `data` stays valid until the callback returns or submits a new request, whichever comes first.
 */
export type BlkDone = (err: VirtioBlkError | null, data: Uint8Array, len: number, tag: number) => void;

/** Plain counters, read at any time. */
export interface VirtioBlkStats {
  /** Requests submitted to the device / completed by it (any status). */
  submitted: number;
  completed: number;
  bytesRead: number;
  bytesWritten: number;
  /** Completions with IOERR / UNSUPP (device or local). */
  ioErrors: number;
  unsupported: number;
  /** Requests failed by a reset or remove(). */
  failed: number;
  /** submit() calls refused because every slot was in flight. */
  busy: number;
  /** Device resets done to recover (NEEDS_RESET, ring faults). */
  resets: number;
}

export interface VirtioBlkOptions {
  /** Cap on the ring entries, which is the queue depth (a power of two for split rings). */
  queueSize?: number;
  /**
   * Data buffer bytes per slot: the largest IN/OUT request (a multiple of 512; default 32 KiB). Lowered to
   * size_max × seg_max when the device sets those. The DMA memory used is about slots × this.
   */
  maxTransferBytes?: number;
}

/** "running" from construction; "failed" when a reset could not bring the device back; then "removed". */
export type VirtioBlkState = "running" | "failed" | "removed";

interface SlotWaiter {
  /** Tries to submit; false while no slot is free. */
  go: () => boolean;
  reject: (err: Error) => void;
}

/**
 * A virtio-blk device driven through a transport. Construction runs the bring-up (reset, ACKNOWLEDGE,
 * DRIVER, features, FEATURES_OK, config, queue, DRIVER_OK) and throws VirtioBlkError("FAILED") when the
 * device refuses. Call remove() to let it go.
 */
export class VirtioBlk {
  /** Features in effect. */
  features = 0n;
  /** Disk size in 512-byte sectors. */
  capacity = 0;
  /** Logical block size (BLK_SIZE, else 512); requests still count 512-byte sectors. */
  blkSize = SECTOR;
  /** Largest data segment (SIZE_MAX), 0 when unlimited. */
  sizeMax = 0;
  /** Most data segments per request (SEG_MAX), 0 when the device does not say. */
  segMax = 0;
  /** RO negotiated: writes, discards and write-zeroes are refused locally. */
  readOnly = false;
  /** Most sectors per DISCARD / WRITE_ZEROES request (the device's limits; 0 in config means no limit). */
  maxDiscardSectors = 0;
  maxWriteZeroesSectors = 0;
  /** The device may deallocate on WRITE_ZEROES with UNMAP. */
  writeZeroesMayUnmap = false;
  readonly stats: VirtioBlkStats = {
    submitted: 0,
    completed: 0,
    bytesRead: 0,
    bytesWritten: 0,
    ioErrors: 0,
    unsupported: 0,
    failed: 0,
    busy: 0,
    resets: 0,
  };
  private stateNow: VirtioBlkState = "running";
  private vq: TransportQueue | null = null;

  // Slots, all allocated at the first start.
  private slotCount = 0;
  private maxTransfer = 0;
  /** Bytes per data descriptor: size_max, or the whole buffer. */
  private segBytes = 0;
  private metaDma: DmaBuffer | null = null;
  private meta: DataView = new DataView(new ArrayBuffer(0));
  private metaBytes: Uint8Array = EMPTY;
  private dataDma: DmaBuffer | null = null;
  private slotData: Uint8Array[] = [];
  private slotBufs: BufferList[] = [];
  private slotCb: (BlkDone | null)[] = [];
  private slotTag = new Float64Array(0);
  private slotSector = new Float64Array(0);
  private slotOp = new Uint8Array(0);
  private slotLen = new Uint32Array(0);
  private free = new Uint16Array(0);
  private freeTop = 0;
  /** Slots waiting for ring descriptors, in order (a circular FIFO). */
  private pending = new Uint16Array(0);
  private pendingHead = 0;
  private pendingCount = 0;

  private readonly waiters: SlotWaiter[] = [];
  private kickScheduled = false;
  private capacityCb: ((sectors: number) => void) | null = null;
  private resetCb: ((err: Error | null) => void) | null = null;

  constructor(
    readonly transport: VirtioTransport,
    private readonly opts: VirtioBlkOptions = {},
  ) {
    try {
      this.start();
    } catch (err) {
      this.stopQueue();
      this.releaseDma();
      this.stateNow = "removed";
      driverFailed(transport);
      throw err;
    }
  }

  get state(): VirtioBlkState {
    return this.stateNow;
  }

  /** Requests that can be in flight at once (the ring size at start). */
  get queueDepth(): number {
    return this.slotCount;
  }

  /** Largest IN / OUT request of the hot path, in bytes (the promise layer splits larger ones). */
  get maxTransferBytes(): number {
    return this.maxTransfer;
  }

  /** Slots free right now. */
  get freeSlots(): number {
    return this.freeTop;
  }

  /** Whether a request type is available: FLUSH, DISCARD, WRITE_ZEROES need their features. */
  supports(op: number): boolean {
    switch (op) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_GET_ID:
        return true;
      case VIRTIO_BLK_T_OUT:
        return !this.readOnly;
      case VIRTIO_BLK_T_FLUSH:
        return this.has(VIRTIO_BLK_F_FLUSH);
      case VIRTIO_BLK_T_DISCARD:
        return this.has(VIRTIO_BLK_F_DISCARD) && !this.readOnly;
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.has(VIRTIO_BLK_F_WRITE_ZEROES) && !this.readOnly;
      default:
        return false;
    }
  }

  // ---- Hot path ----

  /**
   * Queues one request in a free slot; nothing reaches the device before kick(). `arg` is, by type:
   * - VIRTIO_BLK_T_IN: bytes to read (a multiple of 512, at most maxTransferBytes);
   * - VIRTIO_BLK_T_OUT: the data to write (copied into the slot; same size rules);
   * - VIRTIO_BLK_T_DISCARD / WRITE_ZEROES: the number of sectors (`flags` may hold
   *   VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP for WRITE_ZEROES);
   * - VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID: ignored (sector must be 0).
   * `cb` runs from the event loop when the request completes, with `tag` passed back. Returns false when
   * every slot is in flight (stats.busy). A type the device did not negotiate (or a write to a read-only
   * device) completes with UNSUPP without reaching the device; a FLUSH without the FLUSH feature completes
   * at once, OK (the device has no volatile cache to flush). Throws RangeError for bad arguments and
   * VirtioBlkError REMOVED / FAILED when the driver is not running.
   */
  submit(op: number, sector: number, arg: Uint8Array | number, cb: BlkDone, tag = 0, flags = 0): boolean {
    if (this.stateNow !== "running") throw this.notRunning(op, sector);
    if (!this.supports(op)) {
      if (blkOpName(op).startsWith("type ")) throw new RangeError(`unknown request type ${op}`);
      // A local answer, still delivered after submit() returns, as a device answer would be.
      const err =
        op === VIRTIO_BLK_T_FLUSH
          ? null
          : new VirtioBlkError("UNSUPP", op, sector, `${blkOpName(op)} ${this.whyUnsupported(op)}`);
      if (err) this.stats.unsupported++;
      queueMicrotask(() => cb(err, EMPTY, 0, tag));
      return true;
    }
    const len = this.checkRequest(op, sector, arg, flags);
    if (this.freeTop === 0) {
      this.stats.busy++;
      return false;
    }
    const slot = this.free[--this.freeTop];
    this.fillSlot(slot, op, sector, arg, len, flags);
    this.slotCb[slot] = cb;
    this.slotTag[slot] = tag;
    this.stats.submitted++;
    if (this.pendingCount > 0 || !this.vq!.ring.add(this.slotBufs[slot], slot)) this.pushPending(slot);
    return true;
  }

  /** Makes submitted requests visible to the device and notifies it once if it wants a notification. */
  kick(): void {
    const q = this.vq;
    if (q === null) return;
    this.addPending();
    if (q.ring.publishAvail()) q.notify();
  }

  /** Called when the capacity changes (a config change that is not NEEDS_RESET), in sectors. */
  onCapacityChange(cb: ((sectors: number) => void) | null): void {
    this.capacityCb = cb;
  }

  /**
   * Called after a recovery reset (NEEDS_RESET or a ring fault): with null once the device is running
   * again, with the error when it could not be brought back (the driver is then "failed").
   */
  onReset(cb: ((err: Error | null) => void) | null): void {
    this.resetCb = cb;
  }

  // ---- Promise layer ----

  /** Reads `count` sectors from `sector`. */
  async read(sector: number, count: number): Promise<Uint8Array> {
    checkCount(count);
    const out = new Uint8Array(count * SECTOR);
    const chunk = this.maxTransfer / SECTOR;
    const parts: Promise<void>[] = [];
    for (let done = 0; done < count; done += chunk) {
      const n = Math.min(chunk, count - done);
      const at = done * SECTOR;
      parts.push(
        this.request(VIRTIO_BLK_T_IN, sector + done, n * SECTOR, 0, (data, len) =>
          out.set(data.subarray(0, len), at),
        ),
      );
    }
    await Promise.all(parts);
    return out;
  }

  /** Writes `data` (a multiple of 512 bytes) at `sector`. */
  async write(sector: number, data: Uint8Array): Promise<void> {
    if (data.length === 0 || data.length % SECTOR !== 0) {
      throw new RangeError(`write of ${data.length} bytes is not a whole number of sectors`);
    }
    const parts: Promise<void>[] = [];
    for (let at = 0; at < data.length; at += this.maxTransfer) {
      const piece = data.subarray(at, Math.min(at + this.maxTransfer, data.length));
      parts.push(this.request(VIRTIO_BLK_T_OUT, sector + at / SECTOR, piece, 0));
    }
    await Promise.all(parts);
  }

  /** Flushes the device's write cache (FLUSH); resolves at once without the FLUSH feature. */
  flush(): Promise<void> {
    return this.request(VIRTIO_BLK_T_FLUSH, 0, 0, 0);
  }

  /** Discards `count` sectors from `sector` (DISCARD); UNSUPP when not negotiated. */
  discard(sector: number, count: number): Promise<void> {
    return this.ranged(VIRTIO_BLK_T_DISCARD, sector, count, 0, this.maxDiscardSectors);
  }

  /** Zeroes `count` sectors from `sector` (WRITE_ZEROES), letting the device deallocate when `unmap`. */
  writeZeroes(sector: number, count: number, unmap = false): Promise<void> {
    const flags = unmap ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
    return this.ranged(VIRTIO_BLK_T_WRITE_ZEROES, sector, count, flags, this.maxWriteZeroesSectors);
  }

  /** The device's serial (GET_ID): up to 20 bytes, cut at the first NUL. */
  async getId(): Promise<string> {
    let id = "";
    await this.request(VIRTIO_BLK_T_GET_ID, 0, 0, 0, (data, len) => {
      const raw = data.subarray(0, Math.min(len, VIRTIO_BLK_ID_BYTES));
      const nul = raw.indexOf(0);
      id = Buffer.from(nul < 0 ? raw : raw.subarray(0, nul)).toString("latin1");
    });
    return id;
  }

  private async ranged(op: number, sector: number, count: number, flags: number, max: number): Promise<void> {
    checkCount(count);
    if (!this.supports(op)) return this.request(op, sector, count, flags);
    const parts: Promise<void>[] = [];
    for (let done = 0; done < count; done += max) {
      parts.push(this.request(op, sector + done, Math.min(max, count - done), flags));
    }
    await Promise.all(parts);
  }

  /** One request through submit(): waits for a slot when all are busy, kicks once per microtask turn. */
  private request(
    op: number,
    sector: number,
    arg: Uint8Array | number,
    flags: number,
    onData?: (data: Uint8Array, len: number) => void,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done: BlkDone = (err, data, len) => {
        if (err) {
          reject(err);
          return;
        }
        onData?.(data, len);
        resolve();
      };
      const waiter: SlotWaiter = {
        go: () => {
          if (!this.submit(op, sector, arg, done, 0, flags)) return false;
          this.scheduleKick();
          return true;
        },
        reject,
      };
      try {
        if (this.waiters.length > 0 || !waiter.go()) this.waiters.push(waiter);
      } catch (err) {
        reject(err);
      }
    });
  }

  private scheduleKick(): void {
    if (this.kickScheduled) return;
    this.kickScheduled = true;
    queueMicrotask(this.scheduledKick);
  }

  private readonly scheduledKick = (): void => {
    this.kickScheduled = false;
    if (this.stateNow === "running") this.kick();
  };

  /** Slots were freed: waiting promise requests go first, in order. */
  private wakeWaiters(): void {
    const w = this.waiters;
    while (w.length > 0 && this.stateNow === "running") {
      try {
        if (!w[0].go()) return;
      } catch (err) {
        w[0].reject(err as Error);
      }
      w.shift();
    }
  }

  // ---- Slots ----

  /** Validates a request; returns its data length in bytes (IN / OUT / GET_ID), else 0. */
  private checkRequest(op: number, sector: number, arg: Uint8Array | number, flags: number): number {
    if (!Number.isSafeInteger(sector) || sector < 0) throw new RangeError(`bad sector ${sector}`);
    switch (op) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT: {
        const len = typeof arg === "number" ? arg : arg.length;
        if (op === VIRTIO_BLK_T_OUT && typeof arg === "number") throw new RangeError("OUT needs data");
        if (!Number.isInteger(len) || len <= 0 || len % SECTOR !== 0 || len > this.maxTransfer) {
          throw new RangeError(
            `${blkOpName(op)} of ${len} bytes: a multiple of 512 up to ${this.maxTransfer}`,
          );
        }
        this.checkRange(op, sector, len / SECTOR);
        return len;
      }
      case VIRTIO_BLK_T_FLUSH:
      case VIRTIO_BLK_T_GET_ID:
        // The device expects sector 0 for requests that carry none (vdpasim_blk answers IOERR otherwise).
        if (sector !== 0) throw new RangeError(`${blkOpName(op)} takes sector 0`);
        return op === VIRTIO_BLK_T_GET_ID ? VIRTIO_BLK_ID_BYTES : 0;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        const count = arg as number;
        const max = op === VIRTIO_BLK_T_DISCARD ? this.maxDiscardSectors : this.maxWriteZeroesSectors;
        if (typeof arg !== "number" || !Number.isInteger(count) || count <= 0 || count > max) {
          throw new RangeError(`${blkOpName(op)} of ${arg} sectors: 1 to ${max}`);
        }
        const allowed = op === VIRTIO_BLK_T_WRITE_ZEROES ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0;
        if (flags & ~allowed) throw new RangeError(`${blkOpName(op)}: bad flags ${flags}`);
        this.checkRange(op, sector, count);
        return 0;
      }
      default:
        throw new RangeError(`unknown request type ${op}`);
    }
  }

  private checkRange(op: number, sector: number, count: number): void {
    if (sector + count > this.capacity) {
      throw new RangeError(
        `${blkOpName(op)} of ${count} sectors at ${sector} ends past the capacity ${this.capacity}`,
      );
    }
  }

  private whyUnsupported(op: number): string {
    if (this.readOnly && op !== VIRTIO_BLK_T_FLUSH) return "refused: the device is read-only";
    return "not negotiated";
  }

  /** Writes a slot's header (and segment or data) and its BufferList. */
  private fillSlot(
    slot: number,
    op: number,
    sector: number,
    arg: Uint8Array | number,
    len: number,
    flags: number,
  ): void {
    const m = this.meta;
    const base = slot * META_STRIDE;
    const iova = this.metaDma!.iova + base;
    const ranged = op === VIRTIO_BLK_T_DISCARD || op === VIRTIO_BLK_T_WRITE_ZEROES;
    const hdrSector = op === VIRTIO_BLK_T_IN || op === VIRTIO_BLK_T_OUT ? sector : 0;
    m.setUint32(base + VIRTIO_BLK_OUTHDR.type, op, true);
    m.setUint32(base + VIRTIO_BLK_OUTHDR.ioprio, 0, true);
    setLe64(m, base + VIRTIO_BLK_OUTHDR.sector, hdrSector);
    this.metaBytes[base + META_STATUS] = STATUS_UNSET;
    const bufs = this.slotBufs[slot].clear().out(iova, VIRTIO_BLK_OUTHDR_SIZE);
    if (ranged) {
      const seg = base + META_SEGMENT;
      setLe64(m, seg + VIRTIO_BLK_DISCARD_SEGMENT.sector, sector);
      m.setUint32(seg + VIRTIO_BLK_DISCARD_SEGMENT.num_sectors, arg as number, true);
      m.setUint32(seg + VIRTIO_BLK_DISCARD_SEGMENT.flags, flags, true);
      bufs.out(iova + META_SEGMENT, VIRTIO_BLK_DISCARD_SEGMENT_SIZE);
    } else if (len > 0) {
      const dataIova = this.dataDma!.iova + slot * this.maxTransfer;
      const writable = op !== VIRTIO_BLK_T_OUT;
      if (!writable) this.slotData[slot].set(arg as Uint8Array);
      for (let at = 0; at < len; at += this.segBytes) {
        const n = Math.min(this.segBytes, len - at);
        if (writable) bufs.in(dataIova + at, n);
        else bufs.out(dataIova + at, n);
      }
    }
    bufs.in(iova + META_STATUS, 1);
    this.slotOp[slot] = op;
    this.slotSector[slot] = sector;
    this.slotLen[slot] = len;
  }

  private pushPending(slot: number): void {
    const n = this.slotCount;
    this.pending[(this.pendingHead + this.pendingCount) % n] = slot;
    this.pendingCount++;
  }

  /** Moves waiting slots onto the ring while descriptors last. */
  private addPending(): void {
    const ring = this.vq!.ring;
    while (this.pendingCount > 0) {
      const slot = this.pending[this.pendingHead];
      if (!ring.add(this.slotBufs[slot], slot)) return;
      this.pendingHead = (this.pendingHead + 1) % this.slotCount;
      this.pendingCount--;
    }
  }

  /** A slot came back from the device: free it, then tell its owner. */
  private complete(slot: number, usedLen: number): void {
    const status = this.metaBytes[slot * META_STRIDE + META_STATUS];
    const op = this.slotOp[slot];
    const cb = this.slotCb[slot];
    const tag = this.slotTag[slot];
    this.slotCb[slot] = null;
    this.free[this.freeTop++] = slot;
    this.stats.completed++;
    let err: VirtioBlkError | null = null;
    let len = 0;
    if (status === VIRTIO_BLK_S_OK && usedLen >= 1) {
      if (op === VIRTIO_BLK_T_IN) {
        len = this.slotLen[slot];
        this.stats.bytesRead += len;
      } else if (op === VIRTIO_BLK_T_OUT) {
        this.stats.bytesWritten += this.slotLen[slot];
      } else if (op === VIRTIO_BLK_T_GET_ID) {
        len = Math.min(usedLen - 1, VIRTIO_BLK_ID_BYTES);
      }
    } else {
      err = this.statusError(status, usedLen, op, this.slotSector[slot]);
    }
    if (cb === null) return;
    try {
      cb(err, this.slotData[slot], len, tag);
    } catch (e) {
      rethrowLater(e);
    }
  }

  private statusError(status: number, usedLen: number, op: number, sector: number): VirtioBlkError {
    const what = `${blkOpName(op)} at sector ${sector}`;
    if (status === VIRTIO_BLK_S_UNSUPP) {
      this.stats.unsupported++;
      return new VirtioBlkError("UNSUPP", op, sector, `${what}: device answered UNSUPP`);
    }
    this.stats.ioErrors++;
    const detail =
      status === VIRTIO_BLK_S_IOERR
        ? "device answered IOERR"
        : usedLen < 1
          ? "device returned no status"
          : `device answered status ${status}`;
    return new VirtioBlkError("IOERR", op, sector, `${what}: ${detail}`);
  }

  // ---- Bring-up, interrupts, resets ----

  private start(): void {
    const t = this.transport;
    this.features = negotiateFeatures(
      t,
      (offered) => {
        if ((offered & bit(VIRTIO_F_VERSION_1)) === 0n) {
          throw new VirtioBlkError("FAILED", -1, 0, `${t.name}: legacy device (no VERSION_1)`);
        }
        return offered & VIRTIO_BLK_DRIVER_FEATURES;
      },
      (message) => new VirtioBlkError("FAILED", -1, 0, message),
    );
    this.readDeviceConfig();
    const size = this.slotCount > 0 ? this.slotCount : this.opts.queueSize;
    const [vq] = t.findVqs(
      [{ name: "req.0", callback: this.interrupt }],
      size === undefined ? undefined : { size },
    );
    if (!vq) throw new VirtioBlkError("FAILED", -1, 0, `${t.name}: no request queue`);
    this.vq = vq;
    if (this.slotCount === 0) this.allocSlots(vq.size);
    t.onConfigChange(this.configChanged);
    driverOk(t);
    this.stateNow = "running";
  }

  private has(feature: number): boolean {
    return (this.features & bit(feature)) !== 0n;
  }

  /** Linux virtblk_probe's config reads, for the fields this driver uses. */
  private readDeviceConfig(): void {
    const t = this.transport;
    const C = VIRTIO_BLK_CONFIG;
    this.capacity = readConfigUint(t, C.capacity, 8);
    this.readOnly = this.has(VIRTIO_BLK_F_RO);
    this.sizeMax = this.has(VIRTIO_BLK_F_SIZE_MAX) ? readConfigUint(t, C.size_max, 4) : 0;
    this.segMax = this.has(VIRTIO_BLK_F_SEG_MAX) ? readConfigUint(t, C.seg_max, 4) : 0;
    if (this.has(VIRTIO_BLK_F_BLK_SIZE)) {
      const b = readConfigUint(t, C.blk_size, 4);
      // Linux blk_validate_block_size: a power of two from 512 up.
      if (b < SECTOR || (b & (b - 1)) !== 0) {
        throw new VirtioBlkError("FAILED", -1, 0, `${t.name}: bad blk_size ${b}`);
      }
      this.blkSize = b;
    }
    // Linux: a zero limit in config means the device sets none.
    const limit = (v: number): number => (v === 0 ? 0xffff_ffff : v);
    if (this.has(VIRTIO_BLK_F_DISCARD))
      this.maxDiscardSectors = limit(readConfigUint(t, C.max_discard_sectors, 4));
    if (this.has(VIRTIO_BLK_F_WRITE_ZEROES)) {
      this.maxWriteZeroesSectors = limit(readConfigUint(t, C.max_write_zeroes_sectors, 4));
      this.writeZeroesMayUnmap = readConfigUint(t, C.write_zeroes_may_unmap, 1) !== 0;
    }
  }

  /**
   * Allocates every slot (once, at the first start) and sizes the data buffer so one request fits the
   * device's limits (size_max × seg_max; Linux takes one segment when seg_max is absent) and the ring
   * (header and status descriptors included, in case INDIRECT_DESC is missing).
   */
  private allocSlots(num: number): void {
    const t = this.transport;
    const maxSegs = Math.max(1, Math.min(this.segMax > 0 ? this.segMax : 1, num - 2));
    let max = this.opts.maxTransferBytes ?? DEFAULT_MAX_TRANSFER;
    if (this.sizeMax > 0) max = Math.min(max, this.sizeMax * maxSegs);
    max -= max % SECTOR;
    if (max < SECTOR)
      throw new VirtioBlkError("FAILED", -1, 0, `${t.name}: size_max ${this.sizeMax} too small`);
    this.maxTransfer = max;
    this.segBytes = this.sizeMax > 0 ? Math.min(this.sizeMax, max) : max;

    this.metaDma = t.allocDma(num * META_STRIDE, 64);
    const mb = this.metaDma.bytes;
    this.meta = new DataView(mb.buffer, mb.byteOffset, mb.byteLength);
    this.metaBytes = mb;
    this.dataDma = t.allocDma(num * max, 64);
    const segsPerRequest = Math.ceil(max / this.segBytes);
    for (let i = 0; i < num; i++) {
      this.slotData.push(this.dataDma.bytes.subarray(i * max, (i + 1) * max));
      this.slotBufs.push(new BufferList(segsPerRequest + 3));
    }
    this.slotCb = new Array<BlkDone | null>(num).fill(null);
    this.slotTag = new Float64Array(num);
    this.slotSector = new Float64Array(num);
    this.slotOp = new Uint8Array(num);
    this.slotLen = new Uint32Array(num);
    this.free = new Uint16Array(num);
    for (let i = 0; i < num; i++) this.free[i] = num - 1 - i;
    this.freeTop = num;
    this.pending = new Uint16Array(num);
    this.slotCount = num;
  }

  private releaseDma(): void {
    const t = this.transport;
    if (this.metaDma) t.freeDma(this.metaDma);
    if (this.dataDma) t.freeDma(this.dataDma);
    this.metaDma = this.dataDma = null;
  }

  /** Reclaims a batch, re-enables callbacks, and polls again if requests completed meanwhile. */
  private readonly interrupt = (): void => {
    const q = this.vq;
    if (q === null || this.stateNow !== "running") return;
    const ring = q.ring;
    try {
      do {
        ring.disableCallbacks();
        for (let slot = ring.getUsed(); slot !== undefined; slot = ring.getUsed()) {
          this.complete(slot, ring.usedLen);
          // The callback may have removed the driver.
          if (this.vq !== q) return;
        }
        this.addPending();
        if (ring.publishAvail()) q.notify();
      } while (ring.enableCallbacks());
    } catch (err) {
      if (!isDatapathFault(err)) throw err;
      this.recover();
      return;
    }
    this.wakeWaiters();
  };

  private readonly configChanged = (): void => {
    if (this.stateNow !== "running") return;
    if (this.transport.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET) {
      this.recover();
      return;
    }
    const capacity = readConfigUint(this.transport, VIRTIO_BLK_CONFIG.capacity, 8);
    if (capacity === this.capacity) return;
    this.capacity = capacity;
    const cb = this.capacityCb;
    if (cb) callUser(() => cb(capacity));
  };

  /**
   * Resets the device and brings it up again. Requests in flight (or waiting for descriptors) fail with
   * RESET; their callbacks run once the device is back, so they may resubmit. Promise requests still
   * waiting for a slot go to the new queue.
   */
  private recover(): void {
    this.stats.resets++;
    const failed = this.stopQueue();
    let error: Error | null = null;
    try {
      this.start();
    } catch (err) {
      error = err as Error;
      this.stopQueue();
      this.stateNow = "failed";
      driverFailed(this.transport);
    }
    const code = error ? "FAILED" : "RESET";
    this.failSlots(failed, code, `${this.transport.name}: device reset while in flight`);
    if (error) this.endWaiters(new VirtioBlkError("FAILED", -1, 0, `reset failed: ${error.message}`));
    else this.wakeWaiters();
    const cb = this.resetCb;
    if (cb) callUser(() => cb(error));
  }

  /**
   * Reset first, so the device stops touching the ring, then take back its slots and delete the queue
   * (Linux: virtio_reset_device, then del_vqs). Returns the slots that were in flight or pending, freed
   * but with their callbacks not yet run (failSlots runs them).
   */
  private stopQueue(): number[] {
    const t = this.transport;
    t.reset();
    const q = this.vq;
    this.vq = null;
    if (q === null) return [];
    const slots = q.ring.detachUnused();
    for (; this.pendingCount > 0; this.pendingCount--) {
      slots.push(this.pending[this.pendingHead]);
      this.pendingHead = (this.pendingHead + 1) % this.slotCount;
    }
    this.pendingHead = 0;
    t.delVqs();
    return slots;
  }

  private failSlots(slots: number[], code: VirtioBlkErrorCode, message: string): void {
    const data: Uint8Array[] = [];
    const cbs: (BlkDone | null)[] = [];
    const errs: VirtioBlkError[] = [];
    const tags: number[] = [];
    for (const slot of slots) {
      const op = this.slotOp[slot];
      const sector = this.slotSector[slot];
      cbs.push(this.slotCb[slot]);
      tags.push(this.slotTag[slot]);
      data.push(this.slotData[slot]);
      errs.push(new VirtioBlkError(code, op, sector, `${blkOpName(op)} at sector ${sector}: ${message}`));
      this.slotCb[slot] = null;
      this.free[this.freeTop++] = slot;
      this.stats.failed++;
    }
    for (let i = 0; i < cbs.length; i++) {
      const cb = cbs[i];
      if (cb) callUser(() => cb(errs[i], data[i], 0, tags[i]));
    }
  }

  /**
   * Lets the device go (Linux virtblk_remove): reset, queue deleted, every request in flight or waiting
   * fails with REMOVED, DMA memory returned. Idempotent.
   */
  remove(): void {
    if (this.stateNow === "removed") return;
    this.transport.onConfigChange(null);
    const slots = this.stopQueue();
    this.stateNow = "removed";
    this.failSlots(slots, "REMOVED", `${this.transport.name}: driver removed`);
    this.endWaiters(new VirtioBlkError("REMOVED", -1, 0, `${this.transport.name}: driver removed`));
    this.releaseDma();
  }

  private endWaiters(err: Error): void {
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  private notRunning(op: number, sector: number): VirtioBlkError {
    return this.stateNow === "removed"
      ? new VirtioBlkError("REMOVED", op, sector, `${this.transport.name}: driver removed`)
      : new VirtioBlkError("FAILED", op, sector, `${this.transport.name}: device failed`);
  }
}

/**
 * The virtio-blk driver for a virtio bus: probe() brings a device up as a VirtioBlk, remove() lets it go.
 * `devices` holds the bound ones; `onProbe` hears of each new one.
 */
export class VirtioBlkDriver extends PerDeviceDriver<VirtioBlk> {
  readonly name = "virtio_blk";
  readonly deviceIds: readonly number[] = [VIRTIO_ID_BLOCK];

  constructor(private readonly opts: VirtioBlkOptions & { onProbe?: (blk: VirtioBlk) => void } = {}) {
    super(opts.onProbe);
  }

  protected create(transport: VirtioTransport): VirtioBlk {
    return new VirtioBlk(transport, this.opts);
  }
}

function checkCount(count: number): void {
  if (!Number.isSafeInteger(count) || count <= 0) throw new RangeError(`bad sector count ${count}`);
}

function setLe64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, value % TWO_32, true);
  view.setUint32(offset + 4, Math.floor(value / TWO_32), true);
}

function callUser(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    rethrowLater(err);
  }
}

function rethrowLater(err: unknown): void {
  queueMicrotask(() => {
    throw err;
  });
}
