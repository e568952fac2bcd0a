// eventfds: the kick, call and error notifications of vhost-user. Reads and writes go through one
// preallocated 8-byte buffer each, so signalling allocates nothing.

import { c, check, EAGAIN, failed, lastErrno } from "./libc.js";

const EFD_SEMAPHORE = 0x1;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

const writeBuf = new BigUint64Array(1);
const readBuf = new BigUint64Array(1);

export function eventfdCreate(opts: { nonBlocking?: boolean; semaphore?: boolean } = {}): number {
  const flags =
    EFD_CLOEXEC | (opts.nonBlocking === false ? 0 : EFD_NONBLOCK) | (opts.semaphore ? EFD_SEMAPHORE : 0);
  return check(c.eventfd(0, flags) as number, "eventfd");
}

/** Adds `n` to the counter (wakes a reader). EAGAIN (counter full) is dropped: the reader is awake anyway. */
export function eventfdWrite(fd: number, n = 1n): void {
  writeBuf[0] = n;
  const r = c.write(fd, writeBuf, 8) as number | bigint;
  if (Number(r) < 0 && lastErrno() !== EAGAIN) throw failed("write(eventfd)", `fd ${fd}`);
}

/** Reads and resets the counter; null when it was 0 (non-blocking fd). */
export function eventfdRead(fd: number): bigint | null {
  const r = Number(c.read(fd, readBuf, 8) as number | bigint);
  if (r < 0) {
    if (lastErrno() === EAGAIN) return null;
    throw failed("read(eventfd)", `fd ${fd}`);
  }
  return readBuf[0];
}
