// A real Linux guest's virtio_net on vdpasim_net over vhost-user. QEMU owns the control queue, MAC and
// link state of a vhost-user net device; the device gets the guest's datapath. The guest brings eth0 up and
// sends N multicast frames (pings to 224.0.0.1) and N unicast frames to its own MAC (pings to a neighbour entry
// pointing at itself); the simulator loops every one back, so rx >= 2N and tx >= 2N in the guest, and
// `vdpa dev vstats show` counts the same frames on the device's queues.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { boot, buildInitramfs } from "./support/guest.js";
import { type VmRig, vmRig } from "./support/rig.js";

let rig: VmRig | null;

before(async () => {
  rig = await vmRig();
});

after(async () => {
  await rig?.close();
});

const MAC = "52:54:00:12:34:56";
const N = 20;

/** The device's "<dir> packets" counter of queue `qidx` (vdpa dev vstats show). */
function queuePackets(r: VmRig, dev: string, qidx: number): number {
  const reply = r.daemon.mgmt.run("DEV_VSTATS_GET", [
    { name: "DEV_NAME", value: dev },
    { name: "DEV_QUEUE_INDEX", value: qidx },
  ]).replies[0];
  const at = reply.findIndex((a) => a.name === "DEV_VENDOR_ATTR_NAME" && /packets$/.test(String(a.value)));
  return Number(reply[at + 1].value);
}

test("guest virtio_net: N multicast and N unicast frames come back; vstats agree", async (t) => {
  if (!rig) return t.skip("no VM tools");
  const socket = await rig.addDevice([
    { name: "DEV_NAME", value: "vn0" },
    { name: "MGMTDEV_DEV_NAME", value: "vdpasim_net" },
    {
      name: "DEV_NET_CFG_MACADDR",
      value: Uint8Array.from(MAC.split(":").map((h) => Number.parseInt(h, 16))),
    },
  ]);
  const initramfs = buildInitramfs(
    rig.kit,
    `
insmod /modules/failover.ko && insmod /modules/net_failover.ko && insmod /modules/virtio_net.ko || fail "insmod"
for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done
[ -e /sys/class/net/eth0 ] || fail "no eth0"
[ "$(cat /sys/class/net/eth0/address)" = "${MAC}" ] || fail "MAC $(cat /sys/class/net/eth0/address)"
ip addr add 10.0.0.2/24 dev eth0 && ip link set eth0 up || fail "eth0 up"
arp -i eth0 -s 10.0.0.9 ${MAC} || fail "neighbour"
sleep 1
s=/sys/class/net/eth0/statistics
rx0=$(cat $s/rx_packets); tx0=$(cat $s/tx_packets)
ip route add 224.0.0.0/4 dev eth0 || fail "multicast route"
ping -c ${N} -i 0.05 -W 1 224.0.0.1 >/dev/null 2>&1
ping -c ${N} -i 0.05 -W 1 10.0.0.9 >/dev/null 2>&1
sleep 1
rx=$(($(cat $s/rx_packets) - rx0)); tx=$(($(cat $s/tx_packets) - tx0))
echo "VDPA-TS-COUNTERS rx=$rx tx=$tx total_rx=$(cat $s/rx_packets) total_tx=$(cat $s/tx_packets)"
[ $tx -ge ${2 * N} ] || fail "tx $tx < ${2 * N}"
[ $rx -ge ${2 * N} ] || fail "rx $rx < ${2 * N}"
sleep 2
pass
`,
  );
  let counters: { rx: number; tx: number } | null = null;
  let device: { rx: number; tx: number } | null = null;
  const r = await boot({
    kit: rig.kit,
    initramfs,
    args: [
      "-chardev",
      `socket,id=c1,path=${socket}`,
      "-netdev",
      "vhost-user,id=n0,chardev=c1",
      "-device",
      `virtio-net-pci,netdev=n0,mac=${MAC},romfile=,vectors=0`,
    ],
    timeoutMs: 120_000,
    onLine: (line) => {
      const m = /VDPA-TS-COUNTERS .*total_rx=(\d+) total_tx=(\d+)/.exec(line);
      if (!m || !rig) return;
      counters = { rx: Number(m[1]), tx: Number(m[2]) };
      // read while the guest still runs (a stopped device is reset and its counters with it)
      device = { rx: queuePackets(rig, "vn0", 0), tx: queuePackets(rig, "vn0", 1) };
    },
  });
  assert.ok(r.passed, `guest: ${r.reason}\n${r.console.slice(-3000)}\n${rig.logs.slice(-20).join("\n")}`);
  assert.ok(counters && device, "counters seen");
  const c = counters as { rx: number; tx: number };
  const d = device as { rx: number; tx: number };
  console.error(
    `guest net: ${r.seconds.toFixed(1)} s; guest rx ${c.rx} tx ${c.tx}; device rx ${d.rx} tx ${d.tx}`,
  );
  // the device counts at least what the guest counted, and the few frames sent since (IPv6 chatter)
  assert.ok(d.tx >= c.tx && d.tx <= c.tx + 8, `device tx ${d.tx}, guest tx ${c.tx}`);
  assert.ok(d.rx >= c.rx && d.rx <= c.rx + 8, `device rx ${d.rx}, guest rx ${c.rx}`);
  rig.remove("vn0");
});
