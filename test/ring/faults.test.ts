// Hostile rings: a driver (or, for driver-side codes, a device) that writes whatever it likes into ring
// memory. Every case ends in a typed error with a stable code, quickly, with nothing written to the used
// ring, and the ring stays broken until its state is set again.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DmaFault, PERM_RO, SharedMemoryRegion } from "../../src/memory/index.js";
import {
  BufferList,
  Chain,
  createLoopback,
  type Loopback,
  PackedDeviceRing,
  PackedDriverRing,
  RingError,
  SplitDeviceRing,
  SplitDriverRing,
} from "../../src/ring/index.js";
import {
  VRING_PACKED_DESC_F_AVAIL as AVAIL,
  VRING_DESC_F_INDIRECT as INDIRECT,
  VRING_DESC_F_NEXT as NEXT,
  VRING_PACKED_DESC_F_USED as USED,
  VRING_DESC_F_WRITE as WRITE,
} from "../../src/spec/ring-layout.js";

const NUM = 8;

interface Desc {
  addr: number;
  len: number;
  flags: number;
  next?: number;
  id?: number;
}

/** Writes a 16-byte descriptor at an IOVA inside the pool (split: next; packed: id). */
function writeDesc(lb: Loopback<number>, iova: number, d: Desc, packed = false): void {
  const b = lb.pool.bytesAt(iova, 16);
  b.writeUInt32LE(d.addr % 2 ** 32, 0);
  b.writeUInt32LE(Math.floor(d.addr / 2 ** 32), 4);
  b.writeUInt32LE(d.len, 8);
  if (packed) {
    b.writeUInt16LE(d.id ?? 0, 12);
    b.writeUInt16LE(d.flags, 14);
  } else {
    b.writeUInt16LE(d.flags, 12);
    b.writeUInt16LE(d.next ?? 0, 14);
  }
}

/** A split ring whose driver publishes `heads` after the test wrote the descriptors by hand. */
function splitWith(descs: Desc[], heads: number[] = [0], maxChain?: number): Loopback<number> {
  const lb = createLoopback<number>({ format: "split", num: NUM, maxChain });
  const a = lb.driver.addresses;
  for (const [i, d] of descs.entries()) writeDesc(lb, a.desc + 16 * i, d);
  const avail = lb.pool.bytesAt(a.driver, 4 + 2 * NUM);
  for (const [i, h] of heads.entries()) avail.writeUInt16LE(h, 4 + 2 * i);
  avail.writeUInt16LE(heads.length, 2);
  return lb;
}

/** A packed ring with the given descriptors made available in the first lap (wrap counter 1). */
function packedWith(descs: Desc[], maxChain?: number): Loopback<number> {
  const lb = createLoopback<number>({ format: "packed", num: NUM, maxChain });
  for (const [i, d] of descs.entries()) {
    writeDesc(lb, lb.driver.addresses.desc + 16 * i, { ...d, flags: d.flags | AVAIL }, true);
  }
  return lb;
}

/** An indirect table somewhere in the pool. */
function table(lb: Loopback<number>, entries: Desc[], packed = false): number {
  const t = lb.pool.alloc(Math.max(16, entries.length * 16), 16);
  for (const [i, d] of entries.entries()) writeDesc(lb, t.iova + 16 * i, d, packed);
  return t.iova;
}

function expectFault(lb: Loopback<number>, code: string): void {
  const usedBefore = lb.pool.bytesAt(lb.driver.addresses.device, 4).readUInt16LE(2);
  const chain = new Chain(16);
  let first: unknown;
  assert.throws(
    () => lb.device.pop(chain),
    (err: unknown) => {
      first = err;
      return (err instanceof RingError || err instanceof DmaFault) && err.code === code;
    },
  );
  assert.equal(lb.device.broken, first, "the ring remembers the fault");
  assert.throws(
    () => lb.device.pop(chain),
    (err) => err === first,
    "and rethrows it until reset",
  );
  assert.equal(lb.device.hasAvailable(), false);
  assert.equal(lb.pool.bytesAt(lb.driver.addresses.device, 4).readUInt16LE(2), usedBefore, "nothing used");
}

