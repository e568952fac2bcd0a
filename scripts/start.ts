// `npm start`: vdpad with the built-in defaults (config/default.json: vdpa0 on vdpasim_net with MAC
// 52:54:00:12:34:56, vdpa1 on vdpasim_blk), in the foreground until Ctrl-C, with what to try next.

import { fileURLToPath } from "node:url";
import { ServerStartError } from "../src/daemon/mgmt-server.js";
import { startDaemon, stopOnSignals } from "../src/daemon/vdpad.js";

// dist/scripts/start.js -> the repository's config/default.json
const config = fileURLToPath(new URL("../../config/default.json", import.meta.url));

try {
  const daemon = await startDaemon({ config });
  const devices = daemon.bus.devices().map((d) => `${d.name} (${d.mgmtdev?.name ?? "no mgmtdev"})`);
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
    ].join("\n"),
  );
  stopOnSignals(daemon);
} catch (err) {
  const msg = err instanceof ServerStartError ? err.message : ((err as Error).stack ?? String(err));
  process.stderr.write(`npm start: ${msg}\n`);
  process.exit(1);
}
