// The virtio bus (Linux drivers/virtio/virtio.c, the bus half): virtio devices (transports: virtio_vdpa's,
// later others) and virtio drivers (virtio-net, virtio-blk), matched by device id, with probe and remove
// and the same typed events as the vDPA bus.
//
// Linux's virtio core also walks the status byte around a driver's probe (reset, ACKNOWLEDGE, DRIVER,
// features, FEATURES_OK). Here the drivers do that themselves through the transport (bring-up.ts), so the
// bus only matches, probes and removes; like Linux it marks a device FAILED when its driver's probe throws.

import { EventEmitter } from "node:events";
import { VIRTIO_CONFIG_S_FAILED } from "../spec/index.js";
import type { VirtioDriver, VirtioTransport } from "./transport.js";

export interface VirtioBusEvents {
  "device-added": [dev: VirtioTransport];
  bound: [dev: VirtioTransport, driver: VirtioDriver];
  unbound: [dev: VirtioTransport, driver: VirtioDriver];
  "device-removed": [dev: VirtioTransport];
  /** A driver's probe threw: the device stays registered and unbound, its status FAILED. */
  "probe-failed": [dev: VirtioTransport, driver: VirtioDriver, err: Error];
}

/** Misuse of the bus itself (Linux's driver core answers these errnos). */
export class VirtioBusError extends Error {
  override readonly name = "VirtioBusError";
  constructor(
    readonly code: "EEXIST" | "ENODEV",
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

export class VirtioBus extends EventEmitter<VirtioBusEvents> {
  private readonly deviceList: VirtioTransport[] = [];
  private readonly driverList: VirtioDriver[] = [];
  private readonly boundTo = new Map<VirtioTransport, VirtioDriver>();
  private readonly indices = new Map<VirtioTransport, number>();

  /** Registered devices, in registration order. */
  devices(): VirtioTransport[] {
    return this.deviceList.slice();
  }

  drivers(): VirtioDriver[] {
    return this.driverList.slice();
  }

  driverOf(dev: VirtioTransport): VirtioDriver | undefined {
    return this.boundTo.get(dev);
  }

  /** The device's index on the bus (Linux names it `virtio<index>`), or -1 when not registered. */
  indexOf(dev: VirtioTransport): number {
    return this.indices.get(dev) ?? -1;
  }

  /**
   * Adds a device (Linux register_virtio_device): lowest free index, `device-added`, then the first
   * registered driver whose ids include the device's id probes it. A failing probe does not fail the
   * registration (it emits `probe-failed`), as on Linux.
   */
  registerDevice(dev: VirtioTransport): void {
    if (this.indices.has(dev)) throw new VirtioBusError("EEXIST", `${dev.name} is already registered`);
    const used = new Set(this.indices.values());
    let index = 0;
    while (used.has(index)) index++;
    this.indices.set(dev, index);
    this.deviceList.push(dev);
    this.emit("device-added", dev);
    const drv = this.driverList.find((d) => matches(dev, d));
    if (drv) this.probe(dev, drv);
  }

  /** Removes a device (Linux unregister_virtio_device); its driver's remove runs first. */
  unregisterDevice(dev: VirtioTransport): void {
    const at = this.deviceList.indexOf(dev);
    if (at < 0) throw new VirtioBusError("ENODEV", `${dev.name} is not registered`);
    try {
      const drv = this.boundTo.get(dev);
      if (drv) this.unbind(dev, drv);
    } finally {
      this.deviceList.splice(at, 1);
      this.indices.delete(dev);
      this.emit("device-removed", dev);
    }
  }

  /** Adds a driver and offers it every unbound device it matches (the driver core's driver_attach). */
  registerDriver(drv: VirtioDriver): void {
    if (this.driverList.some((d) => d.name === drv.name)) {
      throw new VirtioBusError("EEXIST", `a driver named ${drv.name} is already registered`);
    }
    this.driverList.push(drv);
    for (const dev of this.deviceList) if (!this.boundTo.has(dev) && matches(dev, drv)) this.probe(dev, drv);
  }

  /** Removes a driver, unbinding it from every device first. */
  unregisterDriver(drv: VirtioDriver): void {
    for (const [dev, d] of [...this.boundTo]) if (d === drv) this.unbind(dev, drv);
    const at = this.driverList.indexOf(drv);
    if (at >= 0) this.driverList.splice(at, 1);
  }

  /** Linux virtio_dev_probe's outcome: bound, or FAILED and `probe-failed`. */
  private probe(dev: VirtioTransport, drv: VirtioDriver): void {
    try {
      drv.probe(dev);
    } catch (err) {
      try {
        dev.setStatus(VIRTIO_CONFIG_S_FAILED);
      } catch {
        // The device is unusable anyway; the probe's error is the one to report.
      }
      this.emit("probe-failed", dev, drv, err as Error);
      return;
    }
    this.boundTo.set(dev, drv);
    this.emit("bound", dev, drv);
  }

  private unbind(dev: VirtioTransport, drv: VirtioDriver): void {
    try {
      drv.remove(dev);
    } finally {
      this.boundTo.delete(dev);
      this.emit("unbound", dev, drv);
    }
  }
}

/** Linux virtio_dev_match, without the vendor and ANY_ID wildcards no driver here uses. */
function matches(dev: VirtioTransport, drv: VirtioDriver): boolean {
  return drv.deviceIds.includes(dev.deviceId);
}
