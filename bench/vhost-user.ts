// `npm run bench -- vhost-user`: DPDK's testpmd with its virtio_user front-end (a vhost-user front-end
// without a VM) loops frames through vdpad's vdpasim_net over vhost-user, and, in the same run, through
// DPDK's own net_vhost back-end: the baseline. testpmd forwards what it receives back out (io mode,
// `start tx_first`), the simulator loops TX to RX, so the rx rate is the round-trip rate of the back-end.
// Each side gets one core: vdpad (or the baseline back-end's forwarding lcore) on core 0, the front-end's
// forwarding lcore on core 1. `--eth-peer` is the device's MAC so the simulator's filter passes the frames.
// Hugepages are set up for the run only (root) and put back as they were.
//
// These 2-vCPU VMs switch between a fast and a slow state every few tens of seconds (DPDK's own loop
// moves ~10 Mpps in one and ~4.4 Mpps in the other; two vCPUs sharing a core's caches or not, by the
// look of it). So both sides run in alternating rounds (ours first, then the baseline first, ...) and
// each keeps its best round: one slow stretch cannot make either side look worse than it is.

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));
const MAC = "52:54:00:12:34:56";
const NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages";
const HUGE_MOUNT = "/dev/hugepages";
const EAL = ["--no-pci", "--single-file-segments", "-m", "256"];

export interface VhostUserBenchOptions {
  seconds: number;
  sizes: number[];
  /** Rounds per size; each side's best round is its figure. */
  rounds: number;
  log: (line: string) => void;
}

export interface VhostUserResult {
  size: number;
  /** Best round of each side (Mpps). */
  value: number;
  baseline: number;
  /** Every round, in order: [vdpa-ts, DPDK] in Mpps. */
  rounds: [number, number][];
}

function has(cmd: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Reserves hugepages (and mounts hugetlbfs) for the run; returns the undo. */
function hugepages(): () => void {
  const before = readFileSync(NR_HUGEPAGES, "utf8").trim();
  if (Number(before) < 512) writeFileSync(NR_HUGEPAGES, "512");
  let mounted = false;
  const mounts = readFileSync("/proc/mounts", "utf8");
  if (!mounts.split("\n").some((l) => l.split(" ")[2] === "hugetlbfs")) {
    mkdirSync(HUGE_MOUNT, { recursive: true });
    execFileSync("mount", ["-t", "hugetlbfs", "nodev", HUGE_MOUNT]);
    mounted = true;
  }
  return () => {
    if (mounted) execFileSync("umount", [HUGE_MOUNT]);
    writeFileSync(NR_HUGEPAGES, before);
  };
}

function testpmd(prefix: string, lcores: string, main: number, eal: string[], app: string[]): ChildProcess {
  return spawn(
    "dpdk-testpmd",
    ["-l", lcores, "--main-lcore", String(main), ...EAL, "--file-prefix", prefix, ...eal, "--", ...app],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
}

/** Runs the front-end for `seconds` and returns its steady rx rate (Mpps): the median of the later reports. */
async function frontEnd(socket: string, size: number, seconds: number, peer?: string): Promise<number> {
  const fe = testpmd(
    `vdpats-fe-${process.pid}`,
    "0-1",
    0,
    [`--vdev=net_virtio_user0,path=${socket},queues=1,queue_size=256`],
    [
      "--forward-mode=io",
      "--auto-start",
      "--tx-first",
      "--stats-period=1",
      "--nb-cores=1",
      `--txpkts=${size}`,
      ...(peer ? [`--eth-peer=0,${peer}`] : []),
    ],
  );
  let out = "";
  fe.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  fe.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  await new Promise((r) => setTimeout(r, (seconds + 2) * 1000));
  const exited = new Promise((r) => fe.once("exit", r));
  fe.kill("SIGINT");
  await exited;
  const rates = [...out.matchAll(/Rx-pps:\s+(\d+)/g)].map((m) => Number(m[1]));
  const steady = rates.slice(2).sort((a, b) => a - b);
  if (steady.length === 0) throw new Error(`testpmd reported no rx rate:\n${out.slice(-2000)}`);
  return steady[Math.floor(steady.length / 2)] / 1e6;
}

async function waitFor(path: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > end) throw new Error(`${path} did not appear`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGINT");
  await exited;
}

/** One vdpa-ts round: a fresh vdpad on core 0 with the default devices, the front-end on its vdpa0. */
async function vdpaTsRound(dir: string, size: number, seconds: number): Promise<number> {
  const vdpad = spawn(
    "taskset",
    [
      "-c",
      "0",
      process.execPath,
      join(root, "dist/src/daemon/vdpad.js"),
      "--runtime-dir",
      dir,
      "--config",
      join(root, "config/default.json"),
    ],
    { stdio: "ignore" },
  );
  try {
    const socket = join(dir, "vhost-user", "vdpa0.sock");
    await waitFor(socket);
    return await frontEnd(socket, size, seconds, MAC);
  } finally {
    await stop(vdpad);
  }
}

/** One baseline round: DPDK's net_vhost back-end forwarding on core 0. */
async function dpdkRound(dir: string, size: number, seconds: number): Promise<number> {
  const sock = join(dir, "dpdk-vhost.sock");
  rmSync(sock, { force: true });
  const be = testpmd(
    `vdpats-be-${process.pid}`,
    "0-1",
    1,
    [`--vdev=net_vhost0,iface=${sock}`],
    ["--forward-mode=io", "--auto-start", "--nb-cores=1", "--stats-period=5"],
  );
  try {
    await waitFor(sock);
    return await frontEnd(sock, size, seconds);
  } finally {
    await stop(be);
  }
}

export async function runVhostUserBench(opts: VhostUserBenchOptions): Promise<VhostUserResult[]> {
  if (!has("dpdk-testpmd")) throw new Error("needs dpdk-testpmd: apt-get install -y dpdk-dev");
  if (process.getuid?.() !== 0) throw new Error("needs root (hugepages)");
  const undo = hugepages();
  const dir = mkdtempSync(join(tmpdir(), "vdpa-bench-vu-"));
  const results: VhostUserResult[] = [];
  try {
    for (const size of opts.sizes) {
      const rounds: [number, number][] = [];
      for (let r = 0; r < opts.rounds; r++) {
        const at = `vhost-user: net/${size} round ${r + 1}/${opts.rounds}`;
        let ours = 0;
        let theirs = 0;
        // Alternate which side goes first, so a drift in the machine's state favours neither.
        for (const side of r % 2 === 0 ? ["vdpa-ts", "dpdk"] : ["dpdk", "vdpa-ts"]) {
          if (side === "vdpa-ts") {
            opts.log(`${at}: vdpad + vdpasim_net`);
            ours = await vdpaTsRound(dir, size, opts.seconds);
          } else {
            opts.log(`${at}: DPDK net_vhost`);
            theirs = await dpdkRound(dir, size, opts.seconds);
          }
        }
        opts.log(`${at}: vdpa-ts ${ours.toFixed(3)} Mpps, DPDK ${theirs.toFixed(3)} Mpps`);
        rounds.push([ours, theirs]);
      }
      results.push({
        size,
        value: Math.max(...rounds.map(([v]) => v)),
        baseline: Math.max(...rounds.map(([, b]) => b)),
        rounds,
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
    undo();
  }
  return results;
}