function buf(lb: Loopback<number>, size = 64): number {
  return lb.pool.alloc(size).iova;
}

describe("device side, split ring", () => {
  test("DESC_LOOP: a chain that points back at itself", () => {
    const lb = splitWith([]);
    const b = buf(lb);
    const a = lb.driver.addresses;
    writeDesc(lb, a.desc, { addr: b, len: 8, flags: NEXT, next: 1 });
    writeDesc(lb, a.desc + 16, { addr: b, len: 8, flags: NEXT, next: 0 });
    expectFault(lb, "DESC_LOOP");
  });

  test("DESC_OUT_OF_RANGE: head past the table, next past the table, next past an indirect table", () => {
    expectFault(splitWith([], [NUM]), "DESC_OUT_OF_RANGE");
    const lb = splitWith([]);
    const b = buf(lb);
    writeDesc(lb, lb.driver.addresses.desc, { addr: b, len: 8, flags: NEXT, next: NUM });
    expectFault(lb, "DESC_OUT_OF_RANGE");
    const lb2 = splitWith([]);
    const t = table(lb2, [
      { addr: buf(lb2), len: 8, flags: NEXT, next: 2 },
      { addr: buf(lb2), len: 8, flags: 0 },
    ]);
    writeDesc(lb2, lb2.driver.addresses.desc, { addr: t, len: 32, flags: INDIRECT });
    expectFault(lb2, "DESC_OUT_OF_RANGE");
  });

  test("indirect rules: bad length, nested, with NEXT, too many entries", () => {
    for (const len of [0, 17]) {
      const lb = splitWith([]);
      writeDesc(lb, lb.driver.addresses.desc, { addr: buf(lb), len, flags: INDIRECT });
      expectFault(lb, "INDIRECT_BAD_LEN");
    }
    const nested = splitWith([]);
    const inner = table(nested, [{ addr: buf(nested), len: 8, flags: 0 }]);
    const outer = table(nested, [{ addr: inner, len: 16, flags: INDIRECT }]);
    writeDesc(nested, nested.driver.addresses.desc, { addr: outer, len: 16, flags: INDIRECT });
    expectFault(nested, "NESTED_INDIRECT");
    const withNext = splitWith([]);
    const t = table(withNext, [{ addr: buf(withNext), len: 8, flags: 0 }]);
    writeDesc(withNext, withNext.driver.addresses.desc, {
      addr: t,
      len: 16,
      flags: INDIRECT | NEXT,
      next: 1,
    });
    expectFault(withNext, "INDIRECT_WITH_NEXT");
    const big = splitWith([], [0], 4);
    const t5 = table(
      big,
      Array.from({ length: 5 }, () => ({ addr: buf(big), len: 8, flags: 0 })),
    );
    writeDesc(big, big.driver.addresses.desc, { addr: t5, len: 80, flags: INDIRECT });
    expectFault(big, "CHAIN_TOO_LONG");
  });

  test("WRITE_BEFORE_READ, direct and inside an indirect table", () => {
    const lb = splitWith([]);
    const a = lb.driver.addresses;
    writeDesc(lb, a.desc, { addr: buf(lb), len: 8, flags: WRITE | NEXT, next: 1 });
    writeDesc(lb, a.desc + 16, { addr: buf(lb), len: 8, flags: 0 });
    expectFault(lb, "WRITE_BEFORE_READ");
    const lb2 = splitWith([]);
    const t = table(lb2, [
      { addr: buf(lb2), len: 8, flags: WRITE | NEXT, next: 1 },
      { addr: buf(lb2), len: 8, flags: 0 },
    ]);
    writeDesc(lb2, lb2.driver.addresses.desc, { addr: t, len: 32, flags: INDIRECT });
    expectFault(lb2, "WRITE_BEFORE_READ");
  });

  test("AVAIL_IDX_JUMP: the driver claims more buffers than the queue holds", () => {
    const lb = splitWith([]);
    lb.pool.bytesAt(lb.driver.addresses.driver, 4).writeUInt16LE(NUM + 1, 2);
    expectFault(lb, "AVAIL_IDX_JUMP");
  });

  test("LEN_OVERFLOW: lengths adding up past 2^32 - 1 (checked before translating)", () => {
    const lb = splitWith([]);
    const a = lb.driver.addresses;
    writeDesc(lb, a.desc, { addr: buf(lb), len: 16, flags: NEXT, next: 1 });
    writeDesc(lb, a.desc + 16, { addr: buf(lb), len: 0xffffffff, flags: 0 });
    expectFault(lb, "LEN_OVERFLOW");
  });

  test("IOTLB_MISS, IOTLB_PERM and ADDR_OVERFLOW from translation, and a canary untouched", () => {
    const miss = splitWith([]);
    writeDesc(miss, miss.driver.addresses.desc, { addr: 0x7000_0000, len: 8, flags: WRITE });
    expectFault(miss, "IOTLB_MISS");
    const perm = splitWith([]);
    const ro = new SharedMemoryRegion(4096, "read-only");
    ro.bytes.fill(0x5a);
    perm.iotlb.map(0x9000_0000, 4096, ro, 0, PERM_RO);
    writeDesc(perm, perm.driver.addresses.desc, { addr: 0x9000_0000, len: 8, flags: WRITE });
    expectFault(perm, "IOTLB_PERM");
    assert.ok(ro.bytes.every((b) => b === 0x5a));
    const big = splitWith([]);
    writeDesc(big, big.driver.addresses.desc, { addr: 0xffffffff * 2 ** 32, len: 8, flags: 0 });
    expectFault(big, "ADDR_OVERFLOW");
  });

  test("after setState the repaired queue works again", () => {
    const lb = splitWith([], [NUM]);
    expectFault(lb, "DESC_OUT_OF_RANGE");
    lb.device.setState({ availIdx: 0, usedIdx: 0 });
    const b = buf(lb);
    writeDesc(lb, lb.driver.addresses.desc, { addr: b, len: 8, flags: WRITE });
    lb.pool.bytesAt(lb.driver.addresses.driver, 6).writeUInt16LE(0, 4);
    const chain = new Chain();
    assert.equal(lb.device.pop(chain), true);
    assert.equal(chain.writeLen, 8);
  });
});

