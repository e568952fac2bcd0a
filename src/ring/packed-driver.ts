// Driver side of a packed virtqueue (Linux's virtio_ring, packed half). Buffer ids come from a private
// free stack; per-id state (slots held, token) is private, so a device can only return ids, which are
// checked.

import { type DmaBuffer, u16View, u32View } from "../memory/index.js";
import {
  PACKED_ALIGN,
  PACKED_DESC_SIZE,
  PACKED_EVENT_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_PACKED_DESC_F_AVAIL,
  VRING_PACKED_DESC_F_USED,
  vringNeedEvent,
} from "../spec/ring-layout.js";
import type { BufferList } from "./chain.js";
import { RingError } from "./errors.js";
import { checkQueueSize, TWO_32 } from "./host.js";
import type { DriverRing, DriverRingOptions, RingAddresses } from "./types.js";

export class PackedDriverRing<T> implements DriverRing<T> {
  readonly format = "packed";
  readonly num: number;
  readonly addresses: RingAddresses;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly maxIndirect: number;
  usedLen = 0;
  numFree: number;
  broken: Error | null = null;

  private readonly desc32: Uint32Array;
  private readonly desc16: Uint16Array;
  private readonly driverEvent: Uint16Array;
  private readonly deviceEvent: Uint16Array;
  private readonly buffers: DmaBuffer[];
  private readonly indirectWords: Uint32Array;
  private readonly indirectIova: number;

  private readonly freeIds: Uint16Array;
  private freeTop: number;
  private readonly chainLen: Uint16Array;
  private readonly busy: Uint8Array;
  private readonly tokens: (T | undefined)[];
  private nextAvail = 0;
  private availWrap = 1;
  private lastUsed = 0;
  private usedWrap = 1;
  /** Ring slots made available since the last kick decision. */
  private addedSinceKick = 0;
  /** The first head of the open batch: its flags are written last, in publishAvail(). */
  private pendingSlot = -1;
  private pendingFlags = 0;
  private callbacks = true;

  constructor(opts: DriverRingOptions) {
    checkQueueSize(opts.num, false);
    const num = opts.num;
    this.num = num;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.maxIndirect = opts.maxIndirect ?? 16;
    const pool = opts.pool;
    const desc = pool.alloc(num * PACKED_DESC_SIZE, PACKED_ALIGN.desc);
    const drv = pool.alloc(PACKED_EVENT_SIZE, 64);
    const dev = pool.alloc(PACKED_EVENT_SIZE, 64);
    this.buffers = [desc, drv, dev];
    this.addresses = { desc: desc.iova, driver: drv.iova, device: dev.iova };
    this.desc32 = u32View(pool.region, desc.offset, num * 4);
    this.desc16 = u16View(pool.region, desc.offset, num * 8);
    this.driverEvent = u16View(pool.region, drv.offset, 2);
    this.deviceEvent = u16View(pool.region, dev.offset, 2);
    if (this.indirect) {
      const tables = pool.alloc(num * this.maxIndirect * 16, 16);
      this.buffers.push(tables);
      this.indirectWords = u32View(pool.region, tables.offset, num * this.maxIndirect * 4);
      this.indirectIova = tables.iova;
    } else {
      this.indirectWords = new Uint32Array(0);
      this.indirectIova = 0;
    }
    this.freeIds = new Uint16Array(num);
    this.freeTop = 0;
    this.chainLen = new Uint16Array(num);
    this.busy = new Uint8Array(num);
    this.tokens = new Array<T | undefined>(num);
    this.numFree = num;
    this.initIds();
  }

  get inFlight(): number {
    return this.num - this.freeTop;
  }

  get dmaBuffers(): readonly DmaBuffer[] {
    return this.buffers;
  }

  private initIds(): void {
    // Hand out low ids first (a stack popped from the top).
    for (let i = 0; i < this.num; i++) this.freeIds[i] = this.num - 1 - i;
    this.freeTop = this.num;
    this.numFree = this.num;
  }

  /** AVAIL/USED bits that mark a descriptor available for the wrap counter `wrap` (spec 2.8.1). */
  private static availBits(wrap: number): number {
    return wrap ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED;
  }

