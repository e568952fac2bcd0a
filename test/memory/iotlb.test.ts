// Iotlb: range splitting on map and unmap, lookups at the edges, atomic batches and the generation counter,
// and every malformed request rejected with IOTLB_INVALID before anything changes.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ACCESS_READ,
  AddressSpace,
  DmaFault,
  IOVA_LAST,
  Iotlb,
  MemoryError,
  PERM_RO,
  PERM_RW,
  PERM_WO,
  type Perm,
  SharedMemoryRegion,
} from "../../src/memory/index.js";

const PAGE = 0x1000;

function memoryError(code: string) {
  return (err: unknown) => {
    assert.ok(err instanceof MemoryError, `expected MemoryError, got ${err}`);
    assert.equal(err.name, "MemoryError");
    assert.equal(err.code, code);
    assert.ok(err.message.startsWith(`${code}: `), err.message);
    return true;
  };
}

/** [first, last, region name, offset, perm] of every published entry. */
function ranges(t: Iotlb): [number, number, string, number, number][] {
  return t.entries().map((e) => [e.first, e.last, e.region.name, e.offset, e.perm]);
}

/** The parallel arrays the hot path reads must always agree with entries(). */
function assertConsistent(t: Iotlb): void {
  const e = t.entries();
  assert.equal(t.size, e.length);
  assert.deepEqual(
    t.firsts,
    e.map((x) => x.first),
  );
  assert.deepEqual(
    t.lasts,
    e.map((x) => x.last),
  );
  assert.deepEqual(
    t.offsets,
    e.map((x) => x.offset),
  );
  assert.deepEqual(
    t.perms,
    e.map((x) => x.perm),
  );
  assert.deepEqual(
    t.regions,
    e.map((x) => x.region),
  );
  for (let i = 1; i < e.length; i++) assert.ok(e[i - 1].last < e[i].first, "sorted, disjoint");
}

