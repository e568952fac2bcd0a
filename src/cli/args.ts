// The argument grammar of iproute2 6.1's `vdpa` (vdpa/vdpa.c vdpa_argv_parse and its helpers, lib/utils.c,
// lib/ll_addr.c), reproduced with its quirks because scripts depend on them:
// - keywords `name`, `mgmtdev`, `max_vqp` match by prefix (`n`, `mg`, `ma`); `mac`, `mtu`, `qidx`,
//   `device_features` only exactly;
// - the loop reads pairs while MORE THAN ONE word is left, so a single trailing word is ignored without a
//   word (`dev add name a mgmtdev b junk` adds the device) while two are refused (`Unknown option "junk"`);
// - numbers are strtoul's: leading blanks and a sign are accepted, "-0" is 0, any other negative is out
//   of range; out-of-range and malformed numbers fail WITHOUT a message (exit 1);
// - a MAC is parsed like ll_addr_a2n: up to six hex fields (sscanf %x: "0x1f", "1g" as 1), fewer fields
//   leave the rest zero, a bad field prints `"<field>" is invalid lladdr.`.
// Extensions (vdpa-ts only) are keywords Linux's tool does not have; they never change how an iproute2
// command line parses.

import type { Attr, AttrValue } from "../mgmt-protocol/codec.js";

/** iproute2's matches(): `word` is a non-empty prefix of `keyword`. */
export function matches(word: string, keyword: string): boolean {
  return word.length > 0 && keyword.startsWith(word);
}

const BLANKS = " \t\n\v\f\r";

/**
 * strtoul/strtoull over the whole word, then a range check (get_u16, get_u32, get_u64): undefined when
 * glibc or iproute2 would refuse it.
 */
export function parseUnsigned(word: string, base: 10 | 16, max: bigint): bigint | undefined {
  let i = 0;
  while (i < word.length && BLANKS.includes(word[i])) i++;
  let negative = false;
  if (word[i] === "+" || word[i] === "-") {
    negative = word[i] === "-";
    i++;
  }
  if (base === 16 && word[i] === "0" && (word[i + 1] === "x" || word[i + 1] === "X") && isHex(word[i + 2])) {
    i += 2;
  }
  const digits = word.slice(i);
  const valid = base === 10 ? /^[0-9]+$/ : /^[0-9a-fA-F]+$/;
  if (!valid.test(digits)) return undefined;
  const value = BigInt(base === 10 ? digits : `0x${digits}`);
  // strtoul saturates at ULONG_MAX (ERANGE) and negates in unsigned arithmetic: only -0 stays in range.
  if (value > 0xffff_ffff_ffff_ffffn) return undefined;
  const result = negative && value !== 0n ? (1n << 64n) - value : value;
  return result <= max ? result : undefined;
}

function isHex(c: string | undefined): boolean {
  return c !== undefined && /^[0-9a-fA-F]$/.test(c);
}

/** ll_addr_a2n for a 6-byte MAC: the bytes, or the message iproute2 prints. */
export function parseMac(word: string): { mac: Uint8Array } | { error: string } {
  const mac = new Uint8Array(6);
  if (word.includes(".")) {
    // An IPv4 dotted quad fills the first four bytes (get_addr_1 with AF_INET).
    const parts = word.split(".");
    const ok = parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
    if (!ok) return { error: `"${word}" is invalid lladdr.\n` };
    parts.forEach((p, i) => {
      mac[i] = Number(p);
    });
    return { mac };
  }
  const fields = word.split(":");
  for (let i = 0; i < 6 && i < fields.length; i++) {
    const byte = scanHexByte(fields[i]);
    if (byte === undefined) return { error: `"${fields[i]}" is invalid lladdr.\n` };
    mac[i] = byte;
  }
  return { mac };
}

/** sscanf("%x") into an int, then iproute2's 0..255 check. */
function scanHexByte(field: string): number | undefined {
  const m = /^[ \t\n\v\f\r]*([+-]?)(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)/.exec(field);
  if (!m) return undefined;
  const value = BigInt(`0x${m[2]}`);
  if (m[1] === "-" && value !== 0n) return undefined;
  return value <= 255n ? Number(value) : undefined;
}

