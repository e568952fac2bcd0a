// Management devices (Linux `struct vdpa_mgmt_dev`) and the values the management commands carry
// (Linux's generic netlink family "vdpa", include/uapi/linux/vdpa.h). mgmt.ts runs the commands.

import type { MgmtDevHandle, VdpaDevice } from "./device.js";

/** Netlink attribute numbers of the "vdpa" family, as in include/uapi/linux/vdpa.h. */
export const VDPA_ATTR = {
  MGMTDEV_BUS_NAME: 1,
  MGMTDEV_DEV_NAME: 2,
  MGMTDEV_SUPPORTED_CLASSES: 3,
  DEV_NAME: 4,
  DEV_ID: 5,
  DEV_VENDOR_ID: 6,
  DEV_MAX_VQS: 7,
  DEV_MAX_VQ_SIZE: 8,
  DEV_MIN_VQ_SIZE: 9,
  DEV_NET_CFG_MACADDR: 10,
  DEV_NET_STATUS: 11,
  DEV_NET_CFG_MAX_VQP: 12,
  DEV_NET_CFG_MTU: 13,
  DEV_NEGOTIATED_FEATURES: 14,
  DEV_MGMTDEV_MAX_VQS: 15,
  DEV_SUPPORTED_FEATURES: 16,
  DEV_QUEUE_INDEX: 17,
  DEV_VENDOR_ATTR_NAME: 18,
  DEV_VENDOR_ATTR_VALUE: 19,
  DEV_FEATURES: 20,
  DEV_BLK_CFG_CAPACITY: 21,
  DEV_BLK_CFG_SIZE_MAX: 22,
  DEV_BLK_CFG_BLK_SIZE: 23,
  DEV_BLK_CFG_SEG_MAX: 24,
  DEV_BLK_CFG_NUM_QUEUES: 25,
  DEV_BLK_CFG_PHY_BLK_EXP: 26,
  DEV_BLK_CFG_ALIGN_OFFSET: 27,
  DEV_BLK_CFG_MIN_IO_SIZE: 28,
  DEV_BLK_CFG_OPT_IO_SIZE: 29,
  DEV_BLK_CFG_MAX_DISCARD_SEC: 30,
  DEV_BLK_CFG_MAX_DISCARD_SEG: 31,
  DEV_BLK_CFG_DISCARD_SEC_ALIGN: 32,
  DEV_BLK_CFG_MAX_WRITE_ZEROES_SEC: 33,
  DEV_BLK_CFG_MAX_WRITE_ZEROES_SEG: 34,
  DEV_BLK_READ_ONLY: 35,
  DEV_BLK_FLUSH: 36,
  /**
   * vdpa-ts extensions, numbered well past Linux's (VDPA_ATTR_MAX is 37 and grows slowly) so a future
   * Linux attribute does not collide, yet below 64 so attribute masks stay 64-bit as in Linux: blk disk
   * size in bytes, and a backing file path.
   */
  VDPATS_BLK_SIZE: 60,
  VDPATS_BLK_BACKING_FILE: 61,
  /** vdpa-ts's device details (`vdpa -d dev show`, `vdpa dev bind`): the bound bus driver's name. */
  VDPATS_DRIVER_NAME: 62,
  /** The device status byte (details). */
  VDPATS_DEV_STATUS: 63,
  /** The vhost-user socket serving the device (details). */
  VDPATS_VHOST_USER_SOCKET: 59,
} as const;

export type VdpaAttrName = keyof typeof VDPA_ATTR;

/** The bit of an attribute in a `vdpa_dev_set_config.mask` / `config_attr_mask`. */
export function attrBit(name: VdpaAttrName): bigint {
  return 1n << BigInt(VDPA_ATTR[name]);
}

/**
 * What `vdpa dev add` / `dev set` asks of a management device (Linux `struct vdpa_dev_set_config`):
 * `mask` has the attrBit() of every attribute the user gave; only those fields are meaningful.
 */
export interface DevSetConfig {
  mask: bigint;
  deviceFeatures?: bigint;
  net: { mac?: Uint8Array; mtu?: number; maxVqPairs?: number };
  blk: { sizeBytes?: number; backingFile?: string };
}

export function emptyDevSetConfig(): DevSetConfig {
  return { mask: 0n, net: {}, blk: {} };
}

/** A management device's operations (Linux `struct vdpa_mgmtdev_ops`). */
export interface MgmtDevOps {
  /**
   * Builds a device named `name` with `config`, not yet registered: the management layer registers it on
   * the bus (Linux parents call _vdpa_register_device themselves; the effect is the same). Throws a
   * VdpaError with Linux's errno for what the parent refuses.
   */
  devAdd(mdev: MgmtDev, name: string, config: DevSetConfig): VdpaDevice;
  /** Called after the device left the bus, for the parent's own cleanup. */
  devDel(mdev: MgmtDev, dev: VdpaDevice): void;
  /** Optional (Linux 6.12+). Changes attributes of a live device; only the MAC is wired through. */
  devSetAttr?(mdev: MgmtDev, dev: VdpaDevice, config: DevSetConfig): void;
}

/** A management device: what creates vDPA devices of some classes (`vdpa mgmtdev show`). */
export interface MgmtDev extends MgmtDevHandle {
  /** Bus of the parent ("pci"), absent for bus-less parents such as vdpasim_net. */
  readonly busName?: string;
  readonly name: string;
  /** Virtio device ids this parent creates; supported classes are 1 << id for each. */
  readonly idTable: readonly number[];
  /** attrBit()s of the attributes `dev add` may carry; anything else is EOPNOTSUPP. */
  readonly configAttrMask: bigint;
  /** Features this parent can offer (0 when it does not say, as vdpasim_blk). */
  readonly supportedFeatures: bigint;
  /** Most virtqueues a device of this parent can have (0 when it does not say). */
  readonly maxSupportedVqs: number;
  readonly ops: MgmtDevOps;
}
