// The allocator drivers use for rings and buffers: one region, mapped at a fixed IOVA base into whatever
// IOTLBs the driver's device translates through, carved into blocks with a first-fit free list.
// Allocation happens at setup (rings, request slots), so O(number of free blocks) is fine here.

import { MemoryError, PERM_RW, type Perm } from "./errors.js";
import type { Iotlb } from "./iotlb.js";
import { type MemoryRegion, SharedMemoryRegion } from "./region.js";

/** A block handed out by a DmaPool: the address a device uses, and the driver's own view of the bytes. */
export interface DmaBuffer {
  /** Address to put in descriptors and ring address registers. */
  readonly iova: number;
  readonly size: number;
  /** Byte offset in the pool's region. */
  readonly offset: number;
  /** The bytes, for the driver (a Buffer over the same memory: no copy). */
  readonly bytes: Buffer;
}

export interface DmaPoolStats {
  size: number;
  inUse: number;
  peakInUse: number;
  allocations: number;
  frees: number;
  failures: number;
  liveBlocks: number;
}

export interface DmaPoolOptions {
  /** Bytes in the pool. */
  size: number;
  /** IOVA of the first byte; page aligned by default so rings of any alignment fit. */
  iovaBase?: number;
  /** Use this region instead of creating a SharedArrayBuffer one. */
  region?: MemoryRegion;
  name?: string;
}

interface FreeBlock {
  offset: number;
  size: number;
}

export class DmaPool {
  readonly region: MemoryRegion;
  readonly iovaBase: number;
  readonly size: number;
  readonly name: string;
  /** Sorted by offset, coalesced on free. */
  private free: FreeBlock[];
  /** offset -> size of every live allocation, so free() can be checked. */
  private live = new Map<number, number>();
  private counters = { inUse: 0, peakInUse: 0, allocations: 0, frees: 0, failures: 0 };

  constructor(opts: DmaPoolOptions) {
    this.name = opts.name ?? "dma-pool";
    this.region = opts.region ?? new SharedMemoryRegion(opts.size, this.name);
    if (!Number.isSafeInteger(opts.size) || opts.size <= 0 || opts.size > this.region.size) {
      throw new MemoryError(
        "REGION_INVALID",
        `pool of ${opts.size} bytes does not fit region ${this.region.name}`,
      );
    }
    this.size = opts.size;
    this.iovaBase = opts.iovaBase ?? 0x1000_0000;
    if (!Number.isSafeInteger(this.iovaBase) || this.iovaBase < 0 || this.iovaBase % 4096 !== 0) {
      throw new MemoryError("REGION_INVALID", `pool iova base ${this.iovaBase} must be page aligned`);
    }
    this.free = [{ offset: 0, size: this.size }];
  }

  /**
   * Allocates `size` bytes aligned to `align` (a power of two) in IOVA space. The bytes are zeroed, so a
   * fresh ring starts in the state the spec requires (all indices and flags 0).
   */
  alloc(size: number, align = 64): DmaBuffer {
    if (!Number.isSafeInteger(size) || size <= 0 || align <= 0 || (align & (align - 1)) !== 0) {
      throw new MemoryError("DMA_POOL_BAD_REQUEST", `bad request: size ${size}, align ${align}`);
    }
    for (let i = 0; i < this.free.length; i++) {
      const block = this.free[i];
      // Align the IOVA; iovaBase is page aligned, so aligning the offset aligns both for align <= 4096.
      const start = alignUp(this.iovaBase + block.offset, align) - this.iovaBase;
      const pad = start - block.offset;
      if (pad + size > block.size) continue;
      const rest = block.size - pad - size;
      const replacement: FreeBlock[] = [];
      if (pad > 0) replacement.push({ offset: block.offset, size: pad });
      if (rest > 0) replacement.push({ offset: start + size, size: rest });
      this.free.splice(i, 1, ...replacement);
      this.live.set(start, size);
      const c = this.counters;
      c.allocations++;
      c.inUse += size;
      if (c.inUse > c.peakInUse) c.peakInUse = c.inUse;
      this.region.bytes.fill(0, start, start + size);
      return {
        iova: this.iovaBase + start,
        size,
        offset: start,
        bytes: this.region.bytes.subarray(start, start + size),
      };
    }
    this.counters.failures++;
    throw new MemoryError(
      "DMA_POOL_EXHAUSTED",
      `${this.name}: no free block of ${size} bytes aligned to ${align} (${this.counters.inUse} of ${this.size} in use)`,
    );
  }

  /** Returns a block to the pool. Freeing anything not live (twice, or a made-up address) is an error. */
  release(buf: DmaBuffer | number): void {
    const iova = typeof buf === "number" ? buf : buf.iova;
    const offset = iova - this.iovaBase;
    const size = this.live.get(offset);
    if (size === undefined) {
      throw new MemoryError(
        "DMA_POOL_BAD_FREE",
        `${this.name}: iova 0x${iova.toString(16)} is not allocated`,
      );
    }
    this.live.delete(offset);
    this.counters.inUse -= size;
    this.counters.frees++;
    // Insert in offset order, then merge with the neighbours it touches.
    let i = 0;
    while (i < this.free.length && this.free[i].offset < offset) i++;
    this.free.splice(i, 0, { offset, size });
    if (i + 1 < this.free.length && offset + size === this.free[i + 1].offset) {
      this.free[i].size += this.free[i + 1].size;
      this.free.splice(i + 1, 1);
    }
    if (i > 0 && this.free[i - 1].offset + this.free[i - 1].size === offset) {
      this.free[i - 1].size += this.free[i].size;
      this.free.splice(i, 1);
    }
  }

  /** Maps the whole pool into an IOTLB at its IOVA base (virtio_vdpa does this for every ASID in use). */
  mapInto(iotlb: Iotlb, perm: Perm = PERM_RW): void {
    iotlb.map(this.iovaBase, this.size, this.region, 0, perm);
  }

  /** Removes the pool's range from an IOTLB. */
  unmapFrom(iotlb: Iotlb): void {
    iotlb.unmap(this.iovaBase, this.size);
  }

  /** The driver's view of bytes at an IOVA inside the pool (for reading what a device wrote). */
  bytesAt(iova: number, len: number): Buffer {
    const off = iova - this.iovaBase;
    if (off < 0 || len < 0 || off + len > this.size) {
      throw new MemoryError(
        "DMA_POOL_RANGE",
        `${this.name}: iova 0x${iova.toString(16)}+${len} outside pool`,
      );
    }
    return this.region.bytes.subarray(off, off + len);
  }

  stats(): DmaPoolStats {
    return { size: this.size, ...this.counters, liveBlocks: this.live.size };
  }
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}
