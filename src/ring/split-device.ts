// Device side of a split virtqueue (virtio 1.x "Split Virtqueues"): reads the descriptor table and the
// available ring the driver writes, writes the used ring. Everything the driver wrote is untrusted: each
// descriptor is read once into locals and checked before use.

import { ACCESS_READ, ACCESS_WRITE, type AddressSpace, u16View, u32View } from "../memory/index.js";
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
import { type Chain, DEFAULT_MAX_CHAIN, IndirectTableReader } from "./chain.js";
import { availJump, ringFault } from "./errors.js";
import { addrOf, checkQueueSize } from "./host.js";
import type { DeviceRing, DeviceRingOptions, RingAddresses, RingState } from "./types.js";

export class SplitDeviceRing implements DeviceRing {
  readonly format = "split";
  readonly num: number;
  readonly eventIdx: boolean;
  readonly addresses: RingAddresses;
  broken: Error | null = null;

  private readonly ringSpace: AddressSpace;
  private readonly bufferSpace: AddressSpace;
  private readonly mask: number;
  private readonly indirect: IndirectTableReader;
  /** IOTLB generation the views below were made for; a remap rebuilds them. */
  private generation = -1;
  private desc: Uint32Array = new Uint32Array(0);
  private avail: Uint16Array = new Uint16Array(0);
  private used16: Uint16Array = new Uint16Array(0);
  private usedElems: Uint32Array = new Uint32Array(0);

  /** Next avail ring slot to read (free-running 16-bit). */
  private lastAvail = 0;
  /** avail.idx as last read; lets pop() skip the shared-memory load while buffers remain. */
  private availShadow = 0;
  /** used.idx we will publish next (free-running 16-bit). */
  private usedIdx = 0;
  /** used.idx at the last notification decision (vhost's signalled_used). */
  private signalledUsed = 0;
  /** False after a state change: the next publish notifies unconditionally, as vhost does. */
  private signalledValid = false;

  constructor(opts: DeviceRingOptions) {
    checkQueueSize(opts.num, true);
    this.num = opts.num;
    this.mask = opts.num - 1;
    this.eventIdx = opts.eventIdx;
    this.addresses = { ...opts.addresses };
    this.ringSpace = opts.ringSpace;
    this.bufferSpace = opts.bufferSpace ?? opts.ringSpace;
    this.indirect = new IndirectTableReader(Math.max(opts.maxChain ?? DEFAULT_MAX_CHAIN, 1));
    this.mapAreas();
  }

  /** (Re)translates the three ring areas; throws DmaFault when they are not mapped as the spec needs. */
  private mapAreas(): void {
    const sizes = splitRingSizes(this.num);
    const a = this.addresses;
    const space = this.ringSpace;
    const d = space.contiguous(a.desc, sizes.desc, ACCESS_READ, SPLIT_ALIGN.desc);
    // The device only reads the available ring; it writes the used ring (avail_event included).
    const av = space.contiguous(a.driver, sizes.avail, ACCESS_READ, SPLIT_ALIGN.avail);
    const u = space.contiguous(a.device, sizes.used, ACCESS_WRITE, SPLIT_ALIGN.used);
    this.desc = u32View(d.region, d.offset, this.num * 4);
    this.avail = u16View(av.region, av.offset, sizes.avail / 2);
    this.used16 = u16View(u.region, u.offset, sizes.used / 2);
    this.usedElems = u32View(u.region, u.offset + 4, this.num * 2);
    this.generation = space.generation;
  }

  private ensureMapped(): void {
    if (this.generation !== this.ringSpace.generation) this.mapAreas();
  }

  hasAvailable(): boolean {
    if (this.broken) return false;
    this.ensureMapped();
    // Acquire: the avail ring entries below idx are valid once idx is seen (spec: driver writes the ring
    // entry, then a barrier, then idx).
    return Atomics.load(this.avail, 1) !== this.lastAvail;
  }

  pop(chain: Chain): boolean {
    if (this.broken) throw this.broken;
    try {
      return this.popChain(chain);
    } catch (err) {
      this.broken = err as Error;
      throw err;
    }
  }

  private popChain(chain: Chain): boolean {
    if (this.generation !== this.ringSpace.generation) this.mapAreas();
    const last = this.lastAvail;
    if (this.availShadow === last) {
      // Acquire load of avail.idx: ring entries before it are visible after this (spec 2.7.13).
      const idx = Atomics.load(this.avail, 1);
      if (idx === last) return false;
      if (((idx - last) & 0xffff) > this.num) throw availJump(idx, last, this.num);
      this.availShadow = idx;
    }
    const head = this.avail[2 + (last & this.mask)];
    if (head >= this.num)
      throw ringFault("DESC_OUT_OF_RANGE", head, `head at avail slot ${last} past queue size ${this.num}`);
    chain.reset();
    chain.id = head;
    chain.descCount = 1;
    this.walk(head, chain);
    this.lastAvail = (last + 1) & 0xffff;
    return true;
  }

