// The C baseline of the virtqueue benchmark: compiles bench/c/ring_baseline.c with gcc, runs it, and returns
// Mreq/s per case, so the TypeScript engine's numbers can be reported as a JS/C ratio measured in the same
// run. The C program does the same round trip as the TS benchmark (see the header of ring_baseline.c for
// the exact work, ring offsets and event-index settings).
//
// The binary is cached under <tmpdir>/vdpa-ts-bench/, keyed by a hash of the source, the compiler flags and
// the gcc version, so a changed source or compiler never reuses a stale build.

import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { access, mkdir, readFile, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/** Flags the C side is built with; part of the cache key. */
const CFLAGS = ["-O2", "-std=c11"];

/** Set to a path to use another copy of ring_baseline.c (for example when running from a relocated build). */
export const C_BASELINE_SRC_ENV = "VDPA_TS_C_BASELINE_SRC";

export interface CBaselineOptions {
  /** Timed seconds per case (the C side adds a short verified warm-up and tail). Default 0.25. */
  seconds?: number;
  /** Case names such as "split/b32/c1/copy0"; default all 24. */
  cases?: string[];
}

/** Compiles (or reuses) the C baseline, runs it and returns case name -> Mreq/s. */
export async function runCBaseline(opts: CBaselineOptions = {}): Promise<Map<string, number>> {
  const seconds = opts.seconds ?? 0.25;
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 3600) {
    throw new RangeError(`runCBaseline: seconds must be in (0, 3600], got ${seconds}`);
  }
  const cases = opts.cases ?? [];
  const binary = await buildCBaseline();

  const args = ["--seconds", String(seconds)];
  for (const name of cases) args.push("--case", name);
  // Per case: the timed run, a warm-up of 20% (at least 20 ms) and a verified tail; allow a wide margin.
  const count = cases.length > 0 ? cases.length : 24;
  const timeout = Math.ceil((count * (seconds * 2 + 1) + 60) * 1000);

  let stdout: string;
  try {
    ({ stdout } = await execFileAsync(binary, args, { timeout, maxBuffer: 1 << 20, encoding: "utf8" }));
  } catch (err) {
    throw new Error(`C baseline ${binary} failed: ${describeExecError(err)}`, { cause: err });
  }

  const results = new Map<string, number>();
  for (const line of stdout.split("\n")) {
    const text = line.trim();
    if (text === "") continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new Error(`C baseline printed a line that is not JSON: ${text}`, { cause: err });
    }
    const { case: name, mreqs } = (parsed ?? {}) as { case?: unknown; mreqs?: unknown };
    if (typeof name !== "string" || typeof mreqs !== "number" || !Number.isFinite(mreqs)) {
      throw new Error(`C baseline printed an unexpected result line: ${text}`);
    }
    results.set(name, mreqs);
  }
  for (const name of cases) {
    if (!results.has(name)) throw new Error(`C baseline reported no result for case ${name}`);
  }
  if (results.size === 0) throw new Error("C baseline reported no results");
  return results;
}

/** Path of a compiled ring_baseline for the current source and compiler, building it when needed. */
export async function buildCBaseline(): Promise<string> {
  const source = await findSource();
  const gccVersion = await gccFullVersion();
  const text = await readFile(source);
  const key = createHash("sha256")
    .update(text)
    .update("\0")
    .update(CFLAGS.join(" "))
    .update("\0")
    .update(gccVersion)
    .digest("hex")
    .slice(0, 16);
  const dir = join(tmpdir(), "vdpa-ts-bench");
  const binary = join(dir, `ring_baseline-${key}`);
  if (await exists(binary)) return binary;

  await mkdir(dir, { recursive: true });
  // Build under a private name and rename into place, so concurrent runs never execute a half-written file.
  const partial = `${binary}.${process.pid}.tmp`;
  try {
    await execFileAsync("gcc", [...CFLAGS, "-o", partial, source], { maxBuffer: 1 << 20 });
    await rename(partial, binary);
  } catch (err) {
    await rm(partial, { force: true });
    throw new Error(`compiling ${source} failed: ${describeExecError(err)}`, { cause: err });
  }
  return binary;
}

/**
 * The C source: $VDPA_TS_C_BASELINE_SRC, else next to the compiled module (dist/bench/c-baseline.js ->
 * bench/c/ring_baseline.c), else next to this file when it runs from source (bench/c-baseline.ts).
 */
async function findSource(): Promise<string> {
  const override = process.env[C_BASELINE_SRC_ENV];
  const candidates = override
    ? [override]
    : [
        fileURLToPath(new URL("../../bench/c/ring_baseline.c", import.meta.url)),
        fileURLToPath(new URL("./c/ring_baseline.c", import.meta.url)),
      ];
  for (const path of candidates) {
    if (await exists(path)) return path;
  }
  throw new Error(
    `C baseline source not found (looked at ${candidates.join(", ")}); set ${C_BASELINE_SRC_ENV} to its path`,
  );
}

/** gcc's version string; also the check that gcc is installed at all. */
async function gccFullVersion(): Promise<string> {
  try {
    const { stdout } = await execFileAsync("gcc", ["-dumpfullversion"], { encoding: "utf8" });
    return stdout.trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new Error("gcc not found: install it (apt-get install gcc) to get the C baseline", {
        cause: err,
      });
    }
    throw new Error(`running gcc failed: ${describeExecError(err)}`, { cause: err });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Exit status or signal plus stderr of a failed execFile, or the error message. */
function describeExecError(err: unknown): string {
  const e = err as { code?: unknown; signal?: unknown; killed?: boolean; stderr?: unknown; message?: string };
  const parts: string[] = [];
  if (typeof e.code === "number") parts.push(`exit status ${e.code}`);
  else if (typeof e.code === "string") parts.push(e.code);
  if (e.killed) parts.push("killed (timeout)");
  if (typeof e.signal === "string") parts.push(`signal ${e.signal}`);
  const stderr = typeof e.stderr === "string" ? e.stderr.trim() : "";
  if (stderr !== "") parts.push(stderr);
  return parts.length > 0 ? parts.join(": ") : (e.message ?? String(err));
}
