// What a device reads and writes through: an IOTLB (the device's own, per ASID, or the platform IOMMU
// domain the bus gave it) turned into zero-copy segments of host memory.

import { copyRegion } from "./copy.js";
import { ACCESS_READ, ACCESS_WRITE, type Access, DmaFault, type DmaFaultCode } from "./errors.js";
import { IOVA_LAST, type Iotlb } from "./iotlb.js";
import type { MemoryRegion } from "./region.js";

/**
 * A reusable list of (region, offset, length) segments. Preallocated once and refilled per request so
 * translation allocates nothing on the hot path. Offsets are byte offsets into `regions[i].bytes`.
 */
export class SegmentList {
  readonly regions: MemoryRegion[];
  readonly offsets: Float64Array;
  readonly lengths: Uint32Array;
  count = 0;
  /** Sum of lengths. */
  total = 0;

  constructor(readonly capacity: number) {
    this.regions = new Array<MemoryRegion>(capacity);
    this.offsets = new Float64Array(capacity);
    this.lengths = new Uint32Array(capacity);
  }

  clear(): void {
    this.count = 0;
    this.total = 0;
  }

  /** A copy of segment i as a Uint8Array view (allocates: for tests and the control path). */
  view(i: number): Uint8Array {
    const off = this.offsets[i];
    return this.regions[i].bytes.subarray(off, off + this.lengths[i]);
  }

  /** Concatenated bytes of all segments (allocates: for tests and the control path). */
  toBytes(): Uint8Array {
    const out = new Uint8Array(this.total);
    let at = 0;
    for (let i = 0; i < this.count; i++) {
      const off = this.offsets[i];
      this.regions[i].bytes.copy(out, at, off, off + this.lengths[i]);
      at += this.lengths[i];
    }
    return out;
  }

  /**
   * Copies up to `len` bytes of `src` starting at `srcOff` into the segments, in order. Returns the bytes
   * copied (less than len when the segments are shorter).
   */
  copyFrom(src: Uint8Array, srcOff: number, len: number): number {
    let done = 0;
    for (let i = 0; i < this.count && done < len; i++) {
      const n = Math.min(this.lengths[i], len - done);
      this.regions[i].bytes.set(src.subarray(srcOff + done, srcOff + done + n), this.offsets[i]);
      done += n;
    }
    return done;
  }

  /** Like copyFrom, from a region (device-private memory): the allocation-free hot-path variant. */
  copyFromRegion(src: MemoryRegion, srcOff: number, len: number): number {
    let done = 0;
    for (let i = 0; i < this.count && done < len; i++) {
      const n = Math.min(this.lengths[i], len - done);
      copyRegion(src, srcOff + done, this.regions[i], this.offsets[i], n);
      done += n;
    }
    return done;
  }

  /**
   * Copies up to `len` bytes of these segments, in order, into the segments of `dst`, in order, with no
   * buffer in between (one device buffer into another: a frame looped from TX to RX). Returns the bytes
   * copied: the least of len and the two lists' totals.
   */
  copyToSegments(dst: SegmentList, len: number): number {
    const n = Math.min(len, this.total, dst.total);
    if (n <= 0) return 0;
    // The usual case: each side is one segment (one descriptor in one region).
    if (this.lengths[0] >= n && dst.lengths[0] >= n) {
      copyRegion(this.regions[0], this.offsets[0], dst.regions[0], dst.offsets[0], n);
      return n;
    }
    let si = 0;
    let sAt = 0;
    let di = 0;
    let dAt = 0;
    let done = 0;
    while (done < n) {
      const sLeft = this.lengths[si] - sAt;
      const dLeft = dst.lengths[di] - dAt;
      const k = Math.min(sLeft, dLeft, n - done);
      copyRegion(this.regions[si], this.offsets[si] + sAt, dst.regions[di], dst.offsets[di] + dAt, k);
      done += k;
      sAt += k;
      dAt += k;
      if (sAt === this.lengths[si]) {
        si++;
        sAt = 0;
      }
      if (dAt === dst.lengths[di]) {
        di++;
        dAt = 0;
      }
    }
    return n;
  }

  /** Copies up to `len` bytes out of the segments, in order, into dst at dstOff. Returns bytes copied. */
  copyTo(dst: Uint8Array, dstOff: number, len: number): number {
    let done = 0;
    for (let i = 0; i < this.count && done < len; i++) {
      const n = Math.min(this.lengths[i], len - done);
      const off = this.offsets[i];
      this.regions[i].bytes.copy(dst, dstOff + done, off, off + n);
      done += n;
    }
    return done;
  }

  /**
   * Like copyTo, into a region: the allocation-free hot-path variant. Starts `skip` bytes into the
   * segments (past a request header, say).
   */
  copyToRegion(dst: MemoryRegion, dstOff: number, len: number, skip = 0): number {
    let done = 0;
    for (let i = 0; i < this.count && done < len; i++) {
      const segLen = this.lengths[i];
      if (skip >= segLen) {
        skip -= segLen;
        continue;
      }
      const n = Math.min(segLen - skip, len - done);
      copyRegion(this.regions[i], this.offsets[i] + skip, dst, dstOff + done, n);
      done += n;
      skip = 0;
    }
    return done;
  }
}