  add(bufs: BufferList, token: T, indirect = true): boolean {
    const n = bufs.count;
    const useIndirect = indirect && this.indirect && n > 1 && n <= this.maxIndirect;
    const needed = useIndirect ? 1 : n;
    if (n === 0 || needed > this.num) {
      throw new RingError("BAD_REQUEST", `request of ${n} buffers cannot fit a queue of ${this.num}`);
    }
    if (this.numFree < needed) return false;
    const id = this.freeIds[--this.freeTop];
    const words = this.desc32;
    const head = this.nextAvail;
    const out = bufs.outCount;
    let headFlags: number;
    let slot = head;
    let wrap = this.availWrap;
    if (useIndirect) {
      const table = this.indirectWords;
      const base = id * this.maxIndirect * 4;
      for (let k = 0; k < n; k++) {
        const w = base + k * 4;
        table[w] = bufs.addrLo[k];
        table[w + 1] = bufs.addrHi[k];
        table[w + 2] = bufs.lens[k];
        table[w + 3] = (k >= out ? VRING_DESC_F_WRITE : 0) << 16;
      }
      const tableIova = this.indirectIova + id * this.maxIndirect * 16;
      const w = slot * 4;
      words[w] = tableIova >>> 0;
      words[w + 1] = (tableIova / TWO_32) >>> 0;
      words[w + 2] = n * 16;
      headFlags = VRING_DESC_F_INDIRECT | PackedDriverRing.availBits(wrap);
      if (++slot === this.num) {
        slot = 0;
        wrap ^= 1;
      }
    } else {
      headFlags = 0;
      for (let k = 0; k < n; k++) {
        const w = slot * 4;
        words[w] = bufs.addrLo[k];
        words[w + 1] = bufs.addrHi[k];
        words[w + 2] = bufs.lens[k];
        const flags =
          (k + 1 < n ? VRING_DESC_F_NEXT : 0) |
          (k >= out ? VRING_DESC_F_WRITE : 0) |
          PackedDriverRing.availBits(wrap);
        // The id goes in every descriptor (the device reads it from the last one); the head's flags wait.
        if (k === 0) headFlags = flags;
        else words[w + 3] = id | (flags << 16);
        if (++slot === this.num) {
          slot = 0;
          wrap ^= 1;
        }
      }
    }
    this.desc16[head * 8 + 6] = id;
    if (this.pendingSlot < 0) {
      this.pendingSlot = head;
      this.pendingFlags = headFlags;
    } else {
      // Safe as a plain store: the device cannot reach this head before the batch's first head, which is
      // published last with a barrier.
      this.desc16[head * 8 + 7] = headFlags;
    }
    this.nextAvail = slot;
    this.availWrap = wrap;
    this.numFree -= needed;
    this.addedSinceKick += needed;
    this.chainLen[id] = needed;
    this.busy[id] = 1;
    this.tokens[id] = token;
    return true;
  }

  publishAvail(): boolean {
    if (this.pendingSlot < 0) return false;
    // Release: a chain's descriptors are written before its head's flags (spec 2.8.21). The store is
    // also the full barrier before reading the device's event suppression structure.
    Atomics.store(this.desc16, this.pendingSlot * 8 + 7, this.pendingFlags);
    this.pendingSlot = -1;
    const added = this.addedSinceKick;
    this.addedSinceKick = 0;
    const flags = Atomics.load(this.deviceEvent, 1);
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;
    const offWrap = Atomics.load(this.deviceEvent, 0);
    let eventIdx = offWrap & 0x7fff;
    if (offWrap >>> 15 !== this.availWrap) eventIdx -= this.num;
    return vringNeedEvent(eventIdx, this.nextAvail, this.nextAvail - added);
  }

  /** Whether the descriptor at lastUsed has been written back by the device (spec 2.8.1). */
  private usedReady(): boolean {
    const flags = Atomics.load(this.desc16, this.lastUsed * 8 + 7);
    const avail = (flags & VRING_PACKED_DESC_F_AVAIL) !== 0 ? 1 : 0;
    const used = (flags & VRING_PACKED_DESC_F_USED) !== 0 ? 1 : 0;
    return avail === used && used === this.usedWrap;
  }

  getUsed(): T | undefined {
    if (this.broken) throw this.broken;
    // Acquire on the flags: the id and length the device wrote before them are visible after this.
    if (!this.usedReady()) return undefined;
    const slot = this.lastUsed;
    const id = this.desc16[slot * 8 + 6];
    const len = this.desc32[slot * 4 + 2];
    if (id >= this.num || this.busy[id] === 0) {
      throw (this.broken = new RingError(
        "USED_ID_INVALID",
        `device returned id ${id}, which is not in flight`,
      ));
    }
    const n = this.chainLen[id];
    let next = slot + n;
    if (next >= this.num) {
      next -= this.num;
      this.usedWrap ^= 1;
    }
    this.lastUsed = next;
    this.freeIds[this.freeTop++] = id;
    this.numFree += n;
    this.busy[id] = 0;
    const token = this.tokens[id];
    this.tokens[id] = undefined;
    this.usedLen = len;
    if (this.eventIdx && this.callbacks) this.driverEvent[0] = this.lastUsed | (this.usedWrap << 15);
    return token;
  }

  disableCallbacks(): void {
    this.callbacks = false;
    Atomics.store(this.driverEvent, 1, RING_EVENT_FLAGS_DISABLE);
  }

  enableCallbacks(): boolean {
    this.callbacks = true;
    if (this.eventIdx) {
      this.driverEvent[0] = this.lastUsed | (this.usedWrap << 15);
      Atomics.store(this.driverEvent, 1, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(this.driverEvent, 1, RING_EVENT_FLAGS_ENABLE);
    }
    return this.usedReady();
  }

  detachUnused(): T[] {
    const tokens: T[] = [];
    for (let i = 0; i < this.num; i++) {
      if (this.busy[i]) tokens.push(this.tokens[i] as T);
      this.busy[i] = 0;
      this.tokens[i] = undefined;
    }
    this.desc32.fill(0);
    this.driverEvent.fill(0);
    this.deviceEvent.fill(0);
    this.nextAvail = this.lastUsed = this.addedSinceKick = 0;
    this.availWrap = this.usedWrap = 1;
    this.pendingSlot = -1;
    this.callbacks = true;
    this.broken = null;
    this.initIds();
    return tokens;
  }
}
