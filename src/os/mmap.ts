// Shared mappings of a file as ArrayBuffers, and their safe retirement.
//
// A mapping's ArrayBuffer outlives our intent to unmap it: any view (a ring's Uint16Array, a Buffer held by
// a device) still points at the address. munmap() there would turn a late access into a SIGSEGV that kills
// the daemon. So retire() first lays an anonymous, private, zero-filled mapping over the same range
// (MAP_FIXED replaces the file pages atomically and releases them): a stale view then reads zeros and its
// writes go nowhere. The overlay is munmap()ed only when the ArrayBuffer itself is garbage collected.
//
// What remains: a front-end that truncates an UNSEALED memory file below a mapped range makes accesses to
// the missing pages raise SIGBUS, which Node cannot catch. mapShared() checks the size against fstat at map
// time and reports whether the file is sealed against shrinking (F_SEAL_SHRINK); QEMU's memfd backends seal
// it. A front-end that shrinks an unsealed file after mapping can still crash the daemon: run such
// front-ends only if you trust them, or require seals (`requireShrinkSeal`).

import { c, check, failed, OsError, viewOf } from "./libc.js";
import { fileSize, getSeals, SEAL } from "./memfd.js";

const PROT_READ = 0x1;
const PROT_WRITE = 0x2;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_FIXED = 0x10;
const MAP_ANONYMOUS = 0x20;
const MAP_NORESERVE = 0x4000;
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;
export const PAGE_SIZE = 4096;

/** munmap()s an overlay once nothing can reach the ArrayBuffer over it any more. */
const overlays = new FinalizationRegistry<{ address: bigint; length: number }>((m) => {
  c.munmap(m.address, m.length);
});

export interface MapOptions {
  readOnly?: boolean;
  /** Refuse files not sealed against shrinking (F_SEAL_SHRINK). */
  requireShrinkSeal?: boolean;
}

export class Mapping {
  /** The requested bytes (from the requested offset, not the page-aligned one). */
  readonly buffer: ArrayBuffer;
  /** Whether the file was sealed against shrinking when mapped. */
  readonly shrinkSealed: boolean;
  private retired = false;

  constructor(
    /** Address of the whole (page-aligned) mapping. */
    readonly address: bigint,
    /** Length of the whole mapping. */
    readonly mappedLength: number,
    /** Where the requested bytes start within it. */
    readonly skew: number,
    readonly length: number,
    shrinkSealed: boolean,
  ) {
    this.buffer = viewOf(address + BigInt(skew), length);
    this.shrinkSealed = shrinkSealed;
  }

  get isRetired(): boolean {
    return this.retired;
  }

  /** Replaces the file pages with zero pages now; the address range is freed when the buffer is collected. */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    const at = c.mmap(
      this.address,
      this.mappedLength,
      PROT_READ | PROT_WRITE,
      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
      -1,
      0,
    ) as bigint;
    if (at === MAP_FAILED) {
      // Cannot happen short of address-space exhaustion; leaving the file mapped is the safe failure.
      throw failed("mmap(MAP_FIXED overlay)");
    }
    overlays.register(this.buffer, { address: this.address, length: this.mappedLength });
  }
}

/**
 * Maps `length` bytes of `fd` from `offset` (any alignment) shared and read-write (or read-only). The
 * file must hold the whole range now: a mapping past its end would fault on first touch.
 */
export function mapShared(fd: number, offset: number, length: number, opts: MapOptions = {}): Mapping {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length <= 0) {
    throw new OsError("EINVAL", "mmap", `bad range offset ${offset} length ${length}`);
  }
  const size = fileSize(fd);
  if (offset + length > size) {
    throw new OsError(
      "EOVERFLOW",
      "mmap",
      `fd ${fd} holds ${size} bytes, the mapping wants [${offset}, ${offset + length})`,
    );
  }
  const shrinkSealed = (getSeals(fd) & SEAL.SHRINK) !== 0;
  if (opts.requireShrinkSeal && !shrinkSealed) {
    throw new OsError("EPERM", "mmap", `fd ${fd} is not sealed against shrinking (F_SEAL_SHRINK)`);
  }
  const skew = offset % PAGE_SIZE;
  const mappedLength = Math.ceil((skew + length) / PAGE_SIZE) * PAGE_SIZE;
  const prot = opts.readOnly ? PROT_READ : PROT_READ | PROT_WRITE;
  const address = c.mmap(null, mappedLength, prot, MAP_SHARED, fd, offset - skew) as bigint;
  if (address === MAP_FAILED) throw failed("mmap", `fd ${fd} offset ${offset} length ${length}`);
  return new Mapping(address, mappedLength, skew, length, shrinkSealed);
}

/** munmap() of a mapping nobody holds a view of (tests, and mappings never handed out). */
export function unmapNow(m: Mapping): void {
  check(c.munmap(m.address, m.mappedLength) as number, "munmap");
}
