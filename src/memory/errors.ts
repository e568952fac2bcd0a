// Typed errors of the memory layer. Every failure carries a stable `code` a caller can switch on, and the
// address facts needed to debug it; messages are for people, codes are for programs.

/** How a device wants to touch memory. Bit values match Linux's VHOST_ACCESS_RO / VHOST_ACCESS_WO. */
export const ACCESS_READ = 1;
export const ACCESS_WRITE = 2;
export type Access = typeof ACCESS_READ | typeof ACCESS_WRITE;

/** IOTLB entry permission: what the device may do with the range (Linux VHOST_ACCESS_RO/WO/RW). */
export const PERM_RO = 1;
export const PERM_WO = 2;
export const PERM_RW = 3;
export type Perm = typeof PERM_RO | typeof PERM_WO | typeof PERM_RW;

export type DmaFaultCode =
  /** No IOTLB entry covers the address: the driver never mapped it (or unmapped it). */
  | "IOTLB_MISS"
  /** An entry covers the address but forbids the access (a device write to a read-only mapping). */
  | "IOTLB_PERM"
  /** iova + len does not fit the 53-bit IOVA space this implementation translates. */
  | "ADDR_OVERFLOW"
  /** The buffer crosses more IOTLB entries than the caller's segment list can hold. */
  | "SEGMENTS_EXHAUSTED"
  /** A ring area must be one contiguous, suitably aligned piece of one region and is not. */
  | "NOT_CONTIGUOUS";

/** A translation failure: what the device tried to reach and why it could not. */
export class DmaFault extends Error {
  override readonly name = "DmaFault";
  constructor(
    readonly code: DmaFaultCode,
    readonly iova: number,
    readonly len: number,
    readonly access: number,
    detail?: string,
  ) {
    super(
      `${code}: ${access === ACCESS_WRITE ? "write" : "read"} of ${len} bytes at iova 0x${iova.toString(16)}` +
        (detail ? ` (${detail})` : ""),
    );
  }
}

export type MemoryErrorCode =
  /** A map or unmap request that is malformed: zero size, range overflow, region too small, bad perm. */
  | "IOTLB_INVALID"
  /** begin/commit used out of order. */
  | "IOTLB_BATCH"
  /** The DMA pool has no free block of the requested size and alignment. */
  | "DMA_POOL_EXHAUSTED"
  /** free() of an address the pool did not hand out (or already freed). */
  | "DMA_POOL_BAD_FREE"
  /** An allocation request that makes no sense (size <= 0, alignment not a power of two). */
  | "DMA_POOL_BAD_REQUEST"
  /** An address range that is not inside the pool. */
  | "DMA_POOL_RANGE"
  /** A region was requested with an unusable size. */
  | "REGION_INVALID";

/** A control-path misuse of the memory API (not a device fault). */
export class MemoryError extends Error {
  override readonly name = "MemoryError";
  constructor(
    readonly code: MemoryErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}
