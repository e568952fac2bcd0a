// A memory region that is a shared mapping of another process's memory file (a vhost-user front-end's
// guest RAM), so devices reach it through the same IOTLB and copies as any other region.

import type { Mapping } from "../os/mmap.js";
import { MemoryError } from "./errors.js";
import { MAX_REGION_SIZE, type MemoryRegion } from "./region.js";

export class MappedMemoryRegion implements MemoryRegion {
  readonly bytes: Buffer;
  readonly words: Uint32Array;
  readonly size: number;

  constructor(
    private readonly mapping: Mapping,
    readonly name: string,
  ) {
    const size = mapping.buffer.byteLength;
    if (size <= 0 || size > MAX_REGION_SIZE) {
      throw new MemoryError("REGION_INVALID", `mapped region ${name} of ${size} bytes`);
    }
    this.size = size;
    this.bytes = Buffer.from(mapping.buffer);
    // A mapping may start at any byte offset of the file, but its buffer starts at the mapping's own
    // first byte, so the word view is aligned whenever the front-end's offset is (QEMU's always is).
    this.words = new Uint32Array(mapping.buffer, 0, Math.floor(size / 4));
  }

  /** Unmaps the file (stale views then read zeros, see src/os/mmap.ts). */
  retire(): void {
    this.mapping.retire();
  }

  get isRetired(): boolean {
    return this.mapping.isRetired;
  }
}
