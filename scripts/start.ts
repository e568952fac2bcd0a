// `npm start`: vdpad with the built-in defaults (config/default.json: vdpa0 on vdpasim_net with MAC
// 52:54:00:12:34:56, vdpa1 on vdpasim_blk), in the foreground until Ctrl-C, with what to try next.

import { fileURLToPath } from "node:url";
import { ServerStartError } from "../src/daemon/mgmt-server.js";
import { type QemuDevice, qemuCommandLine } from "../src/daemon/qemu-cmdline.js";
import { startDaemon, stopOnSignals } from "../src/daemon/vdpad.js";
import { VIRTIO_ID_NET } from "../src/spec/index.js";
import { getAttr } from "../src/vdpa/index.js";

// dist/scripts/start.js -> the repository's config/default.json
const config = fileURLToPath(new URL("../../config/default.json", import.meta.url));

try {
  const daemon = await startDaemon({ config });
  const devices = daemon.bus.devices().map((d) => `${d.name} (${d.mgmtdev?.name ?? "no mgmtdev"})`);
  const qemuDevices: QemuDevice[] = [];
  for (const dev of daemon.bus.devices()) {
    const socket = daemon.vhostUser.socketOf(dev);
    if (!socket) continue;
    const net = dev.ops.getDeviceId() === VIRTIO_ID_NET;
    let mac: string | undefined;
    if (net) {
      const cfg = daemon.mgmt.run("DEV_CONFIG_GET", [{ name: "DEV_NAME", value: dev.name }]).replies[0];
      const bytes = getAttr(cfg, "DEV_NET_CFG_MACADDR");
      if (bytes instanceof Uint8Array)
        mac = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(":");
    }
    qemuDevices.push({ name: dev.name, kind: net ? "net" : "blk", socket, mac });
  }
  process.stdout.write(
    [
      "vdpad is running with the default devices; Ctrl-C stops it.",
      `  management socket: ${daemon.socketPath}`,
      `  devices: ${devices.join(", ")}`,
      "",
      "Try, in another shell (from this directory):",
      "  npx vdpa mgmtdev show",
      "  npx vdpa dev add name vdpa2 mgmtdev vdpasim_net mac 52:54:00:12:34:57 mtu 1500",
      "  npx vdpa -jp dev config show",
      "",
      "Attach the devices to a VM over vhost-user (add your kernel or disk options):",
      `  ${qemuCommandLine(qemuDevices)}`,
      "",
    ].join("\n"),
  );
  stopOnSignals(daemon);
} catch (err) {
  const msg = err instanceof ServerStartError ? err.message : ((err as Error).stack ?? String(err));
  process.stderr.write(`npm start: ${msg}\n`);
  process.exit(1);
}
