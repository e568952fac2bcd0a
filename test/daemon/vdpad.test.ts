// vdpad as a process: starts with a config, serves, shuts down cleanly on SIGTERM with a client connected,
// and after a SIGKILL a new daemon replaces the stale socket.

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { pollMicros, startDaemon } from "../../src/daemon/vdpad.js";
import type { VdpaSim } from "../../src/devices/sim/index.js";
import { request } from "../../src/mgmt-protocol/client.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const vdpad = join(root, "dist/src/daemon/vdpad.js");
const config = join(root, "config/default.json");

function startVdpad(dir: string): Promise<{ child: ChildProcess; socket: string }> {
  const child = spawn(process.execPath, [vdpad, "--runtime-dir", dir, "--config", config], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Promise((resolve, reject) => {
    let out = "";
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (d: string) => {
      out += d;
      const m = /management socket (\S+)/.exec(out);
      if (m) resolve({ child, socket: m[1] });
    });
    child.once("exit", (code) => reject(new Error(`vdpad exited with ${code}`)));
  });
}

const exited = (child: ChildProcess): Promise<number | null> =>
  new Promise((resolve) => child.once("exit", (code) => resolve(code)));

test("vdpad: config devices, SIGTERM with a client connected, SIGKILL then restart", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vdpad-test-"));
  try {
    const first = await startVdpad(dir);
    assert.equal(first.socket, join(dir, "mgmt.sock"));
    const devs = await request(first.socket, { id: 1, cmd: "DEV_GET", dump: true, attrs: [] });
    assert.ok(devs.ok);
    assert.deepEqual(
      devs.replies.map((r) => r.find((a) => a.name === "DEV_NAME")?.value),
      ["vdpa0", "vdpa1"],
    );
    const idle = createConnection(first.socket); // a client that just sits there
    await new Promise<void>((resolve) => idle.once("connect", () => resolve()));
    const code = exited(first.child);
    first.child.kill("SIGTERM");
    assert.equal(await code, 0, "clean exit");
    idle.destroy();
    assert.equal(existsSync(first.socket), false, "socket removed");

    const second = await startVdpad(dir);
    const killed = exited(second.child);
    second.child.kill("SIGKILL");
    await killed;
    assert.equal(existsSync(second.socket), true, "a killed daemon leaves its socket");
    const third = await startVdpad(dir);
    const again = await request(third.socket, { id: 2, cmd: "MGMTDEV_GET", dump: true, attrs: [] });
    assert.ok(again.ok && again.replies.length === 2);
    const done = exited(third.child);
    third.child.kill("SIGINT");
    assert.equal(await done, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("npm start: the default devices, what to try, and a clean Ctrl-C", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vdpa-start-"));
  const child = spawn(process.execPath, [join(root, "dist/scripts/start.js")], {
    env: { ...process.env, VDPA_RUNTIME_DIR: dir },
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    let out = "";
    child.stdout!.setEncoding("utf8");
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on("data", (d: string) => {
        out += d;
        if (out.includes("vhost-user-blk-pci")) resolve();
      });
      child.once("exit", (code) => reject(new Error(`npm start exited with ${code}`)));
    });
    assert.ok(out.includes(`management socket: ${join(dir, "mgmt.sock")}`), out);
    assert.ok(out.includes("vdpa0 (vdpasim_net), vdpa1 (vdpasim_blk)"), out);
    assert.equal((out.match(/^ {2}npx vdpa /gm) ?? []).length, 3, out);
    // a QEMU command line attaching both devices, the net one with its MAC
    assert.ok(out.includes(`-chardev socket,id=vdpa0,path=${join(dir, "vhost-user", "vdpa0.sock")}`), out);
    assert.ok(out.includes("-device virtio-net-pci,netdev=vdpa0-net,mac=52:54:00:12:34:56,vectors=0"), out);
    assert.ok(out.includes(`-chardev socket,id=vdpa1,path=${join(dir, "vhost-user", "vdpa1.sock")}`), out);
    assert.ok(out.includes("memory-backend-memfd,id=mem,size=1G,share=on"), out);
    assert.ok(existsSync(join(dir, "vhost-user", "vdpa0.sock")));
    const cfg = await request(join(dir, "mgmt.sock"), {
      id: 1,
      cmd: "DEV_CONFIG_GET",
      dump: false,
      attrs: [{ name: "DEV_NAME", value: "vdpa0" }],
    });
    assert.ok(cfg.ok);
    const mac = cfg.replies[0].find((a) => a.name === "DEV_NET_CFG_MACADDR")?.value as Uint8Array;
    assert.deepEqual(Array.from(mac), [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const code = exited(child);
    child.kill("SIGINT");
    assert.equal(await code, 0);
    assert.equal(existsSync(join(dir, "mgmt.sock")), false);
    assert.equal(existsSync(join(dir, "vhost-user", "vdpa0.sock")), false, "vhost-user sockets removed too");
  } finally {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

test("vdpad --poll-us: whole microseconds from 0 to 1000000 reach the simulators; anything else is refused", async () => {
  assert.equal(pollMicros(undefined), undefined);
  assert.equal(pollMicros("0"), 0);
  assert.equal(pollMicros("1000000"), 1_000_000);
  for (const bad of ["-1", "1.5", "abc", "", "1000001", "1e3"]) {
    assert.throws(() => pollMicros(bad), /--poll-us takes whole microseconds/, bad);
  }
  const dir = mkdtempSync(join(tmpdir(), "vdpad-poll-"));
  try {
    const daemon = await startDaemon({ runtimeDir: dir, config, pollMicros: 0, log: () => {} });
    try {
      const sims = daemon.bus.devices().map((d) => (d.ops as VdpaSim).pollMicros);
      assert.deepEqual(sims, [0, 0]);
    } finally {
      await daemon.stop();
    }
    const child = spawn(process.execPath, [vdpad, "--runtime-dir", dir, "--poll-us", "soon"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (d: string) => (err += d));
    assert.equal(await exited(child), 1);
    assert.match(err, /--poll-us takes whole microseconds from 0 \(never poll\) to 1000000, not "soon"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
