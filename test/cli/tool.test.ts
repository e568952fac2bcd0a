// The `vdpa` tool end to end against a vdpad: help at every level, every command's bad input (what
// iproute2 6.1 prints for it, and Linux's answers for what reaches the "kernel"), exit codes, JSON mode's
// stdout on errors, vdpa-ts's extensions, and the program's behaviour with no daemon.

import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { runVdpa, type ToolRequest, USAGE } from "../../src/cli/vdpa.js";
import { type Daemon, startDaemon } from "../../src/daemon/vdpad.js";
import { request } from "../../src/mgmt-protocol/client.js";
import { TestFrontEnd, until } from "../support/vhost-user-frontend.js";

const execFileAsync = promisify(execFile);

let dir: string;
let daemon: Daemon;
let nextId = 1;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "vdpa-tool-"));
  daemon = await startDaemon({ runtimeDir: dir, log: () => {} });
});

after(async () => {
  await daemon.stop();
  rmSync(dir, { recursive: true, force: true });
});

const vdpa = (line: string) =>
  runVdpa(
    line === "" ? [] : line.split(" "),
    (req) => request(daemon.socketPath, { id: nextId++, ...req }),
    "9.9",
  );

/** Runs a line that must be refused before anything is sent. */
async function refused(line: string): Promise<{ stdout: string; stderr: string; code: number }> {
  const sent: ToolRequest[] = [];
  const r = await runVdpa(
    line.split(" "),
    async (req) => {
      sent.push(req);
      return { id: 0, ok: true, replies: [] };
    },
    "9.9",
  );
  assert.deepEqual(sent, [], `${line} sent a request`);
  return r;
}

const result = (stderr: string, code: number, stdout = "") => ({ stdout, stderr, code });

describe("options and help", () => {
  test("-V prints the version line; -h and help print the usage to stderr with status 0", async () => {
    assert.deepEqual(await refused("-V"), result("", 0, "vdpa utility, vdpa-ts-9.9\n"));
    assert.deepEqual(await refused("-h"), result(USAGE, 0));
    assert.deepEqual(await vdpa(""), result(USAGE, 0));
    assert.deepEqual(await refused("h"), result(USAGE, 0));
    assert.deepEqual(await refused("mgmtdev"), result("Usage: vdpa mgmtdev show [ DEV ]\n", 0));
    assert.deepEqual(await refused("dev config help"), result("Usage: vdpa dev config show [ DEV ]\n", 0));
  });

  test("bad options: glibc's line, then Unknown option. and the usage, status 1", async () => {
    assert.deepEqual(
      await refused("-x dev"),
      result(`vdpa: invalid option -- 'x'\nUnknown option.\n${USAGE}`, 1),
    );
    assert.deepEqual(await refused("-s dev"), result(`Unknown option.\n${USAGE}`, 1));
    assert.deepEqual(
      await refused("--version"),
      result(`vdpa: unrecognized option '--version'\nUnknown option.\n${USAGE}`, 1),
    );
    assert.deepEqual(
      await refused("-n dev"),
      result(`vdpa: invalid option -- 'n'\nUnknown option.\n${USAGE}`, 1),
      "-n is in 6.1's usage line but not in its option string",
    );
  });

  test("in JSON mode the document's newline is printed even when nothing else is", async () => {
    assert.deepEqual(await refused("-j help"), result(USAGE, 0, "\n"));
    assert.deepEqual(await refused("-j dev frob"), result('Command "frob" not found\n', 1, "\n"));
  });

  test("options may follow the command words", async () => {
    assert.deepEqual(await vdpa("dev show -j"), result("", 0, '{"dev":{}}\n'));
  });
});

describe("unknown objects and commands", () => {
  for (const [line, msg] of [
    ["frob", 'Object "frob" not found\n'],
    ["mgmtdev frob", 'Command "frob" not found\n'],
    ["dev frob", 'Command "frob" not found\n'],
    ["dev config frob", 'Command "frob" not found\n'],
    ["dev vstats frob", 'Command "frob" not found\n'],
    ["dev v", 'Command "v" not found\n'],
    ["dev se", 'Command "se" not found\n'],
  ] as const) {
    test(line, async () => assert.deepEqual(await refused(line), result(msg, 1)));
  }
  test("an empty word matches nothing", async () => {
    assert.deepEqual(
      await runVdpa([""], async () => assert.fail("sent"), "x"),
      result('Object "" not found\n', 1),
    );
  });
});

