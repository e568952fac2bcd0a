// What the device side hands out per request (a Chain) and what the driver side takes in (a BufferList).
// Both are allocated once and refilled, so the hot path allocates nothing.

import {
  ACCESS_READ,
  ACCESS_WRITE,
  type AddressSpace,
  type MemoryRegion,
  SegmentList,
} from "../memory/index.js";
import { RingError, ringFault } from "./errors.js";
import { TWO_32 } from "./host.js";

/** Longest chain (in descriptors, indirect ones included) a device accepts by default. */
export const DEFAULT_MAX_CHAIN = 1024;

/**
 * One available buffer as the device sees it: its id (split: head index; packed: buffer id), how many
 * ring slots it occupied (packed rings advance the used index by this), and its translated segments.
 */
export class Chain {
  id = 0;
  /** Ring descriptors this chain used (an indirect chain uses one). */
  descCount = 0;
  readonly readable: SegmentList;
  readonly writable: SegmentList;

  constructor(maxSegments = DEFAULT_MAX_CHAIN + 64) {
    this.readable = new SegmentList(maxSegments);
    this.writable = new SegmentList(maxSegments);
  }

  /** Bytes the device may read. */
  get readLen(): number {
    return this.readable.total;
  }

  /** Bytes the device may write. */
  get writeLen(): number {
    return this.writable.total;
  }

  reset(): void {
    this.readable.clear();
    this.writable.clear();
    this.descCount = 0;
  }

  /**
   * Adds one data descriptor: enforces readable-before-writable and the 32-bit total length (the used
   * element's len field is 32 bits), then translates it through `space`.
   */
  addDescriptor(space: AddressSpace, addr: number, len: number, writable: boolean): void {
    if (this.readable.total + this.writable.total + len > 0xffffffff) {
      throw ringFault("LEN_OVERFLOW", this.id, "descriptor lengths add up past 2^32 - 1");
    }
    if (writable) {
      space.translateInto(addr, len, ACCESS_WRITE, this.writable);
    } else {
      if (this.writable.count > 0) {
        throw new RingError(
          "WRITE_BEFORE_READ",
          `chain ${this.id}: readable descriptor after a writable one`,
        );
      }
      space.translateInto(addr, len, ACCESS_READ, this.readable);
    }
  }
}

/**
 * Reads indirect descriptor tables. When a table is one aligned piece of one region it is read in place
 * through the region's cached word view; otherwise (it crosses IOTLB entries into different regions) it
 * is copied into a preallocated scratch table. Either way nothing is allocated per request.
 */
export class IndirectTableReader {
  /** Words of the table most recently loaded, and the index of its first word. */
  words: Uint32Array = new Uint32Array(0);
  base = 0;
  private readonly scratch: Uint32Array;
  private readonly scratchBytes: Uint8Array;
  private readonly segs = new SegmentList(64);

  constructor(readonly maxEntries: number) {
    this.scratch = new Uint32Array(maxEntries * 4);
    this.scratchBytes = new Uint8Array(this.scratch.buffer);
  }

  /** Validates an indirect descriptor's length and loads its table; returns the number of entries. */
  load(space: AddressSpace, addr: number, len: number, chainId: number): number {
    if (len === 0 || (len & 15) !== 0) {
      throw new RingError(
        "INDIRECT_BAD_LEN",
        `chain ${chainId}: indirect table length ${len} is not a multiple of 16`,
      );
    }
    const entries = len >>> 4;
    if (entries > this.maxEntries) {
      throw new RingError(
        "CHAIN_TOO_LONG",
        `chain ${chainId}: indirect table of ${entries} entries (max ${this.maxEntries})`,
      );
    }
    const segs = this.segs;
    segs.clear();
    space.translateInto(addr, len, ACCESS_READ, segs);
    const region: MemoryRegion = segs.regions[0];
    if (segs.count === 1 && (segs.offsets[0] & 3) === 0) {
      this.words = region.words;
      this.base = segs.offsets[0] / 4;
    } else {
      segs.copyTo(this.scratchBytes, 0, len);
      this.words = this.scratch;
      this.base = 0;
    }
    return entries;
  }
}

/**
 * The driver's description of one request: `count` buffers, the first `outCount` device-readable and the
 * rest device-writable (virtio requires that order). Reused across requests.
 */
export class BufferList {
  /** Addresses split into 32-bit words once, here, so add() copies words instead of dividing. */
  readonly addrLo: Uint32Array;
  readonly addrHi: Uint32Array;
  readonly lens: Uint32Array;
  count = 0;
  outCount = 0;

  constructor(readonly capacity = 64) {
    this.addrLo = new Uint32Array(capacity);
    this.addrHi = new Uint32Array(capacity);
    this.lens = new Uint32Array(capacity);
  }

  clear(): this {
    this.count = 0;
    this.outCount = 0;
    return this;
  }

  /** Appends a device-readable buffer; all of them must come before the first writable one. */
  out(addr: number, len: number): this {
    if (this.count !== this.outCount)
      throw new RingError("BAD_REQUEST", "readable buffer after a writable one");
    this.push(addr, len);
    this.outCount++;
    return this;
  }

  /** Appends a device-writable buffer. */
  in(addr: number, len: number): this {
    this.push(addr, len);
    return this;
  }

  /** Address of buffer i. */
  addr(i: number): number {
    return this.addrHi[i] * TWO_32 + this.addrLo[i];
  }

  private push(addr: number, len: number): void {
    if (this.count === this.capacity)
      throw new RingError("BAD_REQUEST", `more than ${this.capacity} buffers`);
    if (!Number.isSafeInteger(addr) || addr < 0)
      throw new RingError("BAD_REQUEST", `bad buffer address ${addr}`);
    this.addrLo[this.count] = addr >>> 0;
    this.addrHi[this.count] = (addr - (addr >>> 0)) / TWO_32;
    this.lens[this.count] = len;
    this.count++;
  }
}
