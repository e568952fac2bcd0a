// Device side of a packed virtqueue (virtio 1.x "Packed Virtqueues"): one descriptor ring shared both
// ways, availability and use told by the AVAIL/USED flag bits against each side's wrap counter, plus two
// event suppression structures.

import { ACCESS_READ, ACCESS_WRITE, type AddressSpace, u16View, u32View } from "../memory/index.js";
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
import { type Chain, DEFAULT_MAX_CHAIN, IndirectTableReader } from "./chain.js";
import { RingError } from "./errors.js";
import { addrOf, checkQueueSize } from "./host.js";
import type { DeviceRing, DeviceRingOptions, RingAddresses, RingState } from "./types.js";

const AVAIL_USED = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;

export class PackedDeviceRing implements DeviceRing {
  readonly format = "packed";
  readonly num: number;
  readonly eventIdx: boolean;
  readonly addresses: RingAddresses;
  broken: Error | null = null;

  private readonly ringSpace: AddressSpace;
  private readonly bufferSpace: AddressSpace;
  private readonly indirect: IndirectTableReader;
  private generation = -1;
  /** The ring as words (addr lo, addr hi, len, id | flags << 16) and as halves (flags at 8 * i + 7). */
  private desc32: Uint32Array = new Uint32Array(0);
  private desc16: Uint16Array = new Uint16Array(0);
  /** Driver event suppression (driver area): read by the device. */
  private driverEvent: Uint16Array = new Uint16Array(0);
  /** Device event suppression (device area): written by the device. */
  private deviceEvent: Uint16Array = new Uint16Array(0);

  private nextAvail = 0;
  private availWrap = 1;
  private nextUsed = 0;
  private usedWrap = 1;
  /** Ring slots covered by used elements since the last notification decision. */
  private usedSinceSignal = 0;
  /** Slot and flags of the first used element of the open batch, written last (see publishUsed). */
  private pendingSlot = -1;
  private pendingFlags = 0;
  private signalledValid = false;

  constructor(opts: DeviceRingOptions) {
    checkQueueSize(opts.num, false);
    this.num = opts.num;
    this.eventIdx = opts.eventIdx;
    this.addresses = { ...opts.addresses };
    this.ringSpace = opts.ringSpace;
    this.bufferSpace = opts.bufferSpace ?? opts.ringSpace;
    this.indirect = new IndirectTableReader(Math.max(opts.maxChain ?? DEFAULT_MAX_CHAIN, 1));
    this.mapAreas();
  }

  private mapAreas(): void {
    const a = this.addresses;
    const space = this.ringSpace;
    // The device both reads and writes descriptors (used elements overwrite available ones).
    const ringBytes = this.num * PACKED_DESC_SIZE;
    space.contiguous(a.desc, ringBytes, ACCESS_READ, PACKED_ALIGN.desc);
    const d = space.contiguous(a.desc, ringBytes, ACCESS_WRITE, PACKED_ALIGN.desc);
    const dr = space.contiguous(a.driver, PACKED_EVENT_SIZE, ACCESS_READ, PACKED_ALIGN.driverEvent);
    const dv = space.contiguous(a.device, PACKED_EVENT_SIZE, ACCESS_WRITE, PACKED_ALIGN.deviceEvent);
    this.desc32 = u32View(d.region, d.offset, this.num * 4);
    this.desc16 = u16View(d.region, d.offset, this.num * 8);
    this.driverEvent = u16View(dr.region, dr.offset, 2);
    this.deviceEvent = u16View(dv.region, dv.offset, 2);
    this.generation = space.generation;
  }

  private ensureMapped(): void {
    if (this.generation !== this.ringSpace.generation) this.mapAreas();
  }

  /** Whether the descriptor at `slot` is available for the wrap counter `wrap` (spec 2.8.1). */
  private isAvail(slot: number, wrap: number): boolean {
    // Acquire: the driver writes a chain's head flags last, so the rest of the chain is visible after this.
    const flags = Atomics.load(this.desc16, slot * 8 + 7);
    const avail = (flags & VRING_PACKED_DESC_F_AVAIL) !== 0 ? 1 : 0;
    const used = (flags & VRING_PACKED_DESC_F_USED) !== 0 ? 1 : 0;
    return avail === wrap && used !== wrap;
  }

  hasAvailable(): boolean {
    if (this.broken) return false;
    this.ensureMapped();
    return this.isAvail(this.nextAvail, this.availWrap);
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
    if (!this.isAvail(this.nextAvail, this.availWrap)) return false;
    chain.reset();
    const words = this.desc32;
    const space = this.bufferSpace;
    const num = this.num;
    let slot = this.nextAvail;
    let wrap = this.availWrap;
    let count = 0;
    for (;;) {
      if (++count > num)
        throw new RingError("CHAIN_TOO_LONG", `chain at slot ${this.nextAvail}: longer than the ring`);
      const w = slot * 4;
      const addr = addrOf(words[w], words[w + 1]);
      const len = words[w + 2];
      const idFlags = words[w + 3];
      const flags = idFlags >>> 16;
      // The buffer id is the one in the chain's last descriptor (spec 2.8.6); keep the latest.
      chain.id = idFlags & 0xffff;
      if (flags & VRING_DESC_F_INDIRECT) {
        if (flags & VRING_DESC_F_NEXT) {
          throw new RingError(
            "INDIRECT_WITH_NEXT",
            `chain at slot ${slot}: indirect descriptor with NEXT set`,
          );
        }
        this.walkIndirect(space, addr, len, chain);
      } else {
        chain.addDescriptor(space, addr, len, (flags & VRING_DESC_F_WRITE) !== 0);
      }
      slot++;
      if (slot === num) {
        slot = 0;
        wrap ^= 1;
      }
      if ((flags & VRING_DESC_F_NEXT) === 0) break;
    }
    chain.descCount = count;
    this.nextAvail = slot;
    this.availWrap = wrap;
    return true;
  }