/** Where a ring area lives: one region and an offset in it. */
export interface ContiguousArea {
  region: MemoryRegion;
  offset: number;
}

export class AddressSpace {
  constructor(
    public iotlb: Iotlb,
    readonly name = iotlb.name,
  ) {}

  /** Changes which IOTLB this space reads (a virtqueue group moved to another ASID). */
  attach(iotlb: Iotlb): void {
    this.iotlb = iotlb;
  }

  /** Bumps whenever the mapping seen through this space may have changed. */
  get generation(): number {
    return this.iotlb.generation;
  }

  /**
   * Appends the segments backing [iova, iova + len) to `out`, or throws a DmaFault. Adjacent entries that
   * continue the same region are merged into one segment. A zero length appends nothing.
   */
  translateInto(iova: number, len: number, access: Access, out: SegmentList): void {
    if (len === 0) return;
    if (!(len > 0)) throw simpleFault("ADDR_OVERFLOW", iova, len, access);
    // Compare by subtraction: iova + len can round in a double once it passes 2^53, hiding an overflow.
    if (!(iova >= 0 && iova <= IOVA_LAST - (len - 1))) throw simpleFault("ADDR_OVERFLOW", iova, len, access);
    const last = iova + len - 1;
    const t = this.iotlb;
    const firsts = t.firsts;
    const lasts = t.lasts;
    let cur = iova;
    for (;;) {
      // Binary search inlined from Iotlb.find(): this runs once per descriptor.
      let lo = 0;
      let hi = firsts.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        if (firsts[mid] <= cur) lo = mid + 1;
        else hi = mid - 1;
      }
      if (hi < 0 || lasts[hi] < cur) throw missFault(iova, len, access, cur);
      if ((t.perms[hi] & access) === 0) throw permFault(iova, len, access, t.perms[hi]);
      const entryLast = lasts[hi];
      const end = Math.min(last, entryLast);
      const n = end - cur + 1;
      const region = t.regions[hi];
      const off = t.offsets[hi] + (cur - firsts[hi]);
      const k = out.count;
      if (k > 0 && out.regions[k - 1] === region && out.offsets[k - 1] + out.lengths[k - 1] === off) {
        out.lengths[k - 1] += n;
      } else {
        if (k === out.capacity) throw simpleFault("SEGMENTS_EXHAUSTED", iova, len, access);
        out.regions[k] = region;
        out.offsets[k] = off;
        out.lengths[k] = n;
        out.count = k + 1;
      }
      out.total += n;
      if (end === last) return;
      cur = end + 1;
    }
  }

  /** Convenience: the segments of one buffer as a fresh list (allocates; not for hot paths). */
  translate(iova: number, len: number, access: Access, maxSegments = 64): SegmentList {
    const out = new SegmentList(maxSegments);
    this.translateInto(iova, len, access, out);
    return out;
  }

  /**
   * Resolves a ring area that must be one contiguous piece of one region, aligned to `align` bytes
   * within it (typed-array views need that). Used at queue setup and after a remap, not per request.
   */
  contiguous(iova: number, len: number, access: Access, align: number): ContiguousArea {
    // One segment is all a ring area may have: a second one already means NOT_CONTIGUOUS.
    const segs = new SegmentList(2);
    try {
      this.translateInto(iova, len, access, segs);
    } catch (err) {
      if (!(err instanceof DmaFault && err.code === "SEGMENTS_EXHAUSTED")) throw err;
    }
    if (segs.count !== 1) {
      throw new DmaFault("NOT_CONTIGUOUS", iova, len, access, "spans 2 or more regions");
    }
    const offset = segs.offsets[0];
    if (offset % align !== 0) {
      throw new DmaFault("NOT_CONTIGUOUS", iova, len, access, `host offset not ${align}-byte aligned`);
    }
    return { region: segs.regions[0], offset };
  }

  /** Reads len bytes at iova (control path: config, control queue payloads). */
  read(iova: number, len: number): Uint8Array {
    return this.translate(iova, len, ACCESS_READ, 1024).toBytes();
  }

  /** Writes data at iova (control path). */
  write(iova: number, data: Uint8Array): void {
    const segs = this.translate(iova, data.length, ACCESS_WRITE, 1024);
    segs.copyFrom(data, 0, data.length);
  }
}

// Fault construction lives out of line so translateInto stays small enough for V8 to inline into the
// descriptor walk.
function missFault(iova: number, len: number, access: number, at: number): DmaFault {
  return new DmaFault("IOTLB_MISS", iova, len, access, `at 0x${at.toString(16)}`);
}

function permFault(iova: number, len: number, access: number, perm: number): DmaFault {
  const name = perm === 1 ? "read-only" : perm === 2 ? "write-only" : "read-write";
  return new DmaFault("IOTLB_PERM", iova, len, access, `entry is ${name}`);
}

function simpleFault(code: DmaFaultCode, iova: number, len: number, access: number): DmaFault {
  return new DmaFault(code, iova, len, access);
}
