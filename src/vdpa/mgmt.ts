// Management devices and the management commands: Linux's generic netlink family "vdpa"
// (drivers/vdpa/vdpa.c, the vdpa_nl_cmd_*_doit / *_dumpit handlers and vdpa_mgmtdev_(un)register), run here
// as plain method calls. A request is the ORDERED list of attributes the netlink message would carry; a reply
// is the ordered list of attributes Linux's fill function emits, in its emission order; an error is a
// VdpaError with Linux's errno name and, where Linux sets one, its extack text, checked in Linux's order.
//
// What happens before a handler runs is reproduced as well: the family policy (vdpa_nl_policy) is applied to
// every attribute of every request (doit and dump alike: since "vdpa: Enable strict validation for netlinks
// ops" (Linux 6.6) the ops set no GENL_DONT_VALIDATE_* flag, so genetlink validates them with
// NL_VALIDATE_STRICT, dumps included). Those answers come from lib/nlattr.c and carry no
// "vdpa: " module prefix; they are thrown as NetlinkPolicyError so a CLI can print them as Linux's tool does
// (see extackPrefix()). The GENL_ADMIN_PERM / CAP_NET_ADMIN checks (EPERM) are not modelled: every caller is
// treated as privileged.
//
// Where this module departs from Linux, on purpose:
// - Parents' devAdd returns an unregistered device and this module registers it on the bus (Linux parents
//   call _vdpa_register_device themselves); a registration failure (EEXIST, ...) is answered after calling the
//   parent's devDel for cleanup. DEV_DEL unregisters the device and then calls devDel.
// - DEV_NEW checks the name with VdpaBus.checkName() after Linux's checks and before devAdd (Linux only
//   fails later, in device_add, for an empty name).
// - The vdpa-ts attributes VDPATS_BLK_SIZE (u64) and VDPATS_BLK_BACKING_FILE (string) are part of the policy
//   and of DEV_NEW's mask; Linux would answer "Unknown attribute type" for them.
// - Registering two management devices with the same handle is EEXIST (Linux's device core prevents it
//   earlier); unregistering one that is not registered is ENODEV.

import {
  VIRTIO_BLK_CONFIG,
  VIRTIO_BLK_CONFIG_SIZE,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_DEVICE_F_MASK,
  VIRTIO_ID_BLOCK,
  VIRTIO_ID_NET,
  VIRTIO_NET_CONFIG,
  VIRTIO_NET_CONFIG_SIZE,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_RSS,
  VIRTIO_NET_F_STATUS,
} from "../spec/index.js";
import type { MgmtDevHandle, VdpaDevice } from "./device.js";
import { type ErrnoName, VdpaError } from "./errors.js";
import {
  attrBit,
  type DevSetConfig,
  emptyDevSetConfig,
  type MgmtDev,
  VDPA_ATTR,
  type VdpaAttrName,
} from "./mgmt-types.js";
import { VdpaBus } from "./vdpa-bus.js";

// ---------------------------------------------------------------------------------------------------------
// Family constants and attribute types
// ---------------------------------------------------------------------------------------------------------

export const VDPA_GENL_NAME = "vdpa";
export const VDPA_GENL_VERSION = 1;

/** Command numbers of the family (include/uapi/linux/vdpa.h). MGMTDEV_NEW is only a reply command. */
export const VDPA_CMD = {
  UNSPEC: 0,
  MGMTDEV_NEW: 1,
  MGMTDEV_GET: 2,
  DEV_NEW: 3,
  DEV_DEL: 4,
  DEV_GET: 5,
  DEV_CONFIG_GET: 6,
  DEV_VSTATS_GET: 7,
  DEV_ATTR_SET: 8,
} as const;

export type VdpaCmdName = keyof typeof VDPA_CMD;

/** u64 as bigint; u8, u16, u32 as number; strings; a MAC address as a 6-byte Uint8Array. */
export type AttrValue = string | number | bigint | Uint8Array;

/** One netlink attribute of a request or a reply. */
export interface Attr {
  readonly name: VdpaAttrName;
  readonly value: AttrValue;
}

/** A request or a reply: attributes in message order. */
export type AttrList = readonly Attr[];

/** The answer to DEV_NEW, DEV_DEL and DEV_ATTR_SET: a plain ack, possibly carrying an extack warning. */
export interface Ack {
  /** Linux's extack text sent with a successful answer (the tool prints `Warning: vdpa: <text>.`). */
  warning?: string;
}

/** How each attribute travels on the wire (what the kernel sends; uapi comments in parentheses differ). */
export type AttrWireType = "string" | "binary" | "u8" | "u16" | "u32" | "u64";