  /** An indirect table of packed descriptors: every entry is used in order; NEXT has no meaning there. */
  private walkIndirect(space: AddressSpace, addr: number, len: number, chain: Chain): void {
    const entries = this.indirect.load(space, addr, len, chain.id);
    const words = this.indirect.words;
    const base = this.indirect.base;
    for (let k = 0; k < entries; k++) {
      const w = base + k * 4;
      const flags = words[w + 3] >>> 16;
      if (flags & VRING_DESC_F_INDIRECT) {
        throw new RingError("NESTED_INDIRECT", `chain ${chain.id}: indirect descriptor in an indirect table`);
      }
      chain.addDescriptor(
        space,
        addrOf(words[w], words[w + 1]),
        words[w + 2],
        (flags & VRING_DESC_F_WRITE) !== 0,
      );
    }
  }

  push(chain: Chain, len: number): void {
    // The ring may have been remapped since pop(): write where it is mapped now.
    if (this.generation !== this.ringSpace.generation) this.mapAreas();
    const slot = this.nextUsed;
    const w = slot * 4;
    this.desc32[w + 2] = len;
    this.desc16[slot * 8 + 6] = chain.id;
    const flags = (this.usedWrap ? AVAIL_USED : 0) | (len > 0 ? VRING_DESC_F_WRITE : 0);
    if (this.pendingSlot < 0) {
      // The batch's first element is made visible last, in publishUsed(), so the driver sees the whole
      // batch at once (QEMU's virtqueue_packed_flush does the same).
      this.pendingSlot = slot;
      this.pendingFlags = flags;
    } else {
      this.desc16[slot * 8 + 7] = flags;
    }
    let next = slot + chain.descCount;
    if (next >= this.num) {
      next -= this.num;
      this.usedWrap ^= 1;
    }
    this.nextUsed = next;
    this.usedSinceSignal += chain.descCount;
  }

  publishUsed(): boolean {
    if (this.generation !== this.ringSpace.generation) this.mapAreas();
    if (this.pendingSlot >= 0) {
      // Release: ids, lengths and later flags are visible before the first element's flags.
      Atomics.store(this.desc16, this.pendingSlot * 8 + 7, this.pendingFlags);
      this.pendingSlot = -1;
    }
    // getState() may have made the batch visible already; the notification decision is still owed.
    if (this.usedSinceSignal === 0) return !this.signalledValid && this.markSignalled();
    const added = this.usedSinceSignal;
    this.usedSinceSignal = 0;
    if (!this.signalledValid) return this.markSignalled();
    const flags = Atomics.load(this.driverEvent, 1);
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;
    // Event at a descriptor: the window (old, new] of used positions, with positions of the previous lap
    // shifted down by the ring size (as Linux's virtqueue_kick_prepare_packed does on its side).
    const offWrap = Atomics.load(this.driverEvent, 0);
    let eventIdx = offWrap & 0x7fff;
    if (offWrap >>> 15 !== this.usedWrap) eventIdx -= this.num;
    const newIdx = this.nextUsed;
    return vringNeedEvent(eventIdx, newIdx, newIdx - added);
  }

  private markSignalled(): boolean {
    this.signalledValid = true;
    return true;
  }

  disableNotify(): void {
    this.ensureMapped();
    Atomics.store(this.deviceEvent, 1, RING_EVENT_FLAGS_DISABLE);
  }

  enableNotify(): boolean {
    this.ensureMapped();
    if (this.eventIdx) {
      this.deviceEvent[0] = this.nextAvail | (this.availWrap << 15);
      Atomics.store(this.deviceEvent, 1, RING_EVENT_FLAGS_DESC);
    } else {
      Atomics.store(this.deviceEvent, 1, RING_EVENT_FLAGS_ENABLE);
    }
    return this.isAvail(this.nextAvail, this.availWrap);
  }

  /**
   * The ring position. Used elements pushed but not yet published are made visible first: the state
   * counts them, and a ring that takes this state over could not publish the batch's first element.
   */
  getState(): RingState {
    if (this.pendingSlot >= 0) {
      this.ensureMapped();
      Atomics.store(this.desc16, this.pendingSlot * 8 + 7, this.pendingFlags);
      this.pendingSlot = -1;
    }
    return {
      availIdx: this.nextAvail,
      availWrap: this.availWrap,
      usedIdx: this.nextUsed,
      usedWrap: this.usedWrap,
    };
  }

  setState(state: RingState): void {
    if (state.availIdx >= this.num || state.usedIdx >= this.num) {
      throw new RingError(
        "DESC_OUT_OF_RANGE",
        `packed state ${state.availIdx}/${state.usedIdx} past ring of ${this.num}`,
      );
    }
    this.nextAvail = state.availIdx;
    this.availWrap = state.availWrap === 0 ? 0 : 1;
    this.nextUsed = state.usedIdx;
    this.usedWrap = state.usedWrap === 0 ? 0 : 1;
    this.pendingSlot = -1;
    this.usedSinceSignal = 0;
    this.signalledValid = false;
    this.broken = null;
  }
}
