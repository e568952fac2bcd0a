// A vdpad in the test process for guests to attach to, and the checks every VM test shares.

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Daemon, startDaemon } from "../../../src/daemon/vdpad.js";
import type { Attr, VdpaDevice } from "../../../src/vdpa/index.js";
import { type KernelKit, kernelKit, missingTools } from "./guest.js";

export interface VmRig {
  daemon: Daemon;
  kit: KernelKit;
  dir: string;
  logs: string[];
  /** Adds a device through the management commands; resolves with its vhost-user socket. */
  addDevice(attrs: Attr[]): Promise<string>;
  /** Registers a device built directly on the daemon's bus; resolves with its vhost-user socket. */
  addBuilt(device: VdpaDevice): Promise<string>;
  /** Deletes a device however it was added. */
  remove(name: string): void;
  close(): Promise<void>;
}

/**
 * Null (with the reason printed loudly) when the host lacks the tools and this is not CI; in CI a missing
 * tool is a failure, since .ci/run installs them.
 */
export async function vmRig(): Promise<VmRig | null> {
  const missing = missingTools();
  if (missing.length > 0) {
    const msg = `VM TESTS NEED ${missing.join(", ")} (apt-get install -y qemu-system-x86 busybox-static cpio xz-utils)`;
    if (process.env.CI) assert.fail(msg);
    console.error(`\n*** SKIPPING: ${msg} ***\n`);
    return null;
  }
  const kit = kernelKit((l) => console.error(l));
  const dir = mkdtempSync(join(tmpdir(), "vdpa-vm-"));
  const logs: string[] = [];
  const daemon = await startDaemon({ runtimeDir: dir, log: (l, m) => logs.push(`${l} ${m}`) });
  const socketOf = async (name: string): Promise<string> => {
    const dev = daemon.bus.device(name);
    assert.ok(dev, `${name} exists`);
    const socket = daemon.vhostUser.socketOf(dev);
    assert.ok(socket, `${name} has a vhost-user socket`);
    for (let i = 0; i < 200 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 5));
    return socket;
  };
  return {
    daemon,
    kit,
    dir,
    logs,
    async addDevice(attrs) {
      daemon.mgmt.devNew(attrs);
      return socketOf(attrs.find((a) => a.name === "DEV_NAME")!.value as string);
    },
    async addBuilt(device) {
      daemon.bus.registerDevice(device);
      return socketOf(device.name);
    },
    remove(name) {
      const dev = daemon.bus.device(name);
      if (!dev) return;
      if (dev.mgmtdev) daemon.mgmt.devDel([{ name: "DEV_NAME", value: name }]);
      else {
        daemon.bus.unregisterDevice(dev);
        dev.ops.free?.();
      }
    },
    async close() {
      await daemon.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
