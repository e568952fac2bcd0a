// Anonymous shared memory files (memfd) and their seals: how vdpa-ts shares memory with another process.

import { fstatSync } from "node:fs";
import { c, check } from "./libc.js";

const MFD_CLOEXEC = 0x1;
const MFD_ALLOW_SEALING = 0x2;
const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;

/** Seal bits (fcntl F_ADD_SEALS). */
export const SEAL = { SEAL: 0x1, SHRINK: 0x2, GROW: 0x4, WRITE: 0x8 } as const;

/** memfd_create(name, MFD_CLOEXEC [| MFD_ALLOW_SEALING]). */
export function memfdCreate(name: string, opts: { sealing?: boolean } = {}): number {
  return check(
    c.memfd_create(name, MFD_CLOEXEC | (opts.sealing ? MFD_ALLOW_SEALING : 0)) as number,
    "memfd_create",
    name,
  );
}

export function ftruncate(fd: number, size: number): void {
  check(c.ftruncate(fd, size) as number, "ftruncate", `fd ${fd} to ${size} bytes`);
}

/** The file's size now (fstat). */
export function fileSize(fd: number): number {
  return fstatSync(fd).size;
}

export function addSeals(fd: number, seals: number): void {
  check(c.fcntl(fd, F_ADD_SEALS, seals) as number, "fcntl(F_ADD_SEALS)", `fd ${fd}`);
}

/** The file's seals; 0 for a file that cannot be sealed (EINVAL: not a memfd, or sealing not allowed). */
export function getSeals(fd: number): number {
  const r = c.fcntl(fd, F_GET_SEALS, 0) as number;
  return Math.max(r, 0);
}
