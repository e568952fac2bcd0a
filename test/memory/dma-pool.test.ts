// DmaPool: aligned, zeroed allocations; exhaustion, bad frees and bad requests as typed errors; free-list
// coalescing; accounting; mapping into IOTLBs. SharedMemoryRegion's size checks.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ACCESS_READ,
  ACCESS_WRITE,
  AddressSpace,
  type DmaBuffer,
  DmaFault,
  DmaPool,
  Iotlb,
  MAX_REGION_SIZE,
  MemoryError,
  PERM_RO,
  PERM_RW,
  SharedMemoryRegion,
  u16View,
  u32View,
} from "../../src/memory/index.js";

function memoryError(code: string) {
  return (err: unknown) => {
    assert.ok(err instanceof MemoryError, `expected MemoryError, got ${err}`);
    assert.equal(err.name, "MemoryError");
    assert.equal(err.code, code);
    return true;
  };
}

describe("SharedMemoryRegion", () => {
  test("a region is zero-filled and offers bytes and words over the same memory", () => {
    const r = new SharedMemoryRegion(4096, "ring");
    assert.equal(r.name, "ring");
    assert.equal(r.size, 4096);
    assert.equal(r.bytes.length, 4096);
    assert.equal(r.words.length, 1024);
    assert.ok(r.buffer instanceof SharedArrayBuffer);
    assert.ok(r.bytes.every((b) => b === 0));
    r.words[1] = 0x04030201;
    assert.deepEqual([...r.bytes.subarray(4, 8)], [1, 2, 3, 4], "little-endian words over the bytes");
    assert.equal(new SharedMemoryRegion(10).name, "shm");
    assert.equal(new SharedMemoryRegion(10).words.length, 2, "words cover whole words only");
  });

  for (const size of [
    0,
    -1,
    -4096,
    1.5,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    MAX_REGION_SIZE + 1,
    2 ** 53,
  ]) {
    test(`REGION_INVALID for size ${size}`, () => {
      assert.throws(() => new SharedMemoryRegion(size), memoryError("REGION_INVALID"));
    });
  }

  test("u16View and u32View see the region at a byte offset", () => {
    const r = new SharedMemoryRegion(64);
    const v16 = u16View(r, 8, 4);
    const v32 = u32View(r, 16, 2);
    v16[1] = 0xbeef;
    v32[1] = 0xcafef00d;
    assert.equal(r.bytes.readUInt16LE(10), 0xbeef);
    assert.equal(r.bytes.readUInt32LE(20), 0xcafef00d);
    assert.equal(v16.length, 4);
    assert.equal(v32.length, 2);
  });
});

