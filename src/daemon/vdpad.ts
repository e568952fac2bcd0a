#!/usr/bin/env node
// vdpad: owns one vDPA bus (vhost_vdpa registered first, then virtio_vdpa, as on Linux), the simulator
// management devices, and the management socket. `vdpad [--runtime-dir DIR] [--config FILE]
// [--socket-mode OCTAL]`; SIGTERM/SIGINT shut it down cleanly (devices reset and deleted, socket removed).

import { readFileSync, realpathSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { vdpasimBlkMgmtDev, vdpasimNetMgmtDev } from "../devices/sim/index.js";
import { decodeValue } from "../mgmt-protocol/codec.js";
import { type AttrValue, type VdpaAttrName, VdpaBus, VdpaError, VdpaManagement } from "../vdpa/index.js";
import { VhostVdpaDriver } from "../vhost/index.js";
import { VirtioBlkDriver, VirtioBus, VirtioNetDriver, VirtioVdpaDriver } from "../virtio/index.js";
import { DaemonCommands } from "./daemon-commands.js";
import { MgmtServer } from "./mgmt-server.js";
import { mgmtSocketPath, runtimeDir } from "./runtime-dir.js";

type Level = "info" | "warn" | "error";
export type Log = (level: Level, message: string) => void;
const stderrLog: Log = (level, message) => {
  process.stderr.write(`${new Date().toISOString()} vdpad ${level}: ${message}\n`);
};

/** A config file: devices to create at start, each an ordered DEV_NEW attribute list in protocol form. */
interface DaemonConfig {
  devices?: [string, unknown][][];
}

export interface Daemon {
  bus: VdpaBus;
  mgmt: VdpaManagement;
  server: MgmtServer;
  socketPath: string;
  stop(): Promise<void>;
}

export async function startDaemon(opts: {
  runtimeDir?: string;
  config?: string;
  socketMode?: number;
  socketGid?: number;
  /** Where log lines go (default: stderr, with a timestamp and the level). */
  log?: Log;
}): Promise<Daemon> {
  const log = opts.log ?? stderrLog;
  const bus = new VdpaBus();
  bus.registerDriver(new VhostVdpaDriver());
  // As on a Linux host with virtio_net and virtio_blk loaded: a device bound to virtio_vdpa gets its
  // virtio driver, which brings it up (features, queues, DRIVER_OK).
  const virtioBus = new VirtioBus();
  virtioBus.registerDriver(new VirtioNetDriver());
  virtioBus.registerDriver(new VirtioBlkDriver());
  bus.registerDriver(new VirtioVdpaDriver(virtioBus));
  bus.on("device-added", (d) => log("info", `device ${d.name} added`));
  bus.on("bound", (d, drv) => log("info", `device ${d.name} bound to ${drv.name}`));
  bus.on("unbound", (d, drv) => log("info", `device ${d.name} unbound from ${drv.name}`));
  bus.on("device-removed", (d) => log("info", `device ${d.name} removed`));
  const mgmt = new VdpaManagement(bus);
  mgmt.registerMgmtDev(vdpasimNetMgmtDev());
  mgmt.registerMgmtDev(vdpasimBlkMgmtDev());
  if (opts.config) createConfiguredDevices(mgmt, opts.config);
  const socketPath = mgmtSocketPath(opts.runtimeDir ?? runtimeDir());
  const commands = new DaemonCommands(mgmt);
  const server = new MgmtServer(commands, { socketPath, mode: opts.socketMode, gid: opts.socketGid, log });
  await server.start();
  const stop = async (): Promise<void> => {
    await server.stop();
    for (const dev of bus.devices().reverse()) {
      try {
        if (dev.mgmtdev) mgmt.devDel([{ name: "DEV_NAME", value: dev.name }]);
        else bus.unregisterDevice(dev);
      } catch (err) {
        log("warn", `removing ${dev.name}: ${(err as Error).message}`);
      }
    }
  };
  return { bus, mgmt, server, socketPath, stop };
}

function createConfiguredDevices(mgmt: VdpaManagement, path: string): void {
  let config: DaemonConfig;
  try {
    config = JSON.parse(readFileSync(path, "utf8")) as DaemonConfig;
  } catch (err) {
    throw new Error(`cannot read config ${path}: ${(err as Error).message}`);
  }
  for (const [i, dev] of (config.devices ?? []).entries()) {
    if (!Array.isArray(dev)) throw new Error(`${path}: devices[${i}] must be a list of [attribute, value]`);
    const attrs = dev.map(([name, value]) => ({
      name: name as VdpaAttrName,
      value: decodeValue(value) as AttrValue,
    }));
    try {
      mgmt.devNew(attrs);
    } catch (err) {
      const what = err instanceof VdpaError ? `${err.code} ${err.extack ?? ""}` : (err as Error).message;
      throw new Error(`${path}: devices[${i}]: ${what}`);
    }
  }
}

/** A group name (from /etc/group) or a numeric gid. */
export function groupId(group: string, groupFile = "/etc/group"): number {
  if (/^\d+$/.test(group)) return Number(group);
  let text = "";
  try {
    text = readFileSync(groupFile, "utf8");
  } catch {}
  for (const line of text.split("\n")) {
    const [name, , gid] = line.split(":");
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new Error(`--socket-group: no group named ${group} in ${groupFile}`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      "runtime-dir": { type: "string" },
      config: { type: "string" },
      "socket-mode": { type: "string" },
      "socket-group": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(
      "Usage: vdpad [--runtime-dir DIR] [--config FILE] [--socket-mode OCTAL] [--socket-group GROUP]\n",
    );
    return;
  }
  const mode = values["socket-mode"] !== undefined ? Number.parseInt(values["socket-mode"], 8) : undefined;
  if (mode !== undefined && !(mode >= 0 && mode <= 0o777))
    throw new Error("--socket-mode takes an octal mode such as 0660");
  const daemon = await startDaemon({
    runtimeDir: values["runtime-dir"],
    config: values.config,
    socketMode: mode,
    socketGid: values["socket-group"] !== undefined ? groupId(values["socket-group"]) : undefined,
  });
  process.stdout.write(`vdpad: management socket ${daemon.socketPath}\n`);
  stopOnSignals(daemon);
}

/**
 * SIGTERM and SIGINT stop the daemon cleanly (devices reset and deleted, the socket removed), then exit 0;
 * a second signal while stopping is ignored.
 */
export function stopOnSignals(daemon: Daemon, log: Log = stderrLog): void {
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log("info", `${signal}: shutting down`);
    daemon.stop().then(
      () => process.exit(0),
      (err) => {
        log("error", (err as Error).message);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
}

// Run as a program (directly or through the npm bin link), not when imported.
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main().catch((err) => {
    stderrLog("error", (err as Error).message);
    process.exit(1);
  });
}
