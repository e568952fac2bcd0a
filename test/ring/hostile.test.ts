// Hostile rings. A real driver adds a real request; then the test, playing a hostile driver, rewrites raw
// bytes of the ring memory (or, for driver-side codes, plays a hostile device). Every case must end in a
// typed fault with a stable code, quickly, with no byte of memory written, with the ring remembering the
// fault until its state is set again, and with a repaired ring working afterwards.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ACCESS_READ,
  ACCESS_WRITE,
  type DmaBuffer,
  DmaFault,
  PERM_RO,
  PERM_WO,
  SharedMemoryRegion,
} from "../../src/memory/index.js";
import {
  BufferList,
  Chain,
  createDeviceRing,
  createDriverRing,
  createLoopback,
  type DeviceRing,
  isDatapathFault,
  type Loopback,
  type LoopbackOptions,
  PackedDeviceRing,
  PackedDriverRing,
  RingError,
  type RingFormat,
  SplitDeviceRing,
  SplitDriverRing,
} from "../../src/ring/index.js";
import {
  VRING_DESC_F_INDIRECT as INDIRECT,
  VRING_DESC_F_NEXT as NEXT,
  VRING_PACKED_DESC_F_AVAIL as P_AVAIL,
  VRING_PACKED_DESC_F_USED as P_USED,
  PACKED_DESC,
  SPLIT_AVAIL,
  SPLIT_DESC,
  SPLIT_USED,
  VRING_DESC_F_WRITE as WRITE,
} from "../../src/spec/ring-layout.js";
import { xorshift } from "../support/prng.js";

const NUM = 8;
const POOL = 256 * 1024;
const UNMAPPED = 0x7000_0000;
const RO_IOVA = 0x9000_0000;
const WO_IOVA = 0x9100_0000;
/** A hostile input must be rejected in far less than this (a loop would take forever). */
const QUICK_MS = 250;

const FORMATS: RingFormat[] = ["split", "packed"];

// ---- raw ring access -------------------------------------------------------------------------------

/** Byte offset of the flags field in a descriptor of this format. */
function flagsAt(format: RingFormat): number {
  return format === "split" ? SPLIT_DESC.flags : PACKED_DESC.flags;
}

/** Ring descriptor i as a Buffer over pool memory. */
function ringDesc(lb: Loopback<number>, i: number): Buffer {
  return lb.pool.bytesAt(lb.driver.addresses.desc + 16 * i, 16);
}

function addrOf(d: Buffer): number {
  return d.readUInt32LE(SPLIT_DESC.addr + 4) * 2 ** 32 + d.readUInt32LE(SPLIT_DESC.addr);
}

function setAddr(d: Buffer, addr: number): void {
  d.writeUInt32LE(addr % 2 ** 32, SPLIT_DESC.addr);
  d.writeUInt32LE(Math.floor(addr / 2 ** 32), SPLIT_DESC.addr + 4);
}

function setLen(d: Buffer, len: number): void {
  d.writeUInt32LE(len, SPLIT_DESC.len);
}

function setFlags(format: RingFormat, d: Buffer, set: number, clear = 0): void {
  const at = flagsAt(format);
  d.writeUInt16LE((d.readUInt16LE(at) | set) & ~clear & 0xffff, at);
}

function setNext(d: Buffer, next: number): void {
  d.writeUInt16LE(next, SPLIT_DESC.next);
}

/** Entry i of the indirect table the head descriptor (ring slot 0) points at. */
function tableEntry(lb: Loopback<number>, i: number): Buffer {
  return lb.pool.bytesAt(addrOf(ringDesc(lb, 0)) + 16 * i, 16);
}

function poolBytes(lb: Loopback<number>): Buffer {
  return lb.pool.bytesAt(lb.pool.iovaBase, lb.pool.size);
}

function splitUsedIdx(lb: Loopback<number>): number {
  return lb.pool.bytesAt(lb.driver.addresses.device, 4).readUInt16LE(SPLIT_USED.idx);
}

// ---- device-side harness ---------------------------------------------------------------------------

interface World {
  lb: Loopback<number>;
  /** The readable buffer (16 bytes of 0x11) and the writable one (32 bytes) of the driver's request. */
  a: DmaBuffer;
  b: DmaBuffer;
  /** A read-only region mapped at RO_IOVA and a write-only one at WO_IOVA, both full of 0x5a. */
  ro: SharedMemoryRegion;
  wo: SharedMemoryRegion;
}

interface Scenario {
  format: RingFormat;
  title: string;
  code: string;
  kind: "RingError" | "DmaFault";
  opts?: Partial<LoopbackOptions>;
  corrupt: (w: World) => void;
  /** More checks on the error (addresses in a DmaFault, say). */
  check?: (err: Error & { code: string }, w: World) => void;
}

/**
 * The driver adds out(a, 16) + in(b, 32) with token 7 and publishes it. Split, direct: descriptors 0 (R,
 * NEXT -> 1) and 1 (W). Packed, direct: slots 0 (R, NEXT) and 1 (W). With indirect: one descriptor at
 * slot 0 pointing at a table of those two entries.
 */
