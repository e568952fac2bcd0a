// Ring memory is little-endian by spec; the engines read it through typed arrays, which use the host's
// byte order. Every machine Node ships for in this project's scope (x86-64, arm64) is little-endian; refuse
// to run anywhere else rather than corrupt rings.
import { endianness } from "node:os";
import { RingError } from "./errors.js";

if (endianness() !== "LE") {
  throw new Error("vdpa-ts ring engines need a little-endian host");
}

/** 2^32, for splitting a 53-bit address into two 32-bit words. */
export const TWO_32 = 4294967296;

/**
 * The address in descriptor words (lo, hi) as a number. Exact below 2^53; larger addresses come out as
 * >= 2^53, which translation rejects with ADDR_OVERFLOW, so no address is ever silently rounded into range.
 */
export function addrOf(lo: number, hi: number): number {
  return hi * TWO_32 + lo;
}

export function checkQueueSize(num: number, powerOfTwo: boolean): void {
  if (!Number.isInteger(num) || num < 1 || num > 32768 || (powerOfTwo && (num & (num - 1)) !== 0)) {
    throw new RingError(
      "QUEUE_SIZE_INVALID",
      `queue size ${num} must be ${powerOfTwo ? "a power of two " : ""}between 1 and 32768`,
    );
  }
}
