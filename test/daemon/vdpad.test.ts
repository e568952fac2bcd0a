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