function setup(format: RingFormat, opts: Partial<LoopbackOptions> = {}): World {
  const lb = createLoopback<number>({ format, num: NUM, poolSize: POOL, maxIndirect: 4, ...opts });
  const ro = new SharedMemoryRegion(4096, "ro");
  const wo = new SharedMemoryRegion(4096, "wo");
  ro.bytes.fill(0x5a);
  wo.bytes.fill(0x5a);
  lb.iotlb.map(RO_IOVA, 4096, ro, 0, PERM_RO);
  lb.iotlb.map(WO_IOVA, 4096, wo, 0, PERM_WO);
  const a = lb.pool.alloc(64);
  const b = lb.pool.alloc(64);
  a.bytes.fill(0x11);
  assert.equal(lb.driver.add(new BufferList().out(a.iova, 16).in(b.iova, 32), 7), true);
  lb.driver.publishAvail();
  return { lb, a, b, ro, wo };
}

function runScenario(s: Scenario): void {
  const w = setup(s.format, s.opts);
  const { lb } = w;
  const pristine = Buffer.from(poolBytes(lb));
  const canary = lb.pool.alloc(256);
  canary.bytes.fill(0xa5);
  s.corrupt(w);
  const before = Buffer.from(poolBytes(lb));
  const usedBefore = s.format === "split" ? splitUsedIdx(lb) : -1;
  const chain = new Chain(64);

  const t0 = performance.now();
  let caught: unknown;
  try {
    lb.device.pop(chain);
  } catch (err) {
    caught = err;
  }
  const elapsed = performance.now() - t0;
  assert.ok(elapsed < QUICK_MS, `rejected in ${elapsed.toFixed(1)} ms`);
  assert.ok(caught !== undefined, "pop() must throw");
  assert.ok(isDatapathFault(caught), `a typed fault, got ${caught}`);
  const err = caught as Error & { code: string };
  assert.equal(err.name, s.kind);
  assert.ok(s.kind === "RingError" ? err instanceof RingError : err instanceof DmaFault);
  assert.equal(err.code, s.code, err.message);
  s.check?.(err, w);

  // The ring stops and remembers.
  assert.equal(lb.device.broken, err);
  assert.throws(
    () => lb.device.pop(chain),
    (e) => e === err,
    "pop() rethrows the same fault",
  );
  assert.equal(lb.device.hasAvailable(), false, "a broken ring offers nothing");
  // Nothing written anywhere: not the used ring, not the canary, not the special regions.
  if (s.format === "split") assert.equal(splitUsedIdx(lb), usedBefore, "used idx unchanged");
  assert.ok(poolBytes(lb).equals(before), "the device wrote nothing into the pool");
  assert.ok(
    canary.bytes.every((x) => x === 0xa5),
    "canary untouched",
  );
  assert.ok(
    w.ro.bytes.every((x) => x === 0x5a) && w.wo.bytes.every((x) => x === 0x5a),
    "read-only and write-only regions untouched",
  );
  assert.equal(lb.driver.getUsed(), undefined, "the driver sees no used buffer");

  // Repair the ring, set the state (which clears the fault): the same request goes through.
  poolBytes(lb).set(pristine);
  lb.device.setState(lb.device.getState());
  assert.equal(lb.device.broken, null);
  assert.equal(lb.device.hasAvailable(), true);
  assert.equal(lb.device.pop(chain), true);
  assert.equal(chain.readLen, 16);
  assert.equal(chain.writeLen, 32);
  assert.ok(Buffer.from(chain.readable.toBytes()).equals(Buffer.alloc(16, 0x11)));
  assert.equal(chain.writable.copyFrom(Buffer.alloc(32, 0x22), 0, 32), 32);
  lb.device.push(chain, 32);
  lb.device.publishUsed();
  assert.equal(lb.driver.getUsed(), 7);
  assert.equal(lb.driver.usedLen, 32);
  assert.ok(w.b.bytes.subarray(0, 32).every((x) => x === 0x22));
  assert.equal(lb.device.pop(chain), false);
}

function faultAt(iova: number, len: number, access: number) {
  return (err: Error & { code: string }): void => {
    assert.ok(err instanceof DmaFault);
    assert.equal(err.iova, iova);
    assert.equal(err.len, len);
    assert.equal(err.access, access);
  };
}

/** High address word all ones, low word kept: what addrOf() makes of it, computed the same way. */
function hiOnes(d: Buffer): number {
  d.writeUInt32LE(0xffffffff, SPLIT_DESC.addr + 4);
  return 0xffffffff * 2 ** 32 + d.readUInt32LE(SPLIT_DESC.addr);
}

const scenarios: Scenario[] = [];
const INDIRECT_OPTS = { indirect: true };

// DESC_LOOP (split): a `next` that points back.
scenarios.push(
  {
    format: "split",
    title: "the writable descriptor points at itself",
    code: "DESC_LOOP",
    kind: "RingError",
    corrupt: ({ lb }) => {
      setFlags("split", ringDesc(lb, 1), NEXT);
      setNext(ringDesc(lb, 1), 1);
    },
  },
  {
    format: "split",
    title: "the head points at itself",
    code: "DESC_LOOP",
    kind: "RingError",
    corrupt: ({ lb }) => setNext(ringDesc(lb, 0), 0),
  },
  {
    format: "split",
    title: "a loop inside an indirect table",
    code: "DESC_LOOP",
    kind: "RingError",
    opts: INDIRECT_OPTS,
    corrupt: ({ lb }) => {
      setFlags("split", tableEntry(lb, 1), NEXT);
      setNext(tableEntry(lb, 1), 1);
    },
  },
);