/** The option bits of vdpa_argv_parse (VDPA_OPT_*), and vdpa-ts's extension keywords. */
export const OPT = {
  MGMTDEV_HANDLE: 1 << 0,
  VDEV_MGMTDEV_HANDLE: 1 << 1,
  VDEV_NAME: 1 << 2,
  VDEV_HANDLE: 1 << 3,
  VDEV_MAC: 1 << 4,
  VDEV_MTU: 1 << 5,
  MAX_VQP: 1 << 6,
  QUEUE_INDEX: 1 << 7,
  VDEV_FEATURES: 1 << 8,
  /** vdpa-ts: `driver NAME` of `dev bind`. */
  DRIVER: 1 << 16,
  /** vdpa-ts: `size BYTES[K|M|G|T]` of a block device. */
  BLK_SIZE: 1 << 17,
  /** vdpa-ts: `backing_file PATH` of a block device. */
  BLK_BACKING_FILE: 1 << 18,
} as const;

/** vdpa_args_required: the first required option missing names the error. */
const REQUIRED_MESSAGES: [number, string][] = [
  [OPT.VDEV_MGMTDEV_HANDLE, "management device handle not set."],
  [OPT.VDEV_NAME, "device name is not set."],
  [OPT.VDEV_HANDLE, "device name is not set."],
  [OPT.QUEUE_INDEX, "queue index is not set."],
  [OPT.DRIVER, "driver name is not set."],
];

interface ParsedOpts {
  busName?: string;
  mgmtdevName?: string;
  devName?: string;
  mac?: Uint8Array;
  mtu?: number;
  maxVqp?: number;
  queueIndex?: number;
  deviceFeatures?: bigint;
  driver?: string;
  blkSize?: bigint;
  backingFile?: string;
}

/** What parsing produced: the request attributes, or what to print on stderr (exit 1). */
export type ParseResult = { attrs: Attr[] } | { error: string };

/**
 * vdpa_argv_parse then vdpa_opts_put: `argv` are the words after the command. Attributes come out in the
 * order Linux's tool puts them in the message.
 */
export function parseCommandArgs(argv: readonly string[], required: number, optional: number): ParseResult {
  const all = required | optional;
  const o: ParsedOpts = {};
  let found = 0;
  let i = 0;
  const left = (): number => argv.length - i;

  if (required & OPT.MGMTDEV_HANDLE) {
    const r = parseHandle(argv[i], o);
    if (r) return { error: r };
    i++;
    found |= OPT.MGMTDEV_HANDLE;
  } else if (required & OPT.VDEV_HANDLE) {
    if (left() <= 0) return { error: "String parameter expected\n" };
    o.devName = argv[i++];
    found |= OPT.VDEV_HANDLE;
  }

  // NEXT_ARG_OK() is `argc - 1 > 0`: a keyword is only looked at when a word follows it.
  while (left() > 1) {
    const word = argv[i];
    const value = argv[i + 1];
    if (matches(word, "name") && all & OPT.VDEV_NAME) {
      o.devName = value;
      found |= OPT.VDEV_NAME;
    } else if (matches(word, "mgmtdev") && all & OPT.VDEV_MGMTDEV_HANDLE) {
      const r = parseHandle(value, o);
      if (r) return { error: r };
      found |= OPT.VDEV_MGMTDEV_HANDLE;
    } else if (word === "mac" && all & OPT.VDEV_MAC) {
      const r = parseMac(value);
      if ("error" in r) return r;
      o.mac = r.mac;
      found |= OPT.VDEV_MAC;
    } else if (word === "mtu" && all & OPT.VDEV_MTU) {
      const n = parseUnsigned(value, 10, 0xffffn);
      if (n === undefined) return { error: "" };
      o.mtu = Number(n);
      found |= OPT.VDEV_MTU;
    } else if (matches(word, "max_vqp") && optional & OPT.MAX_VQP) {
      const n = parseUnsigned(value, 10, 0xffffn);
      if (n === undefined) return { error: "" };
      o.maxVqp = Number(n);
      found |= OPT.MAX_VQP;
    } else if (word === "qidx" && optional & OPT.QUEUE_INDEX) {
      const n = parseUnsigned(value, 10, 0xffff_ffffn);
      if (n === undefined) return { error: "" };
      o.queueIndex = Number(n);
      found |= OPT.QUEUE_INDEX;
    } else if (word === "device_features" && optional & OPT.VDEV_FEATURES) {
      const n = parseUnsigned(value, 16, 0xffff_ffff_ffff_ffffn);
      if (n === undefined) return { error: "" };
      o.deviceFeatures = n;
      found |= OPT.VDEV_FEATURES;
    } else if (word === "driver" && all & OPT.DRIVER) {
      o.driver = value;
      found |= OPT.DRIVER;
    } else if (word === "size" && optional & OPT.BLK_SIZE) {
      const n = parseSize(value);
      if (n === undefined)
        return { error: `"${value}" is not a size (bytes, or a number with K, M, G or T)\n` };
      o.blkSize = n;
      found |= OPT.BLK_SIZE;
    } else if (word === "backing_file" && optional & OPT.BLK_BACKING_FILE) {
      o.backingFile = value;
      found |= OPT.BLK_BACKING_FILE;
    } else {
      return { error: `Unknown option "${word}"\n` };
    }
    i += 2;
  }

  for (const [flag, message] of REQUIRED_MESSAGES) {
    if (required & flag && !(found & flag)) return { error: `${message}\n` };
  }
  if (required & ~found) return { error: "BUG: unknown argument required but not found\n" };
  return { attrs: toAttrs(o) };
}