describe("DmaPool allocation", () => {
  test("defaults: name, IOVA base, one free block of the whole size", () => {
    const pool = new DmaPool({ size: 1 << 16 });
    assert.equal(pool.name, "dma-pool");
    assert.equal(pool.iovaBase, 0x1000_0000);
    assert.equal(pool.size, 1 << 16);
    assert.equal(pool.region.size, 1 << 16);
    assert.equal(pool.region.name, "dma-pool");
    const whole = pool.alloc(1 << 16, 4096);
    assert.equal(whole.iova, 0x1000_0000);
    assert.equal(whole.offset, 0);
  });

  for (const align of [1, 2, 16, 64, 4096, 8192]) {
    test(`IOVAs are aligned to ${align}, blocks do not overlap, bytes match iova`, () => {
      const pool = new DmaPool({ size: 1 << 20, iovaBase: 0x7000_1000, name: "p" });
      const got: DmaBuffer[] = [];
      // Misalign the free list first, then allocate with the alignment under test.
      got.push(pool.alloc(3, 1));
      for (let k = 0; k < 8; k++) {
        const b = pool.alloc(1 + k * 37, align);
        assert.equal(b.iova % align, 0, `iova 0x${b.iova.toString(16)} aligned to ${align}`);
        assert.equal(b.iova - pool.iovaBase, b.offset);
        assert.equal(b.size, 1 + k * 37);
        assert.equal(b.bytes.length, b.size);
        got.push(b);
      }
      got.sort((x, y) => x.offset - y.offset);
      for (let i = 1; i < got.length; i++) {
        assert.ok(got[i - 1].offset + got[i - 1].size <= got[i].offset, "no overlap");
      }
      const last = got[got.length - 1];
      last.bytes[0] = 0x5a;
      assert.equal(pool.bytesAt(last.iova, 1)[0], 0x5a, "bytes and bytesAt share memory");
      assert.equal(pool.region.bytes[last.offset], 0x5a);
    });
  }

  test("the default alignment is 64", () => {
    const pool = new DmaPool({ size: 4096 });
    pool.alloc(1);
    assert.equal(pool.alloc(1).iova % 64, 0);
    assert.equal(pool.alloc(1).offset, 128);
  });

  test("allocations are zero-filled, also when they reuse freed memory", () => {
    const pool = new DmaPool({ size: 8192 });
    const a = pool.alloc(4096);
    assert.ok(a.bytes.every((x) => x === 0));
    a.bytes.fill(0xff);
    pool.release(a);
    const b = pool.alloc(100, 16);
    assert.equal(b.offset, 0, "first fit reuses the freed block");
    assert.ok(b.bytes.every((x) => x === 0));
    assert.equal(pool.region.bytes[100], 0xff, "only the allocated bytes are cleared");
  });

  test("exhaustion throws DMA_POOL_EXHAUSTED and counts a failure; the pool is unchanged", () => {
    const pool = new DmaPool({ size: 4096, name: "tiny" });
    const a = pool.alloc(4000, 1);
    const before = pool.stats();
    assert.throws(
      () => pool.alloc(97, 1),
      (e: unknown) => memoryError("DMA_POOL_EXHAUSTED")(e) && /tiny/.test(String(e)),
    );
    assert.throws(() => pool.alloc(8192), memoryError("DMA_POOL_EXHAUSTED"));
    const after = pool.stats();
    assert.equal(after.failures, before.failures + 2);
    assert.equal(after.allocations, before.allocations);
    assert.equal(after.inUse, before.inUse);
    // What does fit still fits.
    assert.equal(pool.alloc(96, 1).offset, 4000);
    pool.release(a);
  });

  test("exhaustion by alignment: room exists but not at an aligned address", () => {
    const pool = new DmaPool({ size: 8192 });
    pool.alloc(1, 1); // the free block now starts at offset 1
    // 4096 bytes aligned to 4096 need offset 4096..8191: that fits exactly.
    assert.equal(pool.alloc(4096, 4096).offset, 4096);
    assert.throws(() => pool.alloc(16, 4096), memoryError("DMA_POOL_EXHAUSTED"));
    assert.equal(pool.stats().failures, 1);
    // The padding left before the aligned block is still allocatable.
    assert.equal(pool.alloc(4095, 1).offset, 1);
  });

  const badRequests: [number, number][] = [
    [0, 64],
    [-1, 64],
    [1.5, 64],
    [Number.NaN, 64],
    [16, 3],
    [16, 0],
    [16, -4],
    [16, 24],
  ];
  for (const [size, align] of badRequests) {
    test(`DMA_POOL_BAD_REQUEST for size ${size}, align ${align}`, () => {
      const pool = new DmaPool({ size: 4096 });
      assert.throws(() => pool.alloc(size, align), memoryError("DMA_POOL_BAD_REQUEST"));
      assert.equal(pool.stats().allocations, 0);
      assert.equal(pool.stats().failures, 0, "a bad request is not an exhaustion");
    });
  }
});

