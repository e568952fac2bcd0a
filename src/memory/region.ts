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
}

/** The largest region we create: keeps every region offset a small, exact integer. */
export const MAX_REGION_SIZE = 2 ** 40;

/** A region over a SharedArrayBuffer: shareable with worker threads, zero-filled at creation. */
export class SharedMemoryRegion implements MemoryRegion {
  readonly bytes: Buffer;
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
  }
}

/** Views of a region at a byte offset, for ring areas. The caller has checked bounds and alignment. */
export function u16View(region: MemoryRegion, offset: number, count: number): Uint16Array {
  return new Uint16Array(region.bytes.buffer, region.bytes.byteOffset + offset, count);
}
export function u32View(region: MemoryRegion, offset: number, count: number): Uint32Array {
  return new Uint32Array(region.bytes.buffer, region.bytes.byteOffset + offset, count);
}

const wordViews = new WeakMap<MemoryRegion, Uint32Array>();
/**
 * The whole region as 32-bit words (cached per region), so descriptor tables anywhere in it can be read
 * without creating a view per request. Requires the region to start 4-byte aligned, which every
 * ArrayBuffer and mapping does.
 */
export function regionWords(region: MemoryRegion): Uint32Array {
  let words = wordViews.get(region);
  if (!words) {
    words = new Uint32Array(region.bytes.buffer, region.bytes.byteOffset, region.bytes.byteLength >>> 2);
    wordViews.set(region, words);
  }
  return words;
}