describe("device side, packed ring", () => {
  test("CHAIN_TOO_LONG: every descriptor says NEXT", () => {
    const lb = createLoopback<number>({ format: "packed", num: NUM });
    const b = buf(lb);
    for (let i = 0; i < NUM; i++) {
      writeDesc(lb, lb.driver.addresses.desc + 16 * i, { addr: b, len: 8, flags: NEXT | AVAIL }, true);
    }
    expectFault(lb, "CHAIN_TOO_LONG");
  });

  test("indirect rules, write-before-read and translation faults", () => {
    const nested = packedWith([]);
    const t = table(nested, [{ addr: buf(nested), len: 8, flags: INDIRECT }], true);
    writeDesc(nested, nested.driver.addresses.desc, { addr: t, len: 16, flags: INDIRECT | AVAIL }, true);
    expectFault(nested, "NESTED_INDIRECT");

    const withNext = packedWith([]);
    const t2 = table(withNext, [{ addr: buf(withNext), len: 8, flags: 0 }], true);
    writeDesc(
      withNext,
      withNext.driver.addresses.desc,
      { addr: t2, len: 16, flags: INDIRECT | NEXT | AVAIL },
      true,
    );
    expectFault(withNext, "INDIRECT_WITH_NEXT");

    const lb = packedWith([]);
    writeDesc(lb, lb.driver.addresses.desc, { addr: buf(lb), len: 8, flags: WRITE | NEXT | AVAIL }, true);
    writeDesc(lb, lb.driver.addresses.desc + 16, { addr: buf(lb), len: 8, flags: AVAIL }, true);
    expectFault(lb, "WRITE_BEFORE_READ");

    const bad = packedWith([]);
    writeDesc(bad, bad.driver.addresses.desc, { addr: buf(bad), len: 24, flags: INDIRECT | AVAIL }, true);
    expectFault(bad, "INDIRECT_BAD_LEN");

    const miss = packedWith([{ addr: 0x7000_0000, len: 8, flags: WRITE }]);
    expectFault(miss, "IOTLB_MISS");
  });

  test("packed state must lie inside the ring; a valid one clears the fault", () => {
    const lb = packedWith([{ addr: 0x7000_0000, len: 8, flags: 0 }]);
    expectFault(lb, "IOTLB_MISS");
    assert.throws(
      () => lb.device.setState({ availIdx: NUM, usedIdx: 0 }),
      (e) => e instanceof RingError,
    );
    lb.device.setState({ availIdx: 1, availWrap: 1, usedIdx: 1, usedWrap: 1 });
    assert.equal(lb.device.broken, null);
    assert.deepEqual(lb.device.getState(), { availIdx: 1, availWrap: 1, usedIdx: 1, usedWrap: 1 });
  });
});

