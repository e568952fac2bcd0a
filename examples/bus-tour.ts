// A tour of the vDPA bus, in-process: management devices create simulator devices exactly as
// `vdpa dev add` does on Linux, vhost_vdpa binds them, and a vhost user drives one through the vhost-vdpa
// uAPI. Run it with `node dist/examples/bus-tour.js`.

import { vdpasimBlkMgmtDev, vdpasimNetMgmtDev } from "../src/devices/sim/index.js";
import { spec } from "../src/index.js";
import { DmaPool, PERM_RW } from "../src/memory/index.js";
import { getAttr, VdpaBus, VdpaManagement } from "../src/vdpa/index.js";
import { VhostVdpaDriver } from "../src/vhost/index.js";

export function busTour(log: (line: string) => void = console.log): void {
  const bus = new VdpaBus();
  const vhostVdpa = new VhostVdpaDriver();
  bus.registerDriver(vhostVdpa); // registered first, as on Linux: new devices bind to it
  bus.on("bound", (dev, drv) => log(`bound ${dev.name} to ${drv.name}`));

  const mgmt = new VdpaManagement(bus);
  mgmt.registerMgmtDev(vdpasimNetMgmtDev());
  mgmt.registerMgmtDev(vdpasimBlkMgmtDev());

  // vdpa dev add name vdpa0 mgmtdev vdpasim_net mac 00:11:22:33:44:55
  mgmt.devNew([
    { name: "DEV_NAME", value: "vdpa0" },
    { name: "MGMTDEV_DEV_NAME", value: "vdpasim_net" },
    { name: "DEV_NET_CFG_MACADDR", value: Uint8Array.of(0x00, 0x11, 0x22, 0x33, 0x44, 0x55) },
  ]);
  // vdpa dev add name vdpa1 mgmtdev vdpasim_blk
  mgmt.devNew([
    { name: "DEV_NAME", value: "vdpa1" },
    { name: "MGMTDEV_DEV_NAME", value: "vdpasim_blk" },
  ]);

  // vdpa dev config show vdpa0
  const config = mgmt.devConfigGet([{ name: "DEV_NAME", value: "vdpa0" }]);
  const features = getAttr(config, "DEV_FEATURES") as bigint;
  log(`vdpa0 features: ${spec.featureNamesIproute2(features, 1).join(" ")}`);

  // A vhost user (QEMU, or your program) takes the device over.
  const dev = bus.device("vdpa0")!;
  const vhost = vhostVdpa.get(dev)!;
  vhost.open();
  vhost.setOwner();
  vhost.setStatus(1 | 2); // ACKNOWLEDGE | DRIVER
  vhost.setFeatures(vhost.getFeatures());
  vhost.setStatus(1 | 2 | 8); // + FEATURES_OK
  const guest = new DmaPool({ size: 1 << 20, iovaBase: 0x1_0000_0000 });
  vhost.iotlbBatchBegin(0);
  vhost.iotlbUpdate(0, guest.iovaBase, guest.size, guest.region, 0, PERM_RW);
  vhost.iotlbBatchEnd(0);
  log(`vdpa0 status 0x${vhost.getStatus().toString(16)}, ${vhost.mappings(0).length} mapping in ASID 0`);
  vhost.release();

  // vdpa dev del vdpa1
  mgmt.devDel([{ name: "DEV_NAME", value: "vdpa1" }]);
  log(
    `devices: ${bus
      .devices()
      .map((d) => d.name)
      .join(", ")}`,
  );
}

if (import.meta.url === `file://${process.argv[1]}`) busTour();