describe("Iotlb map and unmap", () => {
  const r = new SharedMemoryRegion(1 << 20, "r");
  const s = new SharedMemoryRegion(1 << 16, "s");

  test("a fresh IOTLB is empty and misses everything", () => {
    const t = new Iotlb("fresh");
    assert.equal(t.name, "fresh");
    assert.equal(new Iotlb().name, "iotlb");
    assert.equal(t.size, 0);
    assert.deepEqual(t.entries(), []);
    assert.equal(t.batching, false);
    for (const iova of [0, 1, PAGE, 2 ** 32, IOVA_LAST]) {
      assert.equal(t.find(iova), -1);
      assert.equal(t.lookup(iova), undefined);
    }
    assert.equal(t.overlaps(0, IOVA_LAST), false);
    assert.throws(
      () => new AddressSpace(t).translate(0x1234, 1, ACCESS_READ),
      (e: unknown) => e instanceof DmaFault && e.code === "IOTLB_MISS" && e.iova === 0x1234,
    );
  });

  test("lookup and find at the first byte, the last byte and one past the end", () => {
    const t = new Iotlb();
    t.map(0x10000, 0x3000, r, 0x200, PERM_RO);
    t.map(0x20000, 0x1000, s, 0x100, PERM_WO);
    assertConsistent(t);
    assert.equal(t.find(0xffff), -1, "one before the first entry");
    assert.equal(t.find(0x10000), 0);
    assert.equal(t.find(0x12fff), 0);
    assert.equal(t.find(0x13000), -1, "one past the first entry (a hole)");
    assert.equal(t.find(0x1ffff), -1);
    assert.equal(t.find(0x20000), 1);
    assert.equal(t.find(0x20fff), 1);
    assert.equal(t.find(0x21000), -1, "one past the last entry");
    const e = t.lookup(0x10000);
    assert.equal(e?.region, r);
    assert.equal(e?.offset, 0x200);
    assert.equal(e?.perm, PERM_RO);
    assert.equal(t.lookup(0x20fff)?.region, s);
    assert.equal(t.lookup(0x21000), undefined);
  });

  test("find() is right among many entries (binary search)", () => {
    const t = new Iotlb();
    t.begin();
    // 64 one-page entries with one-page holes between them, mapped in reverse order.
    for (let k = 63; k >= 0; k--) t.map(k * 2 * PAGE, PAGE, r, k * PAGE, PERM_RW);
    t.commit();
    assertConsistent(t);
    assert.equal(t.size, 64);
    for (let k = 0; k < 64; k++) {
      assert.equal(t.find(k * 2 * PAGE), k);
      assert.equal(t.find(k * 2 * PAGE + PAGE - 1), k);
      assert.equal(t.find(k * 2 * PAGE + PAGE), -1);
      assert.equal(t.lookup(k * 2 * PAGE + 5)?.offset, k * PAGE);
    }
  });

  test("unmapping the middle of an entry leaves two pieces with the right offsets", () => {
    const t = new Iotlb();
    t.map(0x10000, 0x4000, r, 0x800, PERM_RW);
    t.unmap(0x11000, 0x2000);
    assert.deepEqual(ranges(t), [
      [0x10000, 0x10fff, "r", 0x800, PERM_RW],
      [0x13000, 0x13fff, "r", 0x3800, PERM_RW],
    ]);
    assertConsistent(t);
    assert.equal(t.lookup(0x11000), undefined);
    assert.equal(t.lookup(0x12fff), undefined);
    // The right piece still translates to the same host bytes as before the cut.
    r.bytes[0x3800 + 0x10] = 0x77;
    assert.deepEqual([...new AddressSpace(t).read(0x13010, 1)], [0x77]);
  });

  test("unmapping the head or the tail of an entry trims it", () => {
    const t = new Iotlb();
    t.map(0x10000, 0x4000, r, 0, PERM_RW);
    t.unmap(0xf000, 0x2000); // starts before the entry
    assert.deepEqual(ranges(t), [[0x11000, 0x13fff, "r", 0x1000, PERM_RW]]);
    t.unmap(0x13000, 0x5000); // runs past its end
    assert.deepEqual(ranges(t), [[0x11000, 0x12fff, "r", 0x1000, PERM_RW]]);
  });

  test("one unmap across several entries and holes removes exactly the range", () => {
    const t = new Iotlb();
    t.map(0x0000, 0x2000, r, 0, PERM_RW);
    t.map(0x3000, 0x1000, s, 0, PERM_RO);
    t.map(0x5000, 0x2000, r, 0x10000, PERM_WO);
    t.unmap(0x1000, 0x5000); // [0x1000, 0x5fff]
    assert.deepEqual(ranges(t), [
      [0x0000, 0x0fff, "r", 0, PERM_RW],
      [0x6000, 0x6fff, "r", 0x11000, PERM_WO],
    ]);
    assertConsistent(t);
    t.unmap(0x100000, 0x1000); // nothing there: no change
    assert.equal(t.size, 2);
    t.unmap(0, 0x7000);
    assert.equal(t.size, 0);
  });

  test("mapping over part of an entry replaces only that part", () => {
    const t = new Iotlb();
    t.map(0x0000, 0x4000, r, 0, PERM_RW);
    t.map(0x1000, 0x1000, s, 0x3000, PERM_RO);
    assert.deepEqual(ranges(t), [
      [0x0000, 0x0fff, "r", 0, PERM_RW],
      [0x1000, 0x1fff, "s", 0x3000, PERM_RO],
      [0x2000, 0x3fff, "r", 0x2000, PERM_RW],
    ]);
    // Over the tail of one entry and the head of the next.
    t.map(0x1800, 0x1000, r, 0x50000, PERM_WO);
    assert.deepEqual(ranges(t), [
      [0x0000, 0x0fff, "r", 0, PERM_RW],
      [0x1000, 0x17ff, "s", 0x3000, PERM_RO],
      [0x1800, 0x27ff, "r", 0x50000, PERM_WO],
      [0x2800, 0x3fff, "r", 0x2800, PERM_RW],
    ]);
    assertConsistent(t);
    // Exactly over an entry: replaced in place.
    t.map(0x1000, 0x800, r, 0x90000, PERM_RW);
    assert.deepEqual(t.lookup(0x1000)?.offset, 0x90000);
    assert.equal(t.size, 4);
    // Covering everything: one entry left.
    t.map(0, 0x5000, s, 0, PERM_RO);
    assert.deepEqual(ranges(t), [[0, 0x4fff, "s", 0, PERM_RO]]);
  });

  test("entries() is a copy: changing it does not change the map", () => {
    const t = new Iotlb();
    t.map(0, PAGE, r, 0, PERM_RW);
    const copy = t.entries();
    copy.pop();
    assert.equal(copy.length, 0);
    assert.equal(t.size, 1);
    assert.equal(t.entries().length, 1);
  });

  test("overlaps() tells whether any byte of the range is mapped", () => {
    const t = new Iotlb();
    t.map(0x10000, 0x1000, r, 0, PERM_RW);
    assert.equal(t.overlaps(0x10000, 1), true);
    assert.equal(t.overlaps(0x10fff, 1), true);
    assert.equal(t.overlaps(0xffff, 1), false);
    assert.equal(t.overlaps(0xffff, 2), true);
    assert.equal(t.overlaps(0x11000, 0x1000), false);
    assert.equal(t.overlaps(0, IOVA_LAST), true);
    assert.throws(() => t.overlaps(0, 0), memoryError("IOTLB_INVALID"));
  });

  test("clear() removes everything and bumps the generation", () => {
    const t = new Iotlb();
    t.map(0, PAGE, r, 0, PERM_RW);
    t.map(2 * PAGE, PAGE, s, 0, PERM_RO);
    const g = t.generation;
    t.clear();
    assert.equal(t.size, 0);
    assert.deepEqual(t.entries(), []);
    assert.deepEqual(t.firsts, []);
    assert.equal(t.find(0), -1);
    assert.notEqual(t.generation, g);
  });

  test("the top of the IOVA space is mappable up to IOVA_LAST and no further", () => {
    assert.equal(IOVA_LAST, 2 ** 53 - 1);
    const t = new Iotlb();
    t.map(IOVA_LAST - PAGE + 1, PAGE, r, 0, PERM_RW);
    assert.equal(t.find(IOVA_LAST), 0);
    assert.equal(t.lookup(IOVA_LAST)?.last, IOVA_LAST);
    t.map(IOVA_LAST, 1, s, 5, PERM_RO);
    assert.equal(t.lookup(IOVA_LAST)?.offset, 5);
    assert.throws(() => t.map(IOVA_LAST, 3, r, 0, PERM_RW), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.unmap(IOVA_LAST - 1, 4), memoryError("IOTLB_INVALID"));
  });

  test("a range whose last byte is exactly 2^53 is refused", () => {
    const t = new Iotlb();
    assert.throws(() => t.map(IOVA_LAST, 2, r, 0, PERM_RW), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.map(2 ** 53 - PAGE, PAGE + 1, r, 0, PERM_RW), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.unmap(IOVA_LAST, 2), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.overlaps(IOVA_LAST, 2), memoryError("IOTLB_INVALID"));
    assert.equal(t.size, 0);
  });
});