// DESC_OUT_OF_RANGE (split): head, next, next inside an indirect table.
scenarios.push(
  {
    format: "split",
    title: "a head index past the table",
    code: "DESC_OUT_OF_RANGE",
    kind: "RingError",
    corrupt: ({ lb }) => lb.pool.bytesAt(lb.driver.addresses.driver, 6).writeUInt16LE(NUM, SPLIT_AVAIL.ring),
  },
  {
    format: "split",
    title: "a head index of 0xffff",
    code: "DESC_OUT_OF_RANGE",
    kind: "RingError",
    corrupt: ({ lb }) =>
      lb.pool.bytesAt(lb.driver.addresses.driver, 6).writeUInt16LE(0xffff, SPLIT_AVAIL.ring),
  },
  {
    format: "split",
    title: "a next past the table",
    code: "DESC_OUT_OF_RANGE",
    kind: "RingError",
    corrupt: ({ lb }) => setNext(ringDesc(lb, 0), NUM),
  },
  {
    format: "split",
    title: "a next past the end of an indirect table",
    code: "DESC_OUT_OF_RANGE",
    kind: "RingError",
    opts: INDIRECT_OPTS,
    corrupt: ({ lb }) => setNext(tableEntry(lb, 0), 2),
  },
);

// CHAIN_TOO_LONG: packed chains longer than the ring; indirect tables longer than maxChain.
scenarios.push({
  format: "packed",
  title: "every descriptor has NEXT",
  code: "CHAIN_TOO_LONG",
  kind: "RingError",
  corrupt: ({ lb, b }) => {
    setFlags("packed", ringDesc(lb, 1), NEXT);
    for (let i = 2; i < NUM; i++) {
      const d = ringDesc(lb, i);
      setAddr(d, b.iova);
      setLen(d, 8);
      d.writeUInt16LE(NEXT | WRITE | P_AVAIL, PACKED_DESC.flags);
    }
  },
});
for (const format of FORMATS) {
  scenarios.push(
    {
      format,
      title: "an indirect table bigger than maxChain",
      code: "CHAIN_TOO_LONG",
      kind: "RingError",
      opts: { indirect: true, maxChain: 2 },
      corrupt: ({ lb }) => setLen(ringDesc(lb, 0), 48),
    },
    ...[0, 17, 24, 8].map(
      (len): Scenario => ({
        format,
        title: `an indirect descriptor of length ${len}`,
        code: "INDIRECT_BAD_LEN",
        kind: "RingError",
        opts: INDIRECT_OPTS,
        corrupt: ({ lb }) => setLen(ringDesc(lb, 0), len),
      }),
    ),
    {
      format,
      title: "an indirect descriptor inside an indirect table",
      code: "NESTED_INDIRECT",
      kind: "RingError",
      opts: INDIRECT_OPTS,
      corrupt: ({ lb }) => setFlags(format, tableEntry(lb, 0), INDIRECT),
    },
    {
      format,
      title: "an indirect descriptor with NEXT",
      code: "INDIRECT_WITH_NEXT",
      kind: "RingError",
      opts: INDIRECT_OPTS,
      corrupt: ({ lb }) => setFlags(format, ringDesc(lb, 0), NEXT),
    },
    {
      format,
      title: "a readable descriptor after a writable one",
      code: "WRITE_BEFORE_READ",
      kind: "RingError",
      corrupt: ({ lb }) => {
        setFlags(format, ringDesc(lb, 0), WRITE);
        setFlags(format, ringDesc(lb, 1), 0, WRITE);
      },
    },
    {
      format,
      title: "a readable entry after a writable one in an indirect table",
      code: "WRITE_BEFORE_READ",
      kind: "RingError",
      opts: INDIRECT_OPTS,
      corrupt: ({ lb }) => {
        setFlags(format, tableEntry(lb, 0), WRITE);
        setFlags(format, tableEntry(lb, 1), 0, WRITE);
      },
    },
    {
      format,
      title: "lengths adding up past 2^32 - 1",
      code: "LEN_OVERFLOW",
      kind: "RingError",
      corrupt: ({ lb }) => setLen(ringDesc(lb, 1), 0xffffffff),
    },
    {
      // The length check comes before translation: the unmapped second buffer is never looked up.
      format,
      title: "lengths past 2^32 - 1, the second buffer unmapped",
      code: "LEN_OVERFLOW",
      kind: "RingError",
      corrupt: ({ lb }) => {
        setLen(ringDesc(lb, 1), 0xfffffff0);
        setAddr(ringDesc(lb, 1), UNMAPPED);
      },
    },
    {
      format,
      title: "lengths past 2^32 - 1 in an indirect table",
      code: "LEN_OVERFLOW",
      kind: "RingError",
      opts: INDIRECT_OPTS,
      corrupt: ({ lb }) => setLen(tableEntry(lb, 1), 0xffffffff),
    },
    {
      format,
      title: "a descriptor outside every mapping",
      code: "IOTLB_MISS",
      kind: "DmaFault",
      corrupt: ({ lb }) => setAddr(ringDesc(lb, 0), UNMAPPED),
      check: faultAt(UNMAPPED, 16, ACCESS_READ),
    },
    {
      format,
      title: "a buffer that runs off the end of the pool mapping",
      code: "IOTLB_MISS",
      kind: "DmaFault",
      corrupt: ({ lb }) => setAddr(ringDesc(lb, 1), lb.pool.iovaBase + POOL - 16),
      check: (err, { lb }) => faultAt(lb.pool.iovaBase + POOL - 16, 32, ACCESS_WRITE)(err),
    },
    {
      format,
      title: "an indirect table outside every mapping",
      code: "IOTLB_MISS",
      kind: "DmaFault",
      opts: INDIRECT_OPTS,
      corrupt: ({ lb }) => setAddr(ringDesc(lb, 0), UNMAPPED),
      check: faultAt(UNMAPPED, 32, ACCESS_READ),
    },
    {
      format,
      title: "an indirect table entry outside every mapping",
      code: "IOTLB_MISS",
      kind: "DmaFault",
      opts: INDIRECT_OPTS,
      corrupt: ({ lb }) => setAddr(tableEntry(lb, 1), UNMAPPED + 0x100),
      check: faultAt(UNMAPPED + 0x100, 32, ACCESS_WRITE),
    },
    {
      format,
      title: "a device-writable descriptor into a read-only mapping",
      code: "IOTLB_PERM",
      kind: "DmaFault",
      corrupt: ({ lb }) => setAddr(ringDesc(lb, 1), RO_IOVA),
      check: faultAt(RO_IOVA, 32, ACCESS_WRITE),
    },
    {
      format,
      title: "a device-readable descriptor into a write-only mapping",
      code: "IOTLB_PERM",
      kind: "DmaFault",
      corrupt: ({ lb }) => setAddr(ringDesc(lb, 0), WO_IOVA),
      check: faultAt(WO_IOVA, 16, ACCESS_READ),
    },
    {
      format,
      title: "an indirect table in a write-only mapping",
      code: "IOTLB_PERM",
      kind: "DmaFault",
      opts: INDIRECT_OPTS,
      corrupt: ({ lb }) => setAddr(ringDesc(lb, 0), WO_IOVA),
      check: faultAt(WO_IOVA, 32, ACCESS_READ),
    },
    {
      format,
      title: "an address whose high word is 0xffffffff",
      code: "ADDR_OVERFLOW",
      kind: "DmaFault",
      corrupt: ({ lb }) => void hiOnes(ringDesc(lb, 0)),
      check: (err, { a }) => faultAt(0xffffffff * 2 ** 32 + (a.iova >>> 0), 16, ACCESS_READ)(err),
    },
    {
      format,
      title: "a buffer running past 2^53 - 1",
      code: "ADDR_OVERFLOW",
      kind: "DmaFault",
      corrupt: ({ lb }) => setAddr(ringDesc(lb, 0), 2 ** 53 - 8),
      check: faultAt(2 ** 53 - 8, 16, ACCESS_READ),
    },
    {
      format,
      title: "a buffer whose last byte is exactly 2^53",
      code: "ADDR_OVERFLOW",
      kind: "DmaFault",
      corrupt: ({ lb }) => setAddr(ringDesc(lb, 0), 2 ** 53 - 15),
      check: faultAt(2 ** 53 - 15, 16, ACCESS_READ),
    },
  );
}