describe("driver side: a hostile device", () => {
  function driverFault(lb: Loopback<number>, code: string): void {
    let first: unknown;
    assert.throws(
      () => lb.driver.getUsed(),
      (e) => {
        first = e;
        return e instanceof RingError && e.code === code;
      },
    );
    assert.throws(
      () => lb.driver.getUsed(),
      (e) => e === first,
      "the driver ring stays broken",
    );
  }

  test("split: USED_ID_INVALID for an id never added or returned twice; USED_IDX_JUMP", () => {
    const lb = createLoopback<number>({ format: "split", num: NUM });
    const used = lb.pool.bytesAt(lb.driver.addresses.device, 4 + 8 * NUM);
    used.writeUInt32LE(5, 4);
    used.writeUInt16LE(1, 2);
    driverFault(lb, "USED_ID_INVALID");

    const twice = createLoopback<number>({ format: "split", num: NUM });
    twice.driver.add(new BufferList().in(buf(twice), 8), 42);
    twice.driver.publishAvail();
    const u = twice.pool.bytesAt(twice.driver.addresses.device, 4 + 8 * NUM);
    u.writeUInt32LE(0, 4); // id 0, once...
    u.writeUInt32LE(0, 12); // ...and again
    u.writeUInt16LE(2, 2);
    assert.equal(twice.driver.getUsed(), 42);
    driverFault(twice, "USED_ID_INVALID");

    const jump = createLoopback<number>({ format: "split", num: NUM });
    jump.pool.bytesAt(jump.driver.addresses.device, 4).writeUInt16LE(NUM + 1, 2);
    driverFault(jump, "USED_IDX_JUMP");
    assert.deepEqual(jump.driver.detachUnused(), [], "detach clears the fault");
    assert.equal(jump.driver.getUsed(), undefined);
  });

  test("packed: USED_ID_INVALID for an id not in flight", () => {
    const lb = createLoopback<number>({ format: "packed", num: NUM });
    const d = lb.pool.bytesAt(lb.driver.addresses.desc, 16);
    d.writeUInt16LE(3, 12);
    d.writeUInt16LE(AVAIL | USED, 14);
    driverFault(lb, "USED_ID_INVALID");
  });

  test("bad sizes and requests", () => {
    const pool = createLoopback<number>({ format: "split", num: 4 }).pool;
    for (const num of [0, 3, 65536]) {
      assert.throws(
        () => new SplitDriverRing({ num, pool, eventIdx: false, indirect: false }),
        /QUEUE_SIZE_INVALID/,
      );
    }
    for (const num of [0, 40000]) {
      assert.throws(
        () => new PackedDriverRing({ num, pool, eventIdx: false, indirect: false }),
        /QUEUE_SIZE_INVALID/,
      );
    }
    const packed3 = new PackedDriverRing<number>({ num: 3, pool, eventIdx: false, indirect: false });
    assert.equal(packed3.num, 3);
    const lb = createLoopback<number>({ format: "split", num: 2 });
    assert.throws(() => lb.driver.add(new BufferList(), 1), /BAD_REQUEST/);
    const three = new BufferList().in(0x4000_0000, 8).in(0x4000_0000, 8).in(0x4000_0000, 8);
    assert.throws(() => lb.driver.add(three, 1), /BAD_REQUEST/);
    assert.throws(() => new BufferList().in(1, 1).out(1, 1), /BAD_REQUEST/);
    assert.throws(() => new BufferList().in(-1, 1), /BAD_REQUEST/);
    assert.throws(() => new BufferList(1).in(1, 1).in(2, 2), /BAD_REQUEST/);
    assert.equal(new BufferList().in(2 ** 40 + 5, 1).addr(0), 2 ** 40 + 5);
  });
});

