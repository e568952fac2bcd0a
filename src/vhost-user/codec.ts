// One decoder per payload layout, each validating everything before anything acts on it (sizes, reserved
// bits, padding, fd counts, address overflow), and the encoders for what a back-end or a front-end sends.
// Decoding never throws anything but VhostUserProtocolError.

import {
  MAX_CONFIG_SIZE,
  MAX_MEM_TABLE_REGIONS,
  type PayloadKind,
  REQUEST_SPECS,
  requestName,
  VRING_IDX_MASK,
  VRING_NOFD_MASK,
} from "./messages.js";

export type ProtocolErrorCode =
  /** The header is wrong (version bits, reserved flags, a size over the cap): the stream is lost. */
  | "BAD_HEADER"
  | "PAYLOAD_TOO_LARGE"
  /** A well-framed message with a wrong payload: the request fails, the connection may go on. */
  | "BAD_SIZE"
  | "RESERVED_BITS"
  | "BAD_VALUE"
  | "UNEXPECTED_FD"
  | "MISSING_FD"
  | "TOO_MANY_REGIONS"
  | "OVERLAPPING_REGIONS"
  | "UNKNOWN_REQUEST"
  /** A reply that answers nothing the front-end asked. */
  | "UNEXPECTED_REPLY";

export class VhostUserProtocolError extends Error {
  override readonly name = "VhostUserProtocolError";
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
    /** Framing is lost: the connection must be closed. */
    readonly fatal = false,
  ) {
    super(`${code}: ${message}`);
  }
}

function fail(code: ProtocolErrorCode, request: number, message: string): never {
  throw new VhostUserProtocolError(code, `${requestName(request)}: ${message}`);
}

export interface MemRegionDesc {
  guestPhysAddr: number;
  memorySize: number;
  userspaceAddr: number;
  mmapOffset: number;
}

/** A decoded front-end request. Fds named here are the decoder's to hand over; `fds` lists them all. */
export type Payload =
  | { kind: "none" }
  | { kind: "u64"; value: bigint }
  | { kind: "state"; index: number; num: number }
  | { kind: "addr"; index: number; flags: number; desc: number; used: number; avail: number; log: number }
  | { kind: "vringFd"; index: number; fd: number | null }
  | { kind: "memTable"; regions: MemRegionDesc[] }
  | { kind: "memReg"; region: MemRegionDesc }
  | { kind: "config"; offset: number; size: number; flags: number; data: Uint8Array }
  | { kind: "log"; mmapSize: bigint; mmapOffset: bigint }
  | { kind: "inflight"; mmapSize: bigint; mmapOffset: bigint; numQueues: number; queueSize: number };

const SIZES: Partial<Record<PayloadKind, number>> = {
  none: 0,
  u64: 8,
  state: 8,
  addr: 40,
  vringFd: 8,
  memReg: 40,
  log: 16,
  inflight: 24,
};

/** A u64 field as a safe JS number, or BAD_VALUE (addresses and sizes beyond 2^53 are not usable here). */
function safe(view: DataView, at: number, request: number, what: string): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER))
    fail("BAD_VALUE", request, `${what} 0x${v.toString(16)} is beyond 2^53`);
  return Number(v);
}

function region(view: DataView, at: number, request: number, i: number): MemRegionDesc {
  const r = {
    guestPhysAddr: safe(view, at, request, `region ${i} guest address`),
    memorySize: safe(view, at + 8, request, `region ${i} size`),
    userspaceAddr: safe(view, at + 16, request, `region ${i} user address`),
    mmapOffset: safe(view, at + 24, request, `region ${i} mmap offset`),
  };
  if (r.memorySize === 0) fail("BAD_VALUE", request, `region ${i} has size 0`);
  for (const [name, base] of [
    ["guest", r.guestPhysAddr],
    ["user", r.userspaceAddr],
    ["mmap", r.mmapOffset],
  ] as const) {
    if (base + r.memorySize > Number.MAX_SAFE_INTEGER)
      fail("BAD_VALUE", request, `region ${i} ${name} range overflows`);
  }
  return r;
}

