// Device lifecycle with a real guest: a guest that reboots (QEMU restarts the device on each boot, and the
// firmware starts it once more), and a guest killed in the middle of its I/O, after which the device and
// the daemon serve the next front-end.

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { type Daemon, startDaemon } from "../../src/daemon/vdpad.js";
import { createSimBlk } from "../../src/devices/sim/blk.js";
import { boot, buildInitramfs } from "./support/guest.js";
import { type VmRig, vmRig } from "./support/rig.js";

let rig: VmRig | null;

before(async () => {
  rig = await vmRig();
});

after(async () => {
  await rig?.close();
});

const blkArgs = (socket: string) => [
  "-chardev",
  `socket,id=c0,path=${socket}`,
  "-device",
  "vhost-user-blk-pci,chardev=c0,num-queues=1",
];

const WAIT_FOR_VDA = `
insmod /modules/virtio_blk.ko || fail "insmod virtio_blk"
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
[ -b /dev/vda ] || fail "no /dev/vda"
`;

async function addDisk(r: VmRig, name: string): Promise<string> {
  const file = join(r.dir, `${name}.img`);
  writeFileSync(file, Buffer.alloc(4 << 20));
  return r.addBuilt(createSimBlk({ name, backingFile: file }).device);
}

test("a guest that reboots: the device starts again on the same connection and serves the second boot", async (t) => {
  if (!rig) return t.skip("no VM tools");
  const socket = await addDisk(rig, "vreboot");
  // The disk carries the state across the reboot: sector 0 holds "boot1" after the first boot.
  const initramfs = buildInitramfs(
    rig.kit,
    `${WAIT_FOR_VDA}
mark=$(dd if=/dev/vda bs=5 count=1 2>/dev/null)
if [ "$mark" = "boot1" ]; then
  dd if=/dev/vda of=/tmp/p bs=512 skip=8 count=8 2>/dev/null && cmp /tmp/p /pattern.bin || fail "after reboot: data"
  pass
fi
dd if=/pattern.bin of=/dev/vda bs=512 seek=8 conv=fsync 2>/dev/null || fail "first boot: write"
printf boot1 | dd of=/dev/vda conv=fsync 2>/dev/null || fail "first boot: mark"
echo "VDPA-TS-REBOOTING"
trap - EXIT
reboot -f
`,
    { "pattern.bin": Buffer.alloc(4096, 0x3c) },
  );
  let rebooted = false;
  const r = await boot({
    kit: rig.kit,
    initramfs,
    args: blkArgs(socket),
    allowReboot: true,
    timeoutMs: 120_000,
    onLine: (l) => {
      if (l.includes("VDPA-TS-REBOOTING")) rebooted = true;
    },
  });
  assert.ok(rebooted, "the first boot ran");
  assert.ok(r.passed, `guest: ${r.reason}\n${r.console.slice(-2000)}\n${rig.logs.slice(-20).join("\n")}`);
  const starts = rig.logs.filter((l) => l.includes("vreboot: front-end connected")).length;
  assert.equal(starts, 1, "one connection: every restart happened on it");
  rig.remove("vreboot");
});

