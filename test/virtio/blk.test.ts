import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { VDPASIM_BLK_FEATURES } from "../../src/devices/sim/index.js";
import type { Chain } from "../../src/ring/index.js";
import {
  featuresFromNames,
  VIRTIO_BLK_CONFIG,
  VIRTIO_BLK_CONFIG_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_ID_BLOCK,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../src/spec/index.js";
import {
  type BlkDone,
  VirtioBlk,
  VirtioBlkDriver,
  VirtioBlkError,
  type VirtioBlkOptions,
} from "../../src/virtio/blk.js";
import { type FakeQueue, FakeTransport, settle } from "../support/fake-transport.js";

const bit = (n: number): bigint => 1n << BigInt(n);
const SECTOR = 512;
const CAPACITY = 2048;
const SIZE_MAX = 4096;
const SEG_MAX = 8;
const SERIAL = "vdpa-ts-fake";

interface RingVariant {
  label: string;
  extra: bigint;
}

const VARIANTS: RingVariant[] = [
  { label: "split", extra: 0n },
  { label: "packed", extra: bit(VIRTIO_F_RING_PACKED) },
  {
    label: "split + EVENT_IDX + INDIRECT_DESC",
    extra: bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_F_INDIRECT_DESC),
  },
  {
    label: "packed + EVENT_IDX + INDIRECT_DESC",
    extra: bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_F_INDIRECT_DESC),
  },
];

function blkConfig(capacity = CAPACITY): Uint8Array {
  const c = new Uint8Array(VIRTIO_BLK_CONFIG_SIZE);
  const v = new DataView(c.buffer);
  const C = VIRTIO_BLK_CONFIG;
  v.setUint32(C.capacity, capacity, true);
  v.setUint32(C.size_max, SIZE_MAX, true);
  v.setUint32(C.seg_max, SEG_MAX, true);
  v.setUint32(C.blk_size, SECTOR, true);
  v.setUint16(C.num_queues, 1, true);
  v.setUint32(C.max_discard_sectors, 256, true);
  v.setUint32(C.max_discard_seg, 1, true);
  v.setUint32(C.max_write_zeroes_sectors, 0, true);
  v.setUint32(C.max_write_zeroes_seg, 1, true);
  c[C.write_zeroes_may_unmap] = 1;
  return c;
}

interface SeenRequest {
  type: number;
  sector: number;
  /** Data bytes (OUT) or writable bytes before the status (IN, GET_ID). */
  len: number;
  segment?: { sector: number; count: number; flags: number };
}

/** A RAM-disk device played by the test, with knobs for failures. */
interface BlkDevice {
  disk: Uint8Array;
  seen: SeenRequest[];
  /** Requests answered with IOERR when they touch this sector. */
  badSector: number;
  /** Request types answered with UNSUPP. */
  unsupported: Set<number>;
  /** The GET_ID answer. */
  serial: Uint8Array;
  /** Most requests popped in one handler run. */
  maxBatch: number;
}

function le64(b: Uint8Array, off: number): number {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return v.getUint32(off, true) + v.getUint32(off + 4, true) * 2 ** 32;
}

function serialBytes(s: string): Uint8Array {
  const id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  id.set(Buffer.from(s, "latin1").subarray(0, VIRTIO_BLK_ID_BYTES));
  return id;
}

function blkDevice(t: FakeTransport): BlkDevice {
  const dev: BlkDevice = {
    disk: new Uint8Array(CAPACITY * SECTOR),
    seen: [],
    badSector: -1,
    unsupported: new Set(),
    serial: serialBytes(SERIAL),
    maxBatch: 0,
  };
  t.handle(0, (q: FakeQueue) => {
    let batch = 0;
    do {
      while (q.device.pop(q.chain)) {
        batch++;
        answer(dev, q, q.chain);
      }
    } while (q.device.enableNotify());
    dev.maxBatch = Math.max(dev.maxBatch, batch);
    q.publish();
  });
  return dev;
}

