// The C library calls Node does not offer, bound once through koffi, and the one error type of this layer.
// Everything here is Linux x86-64 (struct layouts, constants); the project runs nowhere else.

import koffi from "koffi";

const libc = koffi.load("libc.so.6");

// ssize_t and off_t are 64-bit on x86-64 Linux
koffi.alias("ssize_t", "int64_t");

export const c = {
  memfd_create: libc.func("int memfd_create(const char *name, unsigned int flags)"),
  ftruncate: libc.func("int ftruncate(int fd, int64_t length)"),
  fcntl: libc.func("int fcntl(int fd, int cmd, int arg)"),
  mmap: libc.func("void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)"),
  munmap: libc.func("int munmap(void *addr, size_t length)"),
  close: libc.func("int close(int fd)"),
  read: libc.func("ssize_t read(int fd, void *buf, size_t count)"),
  write: libc.func("ssize_t write(int fd, const void *buf, size_t count)"),
  eventfd: libc.func("int eventfd(unsigned int initval, int flags)"),
  socket: libc.func("int socket(int domain, int type, int protocol)"),
  socketpair: libc.func("int socketpair(int domain, int type, int protocol, _Out_ int *sv)"),
  bind: libc.func("int bind(int fd, const void *addr, uint32_t addrlen)"),
  listen: libc.func("int listen(int fd, int backlog)"),
  accept4: libc.func("int accept4(int fd, void *addr, void *addrlen, int flags)"),
  connect: libc.func("int connect(int fd, const void *addr, uint32_t addrlen)"),
  sendmsg: libc.func("ssize_t sendmsg(int fd, const void *msg, int flags)"),
  recvmsg: libc.func("ssize_t recvmsg(int fd, void *msg, int flags)"),
  getsockopt: libc.func("int getsockopt(int fd, int level, int name, void *value, _Inout_ uint32_t *len)"),
  shutdown: libc.func("int shutdown(int fd, int how)"),
  epoll_create1: libc.func("int epoll_create1(int flags)"),
  epoll_ctl: libc.func("int epoll_ctl(int epfd, int op, int fd, void *event)"),
  epoll_wait: libc.func("int epoll_wait(int epfd, void *events, int maxevents, int timeout)"),
};

/** The address of a Buffer's bytes, for structures that point at other buffers (msghdr, iovec). */
export function addressOf(buf: Uint8Array): bigint {
  return koffi.address(buf) as bigint;
}

/** An ArrayBuffer over native memory at `address` (a mapping); it never frees that memory itself. */
export function viewOf(address: bigint, length: number): ArrayBuffer {
  return koffi.view(address, length) as ArrayBuffer;
}

/** errno of the last failed call on this thread. */
export function lastErrno(): number {
  return koffi.errno() as number;
}

/** errno names for the values this layer meets (x86-64 Linux numbering). */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  4: "EINTR",
  5: "EIO",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  20: "ENOTDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  28: "ENOSPC",
  32: "EPIPE",
  36: "ENAMETOOLONG",
  75: "EOVERFLOW",
  88: "ENOTSOCK",
  90: "EMSGSIZE",
  95: "EOPNOTSUPP",
  98: "EADDRINUSE",
  104: "ECONNRESET",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
};

export const EAGAIN = 11;
export const EINTR = 4;

/** A failed system call, or a check of this layer that stands for one: `code` is an errno name. */
export class OsError extends Error {
  override readonly name = "OsError";
  constructor(
    readonly code: string,
    readonly syscall: string,
    message?: string,
    readonly errno = 0,
  ) {
    super(`${syscall}: ${code}${message ? `: ${message}` : ""}`);
  }
}

/** The OsError for the errno of the call that just failed. */
export function failed(syscall: string, detail?: string): OsError {
  const errno = lastErrno();
  return new OsError(ERRNO_NAMES[errno] ?? `errno ${errno}`, syscall, detail, errno);
}

/** Throws for a -1 result; returns the result otherwise. */
export function check(result: number, syscall: string, detail?: string): number {
  if (result < 0) throw failed(syscall, detail);
  return result;
}

/** close(2); EBADF (already closed) is a caller bug and is thrown. */
export function closeFd(fd: number): void {
  check(c.close(fd) as number, "close", `fd ${fd}`);
}
