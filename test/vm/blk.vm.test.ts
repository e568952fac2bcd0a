// A real Linux guest's virtio_blk on vdpasim_blk over vhost-user, both ring formats: the guest reads a
// pattern the host wrote into the device's backing file, writes another that the host finds in the file
// after the guest's flush, and reads it back.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
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

const SECTOR = 512;
const HOST_AT = 100;
const GUEST_AT = 200;

for (const packed of [false, true]) {
  test(`guest virtio_blk reads the host's pattern and writes its own (${packed ? "packed" : "split"} ring)`, async (t) => {
    if (!rig) return t.skip("no VM tools");
    const name = packed ? "vbp" : "vbs";
    const file = join(rig.dir, `${name}.img`);
    const disk = Buffer.alloc(4 << 20);
    const hostPattern = randomBytes(4096);
    const guestPattern = randomBytes(4096);
    hostPattern.copy(disk, HOST_AT * SECTOR);
    writeFileSync(file, disk);
    // Built directly (not through `vdpa dev add`) so it offers packed rings and event index, which
    // Linux's vdpasim_blk, and so our management device, does not.
    const socket = await rig.addBuilt(
      createSimBlk({ name, backingFile: file, packed: true, eventIdx: true }).device,
    );
    const initramfs = buildInitramfs(
      rig.kit,
      `
insmod /modules/virtio_blk.ko || fail "insmod virtio_blk"
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
[ -b /dev/vda ] || fail "no /dev/vda"
[ "$(cat /sys/block/vda/size)" = "${disk.length / SECTOR}" ] || fail "size $(cat /sys/block/vda/size)"
# the negotiated feature bits, one character per bit: 34 is RING_PACKED
[ "$(cut -c35 /sys/bus/virtio/devices/virtio0/features)" = "${packed ? 1 : 0}" ] || fail "RING_PACKED not as asked: $(cat /sys/bus/virtio/devices/virtio0/features)"
dd if=/dev/vda of=/tmp/got bs=512 skip=${HOST_AT} count=8 2>/dev/null || fail "read"
cmp /tmp/got /host.bin || fail "the host's pattern did not come back"
dd if=/guest.bin of=/dev/vda bs=512 seek=${GUEST_AT} count=8 conv=fsync 2>/dev/null || fail "write"
sync
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vda of=/tmp/back bs=512 skip=${GUEST_AT} count=8 2>/dev/null || fail "read back"
cmp /tmp/back /guest.bin || fail "the guest's own pattern did not come back"
pass
`,
      { "host.bin": hostPattern, "guest.bin": guestPattern },
    );
    const r = await boot({
      kit: rig.kit,
      initramfs,
      args: [
        "-chardev",
        `socket,id=c0,path=${socket}`,
        "-device",
        `vhost-user-blk-pci,chardev=c0,num-queues=1${packed ? ",packed=on" : ""}`,
      ],
      timeoutMs: 90_000,
    });
    assert.ok(r.passed, `guest: ${r.reason}\n${r.console.slice(-3000)}\n${rig.logs.slice(-20).join("\n")}`);
    const after = readFileSync(file);
    assert.deepEqual(
      after.subarray(GUEST_AT * SECTOR, GUEST_AT * SECTOR + 4096),
      guestPattern,
      "the guest's write is in the file",
    );
    console.error(`guest ${packed ? "packed" : "split"} blk: ${r.seconds.toFixed(1)} s`);
    rig.remove(name);
  });
}