// AVAIL_IDX_JUMP (split): avail idx moved more than num ahead.
scenarios.push(
  {
    format: "split",
    title: "avail idx num + 1 ahead",
    code: "AVAIL_IDX_JUMP",
    kind: "RingError",
    corrupt: ({ lb }) =>
      lb.pool.bytesAt(lb.driver.addresses.driver, 4).writeUInt16LE(NUM + 1, SPLIT_AVAIL.idx),
  },
  {
    format: "split",
    title: "avail idx moved backwards",
    code: "AVAIL_IDX_JUMP",
    kind: "RingError",
    corrupt: ({ lb }) =>
      lb.pool.bytesAt(lb.driver.addresses.driver, 4).writeUInt16LE(0xffff, SPLIT_AVAIL.idx),
  },
);

describe("hostile driver: device-side faults", () => {
  for (const s of scenarios) {
    test(`${s.format}: ${s.code}: ${s.title}`, () => runScenario(s));
  }

  test("split: avail idx exactly num ahead is not a jump", () => {
    const lb = createLoopback<number>({ format: "split", num: NUM, poolSize: POOL });
    const b = lb.pool.alloc(64);
    for (let i = 0; i < NUM; i++) lb.driver.add(new BufferList().in(b.iova, 8), i);
    lb.driver.publishAvail();
    const chain = new Chain();
    for (let i = 0; i < NUM; i++) assert.equal(lb.device.pop(chain), true);
    assert.equal(lb.device.pop(chain), false);
    assert.deepEqual(lb.device.getState(), { availIdx: NUM, usedIdx: 0 });
  });

  test("split: DESC_LOOP is bounded by the queue size, even with a large maxChain", () => {
    const lb = createLoopback<number>({ format: "split", num: 256, poolSize: POOL, maxChain: 4096 });
    const b = lb.pool.alloc(64);
    lb.driver.add(new BufferList().in(b.iova, 4), 1);
    lb.driver.publishAvail();
    const d = lb.pool.bytesAt(lb.driver.addresses.desc, 16);
    d.writeUInt16LE(NEXT | WRITE, SPLIT_DESC.flags);
    d.writeUInt16LE(0, SPLIT_DESC.next);
    const chain = new Chain();
    assert.throws(
      () => lb.device.pop(chain),
      (e: unknown) => e instanceof RingError && e.code === "DESC_LOOP",
    );
    assert.ok(chain.writable.count <= 256, "stopped after num descriptors");
  });

  test("split: a chain longer than the chain's segment list is a typed fault", () => {
    const lb = createLoopback<number>({ format: "split", num: NUM, poolSize: POOL });
    const bufs = new BufferList();
    for (let i = 0; i < 4; i++) bufs.in(lb.pool.alloc(64).iova, 8);
    lb.driver.add(bufs, 1);
    lb.driver.publishAvail();
    assert.throws(
      () => lb.device.pop(new Chain(2)),
      (e: unknown) => e instanceof DmaFault && e.code === "SEGMENTS_EXHAUSTED",
    );
    assert.equal(lb.device.broken?.name, "DmaFault");
  });

  for (const format of FORMATS) {
    test(`${format}: a zero-length descriptor is accepted and translates nothing, wherever it points`, () => {
      const w = setup(format);
      setLen(ringDesc(w.lb, 0), 0);
      setAddr(ringDesc(w.lb, 0), UNMAPPED);
      const chain = new Chain();
      assert.equal(w.lb.device.pop(chain), true);
      assert.equal(chain.readLen, 0);
      assert.equal(chain.readable.count, 0);
      assert.equal(chain.writeLen, 32);
    });
  }
});