describe("Iotlb validation", () => {
  const r = new SharedMemoryRegion(0x10000, "small");

  const bad: [string, () => void][] = [];
  const t = new Iotlb("strict");
  bad.push(
    ["size 0", () => t.map(0, 0, r, 0, PERM_RW)],
    ["negative size", () => t.map(0, -PAGE, r, 0, PERM_RW)],
    ["fractional size", () => t.map(0, 1.5, r, 0, PERM_RW)],
    ["negative iova", () => t.map(-PAGE, PAGE, r, 0, PERM_RW)],
    ["fractional iova", () => t.map(0.5, PAGE, r, 0, PERM_RW)],
    ["NaN iova", () => t.map(Number.NaN, PAGE, r, 0, PERM_RW)],
    ["iova past 2^53", () => t.map(2 ** 53, 1, r, 0, PERM_RW)],
    ["range overflowing 2^53", () => t.map(2 ** 53 - PAGE, 2 * PAGE, r, 0, PERM_RW)],
    ["size past 2^53", () => t.map(0, 2 ** 53 + 2, r, 0, PERM_RW)],
    ["offset + size past the region", () => t.map(0, PAGE, r, r.size - PAGE + 1, PERM_RW)],
    ["size larger than the region", () => t.map(0, r.size + 1, r, 0, PERM_RW)],
    ["negative offset", () => t.map(0, PAGE, r, -1, PERM_RW)],
    ["fractional offset", () => t.map(0, PAGE, r, 0.25, PERM_RW)],
    ["perm 0", () => t.map(0, PAGE, r, 0, 0 as Perm)],
    ["perm 4", () => t.map(0, PAGE, r, 0, 4 as Perm)],
    ["perm 1.5", () => t.map(0, PAGE, r, 0, 1.5 as Perm)],
    ["perm NaN", () => t.map(0, PAGE, r, 0, Number.NaN as Perm)],
    ["unmap size 0", () => t.unmap(0, 0)],
    ["unmap negative size", () => t.unmap(PAGE, -1)],
    ["unmap overflowing 2^53", () => t.unmap(2 ** 53 - 4, 8)],
  );
  for (const [what, call] of bad) {
    test(`IOTLB_INVALID: ${what}, and nothing changes`, () => {
      t.map(0x100000, PAGE, r, 0, PERM_RW);
      const before = ranges(t);
      const g = t.generation;
      assert.throws(call, memoryError("IOTLB_INVALID"));
      assert.deepEqual(ranges(t), before);
      assert.equal(t.generation, g);
    });
  }

  test("the whole region is mappable (offset + size == region size)", () => {
    const u = new Iotlb();
    u.map(0, r.size, r, 0, PERM_RW);
    u.map(0x100000, PAGE, r, r.size - PAGE, PERM_RO);
    assert.equal(u.size, 2);
  });

  test("a rejected map inside a batch leaves the batch as it was", () => {
    const u = new Iotlb();
    u.begin();
    u.map(0, PAGE, r, 0, PERM_RW);
    assert.throws(() => u.map(PAGE, PAGE, r, 0, 7 as Perm), memoryError("IOTLB_INVALID"));
    u.commit();
    assert.deepEqual(ranges(u), [[0, PAGE - 1, "small", 0, PERM_RW]]);
  });
});

