#!/usr/bin/env node
// vdpad: owns one vDPA bus (vhost_vdpa registered first, then virtio_vdpa, as on Linux), the simulator
// management devices, and the management socket. `vdpad --help` lists the options; SIGTERM/SIGINT shut
// it down cleanly (devices reset and deleted, socket removed).

import { readFileSync, realpathSync } from "node:fs";
import type { Socket } from "node:net";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { vdpasimBlkMgmtDev, vdpasimNetMgmtDev } from "../devices/sim/index.js";
import { decodeValue } from "../mgmt-protocol/codec.js";
import { peerCred } from "../os/unix-socket.js";
import { type AttrValue, type VdpaAttrName, VdpaBus, VdpaError, VdpaManagement } from "../vdpa/index.js";
import { VhostVdpaDriver } from "../vhost/index.js";
import { VirtioBlkDriver, VirtioBus, VirtioNetDriver, VirtioVdpaDriver } from "../virtio/index.js";
import { DaemonCommands } from "./daemon-commands.js";
import { MgmtServer } from "./mgmt-server.js";
import { mgmtSocketPath, runtimeDir } from "./runtime-dir.js";
import { VhostUserServers } from "./vhost-user-servers.js";

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
  vhostUser: VhostUserServers;
  runtimeDir: string;
  stop(): Promise<void>;
}

export async function startDaemon(opts: {
  runtimeDir?: string;
  config?: string;
  socketMode?: number;
  socketGid?: number;
  /** Mode and group of the vhost-user sockets (default 0600, the daemon's group). */
  vhostUserMode?: number;
  vhostUserGid?: number;
  /** Busy-poll time of simulated devices, in microseconds (default VDPASIM_POLL_MICROS; 0: off). */
  pollMicros?: number;
  /** Where log lines go (default: stderr, with a timestamp and the level). */
  log?: Log;
}): Promise<Daemon> {
  const log = opts.log ?? stderrLog;
  const bus = new VdpaBus();
  const vhostDriver = new VhostVdpaDriver();
  bus.registerDriver(vhostDriver);
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
  mgmt.registerMgmtDev(vdpasimNetMgmtDev({ pollMicros: opts.pollMicros }));
  mgmt.registerMgmtDev(vdpasimBlkMgmtDev({ pollMicros: opts.pollMicros }));
  const dir = opts.runtimeDir ?? runtimeDir();
  const socketPath = mgmtSocketPath(dir);
  const vhostUser = new VhostUserServers(bus, vhostDriver, {
    runtimeDir: dir,
    mode: opts.vhostUserMode,
    gid: opts.vhostUserGid,
    log,
  });
  const commands = new DaemonCommands(mgmt, {
    vhostUserSocket: (dev) => vhostUser.socketOf(dev),
    inUse: (dev) => vhostUser.inUse(dev),
  });
  const server = new MgmtServer(commands, {
    socketPath,
    mode: opts.socketMode,
    gid: opts.socketGid,
    log,
    peerUid: socketPeerUid,
  });
  // The management socket first: a second daemon on this runtime dir stops here, before touching devices.
  await server.start();
  try {
    if (opts.config) createConfiguredDevices(mgmt, opts.config);
  } catch (err) {
    await server.stop();
    vhostUser.stopAll();
    throw err;
  }
  const stop = async (): Promise<void> => {
    await server.stop();
    vhostUser.stopAll();
    for (const dev of bus.devices().reverse()) {
      try {
        if (dev.mgmtdev) mgmt.devDel([{ name: "DEV_NAME", value: dev.name }]);
        else bus.unregisterDevice(dev);
      } catch (err) {
        log("warn", `removing ${dev.name}: ${(err as Error).message}`);
      }
    }
  };
  return { bus, mgmt, server, socketPath, vhostUser, runtimeDir: dir, stop };
}

/** SO_PEERCRED of a management connection (the fd under Node's socket handle). */
function socketPeerUid(sock: Socket): number | undefined {
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== "number" || fd < 0) return undefined;
  try {
    return peerCred(fd).uid;
  } catch {
    return undefined;
  }
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

function octalMode(text: string | undefined, option: string): number | undefined {
  if (text === undefined) return undefined;
  const mode = /^[0-7]{1,4}$/.test(text) ? Number.parseInt(text, 8) : Number.NaN;
  if (!(mode >= 0 && mode <= 0o777)) throw new Error(`${option} takes an octal mode such as 0660`);
  return mode;
}

/** --poll-us: whole microseconds, 0 (never poll) to 1000000. */
export function pollMicros(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const us = /^\d{1,7}$/.test(text) ? Number(text) : Number.NaN;
  if (!(us >= 0 && us <= 1_000_000)) {
    throw new Error(`--poll-us takes whole microseconds from 0 (never poll) to 1000000, not "${text}"`);
  }
  return us;
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
      "vhost-user-mode": { type: "string" },
      "vhost-user-group": { type: "string" },
      "poll-us": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(
      "Usage: vdpad [--runtime-dir DIR] [--config FILE] [--socket-mode OCTAL] [--socket-group GROUP]\n" +
        "             [--vhost-user-mode OCTAL] [--vhost-user-group GROUP] [--poll-us MICROSECONDS]\n",
    );
    return;
  }
  const mode = octalMode(values["socket-mode"], "--socket-mode");
  const vhostUserMode = octalMode(values["vhost-user-mode"], "--vhost-user-mode");
  const pollUs = pollMicros(values["poll-us"]);
  const daemon = await startDaemon({
    runtimeDir: values["runtime-dir"],
    config: values.config,
    socketMode: mode,
    socketGid: values["socket-group"] !== undefined ? groupId(values["socket-group"]) : undefined,
    vhostUserMode,
    vhostUserGid: values["vhost-user-group"] !== undefined ? groupId(values["vhost-user-group"]) : undefined,
    pollMicros: pollUs,
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