export const VDPA_ATTR_WIRE_TYPE: Readonly<Record<VdpaAttrName, AttrWireType>> = {
  MGMTDEV_BUS_NAME: "string",
  MGMTDEV_DEV_NAME: "string",
  MGMTDEV_SUPPORTED_CLASSES: "u64",
  DEV_NAME: "string",
  DEV_ID: "u32",
  DEV_VENDOR_ID: "u32",
  DEV_MAX_VQS: "u32",
  DEV_MAX_VQ_SIZE: "u16",
  DEV_MIN_VQ_SIZE: "u16",
  DEV_NET_CFG_MACADDR: "binary",
  // The uapi comment says u8; vdpa_dev_net_status_config_fill puts a u16.
  DEV_NET_STATUS: "u16",
  DEV_NET_CFG_MAX_VQP: "u16",
  DEV_NET_CFG_MTU: "u16",
  DEV_NEGOTIATED_FEATURES: "u64",
  DEV_MGMTDEV_MAX_VQS: "u32",
  DEV_SUPPORTED_FEATURES: "u64",
  DEV_QUEUE_INDEX: "u32",
  DEV_VENDOR_ATTR_NAME: "string",
  DEV_VENDOR_ATTR_VALUE: "u64",
  DEV_FEATURES: "u64",
  DEV_BLK_CFG_CAPACITY: "u64",
  DEV_BLK_CFG_SIZE_MAX: "u32",
  DEV_BLK_CFG_BLK_SIZE: "u32",
  DEV_BLK_CFG_SEG_MAX: "u32",
  DEV_BLK_CFG_NUM_QUEUES: "u16",
  DEV_BLK_CFG_PHY_BLK_EXP: "u8",
  DEV_BLK_CFG_ALIGN_OFFSET: "u8",
  DEV_BLK_CFG_MIN_IO_SIZE: "u16",
  DEV_BLK_CFG_OPT_IO_SIZE: "u32",
  DEV_BLK_CFG_MAX_DISCARD_SEC: "u32",
  DEV_BLK_CFG_MAX_DISCARD_SEG: "u32",
  DEV_BLK_CFG_DISCARD_SEC_ALIGN: "u32",
  DEV_BLK_CFG_MAX_WRITE_ZEROES_SEC: "u32",
  DEV_BLK_CFG_MAX_WRITE_ZEROES_SEG: "u32",
  DEV_BLK_READ_ONLY: "u8",
  DEV_BLK_FLUSH: "u8",
  VDPATS_BLK_SIZE: "u64",
  VDPATS_BLK_BACKING_FILE: "string",
  VDPATS_DRIVER_NAME: "string",
  VDPATS_DEV_STATUS: "u8",
  VDPATS_VHOST_USER_SOCKET: "string",
};

/** The first value of attribute `name` in `attrs`, if present. */
export function getAttr(attrs: AttrList, name: VdpaAttrName): AttrValue | undefined {
  return attrs.find((a) => a.name === name)?.value;
}

/** Every value of attribute `name` in `attrs`, in order (vendor statistics repeat their attributes). */
export function getAttrs(attrs: AttrList, name: VdpaAttrName): AttrValue[] {
  return attrs.filter((a) => a.name === name).map((a) => a.value);
}

// ---------------------------------------------------------------------------------------------------------
// Request policy (vdpa_nl_policy) and the netlink core's validation answers (lib/nlattr.c validate_nla)
// ---------------------------------------------------------------------------------------------------------

/** An answer of the netlink core's attribute validation: Linux prints its text without the "vdpa: " prefix. */
export class NetlinkPolicyError extends VdpaError {
  constructor(
    code: ErrnoName,
    extack: string,
    /** The offending attribute, as given (Linux also points at it with NLMSGERR_ATTR_OFFS). */
    readonly attr: string,
  ) {
    super(code, extack);
  }
}

/**
 * What Linux's `vdpa` prints between "Error: " (or "Warning: ") and the message: handlers use
 * NL_SET_ERR_MSG_MOD, which prefixes "vdpa: "; the netlink core's policy messages have no prefix.
 */
export function extackPrefix(err: VdpaError): string {
  return err instanceof NetlinkPolicyError ? "" : `${VDPA_GENL_NAME}: `;
}

type PolicyEntry =
  | { kind: "string" }
  | { kind: "binary"; exactLen: number }
  | { kind: "u16" | "u32"; min?: number }
  | { kind: "u64" };

/**
 * vdpa_nl_policy: MGMTDEV_BUS_NAME is NLA_NUL_STRING, the names NLA_STRING (a JS string passes both), the MAC
 * NLA_POLICY_ETH_ADDR (NLA_BINARY of exactly 6 bytes), MTU NLA_POLICY_MIN(NLA_U16, 68). Every other Linux
 * attribute has no entry (NLA_UNSPEC), which strict validation refuses. Plus the two vdpa-ts attributes.
 */
const REQUEST_POLICY: Partial<Record<VdpaAttrName, PolicyEntry>> = {
  MGMTDEV_BUS_NAME: { kind: "string" },
  MGMTDEV_DEV_NAME: { kind: "string" },
  DEV_NAME: { kind: "string" },
  DEV_NET_CFG_MACADDR: { kind: "binary", exactLen: 6 },
  DEV_NET_CFG_MAX_VQP: { kind: "u16" },
  // "virtio spec 1.1 section 5.1.4.1 for valid MTU range" (ETH_MIN_MTU)
  DEV_NET_CFG_MTU: { kind: "u16", min: 68 },
  DEV_QUEUE_INDEX: { kind: "u32" },
  DEV_FEATURES: { kind: "u64" },
  VDPATS_BLK_SIZE: { kind: "u64" },
  VDPATS_BLK_BACKING_FILE: { kind: "string" },
  VDPATS_DRIVER_NAME: { kind: "string" },
};

const U64_MAX = (1n << 64n) - 1n;

/**
 * The netlink core's pass over a request, attribute by attribute in message order; the first failure is the
 * answer. Values of a JS kind that cannot stand for the attribute's payload get validate_nla's generic answer
 * (ERANGE, "Attribute failed policy validation"); an integer that does not fit its width stands for a payload
 * of the wrong size, which strict validation refuses (EINVAL, "invalid attribute length"). Duplicates: the
 * last one wins, as in nla_parse.
 */
