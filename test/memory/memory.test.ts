// The memory layer: IOTLB range splitting and atomic batches, translation faults, the DMA pool's
// allocator and its accounting.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ACCESS_READ,
  ACCESS_WRITE,
  AddressSpace,
  DmaFault,
  DmaPool,
  Iotlb,
  MemoryError,
  PERM_RO,
  PERM_RW,
  PERM_WO,
  SegmentList,
  SharedMemoryRegion,
} from "../../src/memory/index.js";

function memoryError(code: string) {
  return (err: unknown) => err instanceof MemoryError && err.code === code;
}

function fault(code: string, iova?: number) {
  return (err: unknown) =>
    err instanceof DmaFault && err.code === code && (iova === undefined || err.iova === iova);
}

const ranges = (t: Iotlb) => t.entries().map((e) => [e.first, e.last, e.offset, e.perm]);

describe("Iotlb", () => {
  const r = new SharedMemoryRegion(1 << 20, "r");

  test("an empty IOTLB misses everything", () => {
    const t = new Iotlb();
    assert.equal(t.lookup(0), undefined);
    assert.equal(t.find(0x1000), -1);
    assert.throws(() => new AddressSpace(t).translate(0, 1, ACCESS_READ), fault("IOTLB_MISS", 0));
  });

  test("unmapping the middle of an entry leaves two with the right offsets", () => {
    const t = new Iotlb();
    t.map(0x10000, 0x3000, r, 0x100, PERM_RW);
    t.unmap(0x11000, 0x1000);
    assert.deepEqual(ranges(t), [
      [0x10000, 0x10fff, 0x100, PERM_RW],
      [0x12000, 0x12fff, 0x2100, PERM_RW],
    ]);
    assert.equal(t.find(0x11800), -1);
    assert.equal(t.lookup(0x12fff)?.offset, 0x2100);
    assert.equal(t.lookup(0x13000), undefined);
  });

  test("mapping over part of an entry replaces that part only", () => {
    const t = new Iotlb();
    t.map(0x0, 0x4000, r, 0, PERM_RW);
    t.map(0x1000, 0x1000, r, 0x8000, PERM_RO);
    assert.deepEqual(ranges(t), [
      [0x0, 0xfff, 0, PERM_RW],
      [0x1000, 0x1fff, 0x8000, PERM_RO],
      [0x2000, 0x3fff, 0x2000, PERM_RW],
    ]);
    assert.equal(t.overlaps(0x3fff, 1), true);
    assert.equal(t.overlaps(0x4000, 0x1000), false);
    t.clear();
    assert.equal(t.size, 0);
  });

  test("a batch is invisible until commit, then visible at once; abort drops it", () => {
    const t = new Iotlb();
    const space = new AddressSpace(t);
    const g0 = t.generation;
    t.begin();
    assert.equal(t.batching, true);
    t.map(0x1000, 0x1000, r, 0, PERM_RW);
    t.map(0x2000, 0x1000, r, 0x1000, PERM_RW);
    assert.equal(t.overlaps(0x1000, 1), true, "overlaps() sees the open batch");
    assert.throws(() => space.translate(0x1000, 8, ACCESS_READ), fault("IOTLB_MISS"));
    assert.equal(t.generation, g0);
    t.commit();
    assert.notEqual(t.generation, g0);
    assert.equal(
      space.translate(0x1000, 0x2000, ACCESS_READ).count,
      1,
      "adjacent pieces of one region merge",
    );
    const g1 = t.generation;
    t.begin();
    t.unmap(0x1000, 0x2000);
    t.abort();
    assert.equal(t.generation, g1);
    assert.equal(t.size, 2);
  });

  test("batch misuse and bad ranges are typed errors", () => {
    const t = new Iotlb();
    assert.throws(() => t.commit(), memoryError("IOTLB_BATCH"));
    t.begin();
    assert.throws(() => t.begin(), memoryError("IOTLB_BATCH"));
    t.abort();
    assert.throws(() => t.map(0, 0, r, 0, PERM_RW), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.map(-1, 4096, r, 0, PERM_RW), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.map(2 ** 53 - 10, 4096, r, 0, PERM_RW), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.map(0, 4096, r, r.size - 100, PERM_RW), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.map(0, 4096, r, 0, 0 as never), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.map(0, 4096, r, 0, 4 as never), memoryError("IOTLB_INVALID"));
    assert.throws(() => t.unmap(0, 0), memoryError("IOTLB_INVALID"));
    assert.equal(t.size, 0);
  });

  test("generations are unique across IOTLBs, so re-attaching a space is always noticed", () => {
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
});

describe("AddressSpace", () => {
  const r1 = new SharedMemoryRegion(0x10000, "r1");
  const r2 = new SharedMemoryRegion(0x10000, "r2");
  const t = new Iotlb();
  t.map(0x1000, 0x1000, r1, 0x800, PERM_RW);
  t.map(0x2000, 0x1000, r2, 0x0, PERM_RO);
  t.map(0x3000, 0x1000, r1, 0x4000, PERM_WO);
  const space = new AddressSpace(t);

  test("a buffer crossing entries of different regions gives several segments", () => {
    const segs = space.translate(0x1f00, 0x200, ACCESS_READ);
    assert.equal(segs.count, 2);
    assert.deepEqual([segs.regions[0].name, segs.offsets[0], segs.lengths[0]], ["r1", 0x1700, 0x100]);
    assert.deepEqual([segs.regions[1].name, segs.offsets[1], segs.lengths[1]], ["r2", 0, 0x100]);
    assert.equal(segs.total, 0x200);
  });

  test("faults: miss, permission both ways, overflow, too many segments", () => {
    assert.throws(() => space.translate(0x4000, 1, ACCESS_READ), fault("IOTLB_MISS", 0x4000));
    assert.throws(() => space.translate(0x1ff0, 0x20, ACCESS_WRITE), fault("IOTLB_PERM", 0x1ff0));
    assert.throws(() => space.translate(0x3000, 4, ACCESS_READ), fault("IOTLB_PERM"));
    assert.throws(() => space.translate(2 ** 53 - 2, 4, ACCESS_READ), fault("ADDR_OVERFLOW"));
    const one = new SegmentList(1);
    assert.throws(() => space.translateInto(0x1f00, 0x200, ACCESS_READ, one), fault("SEGMENTS_EXHAUSTED"));
    const err = (() => {
      try {
        space.translate(0x3ff0, 0x20, ACCESS_WRITE);
      } catch (e) {
        return e as DmaFault;
      }
    })();
    assert.ok(err instanceof DmaFault);
    assert.equal(err.len, 0x20);
    assert.match(err.message, /IOTLB_MISS: write of 32 bytes at iova 0x3ff0 \(at 0x4000\)/);
  });

  test("zero length appends nothing", () => {
    const segs = new SegmentList(2);
    space.translateInto(0x9999999, 0, ACCESS_READ, segs);
    assert.equal(segs.count, 0);
  });

  test("contiguous() gives one aligned piece or NOT_CONTIGUOUS", () => {
    assert.deepEqual(space.contiguous(0x1000, 0x100, ACCESS_READ, 16).offset, 0x800);
    assert.throws(() => space.contiguous(0x1f00, 0x200, ACCESS_READ, 2), fault("NOT_CONTIGUOUS"));
    assert.throws(() => space.contiguous(0x1002, 0x10, ACCESS_READ, 4), fault("NOT_CONTIGUOUS"));
  });

  test("read/write helpers and segment copies move the right bytes", () => {
    space.write(0x1ffe, Uint8Array.of(1, 2)); // the write-only r1 page and RW share r1
    assert.deepEqual([...r1.bytes.subarray(0x17fe, 0x1800)], [1, 2]);
    r2.bytes.set([7, 8, 9], 0);
    assert.deepEqual([...space.read(0x1ffe, 5)], [1, 2, 7, 8, 9]);
    const segs = space.translate(0x1ffe, 5, ACCESS_READ);
    assert.deepEqual([...segs.view(1)], [7, 8, 9]);
    const out = new Uint8Array(8);
    assert.equal(segs.copyTo(out, 1, 4), 4);
    assert.deepEqual([...out.subarray(0, 5)], [0, 1, 2, 7, 8]);
    const dst = new SharedMemoryRegion(64, "dst");
    assert.equal(segs.copyToRegion(dst, 8, 16, 1), 4, "skip 1, then as many as the segments hold");
    assert.deepEqual([...dst.bytes.subarray(8, 12)], [2, 7, 8, 9]);
    const src = new SharedMemoryRegion(64, "src");
    src.bytes.set([5, 6, 7, 8, 9], 4);
    const rw = space.translate(0x1000, 0x1000, ACCESS_WRITE);
    assert.equal(rw.copyFromRegion(src, 4, 8), 8, "word copy path (aligned, small)");
    assert.deepEqual([...r1.bytes.subarray(0x800, 0x805)], [5, 6, 7, 8, 9]);
    assert.equal(rw.copyFromRegion(src, 5, 3), 3, "byte copy path (unaligned)");
    assert.deepEqual([...r1.bytes.subarray(0x800, 0x803)], [6, 7, 8]);
  });
});

describe("DmaPool", () => {
  test("alignment, zeroed blocks, accounting", () => {
    const pool = new DmaPool({ size: 64 * 1024, iovaBase: 0x20_0000 });
    const a = pool.alloc(10, 16);
    a.bytes.fill(0xff);
    const b = pool.alloc(100, 4096);
    assert.equal(a.iova % 16, 0);
    assert.equal(b.iova % 4096, 0);
    pool.release(a);
    const c = pool.alloc(10, 16);
    assert.ok(
      c.bytes.every((x) => x === 0),
      "a reused block is zeroed",
    );
    const s = pool.stats();
    assert.deepEqual([s.allocations, s.frees, s.liveBlocks, s.inUse], [3, 1, 2, 110]);
    assert.equal(s.peakInUse, 110);
    assert.equal(pool.bytesAt(b.iova, 4).length, 4);
    assert.throws(() => pool.bytesAt(pool.iovaBase + pool.size - 2, 4), memoryError("DMA_POOL_RANGE"));
  });

  test("exhaustion is counted; freeing coalesces so the whole pool fits again", () => {
    const pool = new DmaPool({ size: 16 * 1024 });
    const blocks = Array.from({ length: 4 }, () => pool.alloc(4096, 64));
    assert.throws(() => pool.alloc(1), memoryError("DMA_POOL_EXHAUSTED"));
    assert.equal(pool.stats().failures, 1);
    for (const i of [1, 3, 0, 2]) pool.release(blocks[i]);
    const all = pool.alloc(16 * 1024, 64);
    assert.equal(all.iova, pool.iovaBase);
    assert.throws(() => pool.release(blocks[1]), memoryError("DMA_POOL_BAD_FREE"), "inside a live block");
    pool.release(all.iova);
    assert.throws(() => pool.release(all.iova), memoryError("DMA_POOL_BAD_FREE"));
  });

  test("bad requests and bad construction", () => {
    const pool = new DmaPool({ size: 4096 });
    assert.throws(() => pool.alloc(0), memoryError("DMA_POOL_BAD_REQUEST"));
    assert.throws(() => pool.alloc(8, 3), memoryError("DMA_POOL_BAD_REQUEST"));
    assert.throws(() => new DmaPool({ size: 4096, iovaBase: 100 }), memoryError("REGION_INVALID"));
    const small = new SharedMemoryRegion(4096);
    assert.throws(() => new DmaPool({ size: 8192, region: small }), memoryError("REGION_INVALID"));
    assert.throws(() => new SharedMemoryRegion(0), memoryError("REGION_INVALID"));
    assert.throws(() => new SharedMemoryRegion(1.5), memoryError("REGION_INVALID"));
  });

  test("mapInto/unmapFrom put the whole pool in an IOTLB and take it out", () => {
    const pool = new DmaPool({ size: 8192, iovaBase: 0x4000 });
    const t = new Iotlb();
    pool.mapInto(t, PERM_RO);
    assert.deepEqual(ranges(t), [[0x4000, 0x5fff, 0, PERM_RO]]);
    pool.unmapFrom(t);
    assert.equal(t.size, 0);
  });
});