/** vdpa_argv_handle: "mgmtdev_bus_name/mgmtdev_name" or "mgmtdev_name". */
function parseHandle(word: string | undefined, o: ParsedOpts): string | undefined {
  if (word === undefined) return 'vdpa identification ("mgmtdev_bus_name/mgmtdev_name") expected\n';
  const parts = word.split("/");
  if (parts.length > 2) {
    return (
      "Wrong vdpa mgmtdev identification string format\n" +
      'Expected "mgmtdev_bus_name/mgmtdev_name"\n' +
      'Expected "mgmtdev_name"\n'
    );
  }
  if (parts.length === 2) {
    o.busName = parts[0];
    o.mgmtdevName = parts[1];
  } else {
    o.busName = undefined;
    o.mgmtdevName = word;
  }
  return undefined;
}

const SIZE_UNITS: Record<string, bigint> = { "": 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n };

/** A byte count with an optional binary suffix (K, M, G, T; KiB etc. and lower case accepted). */
export function parseSize(word: string): bigint | undefined {
  const m = /^(\d+)([KMGTkmgt]?)(?:i?[Bb])?$/.exec(word);
  if (!m) return undefined;
  const value = BigInt(m[1]) * SIZE_UNITS[m[2].toUpperCase()];
  return value <= 0xffff_ffff_ffff_ffffn ? value : undefined;
}

function toAttrs(o: ParsedOpts): Attr[] {
  const attrs: Attr[] = [];
  const put = (name: string, value: AttrValue | undefined): void => {
    if (value !== undefined) attrs.push({ name, value });
  };
  put("MGMTDEV_BUS_NAME", o.busName);
  put("MGMTDEV_DEV_NAME", o.mgmtdevName);
  put("DEV_NAME", o.devName);
  put("DEV_NET_CFG_MACADDR", o.mac);
  put("DEV_NET_CFG_MTU", o.mtu);
  put("DEV_NET_CFG_MAX_VQP", o.maxVqp);
  put("DEV_QUEUE_INDEX", o.queueIndex);
  put("DEV_FEATURES", o.deviceFeatures);
  put("VDPATS_DRIVER_NAME", o.driver);
  put("VDPATS_BLK_SIZE", o.blkSize);
  put("VDPATS_BLK_BACKING_FILE", o.backingFile);
  return attrs;
}