/** xorshift32: a seeded source so a failure replays. */
function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

test("random bytes in the rings: only typed faults, never a hang, segments inside the pool", () => {
  for (const format of ["split", "packed"] as const) {
    const next = rng(format === "split" ? 0x1234567 : 0x7654321);
    for (let round = 0; round < 2000; round++) {
      const lb = createLoopback<number>({ format, num: NUM, iotlbEntries: 4, poolSize: 64 * 1024 });
      const a = lb.driver.addresses;
      const rings = [
        lb.pool.bytesAt(a.desc, 16 * NUM),
        lb.pool.bytesAt(a.driver, format === "split" ? 6 + 2 * NUM : 4),
      ];
      for (const r of rings) for (let i = 0; i < r.length; i++) r[i] = next() & 0xff;
      // Point some addresses into the pool so chains get past translation now and then.
      for (let i = 0; i < NUM; i += 2) rings[0].writeUInt32LE(0x4000_0000 + (next() % 0x10000), 16 * i);
      for (let i = 0; i < NUM; i++)
        rings[0].writeUInt32LE(next() & 1 ? 0 : rings[0].readUInt32LE(16 * i + 4), 16 * i + 4);
      const chain = new Chain(64);
      for (let k = 0; k < 4; k++) {
        let got: boolean;
        try {
          got = lb.device.pop(chain);
        } catch (err) {
          assert.ok(err instanceof RingError || err instanceof DmaFault, `untyped error: ${err}`);
          break;
        }
        if (!got) break;
        for (const segs of [chain.readable, chain.writable]) {
          for (let i = 0; i < segs.count; i++) {
            assert.equal(segs.regions[i], lb.pool.region);
            assert.ok(segs.offsets[i] + segs.lengths[i] <= lb.pool.size);
          }
        }
      }
    }
  }
});

