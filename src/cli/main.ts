#!/usr/bin/env node
// The `vdpa` program: runs one command line against the vdpad of this runtime dir (VDPA_RUNTIME_DIR, else
// /run/vdpa-ts as root, else $XDG_RUNTIME_DIR/vdpa-ts, else /tmp/vdpa-ts-<uid>).

import { readFileSync } from "node:fs";
import { mgmtSocketPath, runtimeDir } from "../daemon/runtime-dir.js";
import { DaemonUnreachable, request } from "../mgmt-protocol/client.js";
import { runVdpa, ToolUnreachable } from "./vdpa.js";

/** The package version, from the package.json three levels above dist/src/cli/. */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

async function main(): Promise<number> {
  const socketPath = mgmtSocketPath(runtimeDir());
  let id = 0;
  const result = await runVdpa(
    process.argv.slice(2),
    async (req) => {
      try {
        return await request(socketPath, { id: ++id, ...req });
      } catch (err) {
        if (err instanceof DaemonUnreachable) {
          const why = (err.reason as NodeJS.ErrnoException).code ?? err.reason.message;
          throw new ToolUnreachable(
            `vdpa: no vdpad answers at ${socketPath} (${why}); start one with \`vdpad\` or \`npm start\`, or set VDPA_RUNTIME_DIR`,
          );
        }
        throw new ToolUnreachable(`vdpa: ${(err as Error).message}`);
      }
    },
    packageVersion(),
  );
  process.stdout.write(result.stdout);
  process.stderr.write(result.stderr);
  return result.code;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`vdpa: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
