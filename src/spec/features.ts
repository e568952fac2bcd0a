// Virtio feature bits: one table for the transport (device-independent) bits and the virtio-net and
// virtio-blk bits, each with its name in the virtio spec, in the Linux uapi headers and in iproute2 6.1's
// `vdpa` tool.
//
// Sources: Linux include/uapi/linux/virtio_config.h, virtio_ring.h, virtio_net.h, virtio_blk.h; virtio 1.3
// "Reserved Feature Bits", "Network Device" and "Block Device" sections; iproute2 v6.1.0 vdpa/vdpa.c
// (tag v6.1.0, commit 83699d3d5077bbb3957030938f746601317767d2) for the display names.
//
// Feature sets are 64-bit (up to 128 with the UDP tunnel bits), so this module uses bigint. That is fine on the
// control path (negotiation, netlink replies, CLI output) and only there: the ring engines receive plain
// booleans (event index, indirect, packed, ...) once at queue setup and never look at a bigint.

import { VIRTIO_ID_BLOCK, VIRTIO_ID_NET } from "./device-ids.js";

export type FeatureClass = "transport" | "net" | "blk";

export interface FeatureInfo {
  /** Bit index, 0..127. */
  readonly bit: number;
  /** "transport" for device-independent bits, otherwise the device class that defines the bit. */
  readonly cls: FeatureClass;
  /** The name the virtio spec uses. */
  readonly specName: string;
  /** The Linux uapi macro; undefined when mainline Linux does not define one (only VIRTIO_BLK_F_LIFETIME). */
  readonly linuxMacro: string | undefined;
  /**
   * What iproute2 6.1's `vdpa` prints for this bit on a net device, or undefined when it prints `bit_N`.
   * Bits 24 and 27 are named only for net devices; see featureNamesIproute2 for the full rule.
   */
  readonly iproute2Name: string | undefined;
  /** Defined only for the legacy (pre-1.0) interface. */
  readonly legacy?: boolean;
  /** Other names found in headers for the same bit. */
  readonly aliases?: readonly string[];
}

// ---- Transport bits (virtio_config.h, virtio_ring.h) ----

/** Legacy: notify even when the driver suppressed notifications, once the available ring runs empty. */
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
/** Legacy: the device accepts any split of headers and data over descriptors. */
export const VIRTIO_F_ANY_LAYOUT = 27;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
/** The spec's name for VIRTIO_RING_F_INDIRECT_DESC. */
export const VIRTIO_F_INDIRECT_DESC = VIRTIO_RING_F_INDIRECT_DESC;
export const VIRTIO_RING_F_EVENT_IDX = 29;
/** The spec's name for VIRTIO_RING_F_EVENT_IDX. */
export const VIRTIO_F_EVENT_IDX = VIRTIO_RING_F_EVENT_IDX;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
/** Old name of VIRTIO_F_ACCESS_PLATFORM, still accepted by userspace headers. */
export const VIRTIO_F_IOMMU_PLATFORM = VIRTIO_F_ACCESS_PLATFORM;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_ORDER_PLATFORM = 36;
export const VIRTIO_F_SR_IOV = 37;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_NOTIF_CONFIG_DATA = 39;
export const VIRTIO_F_RING_RESET = 40;
export const VIRTIO_F_ADMIN_VQ = 41;

/** First transport bit (Linux VIRTIO_TRANSPORT_F_START). */
export const VIRTIO_TRANSPORT_F_START = 28;
/**
 * Last transport bit, inclusive (Linux VIRTIO_TRANSPORT_F_END as of the ADMIN_VQ addition). Bit 42 has no
 * name yet in the kernel header but already belongs to the reserved range.
 */
export const VIRTIO_TRANSPORT_F_END = 42;
/** The range drivers/vdpa/vdpa.c treats as transport bits when it checks provisioned device features. */
export const VDPA_TRANSPORT_FEATURE_START = VIRTIO_TRANSPORT_F_START;
export const VDPA_TRANSPORT_FEATURE_END = VIRTIO_TRANSPORT_F_END;
/**
 * Device-specific bits of a 64-bit feature word: everything outside START..END (drivers/vdpa/vdpa.c
 * VIRTIO_DEVICE_F_MASK). The netlink "ambiguous features" check for multi-class management devices uses it.
 */
export const VIRTIO_DEVICE_F_MASK: bigint =
  ((0xffff_ffff_ffff_ffffn << BigInt(VIRTIO_TRANSPORT_F_END + 1)) & 0xffff_ffff_ffff_ffffn) |
  ((1n << BigInt(VIRTIO_TRANSPORT_F_START)) - 1n);
