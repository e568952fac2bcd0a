// Memory a device can be given access to. Today a region is a SharedArrayBuffer; a memfd mapping (for
// vhost-user front-ends) implements the same interface later, so nothing above this file knows which.

import { MemoryError } from "./errors.js";

/** A span of host memory that IOTLB entries can point into. */
export interface MemoryRegion {
  /** For logs and errors. */
  readonly name: string;
  /** Bytes in the region. */
  readonly size: number;
  /**
   * The whole region as a Buffer (a Uint8Array with offset-based copy(), which copies without creating a
   * view object per call: the hot path's reason to prefer it over subarray()).
   */
  readonly bytes: Buffer;
  /** The whole region as 32-bit words (floor(size / 4) of them), for descriptor reads and small copies. */
  readonly words: Uint32Array;
}

/** The largest region we create: keeps every region offset a small, exact integer. */
export const MAX_REGION_SIZE = 2 ** 40;

/** A region over a SharedArrayBuffer: shareable with worker threads, zero-filled at creation. */
export class SharedMemoryRegion implements MemoryRegion {
  readonly bytes: Buffer;
  readonly words: Uint32Array;
  readonly buffer: SharedArrayBuffer;

  constructor(
    readonly size: number,
    readonly name = "shm",
  ) {
    if (!Number.isSafeInteger(size) || size <= 0 || size > MAX_REGION_SIZE) {
      throw new MemoryError("REGION_INVALID", `region size ${size} must be an integer in 1..2^40`);
    }
    this.buffer = new SharedArrayBuffer(size);
    this.bytes = Buffer.from(this.buffer);
    this.words = new Uint32Array(this.buffer, 0, Math.floor(size / 4));
  }
}

/** Views of a region at a byte offset, for ring areas. The caller has checked bounds and alignment. */
export function u16View(region: MemoryRegion, offset: number, count: number): Uint16Array {
  return new Uint16Array(region.bytes.buffer, region.bytes.byteOffset + offset, count);
}
export function u32View(region: MemoryRegion, offset: number, count: number): Uint32Array {
  return new Uint32Array(region.bytes.buffer, region.bytes.byteOffset + offset, count);
}
