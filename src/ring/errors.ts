// Typed errors for virtqueue faults. A device that catches one stops that queue and sets NEEDS_RESET; a
// driver that catches one treats the device as broken. Translation faults (IOTLB_MISS, IOTLB_PERM,
// ADDR_OVERFLOW, ...) arrive as DmaFault from src/memory with the same shape: a stable `code`.

export type RingErrorCode =
  /** A split chain visits more descriptors than the queue has: it loops. */
  | "DESC_LOOP"
  /** A head index or a `next` field points past the descriptor table (or past an indirect table). */
  | "DESC_OUT_OF_RANGE"
  /** A chain holds more descriptors than this implementation accepts (packed: more than the ring). */
  | "CHAIN_TOO_LONG"
  /** An indirect descriptor whose length is zero or not a multiple of 16. */
  | "INDIRECT_BAD_LEN"
  /** An indirect descriptor inside an indirect table (virtio 1.x forbids it). */
  | "NESTED_INDIRECT"
  /** An indirect descriptor that also has NEXT set (virtio 1.x forbids it). */
  | "INDIRECT_WITH_NEXT"
  /** A device-readable descriptor after a device-writable one in the same chain. */
  | "WRITE_BEFORE_READ"
  /** The driver moved avail idx further ahead of the device than the queue size. */
  | "AVAIL_IDX_JUMP"
  /** The device moved used idx further ahead of the driver than the queue size. */
  | "USED_IDX_JUMP"
  /** The device returned a buffer id that is not in flight. */
  | "USED_ID_INVALID"
  /** The descriptor lengths of one chain add up past 2^32 - 1. */
  | "LEN_OVERFLOW"
  /** Bad queue parameters: size zero, too big, or (split) not a power of two. */
  | "QUEUE_SIZE_INVALID"
  /** An add() with no buffers, or more than the ring can ever hold. */
  | "BAD_REQUEST";

export class RingError extends Error {
  override readonly name = "RingError";
  constructor(
    readonly code: RingErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/** True when an error is a typed datapath fault (ring or DMA) rather than a bug. */
export function isDatapathFault(err: unknown): err is Error & { code: string } {
  return err instanceof Error && (err.name === "RingError" || err.name === "DmaFault");
}

// Constructors for the hot paths' faults, kept out of line so the functions that may throw them stay small
// enough to be inlined.

/** A fault in the chain whose head (split) or id (packed) is `chain`. */
export function ringFault(code: RingErrorCode, chain: number, what: string): RingError {
  return new RingError(code, `chain ${chain}: ${what}`);
}

export function availJump(idx: number, last: number, num: number): RingError {
  return new RingError("AVAIL_IDX_JUMP", `avail idx ${idx} is more than ${num} ahead of ${last}`);
}