describe("hostile device: driver-side faults", () => {
  interface DriverWorld {
    lb: Loopback<number>;
    buf: DmaBuffer;
  }

  /** Two single-buffer requests, tokens 1 and 2, published; the device popped nothing. */
  function driverSetup(format: RingFormat): DriverWorld {
    const lb = createLoopback<number>({ format, num: NUM, poolSize: POOL });
    const buf = lb.pool.alloc(64);
    lb.driver.add(new BufferList().in(buf.iova, 8), 1);
    lb.driver.add(new BufferList().in(buf.iova, 8), 2);
    lb.driver.publishAvail();
    return { lb, buf };
  }

  /** Writes what a device would write for used element `k` (split) / at ring slot `k` (packed). */
  function hostileUsed(lb: Loopback<number>, k: number, id: number, len: number, publish: number): void {
    if (lb.driver.format === "split") {
      const used = lb.pool.bytesAt(lb.driver.addresses.device, 4 + 8 * NUM);
      used.writeUInt32LE(id, SPLIT_USED.ring + 8 * (k % NUM));
      used.writeUInt32LE(len, SPLIT_USED.ring + 8 * (k % NUM) + 4);
      used.writeUInt16LE(publish, SPLIT_USED.idx);
    } else {
      const d = ringDesc(lb, k % NUM);
      d.writeUInt32LE(len, PACKED_DESC.len);
      d.writeUInt16LE(id, PACKED_DESC.id);
      d.writeUInt16LE(P_AVAIL | P_USED, PACKED_DESC.flags);
    }
  }

  function expectDriverFault(lb: Loopback<number>, code: string, inFlight: number[]): void {
    const driver = lb.driver as SplitDriverRing<number> | PackedDriverRing<number>;
    const numFree = driver.numFree;
    const inFlightBefore = driver.inFlight;
    const before = Buffer.from(poolBytes(lb));
    const t0 = performance.now();
    let first: unknown;
    assert.throws(
      () => driver.getUsed(),
      (e: unknown) => {
        first = e;
        return e instanceof RingError && e.name === "RingError" && e.code === code;
      },
    );
    assert.ok(performance.now() - t0 < QUICK_MS);
    assert.equal(driver.broken, first, "the driver ring remembers the fault");
    assert.throws(
      () => driver.getUsed(),
      (e) => e === first,
      "and rethrows it",
    );
    assert.equal(driver.numFree, numFree, "nothing was reclaimed");
    assert.equal(driver.inFlight, inFlightBefore);
    assert.ok(poolBytes(lb).equals(before), "the driver wrote nothing");

    // Device reset: the driver takes back what was in flight, and a fresh device ring works.
    assert.deepEqual(
      driver.detachUnused().sort((x, y) => x - y),
      inFlight,
    );
    assert.equal(driver.broken, null);
    assert.equal(driver.numFree, NUM);
    const device = createDeviceRing(lb.driver.format, {
      num: NUM,
      addresses: lb.driver.addresses,
      ringSpace: lb.space,
      eventIdx: false,
    });
    const buf = lb.pool.alloc(16);
    assert.equal(driver.add(new BufferList().in(buf.iova, 16), 99), true);
    driver.publishAvail();
    const chain = new Chain();
    assert.equal(device.pop(chain), true);
    chain.writable.copyFrom(Buffer.from("ok"), 0, 2);
    device.push(chain, 2);
    device.publishUsed();
    assert.equal(driver.getUsed(), 99);
    assert.equal(driver.usedLen, 2);
    assert.equal(buf.bytes.subarray(0, 2).toString(), "ok");
  }

  test("split: USED_IDX_JUMP when used idx moves num + 1 ahead", () => {
    const { lb } = driverSetup("split");
    lb.pool.bytesAt(lb.driver.addresses.device, 4).writeUInt16LE(NUM + 1, SPLIT_USED.idx);
    expectDriverFault(lb, "USED_IDX_JUMP", [1, 2]);
  });

  test("split: USED_IDX_JUMP when used idx moves backwards", () => {
    const { lb } = driverSetup("split");
    lb.pool.bytesAt(lb.driver.addresses.device, 4).writeUInt16LE(0xffff, SPLIT_USED.idx);
    expectDriverFault(lb, "USED_IDX_JUMP", [1, 2]);
  });

  test("split: used idx exactly num ahead is accepted", () => {
    const lb = createLoopback<number>({ format: "split", num: NUM, poolSize: POOL });
    const buf = lb.pool.alloc(64);
    for (let i = 0; i < NUM; i++) lb.driver.add(new BufferList().in(buf.iova, 8), 100 + i);
    lb.driver.publishAvail();
    // A device that completes all of them in reverse order, in one go.
    for (let k = 0; k < NUM; k++) hostileUsed(lb, k, NUM - 1 - k, k, NUM);
    for (let k = 0; k < NUM; k++) {
      assert.equal(lb.driver.getUsed(), 100 + NUM - 1 - k);
      assert.equal(lb.driver.usedLen, k);
    }
    assert.equal(lb.driver.getUsed(), undefined);
    assert.equal(lb.driver.numFree, NUM);
  });

  for (const format of FORMATS) {
    for (const id of [5, NUM, 0xffff, ...(format === "split" ? [0xffffffff, 0x10000] : [])]) {
      test(`${format}: USED_ID_INVALID for id ${id}, never added`, () => {
        const { lb } = driverSetup(format);
        hostileUsed(lb, 0, id, 8, 1);
        expectDriverFault(lb, "USED_ID_INVALID", [1, 2]);
      });
    }

    test(`${format}: USED_ID_INVALID for an id returned twice`, () => {
      const { lb } = driverSetup(format);
      const chain = new Chain();
      assert.equal(lb.device.pop(chain), true);
      lb.device.push(chain, 4);
      lb.device.publishUsed();
      assert.equal(lb.driver.getUsed(), 1);
      assert.equal(chain.id, 0);
      // The device returns id 0 again in the next used position.
      hostileUsed(lb, 1, 0, 4, 2);
      expectDriverFault(lb, "USED_ID_INVALID", [2]);
    });

    test(`${format}: a chain's non-head descriptor index is not a valid used id`, () => {
      const lb = createLoopback<number>({ format, num: NUM, poolSize: POOL });
      const buf = lb.pool.alloc(64);
      lb.driver.add(new BufferList().out(buf.iova, 8).in(buf.iova, 8).in(buf.iova, 8), 1);
      lb.driver.publishAvail();
      // Split: descriptors 0, 1, 2 hold the chain, the head is 0. Packed: buffer id 0; id 1 is free.
      hostileUsed(lb, 0, 1, 8, 1);
      expectDriverFault(lb, "USED_ID_INVALID", [1]);
    });
  }
});

