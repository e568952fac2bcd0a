// How iproute2 6.1's `vdpa` prints each reply message (vdpa/vdpa.c pr_out_*), call for call, so text and
// JSON come out identical; plus the lines of vdpa-ts's `-d` (details), which only add to the output.

import type { Attr, AttrValue } from "../mgmt-protocol/codec.js";
import {
  deviceIdName,
  deviceTypeName,
  featureByBit,
  featureClassOf,
  featureTokensIproute2Json,
  mgmtdevFeatureDeviceId,
  statusNames,
  VIRTIO_ID_NET,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
} from "../spec/index.js";
import type { Printer } from "./printer.js";

/** The first value of an attribute in a reply (Linux's tool keeps the last; replies never repeat these). */
function attr(attrs: readonly Attr[], name: string): AttrValue | undefined {
  return attrs.find((a) => a.name === name)?.value;
}

function num(v: AttrValue | undefined): number {
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v & 0xffff_ffffn);
  return 0;
}

function u64(v: AttrValue | undefined): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number") return BigInt(v);
  return 0n;
}

function str(v: AttrValue | undefined): string {
  return typeof v === "string" ? v : "";
}

/** print_features: the feature words as names, `bit_N` (text) or N (JSON) where the table has none. */
function printFeatures(p: Printer, features: bigint, key: string, deviceId: number): void {
  p.arrayStart(key);
  for (const token of featureTokensIproute2Json(features, deviceId)) {
    if (typeof token === "number") p.number(null, ` bit_${token}`, token);
    else p.string(null, ` ${token}`, token);
  }
  p.arrayEnd();
}

/** pr_out_handle_start's "bus/name" or "name". */
function mgmtdevHandle(attrs: readonly Attr[]): string {
  const bus = attr(attrs, "MGMTDEV_BUS_NAME");
  const name = str(attr(attrs, "MGMTDEV_DEV_NAME"));
  return bus !== undefined ? `${str(bus)}/${name}` : name;
}

/** cmd_mgmtdev_show_cb + pr_out_mgmtdev_show. */
export function printMgmtdev(p: Printer, attrs: readonly Attr[]): void {
  if (attr(attrs, "MGMTDEV_DEV_NAME") === undefined) return;
  p.handleStart(mgmtdevHandle(attrs));
  let classes = 0n;
  const classesAttr = attr(attrs, "MGMTDEV_SUPPORTED_CLASSES");
  if (classesAttr !== undefined) {
    classes = u64(classesAttr);
    p.arrayStart("supported_classes");
    for (let id = 1; id < 64; id++) {
      if ((classes >> BigInt(id)) & 1n) {
        const name = deviceIdName(id);
        p.string(null, ` ${name}`, name);
      }
    }
    p.arrayEnd();
  }
  const maxVqs = attr(attrs, "DEV_MGMTDEV_MAX_VQS");
  if (maxVqs !== undefined) {
    p.nl();
    // printed with %d, so a u32 above INT_MAX shows negative in text, as in iproute2
    p.number("max_supported_vqs", `  max_supported_vqs ${num(maxVqs) | 0}`, num(maxVqs));
  }
  const features = attr(attrs, "DEV_SUPPORTED_FEATURES");
  if (features !== undefined) {
    printFeatures(p, u64(features), "dev_features", mgmtdevFeatureDeviceId(classes));
  }
  p.handleEnd();
}

/** What `-d` adds to `dev show`, from the VDPATS_DEV_DETAILS_GET reply of the same device. */
export interface DeviceDetails {
  driver?: string;
  status: number;
  deviceId: number;
  negotiated?: bigint;
  vhostUserSocket?: string;
}

export function detailsFromReply(attrs: readonly Attr[]): [string, DeviceDetails] {
  const driver = attr(attrs, "VDPATS_DRIVER_NAME");
  const negotiated = attr(attrs, "DEV_NEGOTIATED_FEATURES");
  const socket = attr(attrs, "VDPATS_VHOST_USER_SOCKET");
  return [
    str(attr(attrs, "DEV_NAME")),
    {
      driver: driver === undefined ? undefined : str(driver),
      status: num(attr(attrs, "VDPATS_DEV_STATUS")),
      deviceId: num(attr(attrs, "DEV_ID")),
      negotiated: negotiated === undefined ? undefined : u64(negotiated),
      vhostUserSocket: socket === undefined ? undefined : str(socket),
    },
  ];
}

/** cmd_dev_show_cb + pr_out_dev, then the `-d` lines when `details` is given. */
export function printDev(p: Printer, attrs: readonly Attr[], details?: DeviceDetails): void {
  const devName = attr(attrs, "DEV_NAME");
  const devId = attr(attrs, "DEV_ID");
  if (attr(attrs, "MGMTDEV_DEV_NAME") === undefined || devName === undefined || devId === undefined) return;
  p.handleStart(str(devName));
  const type = deviceTypeName(num(devId));
  p.string("type", `type ${type}`, type);
  const mgmtdev = mgmtdevHandle(attrs);
  p.string("mgmtdev", ` mgmtdev ${mgmtdev}`, mgmtdev);
  for (const [name, key] of [
    ["DEV_VENDOR_ID", "vendor_id"],
    ["DEV_MAX_VQS", "max_vqs"],
    ["DEV_MAX_VQ_SIZE", "max_vq_size"],
  ] as const) {
    const v = attr(attrs, name);
    if (v !== undefined) p.number(key, ` ${key} ${num(v) >>> 0}`, num(v) >>> 0);
  }
  if (details) printDetails(p, details);
  p.handleEnd();
}

