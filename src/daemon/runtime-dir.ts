// Where vdpad and the vdpa tool meet: <runtime-dir>/mgmt.sock. The runtime dir is VDPA_RUNTIME_DIR when
// set (for both programs), else /run/vdpa-ts as root, else $XDG_RUNTIME_DIR/vdpa-ts, else
// /tmp/vdpa-ts-<uid>.

import { join } from "node:path";

export function runtimeDir(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? 0): string {
  if (env.VDPA_RUNTIME_DIR) return env.VDPA_RUNTIME_DIR;
  if (uid === 0) return "/run/vdpa-ts";
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, "vdpa-ts");
  return `/tmp/vdpa-ts-${uid}`;
}

export function mgmtSocketPath(dir: string): string {
  return join(dir, "mgmt.sock");
}