/**
 * VIRTIO_TRANSPORT_F_END in the uapi copy bundled with iproute2 6.1 (Linux 6.1, before ADMIN_VQ). Its
 * print_features takes names for bits 28..41 from its transport table and for every other bit from the
 * device class table.
 */
export const IPROUTE2_61_TRANSPORT_F_END = 41;

// ---- virtio-net bits (virtio_net.h) ----

export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
/** Legacy only. */
export const VIRTIO_NET_F_GSO = 6;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_CTRL_RX = 18;
export const VIRTIO_NET_F_CTRL_VLAN = 19;
export const VIRTIO_NET_F_CTRL_RX_EXTRA = 20;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
export const VIRTIO_NET_F_MQ = 22;
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 23;
export const VIRTIO_NET_F_DEVICE_STATS = 50;
export const VIRTIO_NET_F_VQ_NOTF_COAL = 52;
export const VIRTIO_NET_F_NOTF_COAL = 53;
export const VIRTIO_NET_F_GUEST_USO4 = 54;
export const VIRTIO_NET_F_GUEST_USO6 = 55;
export const VIRTIO_NET_F_HOST_USO = 56;
export const VIRTIO_NET_F_HASH_REPORT = 57;
export const VIRTIO_NET_F_GUEST_HDRLEN = 59;
export const VIRTIO_NET_F_RSS = 60;
export const VIRTIO_NET_F_RSC_EXT = 61;
export const VIRTIO_NET_F_STANDBY = 62;
export const VIRTIO_NET_F_SPEED_DUPLEX = 63;
// Bits above 63 need Linux's extended (128-bit) feature words. The vDPA netlink feature attributes are u64, so
// iproute2 never prints these bits.
export const VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO = 65;
export const VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM = 66;
export const VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO = 67;
export const VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM = 68;

// ---- virtio-blk bits (virtio_blk.h) ----

/** Legacy only. */
export const VIRTIO_BLK_F_BARRIER = 0;
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
/** Legacy only. */
export const VIRTIO_BLK_F_SCSI = 7;
/** Cache flush command. Linux also calls it VIRTIO_BLK_F_WCE. */
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_WCE = VIRTIO_BLK_F_FLUSH;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;
/** Spec only: a lifetime patch for Linux (Dec 2022) was not merged, so the uapi header lacks this name. */
export const VIRTIO_BLK_F_LIFETIME = 15;
export const VIRTIO_BLK_F_SECURE_ERASE = 16;
export const VIRTIO_BLK_F_ZONED = 17;

// Builders keep the table rows short; most rows have the same spec and Linux name.
function transport(
  bit: number,
  name: string,
  iproute2Name: string | undefined,
  extra?: Partial<FeatureInfo>,
) {
  return { bit, cls: "transport", specName: name, linuxMacro: name, iproute2Name, ...extra } as FeatureInfo;
}
function net(bit: number, short: string, iproute2Name: string | undefined, extra?: Partial<FeatureInfo>) {
  const name = `VIRTIO_NET_F_${short}`;
  return { bit, cls: "net", specName: name, linuxMacro: name, iproute2Name, ...extra } as FeatureInfo;
}
function blk(bit: number, short: string, extra?: Partial<FeatureInfo>) {
  const name = `VIRTIO_BLK_F_${short}`;
  return {
    bit,
    cls: "blk",
    specName: name,
    linuxMacro: name,
    iproute2Name: undefined,
    ...extra,
  } as FeatureInfo;
}

/**
 * Every feature bit this project knows, ordered by class then bit. iproute2Name is copied from iproute2 6.1's
 * `ext_feature_strs` (transport bits 28..41) and `net_feature_strs` (everything else, net devices only).
 * iproute2 6.1 has no table for blk, so every blk bit prints as `bit_N`.
 */