// ---- random bytes ----------------------------------------------------------------------------------

for (const format of FORMATS) {
  test(`${format}: random bytes in the rings: typed faults only, no hang, no write, segments inside mappings`, () => {
    const rand = xorshift(format === "split" ? 0xc0ffee : 0xbadf00d);
    const lb = createLoopback<number>({ format, num: NUM, poolSize: 64 * 1024, iotlbEntries: 4 });
    const ro = new SharedMemoryRegion(4096, "ro");
    const wo = new SharedMemoryRegion(4096, "wo");
    lb.iotlb.map(RO_IOVA, 4096, ro, 0, PERM_RO);
    lb.iotlb.map(WO_IOVA, 4096, wo, 0, PERM_WO);
    const a = lb.driver.addresses;
    const driverArea = lb.pool.bytesAt(a.driver, format === "split" ? 6 + 2 * NUM : 4);
    const tables = lb.pool.alloc(512, 16);
    const tableBytes = tables.bytes;
    const targets = [lb.pool.iovaBase, tables.iova, RO_IOVA, WO_IOVA, UNMAPPED, lb.pool.iovaBase + 0xff00];
    const flagBits = format === "split" ? [NEXT, WRITE, INDIRECT] : [NEXT, WRITE, INDIRECT, P_AVAIL, P_USED];
    const outcomes = new Map<string, number>();
    const chain = new Chain(16);

    /** A random descriptor: mostly plausible addresses and small lengths, sometimes anything. */
    function randomDesc(d: Buffer, inTable: boolean): void {
      for (let i = 0; i < 16; i += 4) d.writeUInt32LE(rand(), i);
      if (rand() % 8 === 0) return; // keep pure noise now and then
      const base = targets[rand() % targets.length];
      setAddr(d, base + (rand() % 0x200));
      setLen(d, rand() % 4 === 0 ? 16 * (rand() % 40) : rand() % 0x300);
      let flags = 0;
      for (const bit of flagBits) if (rand() % 3 === 0) flags |= bit;
      if (inTable && rand() % 2 === 0) flags &= ~INDIRECT;
      const at = flagsAt(format);
      d.writeUInt16LE(flags, at);
      if (format === "split") d.writeUInt16LE(rand() % (NUM + 3), SPLIT_DESC.next);
    }

    const started = performance.now();
    for (let round = 0; round < 2000; round++) {
      for (let i = 0; i < NUM; i++) randomDesc(ringDesc(lb, i), false);
      for (let i = 0; i < 32; i++) randomDesc(tableBytes.subarray(16 * i, 16 * i + 16), true);
      for (let i = 0; i < driverArea.length; i++) driverArea[i] = rand() & 0xff;
      if (format === "split") {
        const start = rand() & 0xffff;
        lb.device.setState({ availIdx: start, usedIdx: rand() & 0xffff });
        if (rand() % 4 !== 0)
          driverArea.writeUInt16LE((start + (rand() % (NUM + 2))) & 0xffff, SPLIT_AVAIL.idx);
        for (let i = 0; i < NUM; i++) if (rand() % 2) driverArea.writeUInt16LE(rand() % (NUM + 1), 4 + 2 * i);
      } else {
        lb.device.setState({ availIdx: rand() % NUM, availWrap: rand() & 1, usedIdx: 0, usedWrap: 1 });
      }
      const before = Buffer.from(poolBytes(lb));
      for (let k = 0; k < 4; k++) {
        const t0 = performance.now();
        let got: boolean;
        try {
          got = lb.device.pop(chain);
        } catch (err) {
          assert.ok(performance.now() - t0 < QUICK_MS, "no hang");
          assert.ok(
            err instanceof RingError || err instanceof DmaFault,
            `round ${round}: untyped error ${String(err)}`,
          );
          assert.ok(isDatapathFault(err));
          assert.equal(lb.device.broken, err);
          assert.throws(
            () => lb.device.pop(chain),
            (e) => e === err,
          );
          outcomes.set(err.code, (outcomes.get(err.code) ?? 0) + 1);
          break;
        }
        assert.ok(performance.now() - t0 < QUICK_MS, "no hang");
        if (!got) {
          outcomes.set("empty", (outcomes.get("empty") ?? 0) + 1);
          break;
        }
        outcomes.set("chain", (outcomes.get("chain") ?? 0) + 1);
        assert.ok(chain.readLen + chain.writeLen <= 0xffffffff);
        assert.ok(chain.descCount >= 1 && chain.descCount <= NUM);
        for (const [segs, forbidden] of [
          [chain.readable, wo],
          [chain.writable, ro],
        ] as const) {
          let total = 0;
          for (let i = 0; i < segs.count; i++) {
            const region = segs.regions[i];
            assert.notEqual(region, forbidden, "a segment through a mapping that forbids the access");
            assert.ok(region === lb.pool.region || region === ro || region === wo);
            assert.ok(segs.offsets[i] >= 0 && segs.offsets[i] + segs.lengths[i] <= region.size);
            total += segs.lengths[i];
          }
          assert.equal(total, segs.total);
        }
      }
      assert.ok(poolBytes(lb).equals(before), `round ${round}: pop() wrote ring memory`);
      assert.ok(ro.bytes.every((x) => x === 0) && wo.bytes.every((x) => x === 0));
    }
    assert.ok(performance.now() - started < 4000);
    // The inputs reached deep enough to produce chains and several different faults.
    assert.ok((outcomes.get("chain") ?? 0) > 20, JSON.stringify([...outcomes]));
    const faults = [...outcomes.keys()].filter((k) => k !== "chain" && k !== "empty");
    assert.ok(faults.length >= 6, JSON.stringify([...outcomes]));
  });
}

