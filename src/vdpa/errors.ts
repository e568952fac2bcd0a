// Errors of the vDPA layer carry Linux's errno name and, where Linux gives one, its extack message, so the
// management tool can print exactly what Linux's `vdpa` prints ("Error: vdpa: <message>." then
// "kernel answers: <strerror>").

/** The errno values this layer answers with: number (x86-64 Linux) and glibc's strerror text. */
export const ERRNO = {
  EPERM: { errno: 1, text: "Operation not permitted" },
  ENOENT: { errno: 2, text: "No such file or directory" },
  EIO: { errno: 5, text: "Input/output error" },
  EBADF: { errno: 9, text: "Bad file descriptor" },
  E2BIG: { errno: 7, text: "Argument list too long" },
  EAGAIN: { errno: 11, text: "Resource temporarily unavailable" },
  ENOMEM: { errno: 12, text: "Cannot allocate memory" },
  EFAULT: { errno: 14, text: "Bad address" },
  EBUSY: { errno: 16, text: "Device or resource busy" },
  EEXIST: { errno: 17, text: "File exists" },
  ENODEV: { errno: 19, text: "No such device" },
  EINVAL: { errno: 22, text: "Invalid argument" },
  ENOSPC: { errno: 28, text: "No space left on device" },
  ERANGE: { errno: 34, text: "Numerical result out of range" },
  ENOTTY: { errno: 25, text: "Inappropriate ioctl for device" },
  ENOBUFS: { errno: 105, text: "No buffer space available" },
  EOPNOTSUPP: { errno: 95, text: "Operation not supported" },
} as const;

export type ErrnoName = keyof typeof ERRNO;

export class VdpaError extends Error {
  override readonly name = "VdpaError";
  /** Linux's extack text, when Linux sends one with this answer. */
  readonly extack: string | undefined;

  constructor(
    readonly code: ErrnoName,
    extack?: string,
  ) {
    super(extack ? `${code}: ${extack}` : `${code}: ${ERRNO[code].text}`);
    this.extack = extack;
  }

  get errno(): number {
    return ERRNO[this.code].errno;
  }
}

export function isVdpaError(err: unknown, code?: ErrnoName): err is VdpaError {
  return err instanceof VdpaError && (code === undefined || err.code === code);
}