test("a guest killed mid-I/O: the device and the daemon serve the next guest", async (t) => {
  if (!rig) return t.skip("no VM tools");
  const r0 = rig;
  const socket = await addDisk(r0, "vkill");
  const busy = buildInitramfs(
    r0.kit,
    `${WAIT_FOR_VDA}
echo "VDPA-TS-IO-STARTED"
while true; do dd if=/dev/zero of=/dev/vda bs=64k count=32 conv=fsync 2>/dev/null; dd if=/dev/vda of=/dev/null bs=64k count=32 2>/dev/null; done
`,
  );
  let killed = false;
  const first = await new Promise<Awaited<ReturnType<typeof boot>>>((resolve) => {
    let qemuKill: (() => void) | null = null;
    void boot({
      kit: r0.kit,
      initramfs: busy,
      args: blkArgs(socket),
      timeoutMs: 120_000,
      onStart: (kill) => {
        qemuKill = kill;
      },
      onLine: (l) => {
        if (l.includes("VDPA-TS-IO-STARTED") && !killed) {
          killed = true;
          // let the I/O loop run, then pull the plug
          setTimeout(() => qemuKill?.(), 1500);
        }
      },
    }).then(resolve);
  });
  assert.ok(killed, `the guest started its I/O: ${first.console.slice(-1500)}`);
  for (let i = 0; i < 200 && r0.logs.every((l) => !l.includes("vkill: front-end gone")); i++) {
    await new Promise((res) => setTimeout(res, 10));
  }
  assert.ok(
    r0.logs.some((l) => l.includes("vkill: front-end gone")),
    "the server saw the front-end go",
  );
  const next = buildInitramfs(
    r0.kit,
    `${WAIT_FOR_VDA}
dd if=/pattern.bin of=/dev/vda bs=512 seek=16 conv=fsync 2>/dev/null || fail "write"
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vda of=/tmp/p bs=512 skip=16 count=8 2>/dev/null && cmp /tmp/p /pattern.bin || fail "read back"
pass
`,
    { "pattern.bin": Buffer.alloc(4096, 0x5a) },
  );
  const second = await boot({ kit: r0.kit, initramfs: next, args: blkArgs(socket), timeoutMs: 90_000 });
  assert.ok(second.passed, `second guest: ${second.reason}\n${second.console.slice(-2000)}`);
  r0.remove("vkill");
});

test("vdpad restarts while QEMU waits (reconnect=1): the device serves the running guest again", async (t) => {
  if (!rig) return t.skip("no VM tools");
  const r0 = rig;
  const dir = mkdtempSync(join(tmpdir(), "vdpa-restart-"));
  const file = join(dir, "disk.img");
  writeFileSync(file, Buffer.alloc(4 << 20));
  const logs: string[] = [];
  const start = async (): Promise<{ daemon: Daemon; socket: string }> => {
    const daemon = await startDaemon({ runtimeDir: dir, log: (l, m) => logs.push(`${l} ${m}`) });
    daemon.bus.registerDevice(createSimBlk({ name: "vr", backingFile: file }).device);
    const socket = daemon.vhostUser.socketOf(daemon.bus.device("vr")!)!;
    for (let i = 0; i < 200 && !existsSync(socket); i++) await new Promise((res) => setTimeout(res, 5));
    return { daemon, socket };
  };
  let current = await start();
  let restarted = false;
  try {
    const initramfs = buildInitramfs(
      r0.kit,
      `${WAIT_FOR_VDA}
dd if=/pattern.bin of=/dev/vda bs=512 seek=8 conv=fsync 2>/dev/null || fail "write before the restart"
echo "VDPA-TS-READY"
sleep 8
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vda of=/tmp/p bs=512 skip=8 count=8 2>/dev/null && cmp /tmp/p /pattern.bin || fail "read after the restart"
dd if=/pattern.bin of=/dev/vda bs=512 seek=64 conv=fsync 2>/dev/null || fail "write after the restart"
pass
`,
      { "pattern.bin": Buffer.alloc(4096, 0x77) },
    );
    const r = await boot({
      kit: r0.kit,
      initramfs,
      args: [
        "-chardev",
        `socket,id=c0,path=${current.socket},reconnect=1`,
        "-device",
        "vhost-user-blk-pci,chardev=c0,num-queues=1",
      ],
      timeoutMs: 120_000,
      onLine: (l) => {
        if (!l.includes("VDPA-TS-READY") || restarted) return;
        restarted = true;
        void (async () => {
          await current.daemon.stop();
          logs.push("test: vdpad stopped");
          current = await start();
          logs.push("test: vdpad started again");
        })();
      },
    });
    assert.ok(restarted, "the guest got to the restart");
    assert.ok(r.passed, `guest: ${r.reason}\n${r.console.slice(-2000)}\n${logs.join("\n")}`);
    const connects = logs.filter((l) => l.includes("vr: front-end connected")).length;
    assert.equal(connects, 2, "QEMU connected to each daemon");
  } finally {
    await current.daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