describe("bad arguments are refused before anything is sent", () => {
  const VSTATS = "Usage: vdpa dev vstats show DEV [qidx QUEUE_INDEX]\n";
  for (const [line, stderr] of [
    ["dev add", "management device handle not set.\n"],
    ["dev add name v9", "management device handle not set.\n"],
    ["dev add mgmtdev vdpasim_net", "device name is not set.\n"],
    [
      "dev add name v9 mgmtdev a/b/c",
      'Wrong vdpa mgmtdev identification string format\nExpected "mgmtdev_bus_name/mgmtdev_name"\nExpected "mgmtdev_name"\n',
    ],
    ["dev add name v9 mgmtdev vdpasim_net mac 00:zz", '"zz" is invalid lladdr.\n'],
    ["dev add name v9 mgmtdev vdpasim_net mtu 65536", ""],
    ["dev add name v9 mgmtdev vdpasim_net mtu +5x", ""],
    // getopt permutes, so a negative number is an option, as with Linux's tool
    ["dev add name v9 mgmtdev vdpasim_net mtu -5", `vdpa: invalid option -- '5'\nUnknown option.\n${USAGE}`],
    ["dev add name v9 mgmtdev vdpasim_net max_vqp x", ""],
    ["dev add name v9 mgmtdev vdpasim_net device_features 0xg", ""],
    ["dev add name v9 mgmtdev vdpasim_net frob 1", 'Unknown option "frob"\n'],
    [
      "dev add name v9 mgmtdev vdpasim_blk size 12Q",
      '"12Q" is not a size (bytes, or a number with K, M, G or T)\n',
    ],
    ["dev del", "String parameter expected\n"],
    ["dev del v9 frob 1", 'Unknown option "frob"\n'],
    ["dev show v9 frob 1", 'Unknown option "frob"\n'],
    ["dev config show v9 frob 1", 'Unknown option "frob"\n'],
    [
      "mgmtdev show a/b/c",
      'Wrong vdpa mgmtdev identification string format\nExpected "mgmtdev_bus_name/mgmtdev_name"\nExpected "mgmtdev_name"\n',
    ],
    ["dev set", "device name is not set.\n"],
    ["dev set name v9 mtu 1500", 'Unknown option "mtu"\n'],
    ["dev vstats", VSTATS],
    ["dev vstats show", VSTATS],
    ["dev vstats show v9 qidx", VSTATS],
    ["dev vstats show v9 qidx 1 x", VSTATS],
    ["dev vstats show v9 qidx x", ""],
    ["dev vstats show v9 qidx 4294967296", ""],
    ["dev vstats show v9 frob 1", 'Unknown option "frob"\n'],
    ["dev bind", "String parameter expected\n"],
    ["dev bind v9", "driver name is not set.\n"],
    ["dev unbind", "String parameter expected\n"],
  ] as const) {
    test(line, async () => assert.deepEqual(await refused(line), result(stderr, 1)));
  }
});

describe("Linux's answers, as iproute2 prints them", () => {
  test("policy errors have no 'vdpa: ' prefix; handler errors have it", async () => {
    assert.deepEqual(
      await vdpa("dev add name v1 mgmtdev vdpasim_net mtu 0"),
      result("Error: integer out of range.\nkernel answers: Numerical result out of range\n", 1),
    );
    assert.deepEqual(
      await vdpa("dev add name v1 mgmtdev vdpasim_blk mac 00:11:22:33:44:55"),
      result(
        "Error: vdpa: Some provided attributes are not supported: 0x400.\nkernel answers: Operation not supported\n",
        1,
      ),
    );
    assert.deepEqual(
      await vdpa("mgmtdev show pci/nosuch"),
      result("Error: vdpa: Fail to find the specified mgmt device.\nkernel answers: No such device\n", 1),
    );
  });

  test("a show that fails still prints the JSON frame", async () => {
    assert.deepEqual(
      await vdpa("-j dev show nosuch"),
      result("Error: vdpa: device not found.\nkernel answers: No such device\n", 1, '{"dev":{}}\n'),
    );
    assert.deepEqual(
      await vdpa("-jp dev config show nosuch"),
      result(
        "Error: vdpa: device not found.\nkernel answers: No such device\n",
        1,
        '{\n    "config": {}\n}\n',
      ),
    );
  });

  test("6.1's vstats show exits 0 when the kernel refuses", async () => {
    assert.deepEqual(
      await vdpa("dev vstats show nosuch qidx 0"),
      result("Error: vdpa: device not found.\nkernel answers: No such device\n", 0),
    );
  });

  test("a single trailing word is ignored, so the device is created", async () => {
    assert.deepEqual(await vdpa("dev add name t1 mgmtdev vdpasim_net junk"), result("", 0));
    assert.equal((await vdpa("dev show t1")).code, 0);
    assert.deepEqual(await vdpa("dev del t1"), result("", 0));
  });

  test("dev set: a MAC for a net device; a warning (status 0) for a block device", async () => {
    assert.equal((await vdpa("dev add name s1 mgmtdev vdpasim_net")).code, 0);
    assert.deepEqual(await vdpa("dev set name s1 mac 02:00:00:00:00:07"), result("", 0));
    assert.match((await vdpa("dev config show s1")).stdout, /^s1: mac 02:00:00:00:00:07 /);
    assert.equal((await vdpa("dev add name s2 mgmtdev vdpasim_blk size 1M")).code, 0);
    assert.deepEqual(
      await vdpa("dev set name s2 mac 02:00:00:00:00:08"),
      result("Warning: vdpa: s2 device not supported.\n", 0),
    );
    assert.deepEqual(await vdpa("dev del s1"), result("", 0));
    assert.deepEqual(await vdpa("dev del s2"), result("", 0));
  });

  test("device_features picks what the device offers", async () => {
    assert.deepEqual(
      await vdpa("dev add name f1 mgmtdev vdpasim_net device_features 0x300000020"),
      result("", 0),
    );
    assert.equal((await vdpa("dev bind f1 driver virtio_vdpa")).code, 1, "still bound to vhost_vdpa");
    assert.deepEqual(await vdpa("dev unbind f1"), result("", 0));
    assert.deepEqual(await vdpa("dev bind f1 driver virtio_vdpa"), result("", 0));
    assert.equal(
      (await vdpa("dev config show f1")).stdout,
      // without STATUS and MTU negotiated, Linux sends neither
      "f1: mac 00:00:00:00:00:00 \n  negotiated_features MAC VERSION_1 ACCESS_PLATFORM\n",
    );
    assert.deepEqual(await vdpa("dev del f1"), result("", 0));
  });
});

