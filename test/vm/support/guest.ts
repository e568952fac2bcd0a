// The guest harness of `npm run test:vm`: a real Linux (Debian's 6.12 kernel, unpacked without installing)
// with its own virtio drivers, booted by QEMU under TCG from a busybox initramfs whose /init is the test.
// The kernel is downloaded once into a cache dir (VDPA_VM_CACHE, else ~/.cache/vdpa-ts/vm). /init prints
// "VDPA-TS-RESULT: PASS" or "VDPA-TS-RESULT: FAIL <why>" on the serial console and powers off.
//
// What it needs from the host: qemu-system-x86, busybox-static, cpio, xz, apt-get (Debian). `.ci/run`
// installs them; missingTools() says what is absent so a developer's run can say so loudly.

import { execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

const MODULES = [
  "kernel/net/core/failover.ko.xz",
  "kernel/drivers/net/net_failover.ko.xz",
  "kernel/drivers/net/virtio_net.ko.xz",
  "kernel/drivers/block/virtio_blk.ko.xz",
];

export const RESULT_PASS = "VDPA-TS-RESULT: PASS";
export const RESULT_FAIL = "VDPA-TS-RESULT: FAIL";

/** Host tools the harness runs; the ones not found. */
export function missingTools(): string[] {
  const need = ["qemu-system-x86_64", "busybox", "cpio", "xz", "apt-get", "dpkg"];
  return need.filter((tool) => {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" });
      return false;
    } catch {
      return true;
    }
  });
}

export interface KernelKit {
  version: string;
  vmlinuz: string;
  /** Decompressed modules, in load order. */
  modules: string[];
}

function cacheDir(): string {
  return process.env.VDPA_VM_CACHE ?? join(homedir(), ".cache", "vdpa-ts", "vm");
}

/** Debian's newest 6.12 kernel, unpacked once into the cache (about 110 MB downloaded the first time). */
export function kernelKit(log: (line: string) => void = () => {}): KernelKit {
  const cache = cacheDir();
  mkdirSync(cache, { recursive: true });
  const ready = readdirSync(cache).find((d) => d.startsWith("kit-") && existsSync(join(cache, d, "done")));
  const dir = ready ? join(cache, ready) : fetchKernel(cache, log);
  const version = readdirSync(join(dir, "root", "lib", "modules"))[0];
  return {
    version,
    vmlinuz: join(dir, "root", "boot", `vmlinuz-${version}`),
    modules: MODULES.map((m) => join(dir, "modules", m.split("/").pop()!.replace(/\.xz$/, ""))),
  };
}