function checkOverlaps(regions: MemRegionDesc[], request: number): void {
  for (const key of ["guestPhysAddr", "userspaceAddr"] as const) {
    const sorted = [...regions].sort((a, b) => a[key] - b[key]);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i - 1][key] + sorted[i - 1].memorySize > sorted[i][key]) {
        fail(
          "OVERLAPPING_REGIONS",
          request,
          `regions overlap in ${key === "guestPhysAddr" ? "guest" : "user"} addresses`,
        );
      }
    }
  }
}

function checkFds(request: number, fds: readonly number[], want: number | readonly [number, number]): void {
  const [min, max] = typeof want === "number" ? [want, want] : want;
  if (fds.length > max) fail("UNEXPECTED_FD", request, `${fds.length} fds where at most ${max} belong`);
  if (fds.length < min) fail("MISSING_FD", request, `${fds.length} fds where ${min} are needed`);
}

/**
 * Decodes and validates the payload of front-end request `request`. Throws UNKNOWN_REQUEST for an id the
 * table does not know; the caller owns (and on error closes) every fd in `fds`.
 */
export function decodeRequest(request: number, payload: Uint8Array, fds: readonly number[]): Payload {
  const spec = REQUEST_SPECS.get(request);
  if (!spec) fail("UNKNOWN_REQUEST", request, "not a request this back-end knows");
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const fixed = SIZES[spec.payload];
  if (fixed !== undefined && payload.byteLength !== fixed) {
    fail("BAD_SIZE", request, `payload of ${payload.byteLength} bytes, expected ${fixed}`);
  }
  switch (spec.payload) {
    case "none":
      checkFds(request, fds, spec.fds);
      return { kind: "none" };
    case "u64":
      checkFds(request, fds, spec.fds);
      return { kind: "u64", value: view.getBigUint64(0, true) };
    case "state":
      checkFds(request, fds, spec.fds);
      return { kind: "state", index: view.getUint32(0, true), num: view.getUint32(4, true) };
    case "addr": {
      checkFds(request, fds, spec.fds);
      const flags = view.getUint32(4, true);
      if (flags & ~1)
        fail("RESERVED_BITS", request, `flags 0x${flags.toString(16)} (only bit 0, LOG, is defined)`);
      return {
        kind: "addr",
        index: view.getUint32(0, true),
        flags,
        desc: safe(view, 8, request, "descriptor address"),
        used: safe(view, 16, request, "used address"),
        avail: safe(view, 24, request, "avail address"),
        log: safe(view, 32, request, "log address"),
      };
    }
    case "vringFd": {
      const v = view.getBigUint64(0, true);
      if (v & ~BigInt(VRING_IDX_MASK | VRING_NOFD_MASK)) {
        fail(
          "RESERVED_BITS",
          request,
          `0x${v.toString(16)} sets bits other than the index and the no-fd flag`,
        );
      }
      const noFd = (v & BigInt(VRING_NOFD_MASK)) !== 0n;
      checkFds(request, fds, noFd ? 0 : 1);
      return { kind: "vringFd", index: Number(v & BigInt(VRING_IDX_MASK)), fd: noFd ? null : fds[0] };
    }
    case "memTable": {
      if (payload.byteLength < 8) fail("BAD_SIZE", request, `payload of ${payload.byteLength} bytes`);
      const n = view.getUint32(0, true);
      if (view.getUint32(4, true) !== 0) fail("RESERVED_BITS", request, "padding after nregions is not 0");
      if (n > MAX_MEM_TABLE_REGIONS)
        fail("TOO_MANY_REGIONS", request, `${n} regions, at most ${MAX_MEM_TABLE_REGIONS}`);
      if (payload.byteLength !== 8 + 32 * n) {
        fail(
          "BAD_SIZE",
          request,
          `payload of ${payload.byteLength} bytes for ${n} regions (expected ${8 + 32 * n})`,
        );
      }
      checkFds(request, fds, n);
      const regions = Array.from({ length: n }, (_, i) => region(view, 8 + 32 * i, request, i));
      checkOverlaps(regions, request);
      return { kind: "memTable", regions };
    }
    case "memReg":
      checkFds(request, fds, spec.fds);
      if (view.getBigUint64(0, true) !== 0n)
        fail("RESERVED_BITS", request, "padding before the region is not 0");
      return { kind: "memReg", region: region(view, 8, request, 0) };
    case "config": {
      checkFds(request, fds, spec.fds);
      if (payload.byteLength < 12) fail("BAD_SIZE", request, `payload of ${payload.byteLength} bytes`);
      const offset = view.getUint32(0, true);
      const size = view.getUint32(4, true);
      const flags = view.getUint32(8, true);
      if (flags > 1) fail("BAD_VALUE", request, `flags ${flags} (0 normal, 1 live migration)`);
      if (size > MAX_CONFIG_SIZE || offset > MAX_CONFIG_SIZE || offset + size > MAX_CONFIG_SIZE) {
        fail(
          "BAD_VALUE",
          request,
          `config range [${offset}, ${offset + size}) beyond ${MAX_CONFIG_SIZE} bytes`,
        );
      }
      if (payload.byteLength !== 12 + size) {
        fail("BAD_SIZE", request, `payload of ${payload.byteLength} bytes for ${size} config bytes`);
      }
      return { kind: "config", offset, size, flags, data: payload.subarray(12, 12 + size) };
    }
    case "log":
      checkFds(request, fds, spec.fds);
      return { kind: "log", mmapSize: view.getBigUint64(0, true), mmapOffset: view.getBigUint64(8, true) };
    case "inflight":
      checkFds(request, fds, spec.fds);
      return {
        kind: "inflight",
        mmapSize: view.getBigUint64(0, true),
        mmapOffset: view.getBigUint64(8, true),
        numQueues: view.getUint16(16, true),
        queueSize: view.getUint16(18, true),
      };
  }
}