function answer(dev: BlkDevice, q: FakeQueue, c: Chain): void {
  const head = c.readable.toBytes();
  const type = new DataView(head.buffer).getUint32(0, true);
  const sector = le64(head, 8);
  const room = c.writable.total - 1;
  const req: SeenRequest = { type, sector, len: type === VIRTIO_BLK_T_OUT ? head.length - 16 : room };
  const out = new Uint8Array(room + 1);
  let written = 0;
  let status = VIRTIO_BLK_S_OK;
  if (dev.unsupported.has(type)) status = VIRTIO_BLK_S_UNSUPP;
  else {
    switch (type) {
      case VIRTIO_BLK_T_IN:
        if (dev.badSector >= sector && dev.badSector < sector + room / SECTOR) status = VIRTIO_BLK_S_IOERR;
        else {
          out.set(dev.disk.subarray(sector * SECTOR, sector * SECTOR + room));
          written = room;
        }
        break;
      case VIRTIO_BLK_T_OUT:
        if (dev.badSector >= sector && dev.badSector < sector + req.len / SECTOR) status = VIRTIO_BLK_S_IOERR;
        else dev.disk.set(head.subarray(16), sector * SECTOR);
        break;
      case VIRTIO_BLK_T_FLUSH:
        break;
      case VIRTIO_BLK_T_GET_ID:
        out.set(dev.serial.subarray(0, Math.min(room, VIRTIO_BLK_ID_BYTES)));
        written = Math.min(room, VIRTIO_BLK_ID_BYTES);
        break;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        const v = new DataView(head.buffer);
        const seg = { sector: le64(head, 16), count: v.getUint32(24, true), flags: v.getUint32(28, true) };
        req.segment = seg;
        if (type === VIRTIO_BLK_T_WRITE_ZEROES) {
          dev.disk.fill(0, seg.sector * SECTOR, (seg.sector + seg.count) * SECTOR);
        }
        break;
      }
      default:
        status = VIRTIO_BLK_S_UNSUPP;
    }
  }
  dev.seen.push(req);
  out[written] = status;
  // The status goes in the last writable byte, after whatever data was written.
  const bytes = new Uint8Array(room + 1);
  bytes.set(out.subarray(0, written));
  bytes[room] = status;
  c.writable.copyFrom(bytes, 0, bytes.length);
  q.device.push(c, written + 1);
}

function setup(
  variant: RingVariant = VARIANTS[0],
  opts: {
    offer?: bigint;
    queueMax?: number;
    blk?: VirtioBlkOptions;
    acceptFeatures?: (f: bigint) => boolean;
  } = {},
) {
  const t = new FakeTransport({
    deviceId: VIRTIO_ID_BLOCK,
    features: (opts.offer ?? VDPASIM_BLK_FEATURES) | variant.extra,
    config: blkConfig(),
    queueMax: opts.queueMax ?? 16,
    acceptFeatures: opts.acceptFeatures,
  });
  const dev = blkDevice(t);
  const blk = new VirtioBlk(t, opts.blk);
  return { t, dev, blk };
}