function fetchKernel(cache: string, log: (line: string) => void): string {
  const search = execFileSync(
    "apt-cache",
    ["search", "--names-only", "^linux-image-6\\.12\\.[0-9]+\\+deb12-amd64$"],
    {
      encoding: "utf8",
    },
  );
  const pkgs = search
    .split("\n")
    .map((l) => l.split(" ")[0])
    .filter(Boolean)
    .sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
  const pkg = pkgs.at(-1);
  if (!pkg)
    throw new Error(
      "no linux-image-6.12.*+deb12-amd64 in apt's lists (run apt-get update; needs bookworm-security)",
    );
  const dir = join(cache, `kit-${pkg}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "modules"), { recursive: true });
  log(`downloading ${pkg} (once, into ${dir})`);
  execFileSync("apt-get", ["download", "-q", pkg], { cwd: dir, stdio: "ignore" });
  const deb = readdirSync(dir).find((f) => f.endsWith(".deb"))!;
  execFileSync("dpkg", ["-x", deb, "root"], { cwd: dir });
  rmSync(join(dir, deb));
  const version = readdirSync(join(dir, "root", "lib", "modules"))[0];
  for (const m of MODULES) {
    const src = join(dir, "root", "lib", "modules", version, m);
    const out = join(dir, "modules", m.split("/").pop()!.replace(/\.xz$/, ""));
    execFileSync("sh", ["-c", `xz -dc '${src}' > '${out}'`]);
  }
  writeFileSync(join(dir, "done"), `${pkg}\n`);
  return dir;
}

/**
 * An initramfs (gzip'd cpio) with static busybox, the modules, the files given, and `init` as /init (a
 * busybox sh script; /init loads nothing by itself: the script calls `insmod`).
 */
export function buildInitramfs(
  kit: KernelKit,
  init: string,
  files: Record<string, string | Buffer> = {},
): string {
  const root = join(tmpdir(), `vdpa-initramfs-${process.pid}-${Date.now()}`);
  for (const d of ["bin", "sbin", "proc", "sys", "dev", "tmp", "mnt", "modules", "etc"])
    mkdirSync(join(root, d), { recursive: true });
  const busybox = execFileSync("sh", ["-c", "command -v busybox"], { encoding: "utf8" }).trim();
  copyFileSync(busybox, join(root, "bin", "busybox"));
  chmodSync(join(root, "bin", "busybox"), 0o755);
  const applets = execFileSync(busybox, ["--list"], { encoding: "utf8" }).split("\n").filter(Boolean);
  for (const a of applets) if (a !== "busybox") symlinkSync("busybox", join(root, "bin", a));
  for (const m of kit.modules) copyFileSync(m, join(root, "modules", m.split("/").pop()!));
  for (const [name, content] of Object.entries(files)) writeFileSync(join(root, name), content);
  writeFileSync(join(root, "init"), `#!/bin/busybox sh\n${INIT_PRELUDE}\n${init}\n`);
  chmodSync(join(root, "init"), 0o755);
  const out = `${root}.img`;
  execFileSync("sh", ["-c", `cd '${root}' && find . | cpio -o -H newc --quiet | gzip -1 > '${out}'`]);
  rmSync(root, { recursive: true, force: true });
  return out;
}

/** Mounts, the result helpers, and a poweroff however the script ends. */
const INIT_PRELUDE = `
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
pass() { echo "${RESULT_PASS}"; poweroff -f; }
fail() { echo "${RESULT_FAIL} $*"; poweroff -f; }
trap 'fail "init script ended without a verdict"' EXIT
`;

export interface BootOptions {
  kit: KernelKit;
  initramfs: string;
  /** Extra QEMU arguments (the vhost-user chardevs and devices). */
  args: string[];
  memoryMb?: number;
  timeoutMs?: number;
  /** Let the guest reboot instead of QEMU exiting (-no-reboot is the default). */
  allowReboot?: boolean;
  /** Called with each console line as it arrives. */
  onLine?: (line: string) => void;
  /** Called once QEMU runs, with a function that kills it (SIGKILL). */
  onStart?: (kill: () => void) => void;
}

export interface BootResult {
  passed: boolean;
  /** The FAIL reason, or the timeout / exit that ended the run without a verdict. */
  reason: string;
  console: string;
  seconds: number;
}

/** Boots the guest; resolves when /init prints its verdict and QEMU exits, or at the timeout. */
export function boot(opts: BootOptions): Promise<BootResult> {
  const mem = opts.memoryMb ?? 512;
  const args = [
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-smp",
    "1",
    "-m",
    `${mem}`,
    "-object",
    `memory-backend-memfd,id=mem,size=${mem}M,share=on`,
    "-numa",
    "node,memdev=mem",
    "-kernel",
    opts.kit.vmlinuz,
    "-initrd",
    opts.initramfs,
    "-append",
    "console=ttyS0 quiet panic=-1 loglevel=3",
    "-nographic",
    "-nic",
    "none",
    "-no-user-config",
    "-nodefaults",
    "-serial",
    "stdio",
    ...(opts.allowReboot ? [] : ["-no-reboot"]),
    ...opts.args,
  ];
  const started = Date.now();
  return new Promise((resolve) => {
    const qemu = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "pipe", "pipe"] });
    opts.onStart?.(() => qemu.kill("SIGKILL"));
    let out = "";
    let partial = "";
    let verdict: { passed: boolean; reason: string } | null = null;
    const finish = (reason?: string): void => {
      clearTimeout(timer);
      resolve({
        passed: verdict?.passed ?? false,
        reason: verdict?.reason ?? reason ?? "no verdict",
        console: out,
        seconds: (Date.now() - started) / 1000,
      });
    };
    const timer = setTimeout(() => {
      qemu.kill("SIGKILL");
      verdict ??= { passed: false, reason: `timed out after ${opts.timeoutMs ?? 120_000} ms` };
    }, opts.timeoutMs ?? 120_000);
    const onData = (d: Buffer): void => {
      const text = d.toString("utf8");
      out += text;
      partial += text;
      const lines = partial.split(/\r?\n/);
      partial = lines.pop() ?? "";
      for (const line of lines) {
        opts.onLine?.(line);
        if (line.includes(RESULT_PASS)) verdict ??= { passed: true, reason: "" };
        const f = line.indexOf(RESULT_FAIL);
        if (f >= 0) verdict ??= { passed: false, reason: line.slice(f + RESULT_FAIL.length).trim() };
      }
    };
    qemu.stdout.on("data", onData);
    qemu.stderr.on("data", onData);
    qemu.on("exit", (code, signal) => finish(`qemu exited (${signal ?? code}) without a verdict`));
  });
}