describe("DmaPool release and coalescing", () => {
  function fill(pool: DmaPool, parts: number): DmaBuffer[] {
    const out: DmaBuffer[] = [];
    const size = pool.size / parts;
    for (let k = 0; k < parts; k++) out.push(pool.alloc(size, 1));
    assert.throws(() => pool.alloc(1, 1), memoryError("DMA_POOL_EXHAUSTED"));
    return out;
  }

  const orders: [string, number[]][] = [
    ["in order", [0, 1, 2, 3]],
    ["reverse", [3, 2, 1, 0]],
    ["middle last (merges on both sides)", [0, 2, 3, 1]],
    ["outside in", [0, 3, 1, 2]],
  ];
  for (const [what, order] of orders) {
    test(`freeing every block (${what}) lets a full-size allocation succeed again`, () => {
      const pool = new DmaPool({ size: 4096 });
      const blocks = fill(pool, 4);
      for (const k of order) pool.release(blocks[k]);
      const whole = pool.alloc(4096, 1);
      assert.equal(whole.offset, 0);
      assert.equal(pool.stats().liveBlocks, 1);
    });
  }

  test("a partly freed pool satisfies what fits a coalesced hole, not more", () => {
    const pool = new DmaPool({ size: 4096 });
    const [a, b, c, d] = fill(pool, 4);
    pool.release(b);
    pool.release(c);
    assert.equal(pool.alloc(2048, 1).offset, 1024, "b and c merged into one hole");
    assert.throws(() => pool.alloc(1, 1), memoryError("DMA_POOL_EXHAUSTED"));
    pool.release(a);
    pool.release(d);
    assert.throws(() => pool.alloc(2048, 1), memoryError("DMA_POOL_EXHAUSTED"));
    assert.equal(pool.alloc(1024, 1).offset, 0);
  });

  test("release() accepts the buffer or its IOVA", () => {
    const pool = new DmaPool({ size: 4096 });
    const a = pool.alloc(64);
    const b = pool.alloc(64);
    pool.release(a.iova);
    pool.release(b);
    assert.equal(pool.stats().liveBlocks, 0);
    assert.equal(pool.stats().inUse, 0);
  });

  test("DMA_POOL_BAD_FREE: twice, a made-up address, an address inside a block, another pool's block", () => {
    const pool = new DmaPool({ size: 4096, name: "bf" });
    const other = new DmaPool({ size: 4096, iovaBase: 0x2000_0000 });
    const a = pool.alloc(128);
    const foreign = other.alloc(128);
    pool.release(a);
    const before = pool.stats();
    assert.throws(() => pool.release(a), memoryError("DMA_POOL_BAD_FREE"));
    assert.throws(() => pool.release(a.iova), memoryError("DMA_POOL_BAD_FREE"));
    const b = pool.alloc(128);
    assert.throws(() => pool.release(b.iova + 4), memoryError("DMA_POOL_BAD_FREE"));
    assert.throws(() => pool.release(0xdead_0000), memoryError("DMA_POOL_BAD_FREE"));
    assert.throws(() => pool.release(foreign), memoryError("DMA_POOL_BAD_FREE"));
    const after = pool.stats();
    assert.equal(after.frees, before.frees, "a bad free counts nothing");
    assert.equal(after.liveBlocks, 1);
    pool.release(b);
    assert.equal(pool.alloc(4096, 1).offset, 0, "the bad frees did not corrupt the free list");
  });
});

