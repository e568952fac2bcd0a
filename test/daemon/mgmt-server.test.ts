// vdpad's management socket, over a real Unix socket in a private runtime dir: commands and Linux's
// answers, garbage and truncated requests, oversized lines, 100 concurrent clients, a client that hangs
// up mid-request, a stale socket replaced, a second live server refused, clean removal on stop.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { lstatSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { DaemonCommands } from "../../src/daemon/daemon-commands.js";
import { MgmtServer, ServerStartError } from "../../src/daemon/mgmt-server.js";
import { mgmtSocketPath, runtimeDir } from "../../src/daemon/runtime-dir.js";
import { vdpasimBlkMgmtDev, vdpasimNetMgmtDev } from "../../src/devices/sim/index.js";
import { DaemonUnreachable, request } from "../../src/mgmt-protocol/client.js";
import { VdpaBus, VdpaError, VdpaManagement } from "../../src/vdpa/index.js";
import { VhostVdpaDriver } from "../../src/vhost/index.js";

function management(): VdpaManagement {
  const bus = new VdpaBus();
  bus.registerDriver(new VhostVdpaDriver());
  const mgmt = new VdpaManagement(bus);
  mgmt.registerMgmtDev(vdpasimNetMgmtDev());
  mgmt.registerMgmtDev(vdpasimBlkMgmtDev());
  return mgmt;
}

/** Sends raw bytes and collects whatever comes back until the server closes or `ms` pass. */
function raw(path: string, data: string, ms = 300): Promise<string> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    let out = "";
    s.setEncoding("utf8");
    s.on("data", (d: string) => (out += d));
    s.on("connect", () => s.write(data));
    const finish = () => resolve(out);
    s.on("close", finish);
    s.on("error", finish);
    setTimeout(() => {
      s.destroy();
      finish();
    }, ms);
  });
}

describe("runtime dir", () => {
  test("VDPA_RUNTIME_DIR, then /run/vdpa-ts for root, then XDG_RUNTIME_DIR, then /tmp/vdpa-ts-<uid>", () => {
    assert.equal(runtimeDir({ VDPA_RUNTIME_DIR: "/x" }, 0), "/x");
    assert.equal(runtimeDir({}, 0), "/run/vdpa-ts");
    assert.equal(runtimeDir({ XDG_RUNTIME_DIR: "/run/user/1000" }, 1000), "/run/user/1000/vdpa-ts");
    assert.equal(runtimeDir({}, 1000), "/tmp/vdpa-ts-1000");
    assert.equal(mgmtSocketPath("/x"), "/x/mgmt.sock");
  });
});