export const FEATURES: readonly FeatureInfo[] = [
  transport(VIRTIO_F_NOTIFY_ON_EMPTY, "VIRTIO_F_NOTIFY_ON_EMPTY", "NOTIFY_ON_EMPTY", { legacy: true }),
  transport(VIRTIO_F_ANY_LAYOUT, "VIRTIO_F_ANY_LAYOUT", "ANY_LAYOUT", { legacy: true }),
  transport(VIRTIO_RING_F_INDIRECT_DESC, "VIRTIO_F_INDIRECT_DESC", "RING_INDIRECT_DESC", {
    linuxMacro: "VIRTIO_RING_F_INDIRECT_DESC",
  }),
  transport(VIRTIO_RING_F_EVENT_IDX, "VIRTIO_F_EVENT_IDX", "RING_EVENT_IDX", {
    linuxMacro: "VIRTIO_RING_F_EVENT_IDX",
  }),
  transport(VIRTIO_F_VERSION_1, "VIRTIO_F_VERSION_1", "VERSION_1"),
  transport(VIRTIO_F_ACCESS_PLATFORM, "VIRTIO_F_ACCESS_PLATFORM", "ACCESS_PLATFORM", {
    aliases: ["VIRTIO_F_IOMMU_PLATFORM"],
  }),
  transport(VIRTIO_F_RING_PACKED, "VIRTIO_F_RING_PACKED", "RING_PACKED"),
  transport(VIRTIO_F_IN_ORDER, "VIRTIO_F_IN_ORDER", "IN_ORDER"),
  transport(VIRTIO_F_ORDER_PLATFORM, "VIRTIO_F_ORDER_PLATFORM", "ORDER_PLATFORM"),
  transport(VIRTIO_F_SR_IOV, "VIRTIO_F_SR_IOV", "SR_IOV"),
  transport(VIRTIO_F_NOTIFICATION_DATA, "VIRTIO_F_NOTIFICATION_DATA", "NOTIFICATION_DATA"),
  transport(VIRTIO_F_NOTIF_CONFIG_DATA, "VIRTIO_F_NOTIF_CONFIG_DATA", undefined),
  transport(VIRTIO_F_RING_RESET, "VIRTIO_F_RING_RESET", undefined),
  transport(VIRTIO_F_ADMIN_VQ, "VIRTIO_F_ADMIN_VQ", undefined),

  net(VIRTIO_NET_F_CSUM, "CSUM", "CSUM"),
  net(VIRTIO_NET_F_GUEST_CSUM, "GUEST_CSUM", "GUEST_CSUM"),
  net(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, "CTRL_GUEST_OFFLOADS", "CTRL_GUEST_OFFLOADS"),
  net(VIRTIO_NET_F_MTU, "MTU", "MTU"),
  net(VIRTIO_NET_F_MAC, "MAC", "MAC"),
  net(VIRTIO_NET_F_GSO, "GSO", undefined, { legacy: true }),
  net(VIRTIO_NET_F_GUEST_TSO4, "GUEST_TSO4", "GUEST_TSO4"),
  net(VIRTIO_NET_F_GUEST_TSO6, "GUEST_TSO6", "GUEST_TSO6"),
  net(VIRTIO_NET_F_GUEST_ECN, "GUEST_ECN", "GUEST_ECN"),
  net(VIRTIO_NET_F_GUEST_UFO, "GUEST_UFO", "GUEST_UFO"),
  net(VIRTIO_NET_F_HOST_TSO4, "HOST_TSO4", "HOST_TSO4"),
  net(VIRTIO_NET_F_HOST_TSO6, "HOST_TSO6", "HOST_TSO6"),
  net(VIRTIO_NET_F_HOST_ECN, "HOST_ECN", "HOST_ECN"),
  net(VIRTIO_NET_F_HOST_UFO, "HOST_UFO", "HOST_UFO"),
  net(VIRTIO_NET_F_MRG_RXBUF, "MRG_RXBUF", "MRG_RXBUF"),
  net(VIRTIO_NET_F_STATUS, "STATUS", "STATUS"),
  net(VIRTIO_NET_F_CTRL_VQ, "CTRL_VQ", "CTRL_VQ"),
  net(VIRTIO_NET_F_CTRL_RX, "CTRL_RX", "CTRL_RX"),
  net(VIRTIO_NET_F_CTRL_VLAN, "CTRL_VLAN", "CTRL_VLAN"),
  net(VIRTIO_NET_F_CTRL_RX_EXTRA, "CTRL_RX_EXTRA", "CTRL_RX_EXTRA"),
  net(VIRTIO_NET_F_GUEST_ANNOUNCE, "GUEST_ANNOUNCE", "GUEST_ANNOUNCE"),
  net(VIRTIO_NET_F_MQ, "MQ", "MQ"),
  net(VIRTIO_NET_F_CTRL_MAC_ADDR, "CTRL_MAC_ADDR", "CTRL_MAC_ADDR"),
  // From here on iproute2 6.1 names only HASH_REPORT and RSS..SPEED_DUPLEX; the rest print as bit_N.
  net(VIRTIO_NET_F_DEVICE_STATS, "DEVICE_STATS", undefined),
  net(VIRTIO_NET_F_VQ_NOTF_COAL, "VQ_NOTF_COAL", undefined),
  net(VIRTIO_NET_F_NOTF_COAL, "NOTF_COAL", undefined),
  net(VIRTIO_NET_F_GUEST_USO4, "GUEST_USO4", undefined),
  net(VIRTIO_NET_F_GUEST_USO6, "GUEST_USO6", undefined),
  net(VIRTIO_NET_F_HOST_USO, "HOST_USO", undefined),
  net(VIRTIO_NET_F_HASH_REPORT, "HASH_REPORT", "HASH_REPORT"),
  net(VIRTIO_NET_F_GUEST_HDRLEN, "GUEST_HDRLEN", undefined),
  net(VIRTIO_NET_F_RSS, "RSS", "RSS"),
  net(VIRTIO_NET_F_RSC_EXT, "RSC_EXT", "RSC_EXT"),
  net(VIRTIO_NET_F_STANDBY, "STANDBY", "STANDBY"),
  net(VIRTIO_NET_F_SPEED_DUPLEX, "SPEED_DUPLEX", "SPEED_DUPLEX"),
  net(VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO, "GUEST_UDP_TUNNEL_GSO", undefined),
  net(VIRTIO_NET_F_GUEST_UDP_TUNNEL_GSO_CSUM, "GUEST_UDP_TUNNEL_GSO_CSUM", undefined),
  net(VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO, "HOST_UDP_TUNNEL_GSO", undefined),
  net(VIRTIO_NET_F_HOST_UDP_TUNNEL_GSO_CSUM, "HOST_UDP_TUNNEL_GSO_CSUM", undefined),

  blk(VIRTIO_BLK_F_BARRIER, "BARRIER", { legacy: true }),
  blk(VIRTIO_BLK_F_SIZE_MAX, "SIZE_MAX"),
  blk(VIRTIO_BLK_F_SEG_MAX, "SEG_MAX"),
  blk(VIRTIO_BLK_F_GEOMETRY, "GEOMETRY"),
  blk(VIRTIO_BLK_F_RO, "RO"),
  blk(VIRTIO_BLK_F_BLK_SIZE, "BLK_SIZE"),
  blk(VIRTIO_BLK_F_SCSI, "SCSI", { legacy: true }),
  blk(VIRTIO_BLK_F_FLUSH, "FLUSH", { aliases: ["VIRTIO_BLK_F_WCE"] }),
  blk(VIRTIO_BLK_F_TOPOLOGY, "TOPOLOGY"),
  blk(VIRTIO_BLK_F_CONFIG_WCE, "CONFIG_WCE"),
  blk(VIRTIO_BLK_F_MQ, "MQ"),
  blk(VIRTIO_BLK_F_DISCARD, "DISCARD"),
  blk(VIRTIO_BLK_F_WRITE_ZEROES, "WRITE_ZEROES"),
  blk(VIRTIO_BLK_F_LIFETIME, "LIFETIME", { linuxMacro: undefined }),
  blk(VIRTIO_BLK_F_SECURE_ERASE, "SECURE_ERASE"),
  blk(VIRTIO_BLK_F_ZONED, "ZONED"),
];

