// Ring benchmark: one request = driver add -> publish (+kick decision) -> device pop (walk, checks,
// translation of every buffer through a 64-entry IOTLB) -> copy -> push -> publish (+notify decision)
// -> driver reclaim. The C program in bench/c/ring_baseline.c does the same work; both run here, in the
// same process tree, so the ratio is meaningful on a noisy machine.

import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { SharedMemoryRegion } from "../src/memory/index.js";
import { BufferList, Chain, createLoopback, type RingFormat } from "../src/ring/index.js";

export interface RingCase {
  name: string;
  format: RingFormat;
  batch: number;
  chain: 1 | 3;
  copy: number;
}

export function ringCases(): RingCase[] {
  const cases: RingCase[] = [];
  for (const format of ["split", "packed"] as RingFormat[]) {
    for (const batch of [1, 32]) {
      for (const chain of [1, 3] as const) {
        for (const copy of [0, 64, 1500]) {
          cases.push({ name: `${format}/b${batch}/c${chain}/copy${copy}`, format, batch, chain, copy });
        }
      }
    }
  }
  return cases;
}

const QUEUE_SIZE = 256;
const POOL_SIZE = 16 << 20;
const IOTLB_ENTRIES = 64;

/** Runs one case for about `seconds`; returns millions of requests per second. */
export function runRingCase(c: RingCase, seconds: number): number {
  const lb = createLoopback<number>({
    format: c.format,
    num: QUEUE_SIZE,
    eventIdx: true,
    poolSize: POOL_SIZE,
    iotlbEntries: IOTLB_ENTRIES,
  });
  const { driver, device, pool } = lb;
  // Per request slot, buffers like the C baseline's: c1 = one 2048-byte writable buffer; c3 = a 16-byte
  // readable header, a 2048-byte writable data buffer and a 16-byte writable status.
  const lists: BufferList[] = [];
  for (let k = 0; k < c.batch; k++) {
    const list = new BufferList(4);
    if (c.chain === 3) list.out(pool.alloc(16, 16).iova, 16);
    list.in(pool.alloc(2048, 64).iova, 2048);
    if (c.chain === 3) list.in(pool.alloc(16, 16).iova, 16);
    lists.push(list);
  }
  // Device-private memory the device copies from: a region of its own, mapped in no IOTLB.
  const source = new SharedMemoryRegion(2048, "device-source");
  source.bytes.fill(0x5a);
  const chain = new Chain();
  const batch = c.batch;
  const copy = c.copy;
  let kicks = 0;
  let notifies = 0;
  let done = 0;
  let lenSum = 0;

  const iteration = (): void => {
    for (let k = 0; k < batch; k++) driver.add(lists[k], k);
    if (driver.publishAvail()) kicks++;
    while (device.pop(chain)) {
      if (copy > 0) chain.writable.copyFromRegion(source, 0, copy);
      device.push(chain, copy);
    }
    if (device.publishUsed()) notifies++;
    while (driver.getUsed() !== undefined) {
      done++;
      lenSum += driver.usedLen;
    }
  };

  // Warm up so the JIT has optimised the loop before timing.
  const warmEnd = performance.now() + Math.min(100, seconds * 400);
  while (performance.now() < warmEnd) for (let i = 0; i < 64; i++) iteration();
  done = 0;
  lenSum = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  let now = start;
  while (now < end) {
    for (let i = 0; i < 256; i++) iteration();
    now = performance.now();
  }
  const elapsed = (now - start) / 1000;
  if (lenSum !== done * copy || driver.inFlight !== 0) {
    throw new Error(`${c.name}: lost or mangled requests (${done} done, len sum ${lenSum})`);
  }
  if (kicks + notifies < 0) throw new Error("unreachable: keeps the decisions live");
  return done / elapsed / 1e6;
}

/**
 * Runs a case in a worker thread of its own: a fresh isolate, so the JIT's type feedback from earlier
 * cases (split rings at a call site that later sees packed ones) cannot slow a later case down.
 */
export function runRingCaseIsolated(c: RingCase, seconds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { ringCase: c, seconds } });
    worker.once("message", (value: number) => resolve(value));
    worker.once("error", reject);
    worker.once("exit", (code) => {
      if (code !== 0) reject(new Error(`${c.name}: benchmark worker exited with ${code}`));
    });
  });
}

if (!isMainThread && workerData?.ringCase) {
  const { ringCase, seconds } = workerData as { ringCase: RingCase; seconds: number };
  parentPort?.postMessage(runRingCase(ringCase, seconds));
}