// ---- encoders (both roles) ----

export function u64Payload(value: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value), true);
  return b;
}

export function statePayload(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setUint32(4, num >>> 0, true);
  return b;
}

export function addrPayload(a: {
  index: number;
  flags?: number;
  desc: number;
  used: number;
  avail: number;
  log?: number;
}): Uint8Array {
  const b = new Uint8Array(40);
  const v = new DataView(b.buffer);
  v.setUint32(0, a.index, true);
  v.setUint32(4, a.flags ?? 0, true);
  v.setBigUint64(8, BigInt(a.desc), true);
  v.setBigUint64(16, BigInt(a.used), true);
  v.setBigUint64(24, BigInt(a.avail), true);
  v.setBigUint64(32, BigInt(a.log ?? 0), true);
  return b;
}

/** SET_VRING_KICK/CALL/ERR: `withFd` false sets the no-fd (polling) flag. */
export function vringFdPayload(index: number, withFd: boolean): Uint8Array {
  return u64Payload(BigInt(index & VRING_IDX_MASK) | (withFd ? 0n : BigInt(VRING_NOFD_MASK)));
}

function writeRegion(v: DataView, at: number, r: MemRegionDesc): void {
  v.setBigUint64(at, BigInt(r.guestPhysAddr), true);
  v.setBigUint64(at + 8, BigInt(r.memorySize), true);
  v.setBigUint64(at + 16, BigInt(r.userspaceAddr), true);
  v.setBigUint64(at + 24, BigInt(r.mmapOffset), true);
}

export function memTablePayload(regions: readonly MemRegionDesc[]): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, regions.length, true);
  for (const [i, r] of regions.entries()) writeRegion(v, 8 + 32 * i, r);
  return b;
}

export function memRegPayload(r: MemRegionDesc): Uint8Array {
  const b = new Uint8Array(40);
  writeRegion(new DataView(b.buffer), 8, r);
  return b;
}

export function configPayload(offset: number, data: Uint8Array, flags = 0): Uint8Array {
  const b = new Uint8Array(12 + data.byteLength);
  const v = new DataView(b.buffer);
  v.setUint32(0, offset, true);
  v.setUint32(4, data.byteLength, true);
  v.setUint32(8, flags, true);
  b.set(data, 12);
  return b;
}

/** A GET_CONFIG request: the same layout with `size` zero bytes to fill. */
export function configRequestPayload(offset: number, size: number): Uint8Array {
  return configPayload(offset, new Uint8Array(size));
}