describe("vdpa-ts extensions", () => {
  test("bind and unbind, with Linux-like errors", async () => {
    assert.equal((await vdpa("dev add name b1 mgmtdev vdpasim_blk")).code, 0);
    assert.deepEqual(
      await vdpa("dev bind b1 driver virtio_vdpa"),
      result("Error: vdpa: b1 is bound to vhost_vdpa.\nkernel answers: Device or resource busy\n", 1),
    );
    assert.deepEqual(await vdpa("dev unbind b1"), result("", 0));
    assert.deepEqual(
      await vdpa("dev unbind b1"),
      result("Error: vdpa: b1 is not bound.\nkernel answers: No such device\n", 1),
    );
    assert.deepEqual(
      await vdpa("dev bind b1 driver nosuch"),
      result("Error: vdpa: no driver nosuch.\nkernel answers: No such device\n", 1),
    );
    assert.deepEqual(
      await vdpa("dev bind nosuch driver virtio_vdpa"),
      result("Error: vdpa: device not found.\nkernel answers: No such device\n", 1),
    );
    assert.deepEqual(await vdpa("dev bind b1 driver virtio_vdpa"), result("", 0));
    const d = await vdpa("-d dev show b1");
    assert.equal(
      d.stdout,
      "b1: type block mgmtdev vdpasim_blk vendor_id 0 max_vqs 1 max_vq_size 256\n" +
        "  driver virtio_vdpa\n" +
        "  status ACKNOWLEDGE DRIVER DRIVER_OK FEATURES_OK\n" +
        "  negotiated_features SIZE_MAX SEG_MAX BLK_SIZE FLUSH DISCARD WRITE_ZEROES VERSION_1 ACCESS_PLATFORM\n",
    );
    const j = JSON.parse((await vdpa("-j -d dev show b1")).stdout);
    assert.equal(j.dev.b1.driver, "virtio_vdpa");
    assert.deepEqual(j.dev.b1.status, ["ACKNOWLEDGE", "DRIVER", "DRIVER_OK", "FEATURES_OK"]);
    assert.deepEqual(await vdpa("dev unbind b1"), result("", 0));
    assert.equal((await vdpa("-d dev show b1")).stdout.split("\n")[1], "  driver none");
    assert.deepEqual(await vdpa("dev del b1"), result("", 0));
  });

  test("-d on a missing device prints Linux's answer once", async () => {
    assert.deepEqual(
      await vdpa("-d dev show nosuch"),
      result("Error: vdpa: device not found.\nkernel answers: No such device\n", 1),
    );
  });

  test("-d does not change the lines iproute2 prints", async () => {
    assert.equal((await vdpa("dev add name x1 mgmtdev vdpasim_net")).code, 0);
    const plain = (await vdpa("dev show x1")).stdout;
    const detailed = (await vdpa("-d dev show x1")).stdout;
    assert.ok(detailed.startsWith(plain.slice(0, -1)), detailed);
    assert.deepEqual(await vdpa("dev del x1"), result("", 0));
  });
});