describe("Iotlb batches", () => {
  const r = new SharedMemoryRegion(0x40000, "r");

  test("translations between begin and commit see the old map; after commit the new one", () => {
    const t = new Iotlb();
    t.map(0x1000, 0x1000, r, 0x0000, PERM_RW);
    r.bytes[0x0000] = 0xaa;
    r.bytes[0x8000] = 0xbb;
    const space = new AddressSpace(t);
    const g0 = t.generation;
    t.begin();
    assert.equal(t.batching, true);
    t.unmap(0x1000, 0x1000);
    t.map(0x1000, 0x1000, r, 0x8000, PERM_RO);
    t.map(0x5000, 0x1000, r, 0x9000, PERM_RW);
    // Readers still see the old, published map.
    assert.equal(t.size, 1);
    assert.deepEqual([...space.read(0x1000, 1)], [0xaa]);
    assert.equal(t.lookup(0x1000)?.offset, 0);
    assert.equal(t.find(0x5000), -1);
    assert.equal(t.generation, g0, "no generation change while the batch is open");
    // overlaps() answers for the batch being built (vhost-vdpa asks it before adding a map).
    assert.equal(t.overlaps(0x5000, 1), true);
    t.commit();
    assert.equal(t.batching, false);
    assert.notEqual(t.generation, g0, "one bump at commit");
    assert.deepEqual([...space.read(0x1000, 1)], [0xbb]);
    assert.equal(t.lookup(0x1000)?.perm, PERM_RO);
    assert.equal(t.find(0x5000), 1);
    assertConsistent(t);
  });

  test("the generation moves exactly once per commit and once per unbatched update", () => {
    const t = new Iotlb();
    const gens: number[] = [t.generation];
    t.begin();
    for (let k = 0; k < 10; k++) t.map(k * PAGE, PAGE, r, k * PAGE, PERM_RW);
    t.unmap(0, PAGE);
    t.clear();
    t.map(0, PAGE, r, 0, PERM_RW);
    gens.push(t.generation);
    t.commit();
    gens.push(t.generation);
    t.map(PAGE, PAGE, r, 0, PERM_RW);
    gens.push(t.generation);
    t.unmap(0, PAGE);
    gens.push(t.generation);
    assert.equal(gens[1], gens[0], "nothing published during the batch");
    assert.ok(gens[2] > gens[1]);
    assert.ok(gens[3] > gens[2]);
    assert.ok(gens[4] > gens[3]);
    assert.deepEqual(ranges(t), [[PAGE, 2 * PAGE - 1, "r", 0, PERM_RW]]);
  });

  test("generations are unique across IOTLBs", () => {
    const a = new Iotlb();
    const b = new Iotlb();
    assert.notEqual(a.generation, b.generation);
    a.map(0, PAGE, r, 0, PERM_RW);
    assert.notEqual(a.generation, b.generation);
  });

  test("abort() drops the batch: the published map and generation stay", () => {
    const t = new Iotlb();
    t.map(0, PAGE, r, 0, PERM_RW);
    const before = ranges(t);
    const g = t.generation;
    t.begin();
    t.clear();
    t.map(0x10000, PAGE, r, 0, PERM_RO);
    t.abort();
    assert.equal(t.batching, false);
    assert.deepEqual(ranges(t), before);
    assert.equal(t.generation, g);
    assert.equal(t.overlaps(0x10000, 1), false, "the dropped batch is gone for overlaps() too");
    // After an abort a new batch can be opened, and a commit now needs a begin again.
    t.begin();
    t.commit();
    assert.throws(() => t.commit(), memoryError("IOTLB_BATCH"));
  });

  test("begin twice and commit without begin throw IOTLB_BATCH", () => {
    const t = new Iotlb("b");
    assert.throws(() => t.commit(), memoryError("IOTLB_BATCH"));
    t.begin();
    t.map(0, PAGE, r, 0, PERM_RW);
    assert.throws(() => t.begin(), memoryError("IOTLB_BATCH"));
    // The failed begin did not throw away the open batch.
    assert.equal(t.batching, true);
    t.commit();
    assert.equal(t.size, 1);
    assert.throws(() => t.commit(), memoryError("IOTLB_BATCH"));
  });

  test("an empty batch still publishes (and bumps the generation) at commit", () => {
    const t = new Iotlb();
    const g = t.generation;
    t.begin();
    t.commit();
    assert.notEqual(t.generation, g);
    assert.equal(t.size, 0);
  });

  test("the published arrays are replaced, not mutated, so a reader holding them keeps a stable map", () => {
    const t = new Iotlb();
    t.map(0, PAGE, r, 0, PERM_RW);
    const firsts = t.firsts;
    const entries = t.entries();
    t.map(PAGE, PAGE, r, PAGE, PERM_RW);
    assert.deepEqual(firsts, [0]);
    assert.equal(entries.length, 1);
    assert.deepEqual(t.firsts, [0, PAGE]);
  });
});

test("generations are unique across IOTLBs, so re-attaching an address space is always noticed", () => {
  const r = new SharedMemoryRegion(4096, "r");
  const a = new Iotlb();
  const b = new Iotlb();
  a.map(0, 4096, r, 0, PERM_RW);
  b.map(0, 4096, r, 0, PERM_RW);
  assert.notEqual(a.generation, b.generation);
  const space = new AddressSpace(a);
  const before = space.generation;
  space.attach(b);
  assert.notEqual(space.generation, before);
});