describe("notifications and state", () => {
  for (const format of ["split", "packed"] as const) {
    test(`${format}: suppression both ways, with and without event index`, () => {
      for (const eventIdx of [false, true]) {
        const lb = createLoopback<number>({ format, num: NUM, eventIdx });
        const b = new BufferList().in(buf(lb), 8);
        const chain = new Chain();
        lb.device.disableNotify();
        lb.driver.add(b, 1);
        // Packed rings say DISABLE in either mode. Split rings with event index cannot switch kicks off:
        // the device's avail_event stays at 0, which this first buffer crosses, so the driver kicks.
        const splitEvent = format === "split" && eventIdx;
        assert.equal(lb.driver.publishAvail(), splitEvent);
        assert.equal(lb.device.enableNotify(), true, "a buffer arrived while notifications were off");
        assert.equal(lb.device.pop(chain), true);
        assert.equal(lb.device.enableNotify(), false);
        lb.driver.add(b, 2);
        assert.equal(lb.driver.publishAvail(), true, "enabled again: kick");
        lb.device.push(chain, 0);
        assert.equal(lb.device.publishUsed(), true, "the first publish always notifies");
        assert.equal(lb.driver.getUsed(), 1);
        lb.driver.disableCallbacks();
        assert.equal(lb.device.pop(chain), true);
        lb.device.push(chain, 0);
        assert.equal(
          lb.device.publishUsed(),
          splitEvent,
          "suppressed, except split's used_event being crossed",
        );
        assert.equal(lb.driver.enableCallbacks(), true, "a used buffer is already pending");
        assert.equal(lb.driver.getUsed(), 2);
        assert.equal(lb.driver.enableCallbacks(), false);
        assert.equal(lb.device.publishUsed(), false, "nothing new");
      }
    });

    test(`${format}: state moves to a new device ring mid-stream; detachUnused returns what is in flight`, () => {
      const lb = createLoopback<number>({ format, num: NUM, eventIdx: true });
      const b = new BufferList().in(buf(lb), 8);
      const chain = new Chain();
      for (let round = 0; round < 3 * NUM + 3; round++) {
        lb.driver.add(b, round);
        lb.driver.publishAvail();
        assert.equal(lb.device.pop(chain), true);
        lb.device.push(chain, round);
        lb.device.publishUsed();
        assert.equal(lb.driver.getUsed(), round);
        assert.equal(lb.driver.usedLen, round);
      }
      lb.driver.add(b, 100);
      lb.driver.add(b, 101);
      lb.driver.publishAvail();
      assert.equal(lb.device.pop(chain), true);
      const state = lb.device.getState();
      const Ring = format === "split" ? SplitDeviceRing : PackedDeviceRing;
      const moved = new Ring({
        num: NUM,
        addresses: lb.driver.addresses,
        ringSpace: lb.space,
        eventIdx: true,
      });
      moved.setState(state);
      moved.push(chain, 7);
      const second = new Chain();
      assert.equal(moved.pop(second), true, "the new ring continues where the old one stopped");
      assert.equal(moved.pop(new Chain()), false, "nothing doubled");
      moved.publishUsed();
      assert.equal(lb.driver.getUsed(), 100);
      assert.equal(lb.driver.inFlight, 1);
      assert.deepEqual(lb.driver.detachUnused(), [101]);
      assert.equal(lb.driver.numFree, NUM);
      if (moved instanceof SplitDeviceRing)
        assert.equal(moved.usedIdxFromRing(), 0, "detach zeroed the rings");
    });

    test(`${format}: indirect requests carry every buffer through one descriptor`, () => {
      const lb = createLoopback<number>({ format, num: 2, indirect: true, maxIndirect: 4 });
      const bufs = new BufferList().out(buf(lb), 4).in(buf(lb), 5).in(buf(lb), 6);
      assert.equal(lb.driver.add(bufs, 1), true);
      assert.equal(lb.driver.numFree, 1, "one ring slot for three buffers");
      lb.driver.publishAvail();
      const chain = new Chain();
      assert.equal(lb.device.pop(chain), true);
      assert.deepEqual([chain.readLen, chain.writeLen, chain.descCount], [4, 11, 1]);
      lb.device.push(chain, 11);
      lb.device.publishUsed();
      assert.equal(lb.driver.getUsed(), 1);
      assert.equal(lb.driver.numFree, 2);
    });
  }

  test("a remap of the ring memory is picked up; an unmapped ring faults", () => {
    const lb = createLoopback<number>({ format: "split", num: NUM });
    lb.iotlb.unmap(lb.pool.iovaBase, lb.pool.size);
    lb.driver.add(new BufferList().in(lb.pool.iovaBase + 0x8000, 8), 1);
    lb.driver.publishAvail();
    assert.throws(
      () => lb.device.pop(new Chain()),
      (e) => e instanceof DmaFault && e.code === "IOTLB_MISS",
    );
  });
});