function printDetails(p: Printer, d: DeviceDetails): void {
  p.nl();
  const driver = d.driver ?? "none";
  p.string("driver", `  driver ${driver}`, driver);
  p.arrayStart("status");
  for (const name of statusNames(d.status)) p.string(null, ` ${name}`, name);
  p.arrayEnd();
  if (d.negotiated !== undefined) {
    // iproute2 names only net bits; details name every class's bits by their spec name.
    p.arrayStart("negotiated_features");
    for (const token of detailFeatureNames(d.negotiated, d.deviceId)) p.string(null, ` ${token}`, token);
    p.arrayEnd();
  }
  if (d.vhostUserSocket !== undefined) {
    p.nl();
    p.string("vhost_user_socket", `  vhost_user_socket ${d.vhostUserSocket}`, d.vhostUserSocket);
  }
}

/** Feature names for `-d`: iproute2's where it has one (net), else the spec name without its prefix. */
export function detailFeatureNames(features: bigint, deviceId: number): string[] {
  const cls = featureClassOf(deviceId);
  return featureTokensIproute2Json(features, deviceId).map((t) => {
    if (typeof t === "string") return t;
    const spec = cls ? featureByBit(cls, t)?.specName : featureByBit("transport", t)?.specName;
    return spec ? spec.replace(/^VIRTIO_([A-Z]+_)?F_/, "") : `bit_${t}`;
  });
}

/** ll_addr_n2a: lower-case hex bytes joined by colons. */
function macText(v: AttrValue | undefined): string {
  if (!(v instanceof Uint8Array)) return "";
  return Array.from(v, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/** cmd_dev_config_show_cb + pr_out_dev_config: 6.1 prints the config of net devices only. */
export function printDevConfig(p: Printer, attrs: readonly Attr[]): void {
  const devName = attr(attrs, "DEV_NAME");
  const devId = attr(attrs, "DEV_ID");
  if (devName === undefined || devId === undefined) return;
  p.handleStart(str(devName));
  if (num(devId) === VIRTIO_ID_NET) printNetConfig(p, attrs);
  p.handleEnd();
}

/** pr_out_dev_net_config, with its keys "link " and "link_announce " (trailing space) as 6.1 has them. */
function printNetConfig(p: Printer, attrs: readonly Attr[]): void {
  const mac = attr(attrs, "DEV_NET_CFG_MACADDR");
  if (mac !== undefined) {
    const text = macText(mac);
    p.string("mac", `mac ${text} `, text);
  }
  const status = attr(attrs, "DEV_NET_STATUS");
  if (status !== undefined) {
    const s = num(status) & 0xffff;
    const link = s & VIRTIO_NET_S_LINK_UP ? "up" : "down";
    p.string("link ", `link ${link} `, link);
    const announce = (s & VIRTIO_NET_S_ANNOUNCE) !== 0;
    p.bool("link_announce ", `link_announce ${announce} `, announce);
  }
  const maxVqp = attr(attrs, "DEV_NET_CFG_MAX_VQP");
  if (maxVqp !== undefined) {
    const v = num(maxVqp) & 0xffff;
    p.number("max_vq_pairs", `max_vq_pairs ${v} `, v);
  }
  const mtu = attr(attrs, "DEV_NET_CFG_MTU");
  if (mtu !== undefined) {
    const v = num(mtu) & 0xffff;
    p.number("mtu", `mtu ${v} `, v);
  }
  const features = attr(attrs, "DEV_NEGOTIATED_FEATURES");
  if (features !== undefined) {
    // dev_id is read as a u16 here
    printFeatures(p, u64(features), "negotiated_features", num(attr(attrs, "DEV_ID")) & 0xffff);
  }
}

/** iproute2's MAX_KEY_LEN: a statistic name longer than this ends the line early. */
const MAX_STAT_NAME = 200;

/** cmd_dev_vstats_show_cb + pr_out_dev_vstats: statistics are printed for net devices only. */
export function printVstats(p: Printer, attrs: readonly Attr[]): void {
  const devName = attr(attrs, "DEV_NAME");
  const devId = attr(attrs, "DEV_ID");
  if (devName === undefined || devId === undefined) return;
  p.handleStart(str(devName));
  if (num(devId) === VIRTIO_ID_NET) printNetVstats(p, attrs);
  p.handleEnd();
}

/**
 * pr_out_dev_net_vstats walks the attributes in message order: the queue type is decided when the queue
 * index is met, from the max_vqp and features seen BEFORE it (0 if none), so Linux's attribute order is
 * what labels queue 0 "control_vq" when no max_vqp precedes it. Each statistic is a name then a value.
 */
function printNetVstats(p: Printer, attrs: readonly Attr[]): void {
  let maxVqp = 0;
  let features = 0n;
  let name: string | undefined;
  for (const a of attrs) {
    switch (a.name) {
      case "DEV_NET_CFG_MAX_VQP":
        maxVqp = num(a.value) & 0xffff;
        break;
      case "DEV_NEGOTIATED_FEATURES":
        features = u64(a.value);
        break;
      case "DEV_QUEUE_INDEX": {
        // read with mnl_attr_get_u16: the low half of the u32
        const qidx = num(a.value) & 0xffff;
        const isCtrl = ((features >> BigInt(VIRTIO_NET_F_CTRL_VQ)) & 1n) === 1n && qidx === 2 * maxVqp;
        const type = isCtrl ? "control_vq" : qidx & 1 ? "tx" : "rx";
        p.string("queue_type", `queue_type ${type} `, type);
        break;
      }
      case "DEV_VENDOR_ATTR_NAME":
        name = str(a.value);
        if (Buffer.byteLength(name) > MAX_STAT_NAME) return;
        break;
      case "DEV_VENDOR_ATTR_VALUE":
        if (name !== undefined) p.number(name, `${name} ${u64(a.value)} `, u64(a.value));
        break;
    }
  }
}