describe("management socket", () => {
  let dir: string;
  let path: string;
  let server: MgmtServer;
  const logs: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "vdpa-ts-test-"));
    path = mgmtSocketPath(dir);
    server = new MgmtServer(new DaemonCommands(management()), {
      socketPath: path,
      log: (l, m) => logs.push(`${l} ${m}`),
    });
    await server.start();
  });

  after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the socket is private (0600) and answers a dump with Linux's attributes", async () => {
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const reply = await request(path, { id: 1, cmd: "MGMTDEV_GET", dump: true, attrs: [] });
    assert.ok(reply.ok);
    assert.deepEqual(
      reply.replies.map((r) => r.find((a) => a.name === "MGMTDEV_DEV_NAME")?.value),
      ["vdpasim_net", "vdpasim_blk"],
    );
    const features = reply.replies[0].find((a) => a.name === "DEV_SUPPORTED_FEATURES")?.value;
    assert.equal(features, 0x308830028n, "u64 survived the wire");
  });

  test("dev add, dev show, and Linux's error answers", async () => {
    const add = await request(path, {
      id: 2,
      cmd: "DEV_NEW",
      dump: false,
      attrs: [
        { name: "DEV_NAME", value: "vdpa0" },
        { name: "MGMTDEV_DEV_NAME", value: "vdpasim_net" },
        { name: "DEV_NET_CFG_MACADDR", value: Uint8Array.of(0, 0x11, 0x22, 0x33, 0x44, 0x55) },
      ],
    });
    assert.deepEqual(add, { id: 2, ok: true, replies: [] });
    const show = await request(path, {
      id: 3,
      cmd: "DEV_GET",
      dump: false,
      attrs: [{ name: "DEV_NAME", value: "vdpa0" }],
    });
    assert.ok(show.ok && show.replies[0].some((a) => a.name === "DEV_MAX_VQS" && a.value === 3));
    const again = await request(path, {
      id: 4,
      cmd: "DEV_NEW",
      dump: false,
      attrs: [
        { name: "DEV_NAME", value: "vdpa0" },
        { name: "MGMTDEV_DEV_NAME", value: "nosuchmgmt" },
      ],
    });
    assert.deepEqual(again, {
      id: 4,
      ok: false,
      errno: "ENODEV",
      extack: "Fail to find the specified management device",
    });
    const policy = await request(path, {
      id: 5,
      cmd: "DEV_NEW",
      dump: false,
      attrs: [
        { name: "DEV_NAME", value: "x" },
        { name: "DEV_NET_CFG_MTU", value: 10 },
      ],
    });
    assert.equal(policy.ok, false);
    if (!policy.ok) assert.equal(policy.policy, true, "netlink policy errors are marked");
  });

  test("garbage gets an error reply and the connection keeps working", async () => {
    const out = await raw(path, 'not json\n{"id":9,"cmd":"DEV_GET","dump":true}\n');
    const lines = out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    assert.equal(lines[0].ok, false);
    assert.equal(lines[0].errno, "EINVAL");
    assert.match(lines[0].extack, /malformed request: BAD_JSON/);
    assert.equal(lines[1].id, 9);
    assert.equal(lines[1].ok, true);
    const unknown = await request(path, { id: 10, cmd: "NO_SUCH_CMD", dump: false, attrs: [] });
    assert.deepEqual(unknown, { id: 10, ok: false, errno: "EOPNOTSUPP" });
  });

  test("an oversized line is answered E2BIG and the connection closed; the server lives on", async () => {
    const out = await raw(path, "z".repeat(70 * 1024), 1000);
    assert.match(out, /"errno":"E2BIG"/);
    const ok = await request(path, { id: 11, cmd: "MGMTDEV_GET", dump: true, attrs: [] });
    assert.equal(ok.ok, true);
  });

  test("a client that hangs up mid-request, and 100 concurrent clients", async () => {
    await raw(path, '{"id":1,"cmd":"DEV_G', 50);
    const replies = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        request(path, { id: i, cmd: "MGMTDEV_GET", dump: true, attrs: [] }),
      ),
    );
    assert.equal(replies.length, 100);
    assert.ok(replies.every((r, i) => r.ok && r.id === i && r.replies.length === 2));
  });

  test("a second live server on the same socket is refused, saying why", async () => {
    const second = new MgmtServer(new DaemonCommands(management()), { socketPath: path });
    await assert.rejects(
      second.start(),
      (err: unknown) => err instanceof ServerStartError && /already serving/.test(String(err)),
    );
  });
});

test("a stale socket file is replaced; stop removes the socket; no daemon is a clear error", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vdpa-ts-test-"));
  const path = mgmtSocketPath(dir);
  writeFileSync(join(dir, "not-a-socket"), "");
  await assert.rejects(
    new MgmtServer(new DaemonCommands(management()), { socketPath: join(dir, "not-a-socket") }).start(),
    (err: unknown) => err instanceof ServerStartError && /not a socket/.test(String(err)),
  );
  // What a SIGKILLed daemon leaves behind: a socket file nobody listens on.
  const child = spawn(process.execPath, [
    "-e",
    `require("net").createServer().listen(${JSON.stringify(path)}, () => console.log("up"))`,
  ]);
  await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
  child.kill("SIGKILL");
  await new Promise<void>((resolve) => child.once("exit", () => resolve()));
  assert.ok(lstatSync(path).isSocket(), "the killed listener left its socket file");
  const logs: string[] = [];
  const server = new MgmtServer(new DaemonCommands(management()), {
    socketPath: path,
    log: (l, m) => logs.push(`${l} ${m}`),
  });
  await server.start();
  assert.ok(logs.some((l) => /removing stale socket/.test(l)));
  assert.equal((await request(path, { id: 1, cmd: "DEV_GET", dump: true, attrs: [] })).ok, true);
  await server.stop();
  await assert.rejects(
    request(path, { id: 2, cmd: "DEV_GET", dump: true, attrs: [] }),
    (err: unknown) => err instanceof DaemonUnreachable && err.socketPath === path,
  );
  rmSync(dir, { recursive: true, force: true });
});

