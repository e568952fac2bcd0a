// Datapath benchmark: the virtio-net and virtio-blk drivers on the simulators through virtio_vdpa, with
// the hot-path callback API and the promise API. Each case runs in a worker of its own (fresh JIT).

import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { createSimBlk } from "../src/devices/sim/blk.js";
import { createSimNet } from "../src/devices/sim/net.js";
import { VIRTIO_BLK_T_IN } from "../src/spec/blk-config.js";
import { VdpaBus } from "../src/vdpa/vdpa-bus.js";
import { VirtioBlk } from "../src/virtio/blk.js";
import { VirtioNet } from "../src/virtio/net.js";
import { VirtioBus } from "../src/virtio/virtio-bus.js";
import { type VirtioVdpaDevice, VirtioVdpaDriver } from "../src/virtio/virtio-vdpa.js";

export interface DatapathCase {
  /** e.g. "net/loopback/64/callback". */
  name: string;
  kind: "net" | "randread" | "seqread";
  size: number;
  api: "callback" | "promise";
  /** The ring benchmark case used as the baseline. */
  baselineCase: string;
  unit: "Mpps" | "kIOPS" | "MB/s";
}

export function datapathCases(): DatapathCase[] {
  const cases: DatapathCase[] = [];
  for (const api of ["callback", "promise"] as const) {
    for (const size of [64, 1500]) {
      cases.push({
        name: `net/loopback/${size}/${api}`,
        kind: "net",
        size,
        api,
        baselineCase: `split/b32/c1/copy${size}`,
        unit: "Mpps",
      });
    }
    cases.push({
      name: `blk/randread/4k/${api}`,
      kind: "randread",
      size: 4096,
      api,
      baselineCase: "split/b32/c3/copy1500",
      unit: "kIOPS",
    });
    cases.push({
      name: `blk/seqread/128k/${api}`,
      kind: "seqread",
      size: 128 << 10,
      api,
      baselineCase: "split/b32/c3/copy1500",
      unit: "MB/s",
    });
  }
  return cases;
}

/** A transport for a simulator bound to virtio_vdpa on a fresh bus. */
function attach(device: import("../src/vdpa/device.js").VdpaDevice): VirtioVdpaDevice {
  const driver = new VirtioVdpaDriver(new VirtioBus());
  const bus = new VdpaBus();
  bus.registerDriver(driver);
  bus.registerDevice(device);
  return driver.get(device)!;
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function runNet(c: DatapathCase, seconds: number): Promise<number> {
  const { device } = createSimNet({ name: "bench-net" });
  const net = new VirtioNet(attach(device), { queueSize: 256 });
  const frame = new Uint8Array(c.size);
  frame.fill(0xff, 0, 6); // broadcast: passes the simulator's MAC filter
  let received = 0;
  let counting = false;
  let start = 0;
  const run = async (until: number): Promise<void> => {
    if (c.api === "callback") {
      net.onReceive(() => {
        if (counting) received++;
      });
      while (performance.now() < until) {
        while (net.send(frame)) {}
        net.flush();
        await tick();
      }
    } else {
      const consumer = (async () => {
        for await (const _ of net.frames()) {
          if (counting) received++;
          if (performance.now() >= until) break;
        }
      })();
      while (performance.now() < until) {
        const batch: Promise<void>[] = [];
        for (let i = 0; i < 32; i++) batch.push(net.sendAsync(frame));
        await Promise.all(batch);
      }
      await Promise.race([consumer, tick()]);
    }
  };
  await run(performance.now() + Math.min(200, seconds * 300));
  counting = true;
  start = performance.now();
  await run(start + seconds * 1000);
  const elapsed = (performance.now() - start) / 1000;
  net.remove();
  return received / elapsed / 1e6;
}

async function runBlk(c: DatapathCase, seconds: number): Promise<number> {
  const { device } = createSimBlk({ name: "bench-blk", sizeBytes: 64 << 20 });
  const blk = new VirtioBlk(attach(device), { queueSize: 64, maxTransferBytes: 128 << 10 });
  const depth = 32;
  const sectors = c.size / 512;
  const lastSector = blk.capacity - sectors;
  let next = 0;
  const pick = (): number => {
    if (c.kind === "seqread") {
      const s = next;
      next = next + sectors > lastSector ? 0 : next + sectors;
      return s;
    }
    return (Math.floor(Math.random() * (lastSector / 8)) * 8) | 0;
  };
  let done = 0;
  let counting = false;
  let until = 0;
  const run = async (): Promise<void> => {
    if (c.api === "callback") {
      let inFlight = 0;
      const onDone = (err: Error | null): void => {
        if (err) throw err;
        inFlight--;
        if (counting) done++;
        if (performance.now() < until) {
          if (blk.submit(VIRTIO_BLK_T_IN, pick(), c.size, onDone)) inFlight++;
          blk.kick();
        }
      };
      for (let i = 0; i < depth; i++) if (blk.submit(VIRTIO_BLK_T_IN, pick(), c.size, onDone)) inFlight++;
      blk.kick();
      while (inFlight > 0) await tick();
    } else {
      const worker = async (): Promise<void> => {
        while (performance.now() < until) {
          await blk.read(pick(), sectors);
          if (counting) done++;
        }
      };
      await Promise.all(Array.from({ length: depth }, worker));
    }
  };
  until = performance.now() + Math.min(200, seconds * 300);
  await run();
  counting = true;
  const start = performance.now();
  until = start + seconds * 1000;
  await run();
  const elapsed = (performance.now() - start) / 1000;
  blk.remove();
  return c.kind === "seqread" ? (done * c.size) / elapsed / 1e6 : done / elapsed / 1e3;
}

export function runDatapathCase(c: DatapathCase, seconds: number): Promise<number> {
  return c.kind === "net" ? runNet(c, seconds) : runBlk(c, seconds);
}

/** Runs a case in a worker of its own; resolves with its value in the case's unit. */
export function runDatapathCaseIsolated(c: DatapathCase, seconds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { datapathCase: c, seconds } });
    worker.once("message", (value: number) => resolve(value));
    worker.once("error", reject);
    worker.once("exit", (code) => {
      if (code !== 0) reject(new Error(`${c.name}: benchmark worker exited with ${code}`));
    });
  });
}

if (!isMainThread && workerData?.datapathCase) {
  const { datapathCase, seconds } = workerData as { datapathCase: DatapathCase; seconds: number };
  runDatapathCase(datapathCase, seconds).then((v) => parentPort?.postMessage(v));
}
