// The vDPA half of `npm start`: a vdpasim_net and a vdpasim_blk created through the management commands
// (as `vdpa dev add` does), bound to vhost_vdpa first as on Linux, then rebound to virtio_vdpa (Linux does
// this through sysfs), driven by the virtio-net and virtio-blk drivers, and shown as an operator would
// want to see them: devices, negotiated features by name, per-queue counters.

import { vdpasimBlkMgmtDev, vdpasimNetMgmtDev } from "../src/devices/sim/index.js";
import { featureBits, featureByBit, featureClassOf, featureNamesIproute2 } from "../src/spec/features.js";
import { statusNames } from "../src/spec/status.js";
import { getAttr, getAttrs, VdpaBus, type VdpaDevice, VdpaManagement } from "../src/vdpa/index.js";
import { VhostVdpaDriver } from "../src/vhost/index.js";
import type { VirtioBlk } from "../src/virtio/blk.js";
import { VirtioBlkDriver, VirtioBus, VirtioNetDriver, VirtioVdpaDriver } from "../src/virtio/index.js";
import type { VirtioNet } from "../src/virtio/net.js";

const FRAMES = 100_000;
const NET_MAC = Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56);

export async function vdpaDemo(log: (line: string) => void = console.log): Promise<void> {
  const bus = new VdpaBus();
  bus.registerDriver(new VhostVdpaDriver());
  const virtioBus = new VirtioBus();
  bus.registerDriver(new VirtioVdpaDriver(virtioBus));
  let net: VirtioNet | undefined;
  let blk: VirtioBlk | undefined;
  virtioBus.registerDriver(new VirtioNetDriver({ onProbe: (n) => (net = n) }));
  virtioBus.registerDriver(new VirtioBlkDriver({ onProbe: (b) => (blk = b) }));
  bus.on("bound", (dev, drv) => log(`  bound ${dev.name} to ${drv.name}`));

  const mgmt = new VdpaManagement(bus);
  mgmt.registerMgmtDev(vdpasimNetMgmtDev());
  mgmt.registerMgmtDev(vdpasimBlkMgmtDev());
  log("$ vdpa dev add name vdpa0 mgmtdev vdpasim_net mac 52:54:00:12:34:56");
  mgmt.devNew([
    { name: "DEV_NAME", value: "vdpa0" },
    { name: "MGMTDEV_DEV_NAME", value: "vdpasim_net" },
    { name: "DEV_NET_CFG_MACADDR", value: NET_MAC },
  ]);
  log("$ vdpa dev add name vdpa1 mgmtdev vdpasim_blk");
  mgmt.devNew([
    { name: "DEV_NAME", value: "vdpa1" },
    { name: "MGMTDEV_DEV_NAME", value: "vdpasim_blk" },
  ]);
  log("rebinding both to virtio_vdpa (Linux: echo vdpaN > /sys/bus/vdpa/drivers/.../unbind, bind)");
  for (const name of ["vdpa0", "vdpa1"]) {
    const dev = bus.device(name)!;
    bus.unbind(dev);
    bus.bind(dev, "virtio_vdpa");
  }
  if (!net || !blk) throw new Error("the virtio drivers did not bind");

  // Network: broadcast frames go out on tx, through the simulator's MAC filter, and back on rx.
  const frame = new Uint8Array(64);
  frame.fill(0xff, 0, 6);
  frame.set(NET_MAC, 6);
  let received = 0;
  net.onReceive(() => {
    received++;
  });
  const netStart = performance.now();
  let sent = 0;
  while (sent < FRAMES) {
    while (sent < FRAMES && net.send(frame)) sent++;
    net.flush();
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  while (received < FRAMES) await new Promise<void>((resolve) => setImmediate(resolve));
  const netSeconds = (performance.now() - netStart) / 1000;
  log(
    `net: ${FRAMES} frames of 64 bytes looped back in ${netSeconds.toFixed(2)} s (${(FRAMES / netSeconds / 1e3).toFixed(0)} kpps)`,
  );

  // Block: write a pattern, read it back, flush, ask the device's id.
  const data = Buffer.alloc(1 << 20);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
  const blkStart = performance.now();
  await blk.write(2048, data);
  const back = await blk.read(2048, data.length / 512);
  await blk.flush();
  const id = await blk.getId();
  const blkMs = performance.now() - blkStart;
  if (!Buffer.from(back).equals(data)) throw new Error("block data read back differs");
  log(`blk: wrote and read back 1 MiB at sector 2048 in ${blkMs.toFixed(1)} ms, flushed; device id "${id}"`);

  log("");
  log("$ vdpa dev show");
  for (const dev of mgmt.devDump()) {
    log(
      `${getAttr(dev, "DEV_NAME")}: type ${getAttr(dev, "DEV_ID") === 1 ? "network" : "block"} mgmtdev ${getAttr(dev, "MGMTDEV_DEV_NAME")} ` +
        `vendor_id ${getAttr(dev, "DEV_VENDOR_ID")} max_vqs ${getAttr(dev, "DEV_MAX_VQS")} max_vq_size ${getAttr(dev, "DEV_MAX_VQ_SIZE")}`,
    );
  }
  for (const name of ["vdpa0", "vdpa1"]) {
    const dev: VdpaDevice = bus.device(name)!;
    log(`${name}: driver ${dev.driver?.name}, status ${statusNames(dev.getStatus()).join(" ")}`);
    log(
      `  negotiated_features ${featureNames(dev.ops.getDriverFeatures(), dev.ops.getDeviceId()).join(" ")}`,
    );
  }
  for (const qidx of [0, 1]) {
    const stats = mgmt.devVstatsGet([
      { name: "DEV_NAME", value: "vdpa0" },
      { name: "DEV_QUEUE_INDEX", value: qidx },
    ]);
    const names = getAttrs(stats, "DEV_VENDOR_ATTR_NAME");
    const values = getAttrs(stats, "DEV_VENDOR_ATTR_VALUE");
    log(`$ vdpa dev vstats show vdpa0 qidx ${qidx}: ${names.map((n, i) => `${n} ${values[i]}`).join(" ")}`);
  }
  log(`virtio-net driver: ${JSON.stringify(net.stats)}`);
  log(`virtio-blk driver: ${JSON.stringify(blk.stats)}`);
  for (const name of ["vdpa1", "vdpa0"]) mgmt.devDel([{ name: "DEV_NAME", value: name }]);
}

/**
 * Feature names as iproute2 prints them for net devices; iproute2 6.1 names no block feature (it prints
 * bit_N), so block devices get the spec names without their prefix instead.
 */
function featureNames(features: bigint, deviceId: number): string[] {
  const cls = featureClassOf(deviceId);
  if (cls !== "blk") return featureNamesIproute2(features, deviceId);
  return featureBits(features).map((bit) => {
    const f = featureByBit(cls, bit);
    return f ? f.specName.replace(/^VIRTIO_(BLK_|RING_)?F_/, "") : `bit_${bit}`;
  });
}