  /** Follows a chain from its head, indirect tables included, filling `chain`'s segment lists. */
  private walk(head: number, chain: Chain): void {
    let words = this.desc;
    let base = 0;
    let limit = this.num;
    let idx = head;
    let count = 0;
    let inIndirect = false;
    const space = this.bufferSpace;
    for (;;) {
      if (++count > limit) throw ringFault("DESC_LOOP", head, `more than ${limit} descriptors, a loop`);
      // Read every field once: the driver may rewrite the table while we look (TOCTOU).
      const w = base + idx * 4;
      const addr = addrOf(words[w], words[w + 1]);
      const len = words[w + 2];
      const flagsNext = words[w + 3];
      const flags = flagsNext & 0xffff;
      if (flags & VRING_DESC_F_INDIRECT) {
        if (inIndirect) throw ringFault("NESTED_INDIRECT", head, "indirect descriptor in an indirect table");
        if (flags & VRING_DESC_F_NEXT)
          throw ringFault("INDIRECT_WITH_NEXT", head, "indirect descriptor with NEXT set");
        limit = this.indirect.load(space, addr, len, head);
        words = this.indirect.words;
        base = this.indirect.base;
        idx = 0;
        count = 0;
        inIndirect = true;
        continue;
      }
      chain.addDescriptor(space, addr, len, (flags & VRING_DESC_F_WRITE) !== 0);
      if ((flags & VRING_DESC_F_NEXT) === 0) return;
      idx = flagsNext >>> 16;
      if (idx >= limit) throw ringFault("DESC_OUT_OF_RANGE", head, `next ${idx} past table of ${limit}`);
    }
  }

  push(chain: Chain, len: number): void {
    // The used ring may have been remapped since pop(): write where it is mapped now.
    if (this.generation !== this.ringSpace.generation) this.mapAreas();
    const slot = (this.usedIdx & this.mask) * 2;
    this.usedElems[slot] = chain.id;
    this.usedElems[slot + 1] = len;
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
  }

  publishUsed(): boolean {
    if (this.generation !== this.ringSpace.generation) this.mapAreas();
    const newIdx = this.usedIdx;
    const old = this.signalledUsed;
    if (newIdx === old && this.signalledValid) return false;
    // Release: used elements are written before used.idx (spec 2.7.14). Atomics.store is also the full
    // barrier the spec asks for between publishing idx and reading used_event / avail flags.
    Atomics.store(this.used16, 1, newIdx);
    this.signalledUsed = newIdx;
    if (!this.signalledValid) {
      this.signalledValid = true;
      return true;
    }
    if (this.eventIdx) {
      return vringNeedEvent(Atomics.load(this.avail, 2 + this.num), newIdx, old);
    }
    return (Atomics.load(this.avail, 0) & VRING_AVAIL_F_NO_INTERRUPT) === 0;
  }

  disableNotify(): void {
    this.ensureMapped();
    if (this.eventIdx) {
      // With EVENT_IDX the flag means nothing (spec 2.7.10): put avail_event one behind the next slot
      // instead, where no batch the driver publishes from here can cross it (Linux's vhost leaves the
      // event where it was, which costs one more kick per busy period).
      Atomics.store(this.used16, 2 + 4 * this.num, (this.lastAvail - 1) & 0xffff);
    } else {
      Atomics.store(this.used16, 0, VRING_USED_F_NO_NOTIFY);
    }
  }

  enableNotify(): boolean {
    this.ensureMapped();
    if (this.eventIdx) {
      // Ask for a kick when the driver makes slot lastAvail available (avail_event, spec 2.7.10).
      Atomics.store(this.used16, 2 + 4 * this.num, this.lastAvail);
    } else {
      Atomics.store(this.used16, 0, 0);
    }
    // The store above is a full barrier, so this re-read catches buffers added before the driver could
    // see the request, which would otherwise never be kicked.
    return Atomics.load(this.avail, 1) !== this.lastAvail;
  }

  getState(): RingState {
    return { availIdx: this.lastAvail, usedIdx: this.usedIdx };
  }

  /** Sets the ring position (vDPA set_vq_state / vhost SET_VRING_BASE); clears a fault. */
  setState(state: RingState): void {
    this.lastAvail = state.availIdx & 0xffff;
    this.availShadow = this.lastAvail;
    this.usedIdx = state.usedIdx & 0xffff;
    this.signalledUsed = this.usedIdx;
    this.signalledValid = false;
    this.broken = null;
  }

  /** Reads used.idx back from the ring (vhost-user does this when a ring address is set). */
  usedIdxFromRing(): number {
    this.ensureMapped();
    return Atomics.load(this.used16, 1);
  }
}
