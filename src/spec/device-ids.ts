// Virtio device ids (virtio 1.3 "Device Types"; Linux include/uapi/linux/virtio_ids.h) and the names
// iproute2 6.1's `vdpa` prints for them (vdpa/vdpa.c at tag v6.1.0: class_map/parse_class for
// `supported_classes`, device_type_name for `dev show`'s `type`).

export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;
export const VIRTIO_ID_BALLOON = 5;
export const VIRTIO_ID_IOMEM = 6;
export const VIRTIO_ID_RPMSG = 7;
export const VIRTIO_ID_SCSI = 8;
export const VIRTIO_ID_9P = 9;
export const VIRTIO_ID_MAC80211_WLAN = 10;
export const VIRTIO_ID_RPROC_SERIAL = 11;
export const VIRTIO_ID_CAIF = 12;
export const VIRTIO_ID_MEMORY_BALLOON = 13;
export const VIRTIO_ID_GPU = 16;
export const VIRTIO_ID_CLOCK = 17;
export const VIRTIO_ID_INPUT = 18;
export const VIRTIO_ID_VSOCK = 19;
export const VIRTIO_ID_CRYPTO = 20;
export const VIRTIO_ID_SIGNAL_DIST = 21;
export const VIRTIO_ID_PSTORE = 22;
export const VIRTIO_ID_IOMMU = 23;
export const VIRTIO_ID_MEM = 24;
export const VIRTIO_ID_SOUND = 25;
export const VIRTIO_ID_FS = 26;
export const VIRTIO_ID_PMEM = 27;
export const VIRTIO_ID_RPMB = 28;
export const VIRTIO_ID_MAC80211_HWSIM = 29;
export const VIRTIO_ID_VIDEO_ENCODER = 30;
export const VIRTIO_ID_VIDEO_DECODER = 31;
export const VIRTIO_ID_SCMI = 32;
export const VIRTIO_ID_NITRO_SEC_MOD = 33;
export const VIRTIO_ID_I2C_ADAPTER = 34;
export const VIRTIO_ID_WATCHDOG = 35;
export const VIRTIO_ID_CAN = 36;
export const VIRTIO_ID_DMABUF = 37;
export const VIRTIO_ID_PARAM_SERV = 38;
export const VIRTIO_ID_AUDIO_POLICY = 39;
export const VIRTIO_ID_BT = 40;
export const VIRTIO_ID_GPIO = 41;
export const VIRTIO_ID_SPI = 45;

export interface DeviceIdInfo {
  readonly id: number;
  readonly linuxMacro: string;
  /** A short human description (our wording). */
  readonly description: string;
  /** The class name iproute2 6.1 prints in `supported_classes`; only net and block have one. */
  readonly iproute2Class?: string;
  /** The type name iproute2 6.1 prints in `dev show`; only net and block have one. */
  readonly iproute2Type?: string;
}

function id(n: number, suffix: string, description: string, extra?: Partial<DeviceIdInfo>): DeviceIdInfo {
  return { id: n, linuxMacro: `VIRTIO_ID_${suffix}`, description, ...extra };
}

