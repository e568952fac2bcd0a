// Property tests: a driver side and a device side exchange random batches of random chains through one
// queue. Whatever the interleaving, every token comes back exactly once, with the length and the bytes
// the device wrote, and the device read exactly the bytes the driver wrote.

import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { DmaBuffer } from "../../src/memory/index.js";
import { BufferList, Chain, createLoopback, type RingFormat } from "../../src/ring/index.js";
import { prng } from "../support/prng.js";

interface Request {
  n: number;
  out: DmaBuffer[];
  outBytes: Uint8Array;
  inn: DmaBuffer[];
  inLen: number;
}

/** What the device writes back for a request: derived from what it read, so the driver can check it. */
function reply(read: Uint8Array, writeLen: number): Uint8Array {
  const len = Math.min(writeLen, read.length + 7);
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (read.length ? read[i % read.length] : 0x3c) ^ 0xa5 ^ (i & 0xff);
  return out;
}

interface Params {
  format: RingFormat;
  num: number;
  eventIdx: boolean;
  indirect: boolean;
  iotlbEntries: number;
  seed: number;
  requests: number;
}

export function exchange(p: Params): void {
  const lb = createLoopback<Request>({
    format: p.format,
    num: p.num,
    eventIdx: p.eventIdx,
    indirect: p.indirect,
    maxIndirect: 8,
    poolSize: 1 << 20,
    iotlbEntries: p.iotlbEntries,
  });
  const { driver, device, pool } = lb;
  const rnd = prng(p.seed);
  const bufs = new BufferList(8);
  const outstanding = new Set<Request>();
  /** Chains the device popped and has not completed, completed in random order. */
  const popped: Chain[] = [];
  const spare: Chain[] = Array.from({ length: p.num }, () => new Chain(64));
  let created = 0;
  let returned = 0;

  const addOne = (): boolean => {
    // A direct chain can never be longer than the queue, so small queues get short chains.
    const nOut = Math.min(rnd(3), p.num - 1);
    let nIn = Math.min(rnd(3), p.num - nOut);
    if (nOut + nIn === 0) nIn = 1;
    const req: Request = { n: created, out: [], outBytes: new Uint8Array(0), inn: [], inLen: 0 };
    bufs.clear();
    const parts: Uint8Array[] = [];
    for (let i = 0; i < nOut; i++) {
      const b = pool.alloc(1 + rnd(200), 1 << rnd(5));
      for (let k = 0; k < b.size; k++) b.bytes[k] = rnd(256);
      parts.push(Uint8Array.from(b.bytes));
      req.out.push(b);
      bufs.out(b.iova, b.size);
    }
    for (let i = 0; i < nIn; i++) {
      const b = pool.alloc(1 + rnd(200), 1 << rnd(5));
      b.bytes.fill(0xee);
      req.inn.push(b);
      req.inLen += b.size;
      bufs.in(b.iova, b.size);
    }
    req.outBytes = Buffer.concat(parts);
    if (!driver.add(bufs, req, rnd(2) === 0)) {
      for (const b of [...req.out, ...req.inn]) pool.release(b);
      return false;
    }
    outstanding.add(req);
    created++;
    return true;
  };

  const complete = (chain: Chain): void => {
    const data = reply(chain.readable.toBytes(), chain.writeLen);
    chain.writable.copyFrom(Buffer.from(data), 0, data.length);
    device.push(chain, data.length);
    spare.push(chain);
  };

  const reclaim = (): void => {
    for (;;) {
      const req = driver.getUsed();
      if (req === undefined) return;
      assert.ok(outstanding.delete(req), `token ${req.n} came back twice or was never added`);
      const expected = reply(req.outBytes, req.inLen);
      assert.equal(driver.usedLen, expected.length, `token ${req.n}: used length`);
      const got = Buffer.concat(req.inn.map((b) => b.bytes)).subarray(0, expected.length);
      assert.deepEqual(new Uint8Array(got), expected, `token ${req.n}: bytes the device wrote`);
      for (const b of [...req.out, ...req.inn]) pool.release(b);
      returned++;
    }
  };

  while (created < p.requests) {
    const adds = 1 + rnd(p.num + 2);
    for (let i = 0; i < adds && created < p.requests; i++) if (!addOne()) break;
    driver.publishAvail();
    // The device pops some of what is available and completes a random subset, out of order.
    const pops = rnd(p.num + 1);
    for (let i = 0; i < pops; i++) {
      const chain = spare.pop()!;
      if (!device.pop(chain)) {
        spare.push(chain);
        break;
      }
      popped.push(chain);
    }
    const completions = rnd(popped.length + 1);
    for (let i = 0; i < completions; i++) complete(popped.splice(rnd(popped.length), 1)[0]);
    device.publishUsed();
    if (rnd(3) > 0) reclaim();
  }
  // Drain: everything added must come back.
  for (;;) {
    const chain = spare.pop()!;
    if (!device.pop(chain)) {
      spare.push(chain);
      break;
    }
    popped.push(chain);
  }
  while (popped.length) complete(popped.splice(rnd(popped.length), 1)[0]);
  device.publishUsed();
  reclaim();
  assert.equal(outstanding.size, 0, "tokens still outstanding after drain");
  assert.equal(returned, created);
  assert.equal(driver.numFree, p.num);
  assert.equal(driver.inFlight, 0);
  // Only the rings (and indirect tables) remain allocated: every request buffer was released.
  assert.equal(pool.stats().liveBlocks, 3 + (p.indirect ? 1 : 0));
}

const params = (format: RingFormat, requests: fc.Arbitrary<number>) =>
  fc.record({
    format: fc.constant(format),
    num: format === "split" ? fc.constantFrom(1, 2, 4, 8, 16, 64) : fc.integer({ min: 1, max: 40 }),
    eventIdx: fc.boolean(),
    indirect: fc.boolean(),
    iotlbEntries: fc.constantFrom(1, 4, 16),
    seed: fc.integer({ min: 1, max: 0x7fffffff }),
    requests: requests,
  });

for (const format of ["split", "packed"] as RingFormat[]) {
  test(`${format}: random batches, out-of-order completion: every token back once with its bytes`, () => {
    fc.assert(fc.property(params(format, fc.integer({ min: 1, max: 300 })), exchange), { numRuns: 120 });
  });

  test(`${format}: 16-bit index wrap-around over 70000 requests`, () => {
    fc.assert(
      fc.property(
        params(format, fc.constant(70_000)).map((p) => ({ ...p, num: format === "split" ? 8 : 7 })),
        exchange,
      ),
      { numRuns: 2 },
    );
  });
}
