// `npm run bench -- [ring] [--seconds S] [--case SUBSTRING]`: runs the named benchmarks and prints one
// JSON line per case, each with its baseline from the same run and the ratio.

import { runCBaseline } from "./c-baseline.js";
import { datapathCases, runDatapathCaseIsolated } from "./datapath.js";
import { ringCases, runRingCaseIsolated } from "./ring.js";
import { runVhostUserBench } from "./vhost-user.js";

interface Args {
  benches: string[];
  seconds: number;
  /** Each side runs this many times and keeps its best: these 2-core VMs are noisy (±10% run to run). */
  repeat: number;
  filter: string | undefined;
}

const KNOWN = ["ring", "datapath", "vhost-user"];

function parseArgs(argv: string[]): Args {
  const args: Args = { benches: [], seconds: 0.25, repeat: 3, filter: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--seconds") args.seconds = Number(argv[++i]);
    else if (a === "--case") args.filter = argv[++i];
    else if (a === "--repeat") args.repeat = Number(argv[++i]);
    else if (KNOWN.includes(a)) args.benches.push(a);
    else {
      console.error(
        `unknown benchmark or option "${a}"; benchmarks: ${KNOWN.join(", ")}; options: --seconds S, --repeat N, --case SUBSTRING`,
      );
      process.exit(2);
    }
  }
  if (!(args.seconds > 0) || !(Number.isInteger(args.repeat) && args.repeat > 0)) {
    console.error("--seconds needs a positive number and --repeat a positive integer");
    process.exit(2);
  }
  // vhost-user needs DPDK, hugepages and root: only when asked for by name
  if (args.benches.length === 0) args.benches = ["ring", "datapath"];
  return args;
}

async function ring(args: Args): Promise<void> {
  const cases = ringCases().filter((c) => !args.filter || c.name.includes(args.filter));
  process.stderr.write(
    `ring: ${cases.length} cases, best of ${args.repeat} runs each; C baseline first (gcc -O2)\n`,
  );
  const baseline = new Map<string, number>();
  for (let r = 0; r < args.repeat; r++) {
    const run = await runCBaseline({ seconds: args.seconds, cases: cases.map((c) => c.name) });
    for (const [name, v] of run) baseline.set(name, Math.max(v, baseline.get(name) ?? 0));
  }
  for (const [i, c] of cases.entries()) {
    process.stderr.write(`ring: [${i + 1}/${cases.length}] ${c.name}\n`);
    let value = 0;
    for (let r = 0; r < args.repeat; r++) value = Math.max(value, await runRingCaseIsolated(c, args.seconds));
    const base = baseline.get(c.name);
    if (base === undefined) throw new Error(`C baseline printed no figure for ${c.name}`);
    console.log(
      JSON.stringify({
        bench: "ring",
        case: c.name,
        value: round(value),
        unit: "Mreq/s",
        baseline: round(base),
        ratio: round(value / base, 3),
      }),
    );
  }
}

function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** Requests per second behind a datapath figure: a frame is two ring requests (tx and rx). */
function requestsPerSecond(value: number, unit: string, size: number): number {
  if (unit === "Mpps") return value * 2e6;
  if (unit === "kIOPS") return value * 1e3;
  return (value * 1e6) / size; // MB/s
}

async function datapath(args: Args): Promise<void> {
  const cases = datapathCases().filter((c) => !args.filter || c.name.includes(args.filter));
  const baselineNames = [...new Set(cases.map((c) => c.baselineCase))];
  process.stderr.write(
    `datapath: ${cases.length} cases, best of ${args.repeat}; ring baselines first: ${baselineNames.join(", ")}\n`,
  );
  const baseline = new Map<string, number>();
  for (const name of baselineNames) {
    const rc = ringCases().find((c) => c.name === name)!;
    let best = 0;
    for (let r = 0; r < args.repeat; r++) best = Math.max(best, await runRingCaseIsolated(rc, args.seconds));
    baseline.set(name, best);
  }
  for (const [i, c] of cases.entries()) {
    process.stderr.write(`datapath: [${i + 1}/${cases.length}] ${c.name}\n`);
    let value = 0;
    for (let r = 0; r < args.repeat; r++)
      value = Math.max(value, await runDatapathCaseIsolated(c, args.seconds));
    const base = baseline.get(c.baselineCase)!;
    console.log(
      JSON.stringify({
        bench: "datapath",
        case: c.name,
        value: round(value),
        unit: c.unit,
        baseline: round(base),
        baselineCase: c.baselineCase,
        baselineUnit: "Mreq/s",
        ratio: round(requestsPerSecond(value, c.unit, c.size) / (base * 1e6), 3),
      }),
    );
  }
}

async function vhostUser(args: Args): Promise<void> {
  const sizes = [64, 1518].filter((s) => !args.filter || `net/${s}`.includes(args.filter));
  // testpmd reports once a second; a few seconds per side whatever --seconds says for the micro benches
  const seconds = Math.max(4, args.seconds);
  const results = await runVhostUserBench({
    seconds,
    sizes,
    rounds: args.repeat,
    log: (l) => process.stderr.write(`${l}\n`),
  });
  for (const r of results) {
    console.log(
      JSON.stringify({
        bench: "vhost-user",
        case: `net/${r.size}`,
        value: round(r.value, 3),
        unit: "Mpps",
        baseline: round(r.baseline, 3),
        baselineCase: "dpdk-net_vhost",
        ratio: round(r.value / r.baseline, 3),
        rounds: r.rounds.map(([v, b]) => [round(v, 3), round(b, 3)]),
      }),
    );
  }
}

const args = parseArgs(process.argv.slice(2));
for (const bench of args.benches) {
  if (bench === "ring") await ring(args);
  if (bench === "datapath") await datapath(args);
  if (bench === "vhost-user") await vhostUser(args);
}
