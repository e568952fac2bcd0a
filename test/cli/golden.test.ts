// Golden test: every `vdpa` command of test/fixtures/linux-vdpa-cli.txt (iproute2 6.1's tool against Linux
// 6.12 with vdpa_sim) is run, in order, by our `vdpa` against a vdpad over its management socket; stdout,
// stderr and the exit code must equal the transcript's byte for byte. The sysfs steps become their vdpa-ts
// equivalents: `echo DEV > .../drivers/DRV/unbind|bind` is `vdpa dev unbind DEV` / `vdpa dev bind DEV
// driver DRV`, and `readlink .../devices/DEV/driver` is checked against `vdpa -j -d dev show DEV`.
//
// Left out, each with its reason below: what the host or guest kernel prints (ls, ip, dd, ping, cat),
// listings that include Linux's `vduse` management device, and vstats read after the guest's traffic
// (their counts come from Linux's IPv6 stack). Every other entry must be replayed: the walk fails on a
// transcript entry it neither runs nor explains.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { runVdpa } from "../../src/cli/vdpa.js";
import { type Daemon, startDaemon } from "../../src/daemon/vdpad.js";
import { request } from "../../src/mgmt-protocol/client.js";
import { parseTranscript, readFixture, type TranscriptEntry } from "../support/transcript.js";

const ENTRIES = parseTranscript(readFixture("linux-vdpa-cli.txt"));

const SKIPS: { match: (e: TranscriptEntry) => boolean; reason: string }[] = [
  {
    match: (e) => /^vdpa (-j |-jp )?mgmtdev show( vduse)?$/.test(e.cmd),
    reason: "lists Linux's vduse management device, which vdpa-ts does not have (yet)",
  },
  {
    match: (e) => e.section.startsWith("packets through vdpasim_net") && e.cmd.startsWith("vdpa dev vstats"),
    reason: "counters after the guest's traffic, which Linux's IPv6 stack generated",
  },
  {
    match: (e) => /^(ls|\/sbin\/ip|ping6|dd|cat|echo vda) /.test(e.cmd),
    reason: "output of the host or guest kernel",
  },
  {
    match: (e) => e.cmd.startsWith("readlink -f /sys/class/net/"),
    reason: "sysfs topology of the guest's netdev",
  },
];

let dir: string;
let daemon: Daemon;
let nextId = 1;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "vdpa-golden-"));
  daemon = await startDaemon({ runtimeDir: dir, log: () => {} });
});

after(async () => {
  await daemon.stop();
  rmSync(dir, { recursive: true, force: true });
});

function vdpa(argv: string[]) {
  return runVdpa(argv, (req) => request(daemon.socketPath, { id: nextId++, ...req }), "test");
}

/** A transcript's lines as the stream they came from: each line ends with a newline. */
function stream(lines: readonly string[]): string {
  return lines.map((l) => `${l}\n`).join("");
}

test("every vdpa command of the Linux transcript prints the same bytes and exits the same", async () => {
  const replayed: string[] = [];
  const skipped: string[] = [];
  for (const e of ENTRIES) {
    const sysfs = /^echo (\S+) > \/sys\/bus\/vdpa\/drivers\/(\S+)\/(bind|unbind)$/.exec(e.cmd);
    const link = /^readlink \/sys\/bus\/vdpa\/devices\/(\S+)\/driver$/.exec(e.cmd);
    const skip = SKIPS.find((s) => s.match(e));
    if (skip) {
      skipped.push(`${e.cmd}: ${skip.reason}`);
    } else if (e.cmd.startsWith("vdpa ")) {
      const got = await vdpa(e.cmd.split(" ").slice(1));
      const where = `transcript entry ${e.index}: ${e.cmd}`;
      assert.equal(got.stdout, stream(e.stdout), `stdout of ${where}`);
      assert.equal(got.stderr, stream(e.stderr), `stderr of ${where}`);
      assert.equal(got.code, e.rc, `exit code of ${where}`);
      replayed.push(e.cmd);
    } else if (sysfs) {
      const [, dev, driver, op] = sysfs;
      const argv = op === "bind" ? ["dev", "bind", dev, "driver", driver] : ["dev", "unbind", dev];
      const got = await vdpa(argv);
      assert.deepEqual(got, { stdout: "", stderr: "", code: e.rc }, e.cmd);
      replayed.push(e.cmd);
    } else if (link) {
      const got = await vdpa(["-j", "-d", "dev", "show", link[1]]);
      const shown = JSON.parse(got.stdout) as { dev: Record<string, { driver: string }> };
      assert.equal(`../../bus/vdpa/drivers/${shown.dev[link[1]].driver}`, e.stdout[0], e.cmd);
      replayed.push(e.cmd);
    } else {
      assert.fail(`transcript entry ${e.index} "${e.cmd}" is neither replayed nor skipped with a reason`);
    }
  }
  // 36 entries run (32 vdpa commands, 4 sysfs rebinds... counted once when this test was written); a
  // change in either number means the transcript or the skip rules changed: look at both lists.
  assert.equal(replayed.length, 36, replayed.join("\n"));
  assert.equal(skipped.length, ENTRIES.length - 36, skipped.join("\n"));
});
