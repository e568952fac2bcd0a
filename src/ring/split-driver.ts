// Driver side of a split virtqueue (Linux's virtio_ring, split half): owns the descriptor table and the
// available ring, reads the used ring. Chain links and tokens are kept in private arrays, never read back
// from shared memory, so a hostile device can only return ids, which are checked.

import { type DmaBuffer, u16View, u32View } from "../memory/index.js";
import {
  SPLIT_ALIGN,
  splitRingSizes,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "../spec/ring-layout.js";
import type { BufferList } from "./chain.js";
import { RingError } from "./errors.js";
import { checkQueueSize, TWO_32 } from "./host.js";
import type { DriverRing, DriverRingOptions, RingAddresses } from "./types.js";

export class SplitDriverRing<T> implements DriverRing<T> {
  readonly format = "split";
  readonly num: number;
  readonly addresses: RingAddresses;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  readonly maxIndirect: number;
  usedLen = 0;
  numFree: number;
  broken: Error | null = null;

  private readonly mask: number;
  private readonly desc: Uint32Array;
  private readonly avail: Uint16Array;
  private readonly used16: Uint16Array;
  private readonly usedElems: Uint32Array;
  private readonly buffers: DmaBuffer[];
  private readonly indirectWords: Uint32Array;
  private readonly indirectIova: number;

  /** Private chain links: next[i] is the descriptor after i in its chain or in the free list. */
  private readonly next: Uint16Array;
  /** Ring descriptors each in-flight head holds (1 for an indirect request). */
  private readonly chainLen: Uint16Array;
  private readonly busy: Uint8Array;
  private readonly tokens: (T | undefined)[];
  private freeHead = 0;
  /** Requests added and not yet returned. */
  private requests = 0;
  private availIdx = 0;
  /** avail.idx when the kick decision was last made (Linux: avail_idx_shadow - num_added). */
  private kickedIdx = 0;
  private lastUsed = 0;
  private usedShadow = 0;
  private callbacks = true;

  constructor(opts: DriverRingOptions) {
    checkQueueSize(opts.num, true);
    const num = opts.num;
    this.num = num;
    this.mask = num - 1;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    this.maxIndirect = opts.maxIndirect ?? 16;
    const sizes = splitRingSizes(num);
    const pool = opts.pool;
    const desc = pool.alloc(sizes.desc, SPLIT_ALIGN.desc);
    const avail = pool.alloc(sizes.avail, 64);
    const used = pool.alloc(sizes.used, 64);
    this.buffers = [desc, avail, used];
    this.addresses = { desc: desc.iova, driver: avail.iova, device: used.iova };
    this.desc = u32View(pool.region, desc.offset, num * 4);
    this.avail = u16View(pool.region, avail.offset, sizes.avail / 2);
    this.used16 = u16View(pool.region, used.offset, sizes.used / 2);
    this.usedElems = u32View(pool.region, used.offset + 4, num * 2);
    if (this.indirect) {
      const tables = pool.alloc(num * this.maxIndirect * 16, 16);
      this.buffers.push(tables);
      this.indirectWords = u32View(pool.region, tables.offset, num * this.maxIndirect * 4);
      this.indirectIova = tables.iova;
    } else {
      this.indirectWords = new Uint32Array(0);
      this.indirectIova = 0;
    }
    this.next = new Uint16Array(num);
    this.chainLen = new Uint16Array(num);
    this.busy = new Uint8Array(num);
    this.tokens = new Array<T | undefined>(num);
    this.numFree = num;
    this.initFreeList();
  }

  /** Requests in flight (not descriptors: a request may hold several). */
  get inFlight(): number {
    return this.requests;
  }

  /** The pool blocks this ring holds (rings and indirect tables), for the caller to release. */
  get dmaBuffers(): readonly DmaBuffer[] {
    return this.buffers;
  }

  private initFreeList(): void {
    for (let i = 0; i < this.num; i++) this.next[i] = i + 1 < this.num ? i + 1 : 0;
    this.freeHead = 0;
    this.numFree = this.num;
  }

  add(bufs: BufferList, token: T, indirect = true): boolean {
    const n = bufs.count;
    const useIndirect = indirect && this.indirect && n > 1 && n <= this.maxIndirect;
    const needed = useIndirect ? 1 : n;
    if (n === 0 || needed > this.num) {
      throw new RingError("BAD_REQUEST", `request of ${n} buffers cannot fit a queue of ${this.num}`);
    }
    if (this.numFree < needed) return false;
    const head = this.freeHead;
    const desc = this.desc;
    const out = bufs.outCount;
    if (useIndirect) {
      const words = this.indirectWords;
      const base = head * this.maxIndirect * 4;
      for (let k = 0; k < n; k++) {
        const w = base + k * 4;
        words[w] = bufs.addrLo[k];
        words[w + 1] = bufs.addrHi[k];
        words[w + 2] = bufs.lens[k];
        const flags = (k + 1 < n ? VRING_DESC_F_NEXT : 0) | (k >= out ? VRING_DESC_F_WRITE : 0);
        words[w + 3] = flags | ((k + 1) << 16);
      }
      const table = this.indirectIova + head * this.maxIndirect * 16;
      const w = head * 4;
      desc[w] = table >>> 0;
      desc[w + 1] = (table / TWO_32) >>> 0;
      desc[w + 2] = n * 16;
      desc[w + 3] = VRING_DESC_F_INDIRECT;
      this.freeHead = this.next[head];
    } else {
      let i = head;
      for (let k = 0; k < n; k++) {
        const w = i * 4;
        const nxt = this.next[i];
        desc[w] = bufs.addrLo[k];
        desc[w + 1] = bufs.addrHi[k];
        desc[w + 2] = bufs.lens[k];
        const flags = (k + 1 < n ? VRING_DESC_F_NEXT : 0) | (k >= out ? VRING_DESC_F_WRITE : 0);
        desc[w + 3] = flags | (nxt << 16);
        i = nxt;
      }
      this.freeHead = i;
    }
    this.numFree -= needed;
    this.chainLen[head] = needed;
    this.busy[head] = 1;
    this.requests++;
    this.tokens[head] = token;
    this.avail[2 + (this.availIdx & this.mask)] = head;
    this.availIdx = (this.availIdx + 1) & 0xffff;
    return true;
  }

  publishAvail(): boolean {
    const newIdx = this.availIdx;
    const old = this.kickedIdx;
    if (newIdx === old) return false;
    // Release: descriptors and ring entries are written before avail.idx (spec 2.7.13). Atomics.store is
    // also the full barrier needed before reading avail_event / used.flags for the kick decision.
    Atomics.store(this.avail, 1, newIdx);
    this.kickedIdx = newIdx;
    if (this.eventIdx) return vringNeedEvent(Atomics.load(this.used16, 2 + 4 * this.num), newIdx, old);
    return (Atomics.load(this.used16, 0) & VRING_USED_F_NO_NOTIFY) === 0;
  }

  getUsed(): T | undefined {
    if (this.broken) throw this.broken;
    const last = this.lastUsed;
    if (this.usedShadow === last) {
      // Acquire: the used elements below used.idx are visible after this load (spec 2.7.14).
      const idx = Atomics.load(this.used16, 1);
      if (idx === last) return undefined;
      if (((idx - last) & 0xffff) > this.num) {
        throw (this.broken = new RingError(
          "USED_IDX_JUMP",
          `used idx ${idx} is more than ${this.num} ahead of ${last}`,
        ));
      }
      this.usedShadow = idx;
    }
    const slot = (last & this.mask) * 2;
    const id = this.usedElems[slot];
    const len = this.usedElems[slot + 1];
    if (id >= this.num || this.busy[id] === 0) {
      throw (this.broken = new RingError(
        "USED_ID_INVALID",
        `device returned id ${id}, which is not in flight`,
      ));
    }
    // Return the chain to the free list through the private links.
    const n = this.chainLen[id];
    let tail = id;
    for (let k = 1; k < n; k++) tail = this.next[tail];
    this.next[tail] = this.freeHead;
    this.freeHead = id;
    this.numFree += n;
    this.busy[id] = 0;
    this.requests--;
    const token = this.tokens[id];
    this.tokens[id] = undefined;
    this.lastUsed = (last + 1) & 0xffff;
    this.usedLen = len;
    // Keep used_event just behind us so the device notifies for the next buffer (plain store: the
    // barrier that matters is in enableCallbacks(), before the driver sleeps).
    if (this.eventIdx && this.callbacks) this.avail[2 + this.num] = this.lastUsed;
    return token;
  }

  disableCallbacks(): void {
    this.callbacks = false;
    // With EVENT_IDX the driver must leave flags at 0 (spec 2.7.10); it just stops moving used_event.
    if (!this.eventIdx) Atomics.store(this.avail, 0, VRING_AVAIL_F_NO_INTERRUPT);
  }

  enableCallbacks(): boolean {
    this.callbacks = true;
    if (this.eventIdx) Atomics.store(this.avail, 2 + this.num, this.lastUsed);
    else Atomics.store(this.avail, 0, 0);
    return Atomics.load(this.used16, 1) !== this.lastUsed;
  }

  detachUnused(): T[] {
    const tokens: T[] = [];
    for (let i = 0; i < this.num; i++) {
      if (this.busy[i]) tokens.push(this.tokens[i] as T);
      this.busy[i] = 0;
      this.tokens[i] = undefined;
    }
    this.desc.fill(0);
    this.avail.fill(0);
    this.used16.fill(0);
    this.availIdx = this.kickedIdx = this.lastUsed = this.usedShadow = 0;
    this.requests = 0;
    this.callbacks = true;
    this.broken = null;
    this.initFreeList();
    return tokens;
  }
}