describe("the vdpa program", () => {
  const bin = new URL("../../src/cli/main.js", import.meta.url).pathname;

  test("talks to the daemon of VDPA_RUNTIME_DIR", async () => {
    // asynchronously: the daemon answering it runs in this process
    const r = await execFileAsync(process.execPath, [bin, "-j", "mgmtdev", "show", "vdpasim_blk"], {
      env: { ...process.env, VDPA_RUNTIME_DIR: dir },
      encoding: "utf8",
    });
    assert.equal(r.stderr, "");
    assert.equal(
      r.stdout,
      '{"mgmtdev":{"vdpasim_blk":{"supported_classes":["block"],"max_supported_vqs":0,"dev_features":[]}}}\n',
    );
  });

  test("with no daemon: one line naming the socket, status 1", () => {
    const empty = mkdtempSync(join(tmpdir(), "vdpa-none-"));
    try {
      const r = spawnSync(process.execPath, [bin, "dev", "show"], {
        env: { ...process.env, VDPA_RUNTIME_DIR: empty },
        encoding: "utf8",
      });
      assert.equal(r.status, 1);
      assert.equal(r.stdout, "");
      assert.equal(r.stderr.split("\n").length, 2, r.stderr);
      assert.ok(r.stderr.includes(join(empty, "mgmt.sock")), r.stderr);
      // help needs no daemon
      const h = spawnSync(process.execPath, [bin, "help"], {
        env: { ...process.env, VDPA_RUNTIME_DIR: empty },
        encoding: "utf8",
      });
      assert.equal(h.status, 0);
      assert.equal(h.stderr, USAGE);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe("with vhost-user front-ends and other users", () => {
  test("-d names the vhost-user socket; dev del and unbind answer EBUSY while a front-end is attached", async () => {
    assert.equal((await vdpa("dev add name h1 mgmtdev vdpasim_net")).code, 0);
    const socket = join(dir, "vhost-user", "h1.sock");
    await until(() => existsSync(socket), 2000, "the vhost-user socket");
    assert.equal((await vdpa("-d dev show h1")).stdout.split("\n")[3], `  vhost_user_socket ${socket}`);
    const fe = new TestFrontEnd(socket);
    try {
      await fe.init();
      const busy = `Error: vdpa: h1 is in use by the vhost-user front-end on ${socket}.\nkernel answers: Device or resource busy\n`;
      assert.deepEqual(await vdpa("dev del h1"), result(busy, 1));
      assert.deepEqual(await vdpa("dev unbind h1"), result(busy, 1));
    } finally {
      fe.close();
    }
    await until(() => daemon.vhostUser.inUse(daemon.bus.device("h1")!) === undefined, 2000, "detach");
    assert.deepEqual(await vdpa("dev del h1"), result("", 0));
    assert.equal(existsSync(socket), false, "the socket goes with the device");
  });

  test("another user may read but not change (SO_PEERCRED), when the socket lets it connect", async () => {
    // As root (CI) the tool runs as nobody and must be refused; as anyone else it runs as the daemon's
    // own user and must be allowed.
    const root = process.getuid!() === 0;
    const other = mkdtempSync(join(tmpdir(), "vdpa-peer-"));
    chmodSync(other, 0o755);
    const d = await startDaemon({ runtimeDir: other, log: () => {}, socketMode: 0o666 });
    try {
      const bin = new URL("../../src/cli/main.js", import.meta.url).pathname;
      const run = (...args: string[]) =>
        execFileAsync(process.execPath, [bin, ...args], {
          // no NODE_V8_COVERAGE: under c8, nobody cannot write root's coverage dir
          env: { ...process.env, VDPA_RUNTIME_DIR: other, NODE_V8_COVERAGE: "" },
          uid: 65534,
          gid: 65534,
        }).then(
          (r) => ({ ...r, code: 0 }),
          (e: { stdout: string; stderr: string; code: number }) => ({
            stdout: e.stdout,
            stderr: e.stderr,
            code: e.code,
          }),
        );
      const read = await run("mgmtdev", "show", "vdpasim_blk");
      assert.equal(read.code, 0, read.stderr);
      const add = await run("dev", "add", "name", "p9", "mgmtdev", "vdpasim_net");
      if (!root) {
        assert.deepEqual([add.code, add.stderr], [0, ""], "the daemon's own user may change");
        return;
      }
      assert.equal(add.code, 1);
      assert.equal(
        add.stderr,
        "Error: vdpa: uid 65534 may only read; changes need root or the daemon's user.\nkernel answers: Operation not permitted\n",
      );
    } finally {
      await d.stop();
      rmSync(other, { recursive: true, force: true });
    }
  });
});