/** Every virtio device id Linux names, by id. */
export const DEVICE_IDS: readonly DeviceIdInfo[] = [
  id(VIRTIO_ID_NET, "NET", "network card", { iproute2Class: "net", iproute2Type: "network" }),
  id(VIRTIO_ID_BLOCK, "BLOCK", "block device", { iproute2Class: "block", iproute2Type: "block" }),
  id(VIRTIO_ID_CONSOLE, "CONSOLE", "console"),
  id(VIRTIO_ID_RNG, "RNG", "entropy source"),
  id(VIRTIO_ID_BALLOON, "BALLOON", "traditional memory balloon"),
  id(VIRTIO_ID_IOMEM, "IOMEM", "ioMemory"),
  id(VIRTIO_ID_RPMSG, "RPMSG", "remote processor messaging"),
  id(VIRTIO_ID_SCSI, "SCSI", "SCSI host"),
  id(VIRTIO_ID_9P, "9P", "9P transport"),
  id(VIRTIO_ID_MAC80211_WLAN, "MAC80211_WLAN", "mac80211 wlan"),
  id(VIRTIO_ID_RPROC_SERIAL, "RPROC_SERIAL", "remote processor serial link"),
  id(VIRTIO_ID_CAIF, "CAIF", "CAIF"),
  id(VIRTIO_ID_MEMORY_BALLOON, "MEMORY_BALLOON", "memory balloon"),
  id(VIRTIO_ID_GPU, "GPU", "GPU"),
  id(VIRTIO_ID_CLOCK, "CLOCK", "timer/clock"),
  id(VIRTIO_ID_INPUT, "INPUT", "input"),
  id(VIRTIO_ID_VSOCK, "VSOCK", "socket (vsock)"),
  id(VIRTIO_ID_CRYPTO, "CRYPTO", "crypto"),
  id(VIRTIO_ID_SIGNAL_DIST, "SIGNAL_DIST", "signal distribution"),
  id(VIRTIO_ID_PSTORE, "PSTORE", "pstore"),
  id(VIRTIO_ID_IOMMU, "IOMMU", "IOMMU"),
  id(VIRTIO_ID_MEM, "MEM", "memory (virtio-mem)"),
  id(VIRTIO_ID_SOUND, "SOUND", "sound"),
  id(VIRTIO_ID_FS, "FS", "file system"),
  id(VIRTIO_ID_PMEM, "PMEM", "persistent memory"),
  id(VIRTIO_ID_RPMB, "RPMB", "replay protected memory block"),
  id(VIRTIO_ID_MAC80211_HWSIM, "MAC80211_HWSIM", "mac80211 hwsim wireless simulation"),
  id(VIRTIO_ID_VIDEO_ENCODER, "VIDEO_ENCODER", "video encoder"),
  id(VIRTIO_ID_VIDEO_DECODER, "VIDEO_DECODER", "video decoder"),
  id(VIRTIO_ID_SCMI, "SCMI", "SCMI"),
  id(VIRTIO_ID_NITRO_SEC_MOD, "NITRO_SEC_MOD", "Nitro secure module"),
  id(VIRTIO_ID_I2C_ADAPTER, "I2C_ADAPTER", "I2C adapter"),
  id(VIRTIO_ID_WATCHDOG, "WATCHDOG", "watchdog"),
  id(VIRTIO_ID_CAN, "CAN", "CAN"),
  id(VIRTIO_ID_DMABUF, "DMABUF", "dmabuf"),
  id(VIRTIO_ID_PARAM_SERV, "PARAM_SERV", "parameter server"),
  id(VIRTIO_ID_AUDIO_POLICY, "AUDIO_POLICY", "audio policy"),
  id(VIRTIO_ID_BT, "BT", "Bluetooth"),
  id(VIRTIO_ID_GPIO, "GPIO", "GPIO"),
  id(VIRTIO_ID_SPI, "SPI", "SPI controller"),
];

/** iproute2's text for a class bit it has no name for (parse_class). Spaces included, as printed. */
export const IPROUTE2_UNKNOWN_CLASS = "< unknown class >";
/** iproute2's text for a device id it has no type name for (device_type_name). */
export const IPROUTE2_UNKNOWN_TYPE = "<unknown type>";

/** The entry for a device id, if Linux names it. */
export function deviceIdInfo(deviceId: number): DeviceIdInfo | undefined {
  return DEVICE_IDS.find((d) => d.id === deviceId);
}

/**
 * The class name iproute2 6.1 prints for a device id in `mgmtdev show`'s `supported_classes`: "net", "block",
 * or "< unknown class >" for anything else.
 */
export function deviceIdName(deviceId: number): string {
  return deviceIdInfo(deviceId)?.iproute2Class ?? IPROUTE2_UNKNOWN_CLASS;
}

/** The type iproute2 6.1 prints in `dev show`: "network", "block", or "<unknown type>". */
export function deviceTypeName(deviceId: number): string {
  return deviceIdInfo(deviceId)?.iproute2Type ?? IPROUTE2_UNKNOWN_TYPE;
}

/**
 * The `supported_classes` tokens for a VDPA_ATTR_MGMTDEV_SUPPORTED_CLASSES bitmask (bit N = device id N), in
 * ascending order. Like iproute2, bit 0 is skipped (id 0 is "reserved/invalid") and only bits 1..63 are read.
 */
export function classNamesIproute2(supportedClasses: bigint): string[] {
  const names: string[] = [];
  for (let bit = 1; bit < 64; bit++) {
    if ((supportedClasses >> BigInt(bit)) & 1n) names.push(deviceIdName(bit));
  }
  return names;
}