test("access: any peer may read, only root or the daemon's user may change; socket group and mode", async () => {
  const dir = mkdtempSync(join(tmpdir(), "vdpa-ts-access-"));
  const path = mgmtSocketPath(dir);
  let peer = 4242;
  const gid = process.getgid!();
  const server = new MgmtServer(new DaemonCommands(management()), {
    socketPath: path,
    mode: 0o660,
    gid,
    peerUid: () => peer,
  });
  await server.start();
  try {
    assert.equal(statSync(path).mode & 0o777, 0o660);
    assert.equal(statSync(path).gid, gid);
    const read = await request(path, { id: 1, cmd: "DEV_GET", dump: true, attrs: [] });
    assert.ok(read.ok, "reading is open to anyone who can connect");
    const add = {
      id: 2,
      cmd: "DEV_NEW",
      dump: false,
      attrs: [
        { name: "DEV_NAME", value: "p0" },
        { name: "MGMTDEV_DEV_NAME", value: "vdpasim_net" },
      ],
    };
    const refused = await request(path, add);
    assert.ok(!refused.ok);
    assert.equal(refused.errno, "EPERM");
    assert.match(refused.extack ?? "", /uid 4242 may only read/);
    for (const cmd of ["DEV_DEL", "DEV_ATTR_SET", "VDPATS_DEV_BIND", "VDPATS_DEV_UNBIND"]) {
      const r = await request(path, { id: 3, cmd, dump: false, attrs: [{ name: "DEV_NAME", value: "p0" }] });
      assert.ok(!r.ok && r.errno === "EPERM", cmd);
    }
    peer = process.getuid!();
    assert.ok((await request(path, add)).ok, "the daemon's own user may change");
    peer = 0;
    const del = await request(path, {
      id: 4,
      cmd: "DEV_DEL",
      dump: false,
      attrs: [{ name: "DEV_NAME", value: "p0" }],
    });
    assert.ok(del.ok, "root may change");
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("dev del and dev unbind of a device in use answer EBUSY naming the user", () => {
  const mgmt = management();
  let user: string | undefined = "the vhost-user front-end on /run/x/vdpa0.sock";
  const commands = new DaemonCommands(mgmt, { inUse: () => user });
  commands.run(
    "DEV_NEW",
    [
      { name: "DEV_NAME", value: "u0" },
      { name: "MGMTDEV_DEV_NAME", value: "vdpasim_net" },
    ],
    {},
  );
  for (const cmd of ["DEV_DEL", "VDPATS_DEV_UNBIND"]) {
    assert.throws(
      () => commands.run(cmd, [{ name: "DEV_NAME", value: "u0" }], {}),
      (err: unknown) =>
        err instanceof VdpaError &&
        err.code === "EBUSY" &&
        err.extack === "u0 is in use by the vhost-user front-end on /run/x/vdpa0.sock",
      cmd,
    );
  }
  user = undefined;
  commands.run("VDPATS_DEV_UNBIND", [{ name: "DEV_NAME", value: "u0" }], {});
  commands.run("DEV_DEL", [{ name: "DEV_NAME", value: "u0" }], {});
  assert.equal(mgmt.bus.devices().length, 0);
});