/** Number of feature bits iproute2 looks at (NUM_FEATURE_BITS): the netlink attributes are u64. */
const IPROUTE2_FEATURE_BITS = 64;

/** The feature class a virtio device id uses for its device-specific bits, if this project knows it. */
export function featureClassOf(deviceId: number): FeatureClass | undefined {
  if (deviceId === VIRTIO_ID_NET) return "net";
  if (deviceId === VIRTIO_ID_BLOCK) return "blk";
  return undefined;
}

/**
 * The entry for `bit` in class `cls`. For "net" and "blk" a bit the class does not define falls back to the
 * transport entry (the two never share a bit), so featureByBit("net", 32) is VERSION_1.
 */
export function featureByBit(cls: FeatureClass, bit: number): FeatureInfo | undefined {
  let fallback: FeatureInfo | undefined;
  for (const f of FEATURES) {
    if (f.bit !== bit) continue;
    if (f.cls === cls) return f;
    if (f.cls === "transport") fallback = f;
  }
  return fallback;
}

/** `1n << bit`, for building and testing feature words. Throws RangeError outside 0..127. */
export function featureBit(bit: number): bigint {
  if (!Number.isInteger(bit) || bit < 0 || bit > 127)
    throw new RangeError(`feature bit out of range: ${bit}`);
  return 1n << BigInt(bit);
}

