// Unix stream sockets with file descriptors passed alongside the bytes (SCM_RIGHTS), which Node's `net`
// cannot do. Every socket is non-blocking and close-on-exec; callers wait for readiness with the Poller.
// The message structures (msghdr, iovec, cmsghdr: x86-64 layouts) are built in buffers allocated once,
// so sending and receiving allocate nothing but the fd arrays.

import { addressOf, c, check, EAGAIN, failed, lastErrno, OsError } from "./libc.js";

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_PEERCRED = 17;
const MSG_NOSIGNAL = 0x4000;
const MSG_CTRUNC = 0x8;
const MSG_CMSG_CLOEXEC = 0x40000000;
const F_GETFL = 3;
const F_SETFL = 4;
const O_NONBLOCK = 0o4000;

/** sun_path holds 108 bytes including the terminating NUL. */
export const UNIX_PATH_MAX = 107;
/** The most fds one message may carry here (vhost-user sends at most 8). */
export const MAX_FDS_PER_MESSAGE = 16;

const MSGHDR_SIZE = 56;
const CMSG_HEADER = 16;

function cmsgSpace(fds: number): number {
  return CMSG_HEADER + Math.ceil((4 * fds) / 8) * 8;
}

// One set of structures for sending and one for receiving (single-threaded: never in use twice at once).
const sendHdr = Buffer.alloc(MSGHDR_SIZE);
const sendIov = Buffer.alloc(16);
const sendCtl = Buffer.alloc(cmsgSpace(MAX_FDS_PER_MESSAGE));
const recvHdr = Buffer.alloc(MSGHDR_SIZE);
const recvIov = Buffer.alloc(16);
const recvCtl = Buffer.alloc(cmsgSpace(MAX_FDS_PER_MESSAGE));
sendHdr.writeBigUInt64LE(addressOf(sendIov), 16);
sendHdr.writeBigUInt64LE(1n, 24);
recvHdr.writeBigUInt64LE(addressOf(recvIov), 16);
recvHdr.writeBigUInt64LE(1n, 24);

function sockaddr(path: string): Buffer {
  const bytes = Buffer.from(path);
  if (bytes.length > UNIX_PATH_MAX) {
    throw new OsError(
      "ENAMETOOLONG",
      "bind",
      `socket path ${path} is ${bytes.length} bytes; a Unix socket path holds at most ${UNIX_PATH_MAX}`,
    );
  }
  const addr = Buffer.alloc(2 + bytes.length + 1);
  addr.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(addr, 2);
  return addr;
}

/** A listening socket at `path` (the caller removes a stale file first). */
export function listenUnix(path: string, backlog = 16): number {
  const addr = sockaddr(path);
  const fd = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number, "socket");
  try {
    check(c.bind(fd, addr, addr.length) as number, "bind", path);
    check(c.listen(fd, backlog) as number, "listen", path);
  } catch (err) {
    c.close(fd);
    throw err;
  }
  return fd;
}

/** A pending connection, or null when there is none (EAGAIN). */
export function acceptUnix(listenFd: number): number | null {
  const fd = c.accept4(listenFd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
  if (fd < 0) {
    if (lastErrno() === EAGAIN) return null;
    throw failed("accept4");
  }
  return fd;
}

/** Connects to `path` (Unix connects complete at once) and returns a non-blocking socket. */
export function connectUnix(path: string): number {
  const addr = sockaddr(path);
  const fd = check(c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) as number, "socket");
  try {
    check(c.connect(fd, addr, addr.length) as number, "connect", path);
    const flags = check(c.fcntl(fd, F_GETFL, 0) as number, "fcntl(F_GETFL)");
    check(c.fcntl(fd, F_SETFL, flags | O_NONBLOCK) as number, "fcntl(F_SETFL)");
  } catch (err) {
    c.close(fd);
    throw err;
  }
  return fd;
}

/** A connected pair of non-blocking stream sockets. */
export function socketPair(): [number, number] {
  const sv = [0, 0];
  check(c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) as number, "socketpair");
  return [sv[0], sv[1]];
}

