// A device on the vDPA bus (Linux `struct vdpa_device` and the core helpers around it in
// drivers/vdpa/vdpa.c): identity, topology, the ops table, and the locked wrappers every user goes
// through for config, features, status and reset.
//
// Linux serialises config access against status changes with a rwsem (cf_lock). Here everything runs on
// one event loop and none of these wrappers awaits, so a config read can never interleave with a status
// change; that is the whole of the locking.

import type { VdpaConfigOps } from "./config-ops.js";
import type { DmaModel, PlatformDomain } from "./dma.js";
import { VdpaError } from "./errors.js";

/** What a device knows of the management device that created it. */
export interface MgmtDevHandle {
  readonly busName?: string;
  readonly name: string;
}

/** What the bus knows of the driver a device is bound to. */
export interface BoundDriver {
  readonly name: string;
}

export interface VdpaDeviceOptions {
  ops: VdpaConfigOps;
  /** Device name; `vdpa<index>` when absent. */
  name?: string;
  /** Number of virtqueues. */
  nvqs: number;
  /** Virtqueue groups (default 1). */
  ngroups?: number;
  /** Address spaces (default 1). */
  nas?: number;
  /** The device wants user virtual addresses in its IOTLB (needs setMap or dmaMap). */
  useVa?: boolean;
  /** The management device that created it; unmanaged devices (none) are invisible to management. */
  mgmtdev?: MgmtDevHandle;
}

/** Longest device name accepted (Linux's netlink/sysfs allow more; this keeps socket paths sane). */
export const MAX_DEVICE_NAME = 64;

/**
 * Validates a device name and applies sysfs's rule: a `/` cannot appear in a sysfs name, so Linux turns it
 * into `!`. Names are printable ASCII without spaces, 1 to MAX_DEVICE_NAME bytes.
 */
export function normalizeDeviceName(name: string): string {
  if (name.length === 0 || name.length > MAX_DEVICE_NAME) {
    throw new VdpaError("EINVAL", `device name must be 1 to ${MAX_DEVICE_NAME} characters`);
  }
  if (!/^[\x21-\x7e]+$/.test(name)) {
    throw new VdpaError("EINVAL", "device name may only hold printable ASCII characters without spaces");
  }
  if (name === "." || name === "..") throw new VdpaError("EINVAL", "device name cannot be . or ..");
  return name.replaceAll("/", "!");
}

export class VdpaDevice {
  readonly ops: VdpaConfigOps;
  readonly nvqs: number;
  readonly ngroups: number;
  readonly nas: number;
  readonly useVa: boolean;
  readonly dmaModel: DmaModel;
  readonly mgmtdev: MgmtDevHandle | null;
  /** Set by the bus at registration. */
  index = -1;
  /** Set by the bus at registration when not given. */
  name: string;
  /** The bus's IOMMU domain, for platform-translated devices once registered. */
  platformDomain: PlatformDomain | null = null;
  /** The only driver the bus may bind this device to, when set (sysfs driver_override). */
  driverOverride: string | null = null;
  /** The bus driver bound to the device, if any. */
  driver: BoundDriver | null = null;
  /** Linux's features_valid: set by setFeatures(), cleared by reset(). */
  featuresValid = false;

  /** Linux __vdpa_alloc_device()'s checks, in its order. */
  constructor(opts: VdpaDeviceOptions) {
    const ops = opts.ops;
    if (!ops) throw new VdpaError("EINVAL", "a vDPA device needs an ops table");
    if (!ops.dmaMap !== !ops.dmaUnmap) throw new VdpaError("EINVAL", "dma_map and dma_unmap come together");
    if (opts.useVa && !ops.dmaMap && !ops.setMap) {
      throw new VdpaError("EINVAL", "use_va needs the device's own translation (set_map or dma_map)");
    }
    if (!Number.isInteger(opts.nvqs) || opts.nvqs < 0 || opts.nvqs > 0xffff) {
      throw new VdpaError("EINVAL", `bad number of virtqueues ${opts.nvqs}`);
    }
    this.ops = ops;
    this.nvqs = opts.nvqs;
    this.ngroups = opts.ngroups ?? 1;
    this.nas = opts.nas ?? 1;
    if (!Number.isInteger(this.ngroups) || this.ngroups < 1 || !Number.isInteger(this.nas) || this.nas < 1) {
      throw new VdpaError("EINVAL", "a device needs at least one group and one address space");
    }
    this.useVa = opts.useVa ?? false;
    this.dmaModel = ops.dmaMap ? "dma_map" : ops.setMap ? "set_map" : "platform";
    this.mgmtdev = opts.mgmtdev ?? null;
    this.name = opts.name === undefined ? "" : normalizeDeviceName(opts.name);
  }

  /** Whether the device translates DMA itself (setMap or dmaMap). */
  get ownTranslation(): boolean {
    return this.dmaModel !== "platform";
  }

  getConfigSize(): number {
    return this.ops.getConfigSize();
  }

  /**
   * Reads config space. Linux's rule: a read before any setFeatures() first sets features 0, so a
   * device never shows a driver a layout that depends on features nobody negotiated.
   */
  getConfig(offset: number, len: number): Uint8Array {
    this.checkConfigRange(offset, len);
    if (!this.featuresValid) {
      // Linux ignores the answer: a device that refuses features 0 (vdpa_sim wants ACCESS_PLATFORM) still
      // shows its config, and features count as set from here on.
      try {
        this.setFeatures(0n);
      } catch {}
    }
    const buf = new Uint8Array(len);
    this.ops.getConfig(offset, buf, len);
    return buf;
  }

  /** Writes config space. */
  setConfig(offset: number, data: Uint8Array): void {
    this.checkConfigRange(offset, data.length);
    this.ops.setConfig(offset, data, data.length);
  }

  private checkConfigRange(offset: number, len: number): void {
    const size = this.ops.getConfigSize();
    if (!Number.isInteger(offset) || !Number.isInteger(len) || offset < 0 || len < 0 || offset + len > size) {
      throw new VdpaError("EINVAL", `config access ${offset}+${len} outside ${size} bytes`);
    }
  }

  /** Linux vdpa_set_features(): marks features valid and hands them to the device. */
  setFeatures(features: bigint): void {
    this.featuresValid = true;
    this.ops.setDriverFeatures(features);
  }

  getStatus(): number {
    return this.ops.getStatus();
  }

  /** Linux vdpa_set_status(). */
  setStatus(status: number): void {
    this.ops.setStatus(status & 0xff);
  }

  /** Linux vdpa_reset(): compat_reset(flags) when the device has it and flags != 0, else reset(). */
  reset(flags = 0): void {
    this.featuresValid = false;
    if (flags !== 0 && this.ops.compatReset) this.ops.compatReset(flags);
    else this.ops.reset();
  }

  /** Smallest queue size (1 when the device does not say). */
  getVqNumMin(): number {
    return this.ops.getVqNumMin ? this.ops.getVqNumMin() : 1;
  }

  /** Human-readable identity for logs. */
  toString(): string {
    return `vdpa device ${this.name} (index ${this.index})`;
  }
}