/** True when `bit` is set in `features`. */
export function hasFeature(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

/** The indices of the set bits of `features`, lowest first. */
export function featureBits(features: bigint): number[] {
  const bits: number[] = [];
  for (let bit = 0; features >> BigInt(bit) !== 0n; bit++) {
    if ((features >> BigInt(bit)) & 1n) bits.push(bit);
  }
  return bits;
}

/** True for bits that vdpa.c counts as transport bits (28..42 inclusive). */
export function isTransportFeature(bit: number): boolean {
  return bit >= VDPA_TRANSPORT_FEATURE_START && bit <= VDPA_TRANSPORT_FEATURE_END;
}

/**
 * iproute2 6.1's name for one set bit, or undefined where it prints `bit_N`. Mirrors print_features():
 * bits 28..41 are looked up in the transport table whatever the device; every other bit is looked up in the
 * device class table, and only net (device id 1) has one. So a block device or a management device without the
 * net class gets `bit_24` and `bit_27` where a net device gets NOTIFY_ON_EMPTY and ANY_LAYOUT.
 */
function iproute2NameOf(bit: number, deviceId: number): string | undefined {
  if (bit >= VIRTIO_TRANSPORT_F_START && bit <= IPROUTE2_61_TRANSPORT_F_END) {
    return featureByBit("transport", bit)?.iproute2Name;
  }
  if (deviceId !== VIRTIO_ID_NET) return undefined;
  return featureByBit("net", bit)?.iproute2Name;
}

/**
 * The tokens iproute2 6.1 prints in text mode for a feature word: every set bit from 0 to 63 in ascending
 * order, as its name or `bit_N`. `deviceId` selects the class table:
 * - `vdpa dev config show` (negotiated_features) passes the device's VDPA_ATTR_DEV_ID; note that 6.1 prints
 *   the config (and so the features) of net devices only: a block device's line is just its name.
 * - `vdpa mgmtdev show` (dev_features) passes 1 when the management device's classes include net, else 0:
 *   use mgmtdevFeatureDeviceId(). A management device with both net and block uses the net table.
 * Bits 64 and up are ignored, as the netlink attributes carry 64 bits.
 */
export function featureNamesIproute2(features: bigint, deviceId: number): string[] {
  return featureTokensIproute2Json(features, deviceId).map((t) => (typeof t === "number" ? `bit_${t}` : t));
}

/**
 * The same tokens as featureNamesIproute2 as they appear in `vdpa -j` output: iproute2 prints an unnamed bit
 * with print_uint and no key, so the JSON array holds the bare number (e.g. 39), not "bit_39".
 */
export function featureTokensIproute2Json(features: bigint, deviceId: number): (string | number)[] {
  const tokens: (string | number)[] = [];
  for (let bit = 0; bit < IPROUTE2_FEATURE_BITS; bit++) {
    if (((features >> BigInt(bit)) & 1n) === 0n) continue;
    tokens.push(iproute2NameOf(bit, deviceId) ?? bit);
  }
  return tokens;
}

/** The device id iproute2 6.1 uses to name a management device's dev_features: 1 (net) if it has the net class. */
export function mgmtdevFeatureDeviceId(supportedClasses: bigint): number {
  return (supportedClasses >> BigInt(VIRTIO_ID_NET)) & 1n ? VIRTIO_ID_NET : 0;
}

/**
 * The bit a feature name stands for in class `cls`, or undefined. Accepts `bit_N`, the iproute2 display name,
 * the spec name, the Linux macro and known aliases, for the class's own bits and the transport bits.
 * Names are matched exactly (case-sensitive), as iproute2 prints them.
 */
export function parseFeatureName(name: string, cls: FeatureClass = "net"): number | undefined {
  const m = /^bit_(\d{1,3})$/.exec(name);
  if (m) {
    const bit = Number(m[1]);
    return bit <= 127 ? bit : undefined;
  }
  for (const f of FEATURES) {
    if (f.cls !== cls && f.cls !== "transport") continue;
    if (
      f.iproute2Name === name ||
      f.specName === name ||
      f.linuxMacro === name ||
      f.aliases?.includes(name)
    ) {
      return f.bit;
    }
  }
  return undefined;
}

/** The feature word with the named bits set; throws on a name parseFeatureName does not know. */
export function featuresFromNames(names: readonly string[], cls: FeatureClass = "net"): bigint {
  let features = 0n;
  for (const name of names) {
    const bit = parseFeatureName(name, cls);
    if (bit === undefined) throw new RangeError(`unknown ${cls} feature name: ${name}`);
    features |= featureBit(bit);
  }
  return features;
}