// ---- bad parameters --------------------------------------------------------------------------------

describe("QUEUE_SIZE_INVALID and BAD_REQUEST", () => {
  const lb = createLoopback<number>({ format: "split", num: 4 });
  const devOpts = (num: number) => ({
    num,
    addresses: lb.driver.addresses,
    ringSpace: lb.space,
    eventIdx: false,
  });
  const queueSize = (e: unknown) =>
    e instanceof RingError && e.name === "RingError" && e.code === "QUEUE_SIZE_INVALID";

  for (const num of [0, 3, 6, 65536, 32769, -8, 2.5, Number.NaN]) {
    test(`split refuses queue size ${num} on both sides`, () => {
      assert.throws(
        () => new SplitDriverRing({ num, pool: lb.pool, eventIdx: false, indirect: false }),
        queueSize,
      );
      assert.throws(() => new SplitDeviceRing(devOpts(num)), queueSize);
    });
  }

  for (const num of [0, 40000, 32769, -1, 1.5]) {
    test(`packed refuses queue size ${num} on both sides`, () => {
      assert.throws(
        () => new PackedDriverRing({ num, pool: lb.pool, eventIdx: false, indirect: false }),
        queueSize,
      );
      assert.throws(() => new PackedDeviceRing(devOpts(num)), queueSize);
    });
  }

  test("packed sizes need not be powers of two; 1 and 32768 are valid in both formats", () => {
    for (const [format, num] of [
      ["packed", 3],
      ["packed", 1],
      ["split", 1],
      ["packed", 32768],
      ["split", 32768],
    ] as const) {
      const big = createLoopback<number>({ format, num, poolSize: 2 << 20 });
      assert.equal(big.driver.num, num);
      assert.equal(big.device.num, num);
      const buf = big.pool.alloc(16);
      big.driver.add(new BufferList().in(buf.iova, 16), 5);
      big.driver.publishAvail();
      const chain = new Chain();
      assert.equal(big.device.pop(chain), true);
      big.device.push(chain, 1);
      big.device.publishUsed();
      assert.equal(big.driver.getUsed(), 5);
    }
    const d = createDriverRing<number>("packed", { num: 3, pool: lb.pool, eventIdx: false, indirect: false });
    assert.equal(d.format, "packed");
    assert.equal(d.dmaBuffers.length, 3, "descriptor ring and two event structures");
    const s = createDriverRing<number>("split", { num: 2, pool: lb.pool, eventIdx: false, indirect: true });
    assert.equal(s.format, "split");
    assert.equal(s.dmaBuffers.length, 4, "three ring areas and the indirect tables");
    assert.ok(s.dmaBuffers.every((b) => b.iova >= lb.pool.iovaBase && b.size > 0));
  });

  for (const format of FORMATS) {
    test(`${format}: BAD_REQUEST for an empty list and for more buffers than the queue holds`, () => {
      const small = createLoopback<number>({ format, num: 2 });
      const iova = small.pool.alloc(64).iova;
      const badRequest = (e: unknown) => e instanceof RingError && e.code === "BAD_REQUEST";
      assert.throws(() => small.driver.add(new BufferList(), 1), badRequest);
      const three = new BufferList().out(iova, 8).in(iova, 8).in(iova, 8);
      assert.throws(() => small.driver.add(three, 1), badRequest);
      assert.equal(small.driver.numFree, 2, "a refused request takes nothing");
      assert.equal(small.driver.publishAvail(), false, "and publishes nothing");
      // Two fit, a third does not: add() says so instead of throwing.
      const one = new BufferList().in(iova, 8);
      assert.equal(small.driver.add(one, 1), true);
      assert.equal(small.driver.add(new BufferList().out(iova, 8).in(iova, 8), 2), false);
      assert.equal(small.driver.add(one, 2), true);
      assert.equal(small.driver.add(one, 3), false);
      assert.equal(small.driver.inFlight, 2);

      // With indirect descriptors a request longer than the queue fits in one slot...
      const ind = createLoopback<number>({ format, num: 2, indirect: true, maxIndirect: 4 });
      const iv = ind.pool.alloc(64).iova;
      assert.equal(ind.driver.add(new BufferList().out(iv, 8).in(iv, 8).in(iv, 8), 1), true);
      assert.equal(ind.driver.numFree, 1);
      // ...but not when it is also longer than an indirect table, or indirect is refused for it.
      const five = new BufferList().out(iv, 1).out(iv, 1).out(iv, 1).out(iv, 1).in(iv, 1);
      assert.throws(() => ind.driver.add(five, 2), badRequest);
      assert.throws(
        () => ind.driver.add(new BufferList().out(iv, 8).in(iv, 8).in(iv, 8), 3, false),
        badRequest,
      );
    });
  }

  test("createLoopback refuses a pool that does not split into page-sized IOTLB entries", () => {
    assert.throws(
      () => createLoopback({ format: "split", num: 4, poolSize: 3 * 4096, iotlbEntries: 2 }),
      RangeError,
    );
    assert.throws(
      () => createLoopback({ format: "split", num: 4, poolSize: 4096 * 4, iotlbEntries: 8 }),
      RangeError,
    );
    assert.equal(
      createLoopback({ format: "split", num: 4, poolSize: 4096 * 4, iotlbEntries: 4 }).iotlb.size,
      4,
    );
  });

  test("BufferList: readable after writable, too many buffers, bad addresses", () => {
    const badRequest = (e: unknown) => e instanceof RingError && e.code === "BAD_REQUEST";
    assert.throws(() => new BufferList().in(0x1000, 8).out(0x2000, 8), badRequest);
    assert.throws(() => new BufferList(2).out(1, 1).out(2, 1).in(3, 1), badRequest);
    assert.throws(() => new BufferList().out(-1, 1), badRequest);
    assert.throws(() => new BufferList().out(2 ** 53, 1), badRequest);
    assert.throws(() => new BufferList().in(0.5, 1), badRequest);
    const l = new BufferList(4).out(2 ** 40 + 3, 5).in(0xffff_ffff, 6);
    assert.equal(l.capacity, 4);
    assert.equal(l.addr(0), 2 ** 40 + 3);
    assert.equal(l.addr(1), 0xffff_ffff);
    assert.deepEqual([l.count, l.outCount, l.lens[0], l.lens[1]], [2, 1, 5, 6]);
    l.clear();
    assert.deepEqual([l.count, l.outCount], [0, 0]);
    l.out(1, 1); // readable is fine again after clear()
    assert.equal(l.outCount, 1);
  });

  test("isDatapathFault tells ring and DMA faults from bugs", () => {
    assert.equal(isDatapathFault(new RingError("DESC_LOOP", "x")), true);
    assert.equal(isDatapathFault(new DmaFault("IOTLB_MISS", 0, 1, ACCESS_READ)), true);
    assert.equal(isDatapathFault(new TypeError("x")), false);
    assert.equal(isDatapathFault("DESC_LOOP"), false);
    assert.equal(new RingError("BAD_REQUEST", "why").message, "BAD_REQUEST: why");
    assert.match(
      new DmaFault("IOTLB_PERM", 0x10, 4, ACCESS_WRITE, "d").message,
      /write of 4 bytes at iova 0x10 \(d\)/,
    );
  });

  test("a device ring whose areas are not mapped, or misaligned, cannot be created", () => {
    const fresh = createLoopback<number>({ format: "split", num: 4 });
    const addrs = fresh.driver.addresses;
    const make = (format: RingFormat, addresses: typeof addrs): DeviceRing =>
      createDeviceRing(format, { num: 4, addresses, ringSpace: fresh.space, eventIdx: false });
    const dma = (code: string) => (e: unknown) => e instanceof DmaFault && e.code === code;
    assert.throws(() => make("split", { ...addrs, desc: UNMAPPED }), dma("IOTLB_MISS"));
    assert.throws(() => make("split", { ...addrs, desc: addrs.desc + 8 }), dma("NOT_CONTIGUOUS"));
    assert.throws(() => make("split", { ...addrs, device: addrs.device + 2 }), dma("NOT_CONTIGUOUS"));
    assert.throws(() => make("packed", { ...addrs, driver: UNMAPPED }), dma("IOTLB_MISS"));
    assert.throws(() => make("packed", { ...addrs, device: addrs.device + 2 }), dma("NOT_CONTIGUOUS"));
    // The used ring must be writable for the device.
    fresh.iotlb.map(RO_IOVA, 4096, new SharedMemoryRegion(4096), 0, PERM_RO);
    assert.throws(() => make("split", { ...addrs, device: RO_IOVA }), dma("IOTLB_PERM"));
    assert.throws(() => make("packed", { ...addrs, desc: RO_IOVA }), dma("IOTLB_PERM"));
    assert.ok(make("split", addrs) instanceof SplitDeviceRing);
  });
});
