// vdpad's vhost-user side: one VhostUserServer per device bound to vhost_vdpa, started when the device is
// bound and stopped when it leaves, at <runtime-dir>/vhost-user/<device>.sock.

import { join } from "node:path";
import type { VdpaBus, VdpaDevice } from "../vdpa/index.js";
import { VhostUserServer } from "../vhost/user-server.js";
import type { VhostVdpaDriver } from "../vhost/vhost-vdpa.js";

type Log = (level: "info" | "warn" | "error", message: string) => void;

export interface VhostUserServersOptions {
  /** The runtime dir; sockets go in its vhost-user/ folder. */
  runtimeDir: string;
  /** Socket mode and group, so a QEMU running as another user can connect (default 0600). */
  mode?: number;
  gid?: number;
  log: Log;
}

export function vhostUserSocketPath(runtimeDir: string, device: string): string {
  return join(runtimeDir, "vhost-user", `${device}.sock`);
}

export class VhostUserServers {
  private readonly servers = new Map<VdpaDevice, VhostUserServer>();

  constructor(
    bus: VdpaBus,
    private readonly driver: VhostVdpaDriver,
    private readonly opts: VhostUserServersOptions,
  ) {
    bus.on("bound", (dev, drv) => {
      if (drv === driver) this.serve(dev);
    });
    bus.on("unbound", (dev, drv) => {
      if (drv === driver) this.unserve(dev);
    });
  }

  /** The socket serving `dev`, if one does. */
  socketOf(dev: VdpaDevice): string | undefined {
    return this.servers.get(dev)?.socketPath;
  }

  /** Who holds `dev` (for EBUSY answers), if a front-end is attached. */
  inUse(dev: VdpaDevice): string | undefined {
    const server = this.servers.get(dev);
    return server?.attached ? `the vhost-user front-end on ${server.socketPath}` : undefined;
  }

  server(dev: VdpaDevice): VhostUserServer | undefined {
    return this.servers.get(dev);
  }

  stopAll(): void {
    for (const dev of [...this.servers.keys()]) this.unserve(dev);
  }

  private serve(dev: VdpaDevice): void {
    const vhost = this.driver.get(dev);
    if (!vhost) return;
    const server = new VhostUserServer(vhost, {
      socketPath: vhostUserSocketPath(this.opts.runtimeDir, dev.name),
      mode: this.opts.mode,
      gid: this.opts.gid,
      log: this.opts.log,
    });
    this.servers.set(dev, server);
    server.start().catch((err: Error) => {
      this.opts.log("error", `${dev.name}: cannot serve vhost-user: ${err.message}`);
      if (this.servers.get(dev) === server) this.servers.delete(dev);
      server.stop();
    });
  }

  private unserve(dev: VdpaDevice): void {
    const server = this.servers.get(dev);
    if (!server) return;
    this.servers.delete(dev);
    server.stop();
    this.opts.log("info", `${dev.name}: vhost-user socket ${server.socketPath} removed`);
  }
}
