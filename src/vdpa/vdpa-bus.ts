// The vDPA bus (Linux drivers/vdpa/vdpa.c plus the driver core's binding rules): devices and bus drivers,
// matching, explicit bind/unbind, driver_override, and typed events the daemon follows.

import { EventEmitter } from "node:events";
import { normalizeDeviceName, type VdpaDevice } from "./device.js";
import { PlatformDomain } from "./dma.js";
import { VdpaError } from "./errors.js";

/** A bus driver: virtio_vdpa, vhost_vdpa, or a test's own. */
export interface VdpaDriver {
  readonly name: string;
  /** Takes the device over; throws (a VdpaError) to refuse it. */
  probe(dev: VdpaDevice): void;
  /** Lets the device go: after this the driver must not touch it. */
  remove(dev: VdpaDevice): void;
}

export interface VdpaBusEvents {
  "device-added": [dev: VdpaDevice];
  bound: [dev: VdpaDevice, driver: VdpaDriver];
  unbound: [dev: VdpaDevice, driver: VdpaDriver];
  "device-removed": [dev: VdpaDevice];
  /** A driver's probe refused a device (it stays unbound). */
  "probe-failed": [dev: VdpaDevice, driver: VdpaDriver, err: Error];
}

export class VdpaBus extends EventEmitter<VdpaBusEvents> {
  private readonly deviceList: VdpaDevice[] = [];
  private readonly driverList: VdpaDriver[] = [];
  private readonly boundTo = new Map<VdpaDevice, VdpaDriver>();
  private readonly usedIndices = new Set<number>();

  /** Registered devices, in registration order. */
  devices(): VdpaDevice[] {
    return this.deviceList.slice();
  }

  device(name: string): VdpaDevice | undefined {
    return this.deviceList.find((d) => d.name === name);
  }

  drivers(): VdpaDriver[] {
    return this.driverList.slice();
  }

  driverOf(dev: VdpaDevice): VdpaDriver | undefined {
    return this.boundTo.get(dev);
  }

  /**
   * Registers a device (Linux _vdpa_register_device for a managed device, vdpa_register_device for an
   * unmanaged one): assigns the lowest free index, names it `vdpa<index>` when it has no name, refuses a
   * duplicate name (EEXIST), attaches a platform IOMMU domain when it has no translation of its own,
   * announces it, then binds it to a driver if one matches.
   */
  registerDevice(dev: VdpaDevice): void {
    if (this.deviceList.includes(dev)) throw new VdpaError("EEXIST", `${dev.name} is already registered`);
    let index = 0;
    while (this.usedIndices.has(index)) index++;
    const name = dev.name || `vdpa${index}`;
    if (this.device(name)) throw new VdpaError("EEXIST");
    dev.index = index;
    dev.name = name;
    if (!dev.ownTranslation && !dev.platformDomain) dev.platformDomain = new PlatformDomain(name);
    this.usedIndices.add(index);
    this.deviceList.push(dev);
    this.emit("device-added", dev);
    this.attach(dev);
  }

  /** Removes a device; a bound device is unbound from its driver first. */
  unregisterDevice(dev: VdpaDevice): void {
    const at = this.deviceList.indexOf(dev);
    if (at < 0) throw new VdpaError("ENODEV", "device not found");
    if (this.boundTo.has(dev)) this.unbind(dev);
    this.deviceList.splice(at, 1);
    this.usedIndices.delete(dev.index);
    dev.ops.free?.();
    this.emit("device-removed", dev);
  }

  /** Adds a bus driver and offers it every unbound device (the driver core's driver_attach). */
  registerDriver(drv: VdpaDriver): void {
    if (this.driverList.some((d) => d.name === drv.name)) {
      throw new VdpaError("EEXIST", `a driver named ${drv.name} is already registered`);
    }
    this.driverList.push(drv);
    for (const dev of this.deviceList) if (!this.boundTo.has(dev)) this.attach(dev);
  }

  /** Removes a bus driver, unbinding it from every device first. */
  unregisterDriver(drv: VdpaDriver): void {
    for (const [dev, d] of [...this.boundTo]) if (d === drv) this.unbind(dev);
    const at = this.driverList.indexOf(drv);
    if (at >= 0) this.driverList.splice(at, 1);
  }

  /**
   * Sets or (with "" or null) clears a device's driver_override: then only that driver may bind it.
   * Takes effect at the next bind; it does not unbind the current driver, as on Linux.
   */
  setDriverOverride(dev: VdpaDevice, driverName: string | null): void {
    const name = driverName?.trim() ?? "";
    if (name.length >= 4095) throw new VdpaError("EINVAL", "driver_override too long");
    dev.driverOverride = name === "" ? null : name;
  }

  /** Binds a device to the named driver (sysfs `bind`). EBUSY when bound; ENODEV when it cannot match. */
  bind(dev: VdpaDevice, driverName: string): void {
    if (!this.deviceList.includes(dev)) throw new VdpaError("ENODEV", "device not found");
    if (this.boundTo.has(dev))
      throw new VdpaError("EBUSY", `${dev.name} is bound to ${this.boundTo.get(dev)!.name}`);
    const drv = this.driverList.find((d) => d.name === driverName);
    if (!drv) throw new VdpaError("ENODEV", `no driver ${driverName}`);
    if (!this.matches(dev, drv))
      throw new VdpaError("ENODEV", `${dev.name} has driver_override ${dev.driverOverride}`);
    this.probe(dev, drv, true);
  }

  /** Unbinds a device from its driver (sysfs `unbind`); ENODEV when it has none. */
  unbind(dev: VdpaDevice): void {
    const drv = this.boundTo.get(dev);
    if (!drv) throw new VdpaError("ENODEV", `${dev.name} is not bound`);
    drv.remove(dev);
    this.boundTo.delete(dev);
    dev.driver = null;
    this.emit("unbound", dev, drv);
  }

  /** Linux vdpa_dev_match: only the override driver when one is set, else every driver. */
  private matches(dev: VdpaDevice, drv: VdpaDriver): boolean {
    return dev.driverOverride === null || dev.driverOverride === drv.name;
  }

  /** The first registered driver that matches gets the device (vhost_vdpa is registered first). */
  private attach(dev: VdpaDevice): void {
    const drv = this.driverList.find((d) => this.matches(dev, d));
    if (drv) this.probe(dev, drv, false);
  }

  /** Linux vdpa_dev_probe: refuse num_max < num_min, then the driver's own probe. */
  private probe(dev: VdpaDevice, drv: VdpaDriver, explicit: boolean): void {
    try {
      const max = dev.ops.getVqNumMax();
      const min = dev.getVqNumMin();
      if (max < min) throw new VdpaError("EINVAL", `queue size max ${max} below min ${min}`);
      drv.probe(dev);
    } catch (err) {
      this.emit("probe-failed", dev, drv, err as Error);
      if (explicit) throw err;
      return;
    }
    this.boundTo.set(dev, drv);
    dev.driver = drv;
    this.emit("bound", dev, drv);
  }

  /** Checks a name the way registration will, for callers that want to fail before building a device. */
  static checkName(name: string): string {
    return normalizeDeviceName(name);
  }
}