function pattern(sectors: number, seed: number): Uint8Array {
  const b = new Uint8Array(sectors * SECTOR);
  for (let i = 0; i < b.length; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Settles a promise to "ok" or the VirtioBlkError code (other errors as their message). */
function outcome(p: Promise<unknown>): Promise<string> {
  return p.then(
    () => "ok",
    (err: unknown) => (err instanceof VirtioBlkError ? err.code : String(err)),
  );
}

async function until(cond: () => boolean, what: string, turns = 200): Promise<void> {
  for (let i = 0; i < turns && !cond(); i++) await settle(1);
  assert.ok(cond(), `timed out waiting for ${what}`);
}

describe("virtio-blk: bring-up and config", () => {
  test("negotiates the features it uses from vdpasim_blk's offer, in the virtio order", () => {
    assert.equal(VDPASIM_BLK_FEATURES, 0x308007646n);
    const { t, blk } = setup();
    const expected = featuresFromNames(
      [
        "VIRTIO_BLK_F_SIZE_MAX",
        "VIRTIO_BLK_F_SEG_MAX",
        "VIRTIO_BLK_F_BLK_SIZE",
        "VIRTIO_BLK_F_FLUSH",
        "VIRTIO_BLK_F_DISCARD",
        "VIRTIO_BLK_F_WRITE_ZEROES",
        "VIRTIO_F_VERSION_1",
        "VIRTIO_F_ACCESS_PLATFORM",
      ],
      "blk",
    );
    assert.equal(blk.features, expected, "no MQ, TOPOLOGY (unused) nor ANY_LAYOUT (legacy)");
    assert.deepEqual(t.log, [
      "reset",
      "status 1",
      "status 2",
      `features 0x${expected.toString(16)}`,
      "status 8",
      "findVqs req.0",
      "status 4",
    ]);
    blk.remove();
  });

  test("reads capacity, blk_size, size_max, seg_max and the discard limits", () => {
    const { blk } = setup();
    assert.equal(blk.capacity, CAPACITY);
    assert.equal(blk.blkSize, 512);
    assert.equal(blk.sizeMax, SIZE_MAX);
    assert.equal(blk.segMax, SEG_MAX);
    assert.equal(blk.maxDiscardSectors, 256);
    assert.equal(blk.maxWriteZeroesSectors, 0xffff_ffff, "0 in config means no limit");
    assert.equal(blk.writeZeroesMayUnmap, true);
    assert.equal(blk.queueDepth, 16, "one slot per ring entry");
    assert.equal(blk.maxTransferBytes, SIZE_MAX * SEG_MAX, "size_max x seg_max");
    blk.remove();
  });

  test("a device that refuses FEATURES_OK fails the bring-up and keeps no memory", () => {
    const t = new FakeTransport({
      deviceId: VIRTIO_ID_BLOCK,
      features: VDPASIM_BLK_FEATURES,
      config: blkConfig(),
      acceptFeatures: () => false,
    });
    assert.throws(
      () => new VirtioBlk(t),
      (err: unknown) => err instanceof VirtioBlkError && err.code === "FAILED",
    );
    assert.ok(t.getStatus() & VIRTIO_CONFIG_S_FAILED);
    assert.equal(t.pool.stats().liveBlocks, 0);
  });

  test("VirtioBlkDriver binds transports of device id 2 and removes them", () => {
    const probed: VirtioBlk[] = [];
    const driver = new VirtioBlkDriver({ onProbe: (b) => probed.push(b) });
    assert.deepEqual(driver.deviceIds, [2]);
    const t = new FakeTransport({
      deviceId: VIRTIO_ID_BLOCK,
      features: VDPASIM_BLK_FEATURES,
      config: blkConfig(),
    });
    driver.probe(t);
    assert.equal(driver.devices.get(t), probed[0]);
    driver.remove(t);
    assert.equal(probed[0].state, "removed");
    assert.equal(t.pool.stats().liveBlocks, 0);
  });

  test("a capacity change in config is reported", async () => {
    const { t, blk } = setup();
    const sizes: number[] = [];
    blk.onCapacityChange((s) => sizes.push(s));
    const cap = new Uint8Array(8);
    new DataView(cap.buffer).setUint32(0, 4096, true);
    t.changeConfig(VIRTIO_BLK_CONFIG.capacity, cap);
    await until(() => sizes.length === 1, "capacity event");
    assert.deepEqual(sizes, [4096]);
    assert.equal(blk.capacity, 4096);
    blk.remove();
  });
});

for (const variant of VARIANTS) {
  describe(`virtio-blk requests, ${variant.label} ring`, () => {
    test("write then read, small and larger than one slot (split into pieces)", async () => {
      const { t, dev, blk } = setup(variant);
      const small = pattern(1, 1);
      await blk.write(3, small);
      assert.deepEqual(dev.disk.subarray(3 * SECTOR, 4 * SECTOR), small);
      assert.deepEqual(await blk.read(3, 1), small);

      const big = pattern(200, 7); // 100 KiB: four 32 KiB pieces
      await blk.write(100, big);
      assert.deepEqual(await blk.read(100, 200), big);
      const outs = dev.seen.filter((r) => r.type === VIRTIO_BLK_T_OUT);
      assert.deepEqual(
        outs.map((r) => [r.sector, r.len]),
        [
          [3, 512],
          [100, 32768],
          [164, 32768],
          [228, 32768],
          [292, 4096],
        ],
      );
      assert.equal(blk.stats.bytesWritten, 512 + 200 * SECTOR);
      assert.equal(blk.stats.bytesRead, 512 + 200 * SECTOR);
      assert.equal(t.earlyNotifies, 0);
      blk.remove();
    });

    test("flush, discard, write-zeroes (with UNMAP) and get-id reach the device as the spec lays them out", async () => {
      const { dev, blk } = setup(variant);
      dev.disk.fill(0xaa);
      await blk.flush();
      await blk.discard(10, 300); // past max_discard_sectors (256): two requests
      await blk.writeZeroes(20, 4, true);
      await blk.writeZeroes(30, 2);
      assert.equal(await blk.getId(), SERIAL);
      assert.deepEqual(
        dev.seen.map((r) => [
          r.type,
          r.sector,
          r.segment && [r.segment.sector, r.segment.count, r.segment.flags],
        ]),
        [
          [VIRTIO_BLK_T_FLUSH, 0, undefined],
          [VIRTIO_BLK_T_DISCARD, 0, [10, 256, 0]],
          [VIRTIO_BLK_T_DISCARD, 0, [266, 44, 0]],
          [VIRTIO_BLK_T_WRITE_ZEROES, 0, [20, 4, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP]],
          [VIRTIO_BLK_T_WRITE_ZEROES, 0, [30, 2, 0]],
          [VIRTIO_BLK_T_GET_ID, 0, undefined],
        ],
      );
      assert.ok(dev.disk.subarray(20 * SECTOR, 24 * SECTOR).every((b) => b === 0));
      assert.equal(dev.disk[24 * SECTOR], 0xaa);
      blk.remove();
    });

    test("get-id: a 20-byte serial without NUL is kept whole", async () => {
      const { dev, blk } = setup(variant);
      dev.serial = serialBytes("ABCDEFGHIJKLMNOPQRST-too-long");
      assert.equal(await blk.getId(), "ABCDEFGHIJKLMNOPQRST");
      blk.remove();
    });

    test("many requests in flight: up to the queue depth, the rest wait for slots", async () => {
      const { t, dev, blk } = setup(variant);
      dev.disk.set(pattern(CAPACITY, 3));
      t.pause(0);
      // 48 reads of 8 KiB: three times the queue depth.
      const reads = Array.from({ length: 48 }, (_, i) => blk.read(i * 16, 16));
      await settle();
      assert.equal(blk.freeSlots, 0, "every slot in flight");
      assert.equal(dev.seen.length, 0);
      t.resume(0);
      const results = await Promise.all(reads);
      for (const [i, data] of results.entries()) {
        assert.deepEqual(data, dev.disk.subarray(i * 16 * SECTOR, (i + 1) * 16 * SECTOR));
      }
      assert.equal(dev.seen.length, 48);
      assert.ok(dev.maxBatch > 1, "the device found several requests per notification");
      assert.equal(blk.freeSlots, blk.queueDepth);
      blk.remove();
    });

    test("the hot path: submit() with tags, a view of the slot's data, false when slots run out", async () => {
      const { t, dev, blk } = setup(variant);
      dev.disk.set(pattern(64, 9));
      t.pause(0);
      const done: [number, number, string][] = [];
      const cb: BlkDone = (err, data, len, tag) => {
        assert.equal(err, null);
        done.push([tag, len, Buffer.from(data.subarray(0, 4)).toString("hex")]);
      };
      for (let i = 0; i < blk.queueDepth; i++) {
        assert.ok(blk.submit(VIRTIO_BLK_T_IN, i * 2, 1024, cb, 100 + i));
      }
      assert.equal(blk.submit(VIRTIO_BLK_T_IN, 0, 512, cb), false);
      assert.equal(blk.stats.busy, 1);
      blk.kick();
      t.resume(0);
      await until(() => done.length === blk.queueDepth, "completions");
      done.sort((a, b) => a[0] - b[0]);
      for (let i = 0; i < blk.queueDepth; i++) {
        const want = Buffer.from(dev.disk.subarray(i * 2 * SECTOR, i * 2 * SECTOR + 4)).toString("hex");
        assert.deepEqual(done[i], [100 + i, 1024, want]);
      }
      // A slot is free again inside its own callback, so a completion can submit the next request.
      let chained = 0;
      const again: BlkDone = (err) => {
        assert.equal(err, null);
        if (++chained < 40) {
          assert.ok(blk.submit(VIRTIO_BLK_T_OUT, chained, pattern(1, chained), again));
          blk.kick();
        }
      };
      blk.submit(VIRTIO_BLK_T_OUT, 0, pattern(1, 0), again);
      blk.kick();
      await until(() => chained === 40, "a chain of 40 writes");
      assert.deepEqual(dev.disk.subarray(39 * SECTOR, 40 * SECTOR), pattern(1, 39));
      blk.remove();
    });

    test("IOERR and UNSUPP from the device become VirtioBlkError with code, op and sector", async () => {
      const { dev, blk } = setup(variant);
      dev.badSector = 13;
      await assert.rejects(blk.read(12, 4), (err: unknown) => {
        assert.ok(err instanceof VirtioBlkError);
        assert.equal(err.code, "IOERR");
        assert.equal(err.op, VIRTIO_BLK_T_IN);
        assert.equal(err.opName, "IN");
        assert.equal(err.sector, 12);
        return true;
      });
      await assert.rejects(blk.write(13, pattern(1, 0)), { code: "IOERR", op: VIRTIO_BLK_T_OUT, sector: 13 });
      dev.unsupported.add(VIRTIO_BLK_T_GET_ID);
      await assert.rejects(blk.getId(), { code: "UNSUPP", op: VIRTIO_BLK_T_GET_ID });
      assert.equal(blk.stats.ioErrors, 2);
      assert.equal(blk.stats.unsupported, 1);
      // The driver carries on.
      assert.deepEqual(await blk.read(0, 1), dev.disk.subarray(0, SECTOR));
      blk.remove();
    });

    test("NEEDS_RESET: requests in flight fail with RESET (none hangs), then the device works again", async () => {
      const { t, dev, blk } = setup(variant);
      const resets: (Error | null)[] = [];
      blk.onReset((err) => resets.push(err));
      t.pause(0);
      // 24 requests: 16 take the slots, 8 wait for one.
      const inFlight = Array.from({ length: 16 }, (_, i) => outcome(blk.write(i, pattern(1, i))));
      const waiting = Array.from({ length: 8 }, (_, i) => outcome(blk.read(100 + i, 1)));
      await settle();
      assert.equal(blk.freeSlots, 0);
      t.needsReset();
      t.resume(0);
      assert.deepEqual(await Promise.all(inFlight), new Array(16).fill("RESET"));
      // Requests still waiting for a slot go to the new device.
      assert.deepEqual(await Promise.all(waiting), new Array(8).fill("ok"));
      assert.deepEqual(resets, [null]);
      assert.equal(blk.stats.resets, 1);
      assert.equal(blk.stats.failed, 16);
      assert.equal(t.log.filter((l) => l === "status 4").length, 2, "DRIVER_OK twice");
      assert.equal(dev.seen.filter((r) => r.type === VIRTIO_BLK_T_OUT).length, 0, "old requests never ran");
      await blk.write(5, pattern(1, 5));
      assert.deepEqual(await blk.read(5, 1), pattern(1, 5));
      assert.equal(t.earlyNotifies, 0);
      blk.remove();
    });

    test("hot-path callbacks of requests failed by a reset run once the device is back, and may resubmit", async () => {
      const { t, blk } = setup(variant);
      t.pause(0);
      const codes: string[] = [];
      let resubmitted = 0;
      const retry: BlkDone = (err) => {
        if (err) {
          codes.push(err.code);
          assert.ok(blk.submit(VIRTIO_BLK_T_FLUSH, 0, 0, retry));
          blk.kick();
        } else {
          resubmitted++;
        }
      };
      for (let i = 0; i < 4; i++) blk.submit(VIRTIO_BLK_T_FLUSH, 0, 0, retry);
      blk.kick();
      await settle();
      t.needsReset();
      await until(() => codes.length === 4, "RESET callbacks");
      t.resume(0);
      await until(() => resubmitted === 4, "resubmitted requests");
      assert.deepEqual(codes, ["RESET", "RESET", "RESET", "RESET"]);
      blk.remove();
    });

    test("remove() with requests in flight: each fails with REMOVED, memory returned", async () => {
      const { t, blk } = setup(variant);
      t.pause(0);
      const all = Array.from({ length: 20 }, (_, i) => outcome(blk.read(i, 1)));
      await settle();
      blk.remove();
      assert.deepEqual(await Promise.all(all), new Array(20).fill("REMOVED"));
      assert.equal(blk.state, "removed");
      assert.equal(t.pool.stats().liveBlocks, 0);
      assert.equal(t.queues.length, 0);
      assert.throws(() => blk.submit(VIRTIO_BLK_T_IN, 0, 512, () => {}), /REMOVED/);
      assert.equal(await outcome(blk.read(0, 1)), "REMOVED");
    });
  });
}

describe("virtio-blk: local checks", () => {
  test("DISCARD and WRITE_ZEROES without their features are refused locally with UNSUPP", async () => {
    const offer = VDPASIM_BLK_FEATURES & ~bit(VIRTIO_BLK_F_DISCARD) & ~bit(VIRTIO_BLK_F_WRITE_ZEROES);
    const { dev, blk } = setup(VARIANTS[0], { offer });
    assert.equal(blk.supports(VIRTIO_BLK_T_DISCARD), false);
    await assert.rejects(blk.discard(8, 2), { code: "UNSUPP", op: VIRTIO_BLK_T_DISCARD, sector: 8 });
    await assert.rejects(blk.writeZeroes(9, 2), { code: "UNSUPP", op: VIRTIO_BLK_T_WRITE_ZEROES, sector: 9 });
    assert.equal(dev.seen.length, 0, "nothing reached the device");
    blk.remove();
  });

  test("without FLUSH a flush completes at once without reaching the device", async () => {
    const { dev, blk } = setup(VARIANTS[0], { offer: VDPASIM_BLK_FEATURES & ~bit(VIRTIO_BLK_F_FLUSH) });
    await blk.flush();
    assert.equal(dev.seen.length, 0);
    blk.remove();
  });

  test("a read-only device refuses writes locally", async () => {
    const { dev, blk } = setup(VARIANTS[0], { offer: VDPASIM_BLK_FEATURES | bit(VIRTIO_BLK_F_RO) });
    assert.equal(blk.readOnly, true);
    await assert.rejects(blk.write(0, pattern(1, 0)), { code: "UNSUPP", op: VIRTIO_BLK_T_OUT });
    await blk.read(0, 1);
    assert.deepEqual(
      dev.seen.map((r) => r.type),
      [VIRTIO_BLK_T_IN],
    );
    blk.remove();
  });

  test("bad arguments are RangeErrors: past the capacity, partial sectors, too large for a slot", async () => {
    const { blk } = setup();
    await assert.rejects(blk.read(CAPACITY - 1, 2), RangeError);
    await assert.rejects(blk.write(0, new Uint8Array(100)), RangeError);
    assert.throws(() => blk.submit(VIRTIO_BLK_T_IN, 0, 300, () => {}), RangeError);
    assert.throws(() => blk.submit(VIRTIO_BLK_T_IN, 0, blk.maxTransferBytes + 512, () => {}), RangeError);
    assert.throws(() => blk.submit(99, 0, 0, () => {}), RangeError);
    blk.remove();
  });

  test("without SIZE_MAX / SEG_MAX a slot holds maxTransferBytes in one segment", async () => {
    const offer =
      VDPASIM_BLK_FEATURES & ~featuresFromNames(["VIRTIO_BLK_F_SIZE_MAX", "VIRTIO_BLK_F_SEG_MAX"], "blk");
    const { dev, blk } = setup(VARIANTS[0], { offer, blk: { maxTransferBytes: 8192 } });
    assert.equal(blk.maxTransferBytes, 8192);
    await blk.write(0, pattern(32, 2));
    assert.deepEqual(
      dev.seen.map((r) => r.len),
      [8192, 8192],
    );
    blk.remove();
  });
});
