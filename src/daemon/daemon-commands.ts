// The commands vdpad answers: those of Linux's "vdpa" netlink family (VdpaManagement.run), plus vdpa-ts's
// extensions for what Linux does through sysfs or does not show:
// - VDPATS_DEV_BIND (DEV_NAME, VDPATS_DRIVER_NAME): `echo DEV > /sys/bus/vdpa/drivers/DRV/bind`;
// - VDPATS_DEV_UNBIND (DEV_NAME): `echo DEV > /sys/bus/vdpa/drivers/DRV/unbind`;
// - VDPATS_DEV_DETAILS_GET (dump, or DEV_NAME): per device DEV_NAME, DEV_ID, [VDPATS_DRIVER_NAME],
//   VDPATS_DEV_STATUS, [DEV_NEGOTIATED_FEATURES once FEATURES_OK is set], [VDPATS_VHOST_USER_SOCKET].
// Errors are VdpaErrors with an errno and a message, like Linux's answers.

import { VIRTIO_CONFIG_S_FEATURES_OK } from "../spec/index.js";
import {
  type Attr,
  type AttrList,
  type RunOptions,
  type RunResult,
  type VdpaAttrName,
  type VdpaDevice,
  VdpaError,
  type VdpaManagement,
} from "../vdpa/index.js";

/** Commands that change state: only root or the daemon's own user may send them. */
export const CHANGING_COMMANDS: ReadonlySet<string> = new Set([
  "DEV_NEW",
  "DEV_DEL",
  "DEV_ATTR_SET",
  "VDPATS_DEV_BIND",
  "VDPATS_DEV_UNBIND",
]);

/** Runs one management command; what MgmtServer calls for every request. */
export interface CommandRunner {
  run(cmd: string, attrs: AttrList, opts: RunOptions): RunResult;
}

export interface DaemonCommandHooks {
  /** The vhost-user socket serving a device, when one does. */
  vhostUserSocket?(dev: VdpaDevice): string | undefined;
  /**
   * Why the device cannot leave its driver now (a vhost-user front-end attached: the socket's path), or
   * undefined. `vdpa dev del` and `vdpa dev unbind` then answer EBUSY with that reason, where Linux would
   * tear the device from under its user.
   */
  inUse?(dev: VdpaDevice): string | undefined;
}

export class DaemonCommands implements CommandRunner {
  constructor(
    private readonly mgmt: VdpaManagement,
    private readonly hooks: DaemonCommandHooks = {},
  ) {}

  run(cmd: string, attrs: AttrList, opts: RunOptions = {}): RunResult {
    switch (cmd) {
      case "VDPATS_DEV_BIND": {
        const dev = this.device(attrs, opts);
        const driver = stringAttr(attrs, "VDPATS_DRIVER_NAME");
        if (driver === undefined) throw new VdpaError("EINVAL", "driver name not set");
        this.mgmt.bus.bind(dev, driver);
        return { replies: [] };
      }
      case "VDPATS_DEV_UNBIND": {
        const dev = this.device(attrs, opts);
        this.checkNotInUse(dev);
        this.mgmt.bus.unbind(dev);
        return { replies: [] };
      }
      case "DEV_DEL": {
        // Linux's checks (policy, existence) come first from mgmt.run; only a found device can be busy.
        const name = Array.isArray(attrs) ? attrs.find((a) => a?.name === "DEV_NAME")?.value : undefined;
        const dev = typeof name === "string" ? this.mgmt.bus.device(name) : undefined;
        if (dev && !opts.dump) this.checkNotInUse(dev);
        return this.mgmt.run(cmd, attrs, opts);
      }
      case "VDPATS_DEV_DETAILS_GET":
        if (opts.dump) return { replies: this.mgmt.bus.devices().map((d) => this.details(d)) };
        return { replies: [this.details(this.device(attrs, opts))] };
      default:
        return this.mgmt.run(cmd as never, attrs, opts);
    }
  }

  private checkNotInUse(dev: VdpaDevice): void {
    const user = this.hooks.inUse?.(dev);
    if (user !== undefined) throw new VdpaError("EBUSY", `${dev.name} is in use by ${user}`);
  }

  private device(attrs: AttrList, opts: RunOptions): VdpaDevice {
    if (opts.dump) throw new VdpaError("EOPNOTSUPP");
    const name = stringAttr(attrs, "DEV_NAME");
    if (name === undefined) throw new VdpaError("EINVAL", "device name not set");
    const dev = this.mgmt.bus.device(name);
    if (!dev) throw new VdpaError("ENODEV", "device not found");
    return dev;
  }

  private details(dev: VdpaDevice): Attr[] {
    const out: Attr[] = [
      { name: "DEV_NAME", value: dev.name },
      { name: "DEV_ID", value: dev.ops.getDeviceId() },
    ];
    const drv = this.mgmt.bus.driverOf(dev);
    if (drv) out.push({ name: "VDPATS_DRIVER_NAME", value: drv.name });
    const status = dev.ops.getStatus() & 0xff;
    out.push({ name: "VDPATS_DEV_STATUS", value: status });
    if (status & VIRTIO_CONFIG_S_FEATURES_OK) {
      out.push({ name: "DEV_NEGOTIATED_FEATURES", value: dev.ops.getDriverFeatures() });
    }
    const socket = this.hooks.vhostUserSocket?.(dev);
    if (socket !== undefined) out.push({ name: "VDPATS_VHOST_USER_SOCKET", value: socket });
    return out;
  }
}

function stringAttr(attrs: AttrList, name: VdpaAttrName): string | undefined {
  if (!Array.isArray(attrs)) throw new VdpaError("EINVAL", "a request is a list of attributes");
  let found: string | undefined;
  for (const a of attrs) {
    if (a?.name !== name) continue;
    if (typeof a.value !== "string") throw new VdpaError("EINVAL", `${name} must be a string`);
    found = a.value;
  }
  return found;
}