function parseRequest(req: AttrList): Map<VdpaAttrName, AttrValue> {
  if (!Array.isArray(req)) throw new VdpaError("EINVAL", "a request is a list of attributes");
  const out = new Map<VdpaAttrName, AttrValue>();
  for (const attr of req as unknown[]) {
    const name = (attr as { name?: unknown } | null)?.name;
    const value = (attr as { value?: unknown } | null)?.value;
    if (typeof name !== "string" || !Object.hasOwn(VDPA_ATTR, name)) {
      throw new NetlinkPolicyError("EINVAL", "Unknown attribute type", String(name));
    }
    const key = name as VdpaAttrName;
    const pol = REQUEST_POLICY[key];
    if (!pol) throw new NetlinkPolicyError("EINVAL", "Unsupported attribute", key);
    const failed = () => new NetlinkPolicyError("ERANGE", "Attribute failed policy validation", key);
    switch (pol.kind) {
      case "string":
        if (typeof value !== "string") throw failed();
        break;
      case "binary":
        if (!(value instanceof Uint8Array)) throw failed();
        if (value.length !== pol.exactLen) {
          throw new NetlinkPolicyError("ERANGE", "binary attribute size out of range", key);
        }
        break;
      case "u16":
      case "u32": {
        if (typeof value !== "number") throw failed();
        const max = pol.kind === "u16" ? 0xffff : 0xffff_ffff;
        if (!Number.isInteger(value) || value < 0 || value > max) {
          throw new NetlinkPolicyError("EINVAL", "invalid attribute length", key);
        }
        if (pol.min !== undefined && value < pol.min) {
          throw new NetlinkPolicyError("ERANGE", "integer out of range", key);
        }
        break;
      }
      case "u64":
        if (typeof value !== "bigint") throw failed();
        if (value < 0n || value > U64_MAX)
          throw new NetlinkPolicyError("EINVAL", "invalid attribute length", key);
        break;
    }
    out.set(key, value as AttrValue);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Helpers mirroring vdpa.c
// ---------------------------------------------------------------------------------------------------------

/** BIT_ULL of the three net attributes (VDPA_DEV_NET_ATTRS_MASK). */
const NET_ATTRS_MASK =
  attrBit("DEV_NET_CFG_MACADDR") | attrBit("DEV_NET_CFG_MTU") | attrBit("DEV_NET_CFG_MAX_VQP");

function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** nla_put_u64_64bit of a value the kernel holds as u64. */
function u64(v: bigint): bigint {
  return BigInt.asUintN(64, v);
}

/** nla_put_u32 / nla_put_u16 / nla_put_u8 of a value the kernel holds in that width. */
function u32(v: number): number {
  return v >>> 0;
}
function u16(v: number): number {
  return v & 0xffff;
}

/**
 * vdpa_mgmtdev_get_classes: BIT_ULL(id) over the id table, which ends at the first 0 entry; ids above 63 are
 * skipped. `count` is the number of entries counted (a repeated id counts twice, as in Linux).
 */
export function mgmtdevClasses(mdev: Pick<MgmtDev, "idTable">): { classes: bigint; count: number } {
  let classes = 0n;
  let count = 0;
  for (const id of mdev.idTable) {
    if (id === 0) break;
    if (!Number.isInteger(id) || id < 0 || id > 63) continue;
    classes |= bit(id);
    count++;
  }
  return { classes, count };
}

/** is_valid_ether_addr: not multicast (broadcast included) and not all zeros. */
export function isValidEtherAddr(mac: Uint8Array): boolean {
  return mac.length === 6 && (mac[0] & 1) === 0 && mac.some((b) => b !== 0);
}

/** mgmtdev_handle_match: a bus name only matches parents on a bus, no bus name only bus-less parents. */
function handleMatches(mdev: MgmtDevHandle, busName: string | undefined, devName: string): boolean {
  if ((busName !== undefined) !== (mdev.busName !== undefined)) return false;
  return mdev.name === devName && (busName === undefined || mdev.busName === busName);
}

/** vdpa_nl_mgmtdev_handle_fill. */
function handleFill(out: Attr[], mdev: MgmtDevHandle): void {
  if (mdev.busName !== undefined) out.push({ name: "MGMTDEV_BUS_NAME", value: mdev.busName });
  out.push({ name: "MGMTDEV_DEV_NAME", value: mdev.name });
}

function hexU64(v: bigint): string {
  return `0x${v.toString(16)}`;
}

/** Little-endian reads of a config snapshot (__virtio*_to_cpu(true, ...)). */
class ConfigView {
  private readonly dv: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  u8(off: number): number {
    return this.dv.getUint8(off);
  }
  u16(off: number): number {
    return this.dv.getUint16(off, true);
  }
  u32(off: number): number {
    return this.dv.getUint32(off, true);
  }
  u64(off: number): bigint {
    return this.dv.getBigUint64(off, true);
  }
}

/**
 * `vdev->config->get_config(vdev, 0, &config, sizeof(config))` into a zeroed struct: the raw op, so no
 * features_valid side effect (Linux >= 6.1, "vDPA: allow userspace to query features of a vDPA device").
 * Linux asks for the whole struct; a device whose config space is shorter is read up to its end and the rest
 * stays 0 (the op's contract here is that callers check bounds).
 */
function snapshotRaw(dev: VdpaDevice, structSize: number): ConfigView {
  const buf = new Uint8Array(structSize);
  const len = Math.min(structSize, dev.ops.getConfigSize());
  if (len > 0) dev.ops.getConfig(0, buf, len);
  return new ConfigView(buf);
}

/** vdpa_get_config_unlocked into a zeroed struct: sets features 0 first when none were set (features_valid). */
function snapshotWithFeaturesRule(dev: VdpaDevice, structSize: number): ConfigView {
  const buf = new Uint8Array(structSize);
  const len = Math.min(structSize, dev.getConfigSize());
  buf.set(dev.getConfig(0, len));
  return new ConfigView(buf);
}

/** vdpa_dev_net_mq_config_fill: MAX_VQP when `features` has MQ or RSS. */
function netMqFill(out: Attr[], features: bigint, cfg: ConfigView): void {
  if ((features & (bit(VIRTIO_NET_F_MQ) | bit(VIRTIO_NET_F_RSS))) === 0n) return;
  out.push({ name: "DEV_NET_CFG_MAX_VQP", value: cfg.u16(VIRTIO_NET_CONFIG.max_virtqueue_pairs) });
}

/** vdpa_dev_net_config_fill: gated on DEVICE features. */
function netConfigFill(dev: VdpaDevice, out: Attr[]): void {
  const cfg = snapshotRaw(dev, VIRTIO_NET_CONFIG_SIZE);
  const features = u64(dev.ops.getDeviceFeatures());
  out.push({ name: "DEV_FEATURES", value: features });
  if (features & bit(VIRTIO_NET_F_MTU)) {
    out.push({ name: "DEV_NET_CFG_MTU", value: cfg.u16(VIRTIO_NET_CONFIG.mtu) });
  }
  if (features & bit(VIRTIO_NET_F_MAC)) {
    out.push({
      name: "DEV_NET_CFG_MACADDR",
      value: cfg.bytes.slice(VIRTIO_NET_CONFIG.mac, VIRTIO_NET_CONFIG.mac + 6),
    });
  }
  if (features & bit(VIRTIO_NET_F_STATUS)) {
    out.push({ name: "DEV_NET_STATUS", value: cfg.u16(VIRTIO_NET_CONFIG.status) });
  }
  netMqFill(out, features, cfg);
}

/** vdpa_dev_blk_config_fill: gated on DEVICE features; note BLK_SIZE comes before SEG_MAX. */
function blkConfigFill(dev: VdpaDevice, out: Attr[]): void {
  const C = VIRTIO_BLK_CONFIG;
  const cfg = snapshotRaw(dev, VIRTIO_BLK_CONFIG_SIZE);
  const features = u64(dev.ops.getDeviceFeatures());
  const has = (b: number) => (features & bit(b)) !== 0n;
  out.push({ name: "DEV_FEATURES", value: features });
  out.push({ name: "DEV_BLK_CFG_CAPACITY", value: cfg.u64(C.capacity) });
  if (has(VIRTIO_BLK_F_SIZE_MAX)) out.push({ name: "DEV_BLK_CFG_SIZE_MAX", value: cfg.u32(C.size_max) });
  if (has(VIRTIO_BLK_F_BLK_SIZE)) out.push({ name: "DEV_BLK_CFG_BLK_SIZE", value: cfg.u32(C.blk_size) });
  if (has(VIRTIO_BLK_F_SEG_MAX)) out.push({ name: "DEV_BLK_CFG_SEG_MAX", value: cfg.u32(C.seg_max) });
  if (has(VIRTIO_BLK_F_MQ)) out.push({ name: "DEV_BLK_CFG_NUM_QUEUES", value: cfg.u16(C.num_queues) });
  if (has(VIRTIO_BLK_F_TOPOLOGY)) {
    out.push({ name: "DEV_BLK_CFG_PHY_BLK_EXP", value: cfg.u8(C.physical_block_exp) });
    out.push({ name: "DEV_BLK_CFG_ALIGN_OFFSET", value: cfg.u8(C.alignment_offset) });
    out.push({ name: "DEV_BLK_CFG_MIN_IO_SIZE", value: cfg.u16(C.min_io_size) });
    out.push({ name: "DEV_BLK_CFG_OPT_IO_SIZE", value: cfg.u32(C.opt_io_size) });
  }
  if (has(VIRTIO_BLK_F_DISCARD)) {
    out.push({ name: "DEV_BLK_CFG_MAX_DISCARD_SEC", value: cfg.u32(C.max_discard_sectors) });
    out.push({ name: "DEV_BLK_CFG_MAX_DISCARD_SEG", value: cfg.u32(C.max_discard_seg) });
    out.push({ name: "DEV_BLK_CFG_DISCARD_SEC_ALIGN", value: cfg.u32(C.discard_sector_alignment) });
  }
  if (has(VIRTIO_BLK_F_WRITE_ZEROES)) {
    out.push({ name: "DEV_BLK_CFG_MAX_WRITE_ZEROES_SEC", value: cfg.u32(C.max_write_zeroes_sectors) });
    out.push({ name: "DEV_BLK_CFG_MAX_WRITE_ZEROES_SEG", value: cfg.u32(C.max_write_zeroes_seg) });
  }
  out.push({ name: "DEV_BLK_READ_ONLY", value: has(VIRTIO_BLK_F_RO) ? 1 : 0 });
  out.push({ name: "DEV_BLK_FLUSH", value: has(VIRTIO_BLK_F_FLUSH) ? 1 : 0 });
}

// ---------------------------------------------------------------------------------------------------------
// The management layer
// ---------------------------------------------------------------------------------------------------------

/** Options of run(): `dump` is NLM_F_DUMP. */
export interface RunOptions {
  dump?: boolean;
}

/** What run() answers: the reply messages (one for a doit, one per object for a dump) and any warning. */
export interface RunResult {
  replies: Attr[][];
  warning?: string;
}

/**
 * The management devices of one bus and the commands of Linux's "vdpa" netlink family. Owns the list of
 * registered management devices (Linux's mdev_head); devices live on the bus.
 */
export class VdpaManagement {
  private readonly mdevList: MgmtDev[] = [];

  constructor(readonly bus: VdpaBus) {}

  // ---- Management device registration (vdpa_mgmtdev_register / vdpa_mgmtdev_unregister) ----

  /** Registered management devices, in registration order (the order of MGMTDEV_GET dumps). */
  mgmtDevs(): MgmtDev[] {
    return this.mdevList.slice();
  }

  /** The registered management device with this handle (mgmtdev_handle_match). */
  findMgmtDev(busName: string | undefined, devName: string): MgmtDev | undefined {
    return this.mdevList.find((m) => handleMatches(m, busName, devName));
  }

  /** vdpa_mgmtdev_register: EINVAL unless it has a name (Linux: a device), ops, devAdd and devDel. */
  registerMgmtDev(mdev: MgmtDev): void {
    if (!mdev || typeof mdev.name !== "string" || mdev.name === "" || !mdev.ops) {
      throw new VdpaError("EINVAL", "a management device needs a name and ops");
    }
    if (typeof mdev.ops.devAdd !== "function" || typeof mdev.ops.devDel !== "function") {
      throw new VdpaError("EINVAL", "a management device needs devAdd and devDel");
    }
    if (this.mdevList.includes(mdev) || this.findMgmtDev(mdev.busName, mdev.name)) {
      const handle = mdev.busName !== undefined ? `${mdev.busName}/${mdev.name}` : mdev.name;
      throw new VdpaError("EEXIST", `management device ${handle} is already registered`);
    }
    this.mdevList.push(mdev);
  }

  /**
   * vdpa_mgmtdev_unregister: removes it from the list, then deletes every device it created (in bus order):
   * each leaves the bus, then its devDel runs.
   */
  unregisterMgmtDev(mdev: MgmtDev): void {
    const at = this.mdevList.indexOf(mdev);
    if (at < 0) throw new VdpaError("ENODEV", "management device not registered");
    this.mdevList.splice(at, 1);
    for (const dev of this.bus.devices()) {
      if (dev.mgmtdev !== mdev) continue;
      this.bus.unregisterDevice(dev);
      mdev.ops.devDel(mdev, dev);
    }
  }

  // ---- Dispatcher (genl_family_rcv_msg) ----

  /**
   * Runs command `cmd` as genetlink would: an unknown command or a dump of a command without dumpit is
   * EOPNOTSUPP. MGMTDEV_GET, DEV_GET and DEV_CONFIG_GET can dump.
   */
  run(cmd: VdpaCmdName | number, req: AttrList = [], opts: RunOptions = {}): RunResult {
    const name =
      typeof cmd === "number"
        ? (Object.keys(VDPA_CMD) as VdpaCmdName[]).find((k) => VDPA_CMD[k] === cmd)
        : cmd;
    const dump = opts.dump ?? false;
    const one = (attrs: Attr[]): RunResult => ({ replies: [attrs] });
    const ack = (a: Ack): RunResult =>
      a.warning !== undefined ? { replies: [], warning: a.warning } : { replies: [] };
    switch (name) {
      case "MGMTDEV_GET":
        return dump ? { replies: this.mgmtdevDump(req) } : one(this.mgmtdevGet(req));
      case "DEV_GET":
        return dump ? { replies: this.devDump(req) } : one(this.devGet(req));
      case "DEV_CONFIG_GET":
        return dump ? { replies: this.devConfigDump(req) } : one(this.devConfigGet(req));
      case "DEV_NEW":
      case "DEV_DEL":
      case "DEV_VSTATS_GET":
      case "DEV_ATTR_SET":
        if (dump) throw new VdpaError("EOPNOTSUPP");
        if (name === "DEV_NEW") return ack(this.devNew(req));
        if (name === "DEV_DEL") return ack(this.devDel(req));
        if (name === "DEV_ATTR_SET") return ack(this.devAttrSet(req));
        return one(this.devVstatsGet(req));
      default:
        throw new VdpaError("EOPNOTSUPP");
    }
  }

  // ---- MGMTDEV_GET ----

  /**
   * vdpa_nl_cmd_mgmtdev_get_doit. EINVAL without MGMTDEV_DEV_NAME, ENODEV when nothing matches; both with
   * "Fail to find the specified mgmt device".
   */
  mgmtdevGet(req: AttrList): Attr[] {
    const attrs = parseRequest(req);
    const mdev = this.mgmtdevFromAttrs(attrs, "Fail to find the specified mgmt device");
    return this.mgmtdevFill(mdev);
  }

  /** vdpa_nl_cmd_mgmtdev_get_dumpit: every management device, in registration order. */
  mgmtdevDump(req: AttrList = []): Attr[][] {
    parseRequest(req);
    return this.mdevList.map((m) => this.mgmtdevFill(m));
  }

  /**
   * vdpa_mgmtdev_fill: [BUS_NAME], DEV_NAME, SUPPORTED_CLASSES, MGMTDEV_MAX_VQS, SUPPORTED_FEATURES. The last
   * two are always sent, 0 included (vdpasim_blk shows `max_supported_vqs 0` and an empty `dev_features`).
   */
  private mgmtdevFill(mdev: MgmtDev): Attr[] {
    const out: Attr[] = [];
    handleFill(out, mdev);
    out.push({ name: "MGMTDEV_SUPPORTED_CLASSES", value: mgmtdevClasses(mdev).classes });
    out.push({ name: "DEV_MGMTDEV_MAX_VQS", value: u32(mdev.maxSupportedVqs) });
    out.push({ name: "DEV_SUPPORTED_FEATURES", value: u64(mdev.supportedFeatures) });
    return out;
  }

  /** vdpa_mgmtdev_get_from_attr, with the caller's extack message for both failures. */
  private mgmtdevFromAttrs(attrs: Map<VdpaAttrName, AttrValue>, message: string): MgmtDev {
    const devName = attrs.get("MGMTDEV_DEV_NAME") as string | undefined;
    if (devName === undefined) throw new VdpaError("EINVAL", message);
    const busName = attrs.get("MGMTDEV_BUS_NAME") as string | undefined;
    const mdev = this.findMgmtDev(busName, devName);
    if (!mdev) throw new VdpaError("ENODEV", message);
    return mdev;
  }

  // ---- DEV_NEW ----

  /**
   * vdpa_nl_cmd_dev_add_set_doit. After the policy, in Linux's order: EINVAL without DEV_NAME; MAX_VQP 0 ->
   * EINVAL "At least one pair of VQs is required"; DEV_FEATURES lacking MAC / MTU / MQ (max_vqp > 1) for the
   * attributes given -> EINVAL "Missing features 0x%llx for provided attributes"; management device missing
   * (EINVAL) or not found (ENODEV) -> "Fail to find the specified management device"; attributes outside its
   * configAttrMask -> EOPNOTSUPP "Some provided attributes are not supported: 0x%llx"; net attributes on a
   * parent without the net class -> EINVAL "Network class attributes provided on unsupported management
   * device"; only device-specific DEV_FEATURES on a multi-class parent with net -> EINVAL "Management device
   * supports multi-class while device features specified are ambiguous"; then (vdpa-ts) the name check, the
   * parent's devAdd and its errors, and registration (EEXIST, no text, for a name in use).
   */
  devNew(req: AttrList): Ack {
    const attrs = parseRequest(req);
    const name = attrs.get("DEV_NAME") as string | undefined;
    if (name === undefined) throw new VdpaError("EINVAL");

    const config: DevSetConfig = emptyDevSetConfig();
    const mac = attrs.get("DEV_NET_CFG_MACADDR") as Uint8Array | undefined;
    if (mac !== undefined) {
      config.net.mac = new Uint8Array(mac);
      config.mask |= attrBit("DEV_NET_CFG_MACADDR");
    }
    const mtu = attrs.get("DEV_NET_CFG_MTU") as number | undefined;
    if (mtu !== undefined) {
      config.net.mtu = mtu;
      config.mask |= attrBit("DEV_NET_CFG_MTU");
    }
    const maxVqp = attrs.get("DEV_NET_CFG_MAX_VQP") as number | undefined;
    if (maxVqp !== undefined) {
      config.net.maxVqPairs = maxVqp;
      if (maxVqp === 0) throw new VdpaError("EINVAL", "At least one pair of VQs is required");
      config.mask |= attrBit("DEV_NET_CFG_MAX_VQP");
    }
    const features = attrs.get("DEV_FEATURES") as bigint | undefined;
    if (features !== undefined) {
      config.deviceFeatures = features;
      let missing = 0n;
      if (mac !== undefined && !(features & bit(VIRTIO_NET_F_MAC))) missing |= bit(VIRTIO_NET_F_MAC);
      if (mtu !== undefined && !(features & bit(VIRTIO_NET_F_MTU))) missing |= bit(VIRTIO_NET_F_MTU);
      if (maxVqp !== undefined && maxVqp > 1 && !(features & bit(VIRTIO_NET_F_MQ)))
        missing |= bit(VIRTIO_NET_F_MQ);
      if (missing)
        throw new VdpaError("EINVAL", `Missing features ${hexU64(missing)} for provided attributes`);
      config.mask |= attrBit("DEV_FEATURES");
    }
    // vdpa-ts attributes (no Linux counterpart).
    const size = attrs.get("VDPATS_BLK_SIZE") as bigint | undefined;
    if (size !== undefined) {
      if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new VdpaError("ERANGE", "disk size too large");
      config.blk.sizeBytes = Number(size);
      config.mask |= attrBit("VDPATS_BLK_SIZE");
    }
    const backingFile = attrs.get("VDPATS_BLK_BACKING_FILE") as string | undefined;
    if (backingFile !== undefined) {
      config.blk.backingFile = backingFile;
      config.mask |= attrBit("VDPATS_BLK_BACKING_FILE");
    }
    // (Linux: net attributes without CAP_NET_ADMIN -> EPERM; every caller is privileged here.)

    const mdev = this.mgmtdevFromAttrs(attrs, "Fail to find the specified management device");
    if ((config.mask & mdev.configAttrMask) !== config.mask) {
      throw new VdpaError(
        "EOPNOTSUPP",
        `Some provided attributes are not supported: ${hexU64(config.mask & ~mdev.configAttrMask)}`,
      );
    }
    const { classes, count } = mgmtdevClasses(mdev);
    if (config.mask & NET_ATTRS_MASK && !(classes & bit(VIRTIO_ID_NET))) {
      throw new VdpaError("EINVAL", "Network class attributes provided on unsupported management device");
    }
    if (
      !(config.mask & NET_ATTRS_MASK) &&
      config.mask & attrBit("DEV_FEATURES") &&
      classes & bit(VIRTIO_ID_NET) &&
      count > 1 &&
      (config.deviceFeatures ?? 0n) & VIRTIO_DEVICE_F_MASK
    ) {
      throw new VdpaError(
        "EINVAL",
        "Management device supports multi-class while device features specified are ambiguous",
      );
    }

    VdpaBus.checkName(name);
    const dev = mdev.ops.devAdd(mdev, name, config);
    try {
      // _vdpa_register_device: a managed registration needs the device's management device.
      if (!dev.mgmtdev) throw new VdpaError("EINVAL");
      this.bus.registerDevice(dev);
    } catch (err) {
      try {
        mdev.ops.devDel(mdev, dev);
      } catch {
        // The registration error is the answer.
      }
      throw err;
    }
    return {};
  }

  // ---- DEV_DEL ----

  /**
   * vdpa_nl_cmd_dev_del_set_doit: EINVAL without DEV_NAME; ENODEV "device not found"; EINVAL "Only user
   * created device can be deleted by user" for an unmanaged device; then the device leaves the bus (a bound
   * driver is unbound first) and its management device's devDel runs.
   */
  devDel(req: AttrList): Ack {
    const attrs = parseRequest(req);
    const name = attrs.get("DEV_NAME") as string | undefined;
    if (name === undefined) throw new VdpaError("EINVAL");
    const dev = this.bus.device(name);
    if (!dev) throw new VdpaError("ENODEV", "device not found");
    const mdev = dev.mgmtdev ? this.resolveMgmtDev(dev.mgmtdev) : undefined;
    if (!mdev) throw new VdpaError("EINVAL", "Only user created device can be deleted by user");
    this.bus.unregisterDevice(dev);
    mdev.ops.devDel(mdev, dev);
    return {};
  }

  // ---- DEV_GET ----

  /** vdpa_nl_cmd_dev_get_doit: EINVAL without DEV_NAME; ENODEV "device not found"; EINVAL (no text) if unmanaged. */
  devGet(req: AttrList): Attr[] {
    const attrs = parseRequest(req);
    const name = attrs.get("DEV_NAME") as string | undefined;
    if (name === undefined) throw new VdpaError("EINVAL");
    const dev = this.bus.device(name);
    if (!dev) throw new VdpaError("ENODEV", "device not found");
    if (!dev.mgmtdev) throw new VdpaError("EINVAL");
    return this.devFill(dev, dev.mgmtdev);
  }

  /** vdpa_nl_cmd_dev_get_dumpit: managed devices in bus order; unmanaged ones are skipped. */
  devDump(req: AttrList = []): Attr[][] {
    parseRequest(req);
    const out: Attr[][] = [];
    for (const dev of this.bus.devices()) if (dev.mgmtdev) out.push(this.devFill(dev, dev.mgmtdev));
    return out;
  }

  /**
   * vdpa_dev_fill: [BUS_NAME], MGMTDEV_DEV_NAME, DEV_NAME, DEV_ID, DEV_VENDOR_ID, DEV_MAX_VQS (nvqs),
   * DEV_MAX_VQ_SIZE, DEV_MIN_VQ_SIZE (1 without get_vq_num_min). The ops are read before anything is put.
   */
  private devFill(dev: VdpaDevice, mdev: MgmtDevHandle): Attr[] {
    const out: Attr[] = [];
    handleFill(out, mdev);
    const deviceId = dev.ops.getDeviceId();
    const vendorId = dev.ops.getVendorId();
    const maxVqSize = dev.ops.getVqNumMax();
    const minVqSize = dev.getVqNumMin();
    out.push({ name: "DEV_NAME", value: dev.name });
    out.push({ name: "DEV_ID", value: u32(deviceId) });
    out.push({ name: "DEV_VENDOR_ID", value: u32(vendorId) });
    out.push({ name: "DEV_MAX_VQS", value: u32(dev.nvqs) });
    out.push({ name: "DEV_MAX_VQ_SIZE", value: u16(maxVqSize) });
    out.push({ name: "DEV_MIN_VQ_SIZE", value: u16(minVqSize) });
    return out;
  }

  // ---- DEV_CONFIG_GET ----

  /**
   * vdpa_nl_cmd_dev_config_get_doit: EINVAL without DEV_NAME; ENODEV "device not found"; EINVAL "unmanaged vdpa
   * device"; EOPNOTSUPP (no text) for a class other than net and block.
   */
  devConfigGet(req: AttrList): Attr[] {
    const attrs = parseRequest(req);
    const name = attrs.get("DEV_NAME") as string | undefined;
    if (name === undefined) throw new VdpaError("EINVAL");
    const dev = this.bus.device(name);
    if (!dev) throw new VdpaError("ENODEV", "device not found");
    if (!dev.mgmtdev) throw new VdpaError("EINVAL", "unmanaged vdpa device");
    return this.devConfigFill(dev);
  }

  /**
   * vdpa_nl_cmd_dev_config_get_dumpit: managed devices in bus order. Quirk kept: the dump callback's error is
   * dropped (the dumpit returns the message length), so a device whose fill fails (a class other than net or
   * block) silently ends the dump: it and every device after it are missing, and no error is reported.
   */
  devConfigDump(req: AttrList = []): Attr[][] {
    parseRequest(req);
    const out: Attr[][] = [];
    for (const dev of this.bus.devices()) {
      if (!dev.mgmtdev) continue;
      try {
        out.push(this.devConfigFill(dev));
      } catch (err) {
        if (err instanceof VdpaError) break;
        throw err;
      }
    }
    return out;
  }

  /**
   * vdpa_dev_config_fill: DEV_NAME, DEV_ID, NEGOTIATED_FEATURES only when the status has FEATURES_OK, then the
   * net or block fill (DEV_FEATURES and the fields the DEVICE features make valid).
   */
  private devConfigFill(dev: VdpaDevice): Attr[] {
    const out: Attr[] = [{ name: "DEV_NAME", value: dev.name }];
    const deviceId = dev.ops.getDeviceId();
    out.push({ name: "DEV_ID", value: u32(deviceId) });
    const status = dev.ops.getStatus();
    if (status & VIRTIO_CONFIG_S_FEATURES_OK) {
      out.push({ name: "DEV_NEGOTIATED_FEATURES", value: u64(dev.ops.getDriverFeatures()) });
    }
    if (deviceId === VIRTIO_ID_NET) netConfigFill(dev, out);
    else if (deviceId === VIRTIO_ID_BLOCK) blkConfigFill(dev, out);
    else throw new VdpaError("EOPNOTSUPP");
    return out;
  }

  // ---- DEV_VSTATS_GET ----

  /**
   * vdpa_nl_cmd_dev_stats_get_doit + vdpa_dev_vendor_stats_fill + vendor_stats_fill + vdpa_fill_stats_rec.
   * Reply: DEV_NAME, DEV_ID, NEGOTIATED_FEATURES, [MAX_VQP when the NEGOTIATED features have MQ or RSS],
   * QUEUE_INDEX, then (VENDOR_ATTR_NAME, VENDOR_ATTR_VALUE) per counter. The config is read through
   * vdpa_get_config_unlocked, so a device nobody set features on gets set_features(0) first.
   */
  devVstatsGet(req: AttrList): Attr[] {
    const attrs = parseRequest(req);
    const name = attrs.get("DEV_NAME") as string | undefined;
    if (name === undefined) throw new VdpaError("EINVAL");
    const index = attrs.get("DEV_QUEUE_INDEX") as number | undefined;
    if (index === undefined) throw new VdpaError("EINVAL");
    const dev = this.bus.device(name);
    if (!dev) throw new VdpaError("ENODEV", "device not found");
    if (!dev.mgmtdev) throw new VdpaError("EINVAL", "unmanaged vdpa device");

    const out: Attr[] = [{ name: "DEV_NAME", value: dev.name }];
    const deviceId = dev.ops.getDeviceId();
    out.push({ name: "DEV_ID", value: u32(deviceId) });
    if (deviceId !== VIRTIO_ID_NET) throw new VdpaError("EOPNOTSUPP");
    if (index > VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX)
      throw new VdpaError("ERANGE", "queue index exceeds max value");
    const getStats = dev.ops.getVendorVqStats?.bind(dev.ops);
    if (!getStats) throw new VdpaError("EOPNOTSUPP");
    if (!(dev.ops.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK)) {
      throw new VdpaError("EAGAIN", "feature negotiation not complete");
    }
    const cfg = snapshotWithFeaturesRule(dev, VIRTIO_NET_CONFIG_SIZE);
    const features = u64(dev.ops.getDriverFeatures());
    out.push({ name: "DEV_NEGOTIATED_FEATURES", value: features });
    netMqFill(out, features, cfg);
    out.push({ name: "DEV_QUEUE_INDEX", value: index });
    for (const stat of getStats(index)) {
      out.push({ name: "DEV_VENDOR_ATTR_NAME", value: stat.name });
      out.push({ name: "DEV_VENDOR_ATTR_VALUE", value: u64(stat.value) });
    }
    return out;
  }

  // ---- DEV_ATTR_SET ----

  /**
   * vdpa_nl_cmd_dev_attr_set_doit + vdpa_dev_net_device_attr_set: EINVAL without DEV_NAME; ENODEV "device not
   * found"; EINVAL "unmanaged vdpa device". A management device without the net class answers SUCCESS with the
   * warning "<name> device not supported". For net: no MAC -> EOPNOTSUPP; a MAC that is not a valid unicast
   * address -> EOPNOTSUPP "Invalid MAC address"; no devSetAttr -> EOPNOTSUPP "Operation not supported by the
   * device."; else devSetAttr(mdev, dev, { mask: MAC bit, net: { mac } }) and its answer.
   */
  devAttrSet(req: AttrList): Ack {
    const attrs = parseRequest(req);
    const name = attrs.get("DEV_NAME") as string | undefined;
    if (name === undefined) throw new VdpaError("EINVAL");
    const dev = this.bus.device(name);
    if (!dev) throw new VdpaError("ENODEV", "device not found");
    const mdev = dev.mgmtdev ? this.resolveMgmtDev(dev.mgmtdev) : undefined;
    if (!mdev) throw new VdpaError("EINVAL", "unmanaged vdpa device");
    if (!(mgmtdevClasses(mdev).classes & bit(VIRTIO_ID_NET))) {
      return { warning: `${name} device not supported` };
    }
    const mac = attrs.get("DEV_NET_CFG_MACADDR") as Uint8Array | undefined;
    if (mac === undefined) throw new VdpaError("EOPNOTSUPP");
    if (!isValidEtherAddr(mac)) throw new VdpaError("EOPNOTSUPP", "Invalid MAC address");
    if (!mdev.ops.devSetAttr) throw new VdpaError("EOPNOTSUPP", "Operation not supported by the device.");
    const config = emptyDevSetConfig();
    config.mask = attrBit("DEV_NET_CFG_MACADDR");
    config.net.mac = new Uint8Array(mac);
    mdev.ops.devSetAttr(mdev, dev, config);
    return {};
  }

  /**
   * The management device behind a device's handle: Linux keeps a pointer (vdev->mdev). Parents pass their
   * MgmtDev object as the handle; a plain handle is looked up among the registered management devices.
   */
  private resolveMgmtDev(handle: MgmtDevHandle): MgmtDev | undefined {
    const byIdentity = this.mdevList.find((m) => m === handle);
    if (byIdentity) return byIdentity;
    const asMgmt = handle as Partial<MgmtDev>;
    if (asMgmt.ops && typeof asMgmt.ops.devDel === "function" && Array.isArray(asMgmt.idTable)) {
      return handle as MgmtDev;
    }
    return this.findMgmtDev(handle.busName, handle.name);
  }
}