describe("DmaPool accounting, ranges and mapping", () => {
  test("stats: inUse, peakInUse, allocations, frees, failures, liveBlocks", () => {
    const pool = new DmaPool({ size: 4096 });
    assert.deepEqual(pool.stats(), {
      size: 4096,
      inUse: 0,
      peakInUse: 0,
      allocations: 0,
      frees: 0,
      failures: 0,
      liveBlocks: 0,
    });
    const a = pool.alloc(1000, 1);
    const b = pool.alloc(2000, 1);
    pool.release(a);
    const c = pool.alloc(500, 1);
    assert.throws(() => pool.alloc(4000, 1));
    assert.deepEqual(pool.stats(), {
      size: 4096,
      inUse: 2500,
      peakInUse: 3000,
      allocations: 3,
      frees: 1,
      failures: 1,
      liveBlocks: 2,
    });
    pool.release(b);
    pool.release(c);
    const s = pool.stats();
    assert.equal(s.inUse, 0);
    assert.equal(s.peakInUse, 3000, "the peak stays");
    assert.equal(s.frees, 3);
    assert.equal(s.liveBlocks, 0);
    // stats() is a snapshot, not a live object.
    s.inUse = 99;
    assert.equal(pool.stats().inUse, 0);
  });

  test("bytesAt: the driver's view of any range inside the pool; DMA_POOL_RANGE outside", () => {
    const pool = new DmaPool({ size: 4096, iovaBase: 0x10000 });
    pool.region.bytes[10] = 7;
    assert.equal(pool.bytesAt(0x1000a, 1)[0], 7);
    assert.equal(pool.bytesAt(0x10000, 4096).length, 4096);
    assert.equal(pool.bytesAt(0x11000, 0).length, 0, "an empty range at the end");
    for (const [iova, len] of [
      [0xffff, 1],
      [0x10000, 4097],
      [0x10fff, 2],
      [0x11000, 1],
      [0x10000, -1],
      [0, 16],
    ]) {
      assert.throws(() => pool.bytesAt(iova, len), memoryError("DMA_POOL_RANGE"), `${iova}+${len}`);
    }
  });

  test("mapInto makes the pool reachable at its IOVAs; unmapFrom removes exactly its range", () => {
    const pool = new DmaPool({ size: 8192, iovaBase: 0x40000 });
    const t = new Iotlb();
    const keep = new SharedMemoryRegion(4096, "keep");
    t.map(0x40000 + 8192, 4096, keep, 0, PERM_RW); // a neighbour that must survive unmapFrom
    pool.mapInto(t);
    assert.equal(t.lookup(0x40000)?.region, pool.region);
    assert.equal(t.lookup(0x40000)?.perm, PERM_RW);
    assert.equal(t.lookup(0x41fff)?.offset, 0);
    const buf = pool.alloc(16);
    buf.bytes.set([1, 2, 3]);
    const space = new AddressSpace(t);
    assert.deepEqual([...space.read(buf.iova, 3)], [1, 2, 3]);
    space.write(buf.iova + 8, Uint8Array.of(9));
    assert.equal(buf.bytes[8], 9, "a device write lands in the driver's buffer");
    pool.unmapFrom(t);
    assert.equal(t.find(0x40000), -1);
    assert.equal(t.find(0x41fff), -1);
    assert.equal(t.lookup(0x42000)?.region, keep);
    assert.throws(
      () => space.read(buf.iova, 1),
      (e: unknown) => e instanceof DmaFault && e.code === "IOTLB_MISS",
    );
  });

  test("mapInto with a permission", () => {
    const pool = new DmaPool({ size: 4096 });
    const t = new Iotlb();
    pool.mapInto(t, PERM_RO);
    const space = new AddressSpace(t);
    assert.equal(space.translate(pool.iovaBase, 4096, ACCESS_READ).total, 4096);
    assert.throws(
      () => space.translate(pool.iovaBase, 1, ACCESS_WRITE),
      (e: unknown) => e instanceof DmaFault && e.code === "IOTLB_PERM",
    );
  });

  test("a pool over a caller's region uses that region's memory", () => {
    const region = new SharedMemoryRegion(16384, "mine");
    const pool = new DmaPool({ size: 8192, region });
    assert.equal(pool.region, region);
    assert.equal(pool.name, "dma-pool");
    const a = pool.alloc(8192, 1);
    a.bytes[0] = 42;
    assert.equal(region.bytes[0], 42);
    assert.throws(() => pool.alloc(1, 1), memoryError("DMA_POOL_EXHAUSTED"), "only `size` bytes are used");
  });

  test("constructor errors: IOVA base not page aligned or negative, size larger than the region", () => {
    for (const iovaBase of [0x1001, 0x800, -4096, 1.5, 2 ** 53]) {
      assert.throws(
        () => new DmaPool({ size: 4096, iovaBase }),
        memoryError("REGION_INVALID"),
        `${iovaBase}`,
      );
    }
    assert.equal(new DmaPool({ size: 4096, iovaBase: 0 }).iovaBase, 0);
    const region = new SharedMemoryRegion(4096, "small");
    assert.throws(
      () => new DmaPool({ size: 4097, region }),
      (e: unknown) => memoryError("REGION_INVALID")(e) && /small/.test(String(e)),
    );
    assert.throws(() => new DmaPool({ size: 0 }), memoryError("REGION_INVALID"));
  });
});