/** Sends `data` with `fds`; the bytes sent (possibly fewer), or null when the socket is full (EAGAIN). */
export function sendMsg(fd: number, data: Uint8Array, fds: readonly number[] = []): number | null {
  if (fds.length > MAX_FDS_PER_MESSAGE) {
    throw new OsError("EINVAL", "sendmsg", `${fds.length} fds; at most ${MAX_FDS_PER_MESSAGE} per message`);
  }
  sendIov.writeBigUInt64LE(addressOf(data), 0);
  sendIov.writeBigUInt64LE(BigInt(data.byteLength), 8);
  if (fds.length > 0) {
    sendCtl.writeBigUInt64LE(BigInt(CMSG_HEADER + 4 * fds.length), 0);
    sendCtl.writeInt32LE(SOL_SOCKET, 8);
    sendCtl.writeInt32LE(SCM_RIGHTS, 12);
    for (let i = 0; i < fds.length; i++) sendCtl.writeInt32LE(fds[i], CMSG_HEADER + 4 * i);
    sendHdr.writeBigUInt64LE(addressOf(sendCtl), 32);
    sendHdr.writeBigUInt64LE(BigInt(cmsgSpace(fds.length)), 40);
  } else {
    sendHdr.writeBigUInt64LE(0n, 32);
    sendHdr.writeBigUInt64LE(0n, 40);
  }
  const r = Number(c.sendmsg(fd, sendHdr, MSG_NOSIGNAL) as number | bigint);
  if (r < 0) {
    if (lastErrno() === EAGAIN) return null;
    throw failed("sendmsg", `fd ${fd}`);
  }
  return r;
}

export interface Received {
  /** Bytes read into the buffer; 0 means the peer closed. */
  bytes: number;
  /** File descriptors that came with them (now ours to close). */
  fds: number[];
  /** More fds arrived than `maxFds` (the extra ones were closed) or the kernel dropped some (MSG_CTRUNC). */
  truncatedFds: boolean;
}

/** Receives into `into`; null when nothing is waiting (EAGAIN). */
export function recvMsg(fd: number, into: Uint8Array, maxFds = MAX_FDS_PER_MESSAGE): Received | null {
  recvIov.writeBigUInt64LE(addressOf(into), 0);
  recvIov.writeBigUInt64LE(BigInt(into.byteLength), 8);
  recvHdr.writeBigUInt64LE(addressOf(recvCtl), 32);
  recvHdr.writeBigUInt64LE(BigInt(recvCtl.length), 40);
  recvHdr.writeInt32LE(0, 48);
  const r = Number(c.recvmsg(fd, recvHdr, MSG_CMSG_CLOEXEC) as number | bigint);
  if (r < 0) {
    if (lastErrno() === EAGAIN) return null;
    throw failed("recvmsg", `fd ${fd}`);
  }
  const fds: number[] = [];
  let truncatedFds = (recvHdr.readInt32LE(48) & MSG_CTRUNC) !== 0;
  const ctlLen = Number(recvHdr.readBigUInt64LE(40));
  for (let at = 0; at + CMSG_HEADER <= ctlLen; ) {
    const len = Number(recvCtl.readBigUInt64LE(at));
    if (len < CMSG_HEADER) break;
    const level = recvCtl.readInt32LE(at + 8);
    const type = recvCtl.readInt32LE(at + 12);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = at + CMSG_HEADER; p + 4 <= at + len; p += 4) {
        const got = recvCtl.readInt32LE(p);
        if (fds.length < maxFds) fds.push(got);
        else {
          c.close(got);
          truncatedFds = true;
        }
      }
    }
    at += Math.ceil(len / 8) * 8;
  }
  return { bytes: r, fds, truncatedFds };
}

/** The process at the other end of a Unix socket (SO_PEERCRED). */
export function peerCred(fd: number): { pid: number; uid: number; gid: number } {
  const cred = Buffer.alloc(12);
  const len = [12];
  check(c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, len) as number, "getsockopt(SO_PEERCRED)");
  return { pid: cred.readInt32LE(0), uid: cred.readUInt32LE(4), gid: cred.readUInt32LE(8) };
}

/** shutdown(SHUT_RDWR): wakes anything waiting on the socket; the caller still closes it. */
export function shutdownSocket(fd: number): void {
  c.shutdown(fd, 2);
}
