import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import {
  createSimBlk,
  type RamBlkStorage,
  type SimBlkOptions,
  VDPASIM_BLK_FEATURES,
  vdpasimBlkMgmtDev,
} from "../../../src/devices/sim/index.js";
import { DmaPool } from "../../../src/memory/index.js";
import type { RingFormat } from "../../../src/ring/index.js";
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_CONFIG_S_NEEDS_RESET,
} from "../../../src/spec/index.js";
import { attrBit, type DmaModel, emptyDevSetConfig, isVdpaError } from "../../../src/vdpa/index.js";
import { SimDriver, type SimRequest } from "../../support/sim-driver.js";

const FORMATS: RingFormat[] = ["split", "packed"];
const MODELS: DmaModel[] = ["set_map", "dma_map", "platform"];
const DISK = 1 << 20;
const CAPACITY = DISK / 512;

const tmp = mkdtempSync(join(tmpdir(), "vdpasim-blk-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** struct virtio_blk_outhdr: type, ioprio, sector. */
function outhdr(type: number, sector = 0): Uint8Array {
  const h = Buffer.alloc(16);
  h.writeUInt32LE(type, 0);
  h.writeBigUInt64LE(BigInt(sector), 8);
  return h;
}

/** struct virtio_blk_discard_write_zeroes. */
function range(sector: number, numSectors: number, flags = 0): Uint8Array {
  const r = Buffer.alloc(16);
  r.writeBigUInt64LE(BigInt(sector), 0);
  r.writeUInt32LE(numSectors, 8);
  r.writeUInt32LE(flags, 12);
  return r;
}

function pattern(len: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (i * 7 + seed) & 0xff);
}

function start(format: RingFormat, dmaModel: DmaModel, opts: SimBlkOptions = {}) {
  const made = createSimBlk({ sizeBytes: DISK, dmaModel, packed: format === "packed", ...opts });
  const driver = new SimDriver(made.device, { format, num: 64 }).start();
  return { ...made, driver };
}

/** Status byte of a returned request: the last byte of its writable part. */
function statusOf(req: SimRequest): number {
  const last = req.ins[req.ins.length - 1];
  return last.bytes[last.size - 1];
}

/** Sends requests, kicks once, waits, and returns them in completion order. */
async function run(h: ReturnType<typeof start>, reqs: [Uint8Array[], number[]][]): Promise<SimRequest[]> {
  const sent = reqs.map(([outs, ins]) => h.driver.send(0, outs, ins));
  h.driver.kick(0);
  await h.sim.whenIdle();
  const done = h.driver.collect(0);
  assert.deepEqual(done, sent);
  return done;
}

function disk(h: ReturnType<typeof start>): Buffer {
  return (h.blk.storage as RamBlkStorage).region.bytes;
}

for (const format of FORMATS) {
  for (const dmaModel of MODELS) {
    describe(`vdpasim_blk, ${format} ring, ${dmaModel} DMA`, () => {
      test("write then read back, flush, get-id; status in the last writable byte", async () => {
        const h = start(format, dmaModel);
        const data = pattern(1024, 3);
        h.driver.send(0, [outhdr(VIRTIO_BLK_T_OUT, 2), data], [1]);
        h.driver.kick(0);
        // The kick only schedules the work.
        assert.equal(h.blk.stats.requests, 0);
        await h.sim.whenIdle();
        const [write] = h.driver.collect(0);
        assert.equal(write.usedLen, 1);
        assert.equal(statusOf(write), VIRTIO_BLK_S_OK);
        assert.deepEqual(disk(h).subarray(1024, 2048), Buffer.from(data));

        const [read, flush, id] = await run(h, [
          [[outhdr(VIRTIO_BLK_T_IN, 2)], [1024, 1]],
          [[outhdr(VIRTIO_BLK_T_FLUSH)], [1]],
          [[outhdr(VIRTIO_BLK_T_GET_ID)], [20, 1]],
        ]);
        assert.equal(read.usedLen, 1025);
        assert.deepEqual(read.written().subarray(0, 1024), Buffer.from(data));
        assert.equal(statusOf(read), VIRTIO_BLK_S_OK);
        assert.deepEqual([flush.usedLen, statusOf(flush)], [1, VIRTIO_BLK_S_OK]);
        assert.equal(id.usedLen, 21);
        assert.equal(id.written().subarray(0, 20).toString("latin1"), "vdpa_blk_sim\0\0\0\0\0\0\0\0");
        assert.ok(h.driver.callbacks[0] > 0);
      });

      test("discard and write-zeroes take exactly one range, with Linux's flag rules", async () => {
        const h = start(format, dmaModel);
        await run(h, [[[outhdr(VIRTIO_BLK_T_OUT, 0), pattern(2048, 9)], [1]]]);
        const results = await run(h, [
          [[outhdr(VIRTIO_BLK_T_WRITE_ZEROES), range(1, 1)], [1]],
          [[outhdr(VIRTIO_BLK_T_WRITE_ZEROES), range(3, 1, 1 /* UNMAP */)], [1]],
          [[outhdr(VIRTIO_BLK_T_WRITE_ZEROES), range(0, 1, 2)], [1]],
          [[outhdr(VIRTIO_BLK_T_DISCARD), range(0, 1)], [1]],
          [[outhdr(VIRTIO_BLK_T_DISCARD), range(0, 1, 1)], [1]],
          [[outhdr(VIRTIO_BLK_T_DISCARD), range(0, 1), range(2, 1)], [1]],
          [[outhdr(VIRTIO_BLK_T_WRITE_ZEROES), range(CAPACITY - 1, 2)], [1]],
        ]);
        assert.deepEqual(results.map(statusOf), [
          VIRTIO_BLK_S_OK,
          VIRTIO_BLK_S_OK,
          VIRTIO_BLK_S_UNSUPP,
          VIRTIO_BLK_S_OK,
          VIRTIO_BLK_S_UNSUPP,
          VIRTIO_BLK_S_IOERR,
          VIRTIO_BLK_S_IOERR,
        ]);
        const d = disk(h);
        assert.ok(d.subarray(512, 1024).every((b) => b === 0));
        assert.ok(d.subarray(1536, 2048).every((b) => b === 0));
        // Discard does nothing (Linux): sector 0 keeps its data.
        assert.deepEqual(d.subarray(0, 512), Buffer.from(pattern(2048, 9).subarray(0, 512)));
      });

      test("out of range and unknown requests: IOERR (Linux answers IOERR, not UNSUPP, to a type it does not know)", async () => {
        const h = start(format, dmaModel);
        const results = await run(h, [
          [[outhdr(VIRTIO_BLK_T_IN, CAPACITY)], [512, 1]],
          [[outhdr(VIRTIO_BLK_T_IN, CAPACITY - 1)], [1024, 1]],
          [[outhdr(VIRTIO_BLK_T_IN, CAPACITY)], [100, 1]],
          [[outhdr(VIRTIO_BLK_T_OUT, CAPACITY + 5), pattern(512, 1)], [1]],
          [[outhdr(VIRTIO_BLK_T_OUT, 2 ** 60), pattern(512, 1)], [1]],
          [[outhdr(VIRTIO_BLK_T_FLUSH, 5)], [1]],
          [[outhdr(99)], [1]],
          [[outhdr(VIRTIO_BLK_T_IN, CAPACITY - 1)], [512, 1]],
        ]);
        assert.deepEqual(results.map(statusOf), [...Array(7).fill(VIRTIO_BLK_S_IOERR), VIRTIO_BLK_S_OK]);
        // A failed read still puts the status in the last byte: used length 1.
        assert.equal(results[0].usedLen, 1);
        assert.equal(h.blk.stats.ioErrors, 7);
        assert.ok(disk(h).every((b) => b === 0));
      });

      test("a data buffer outside every mapping stops the queue; the disk is untouched", async () => {
        const h = start(format, dmaModel);
        const pool = h.driver.pools[0];
        const secret = new DmaPool({ size: 4096, iovaBase: pool.iovaBase + pool.size, name: "secret" });
        secret.alloc(4096).bytes.fill(0x5a);
        const hdr = pool.alloc(16);
        hdr.bytes.set(outhdr(VIRTIO_BLK_T_OUT, 0));
        const status = pool.alloc(1);
        h.driver.sendRaw(
          0,
          [
            [hdr.iova, 16],
            [secret.iovaBase, 512],
          ],
          [[status.iova, 1]],
        );
        h.driver.kick(0);
        await h.sim.whenIdle();
        assert.ok(h.device.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
        assert.equal(h.driver.configChanges, 1);
        assert.equal(h.sim.vqs[0].fault?.code, "IOTLB_MISS");
        assert.ok(disk(h).every((b) => b === 0));

        // Nothing more is processed until reset.
        h.driver.send(0, [outhdr(VIRTIO_BLK_T_FLUSH)], [1]);
        h.driver.kick(0);
        await h.sim.whenIdle();
        assert.equal(h.driver.collect(0).length, 0);
        h.device.reset();
        assert.equal(h.device.getStatus(), 0);
        const again = new SimDriver(h.device, { format, pools: h.driver.pools }).start();
        again.send(0, [outhdr(VIRTIO_BLK_T_FLUSH)], [1]);
        again.kick(0);
        await h.sim.whenIdle();
        assert.equal(statusOf(again.collect(0)[0]), VIRTIO_BLK_S_OK);
      });
    });
  }
}

describe("vdpasim_blk requests", () => {
  test("data split over several descriptors, not sector aligned", async () => {
    const h = start("split", "set_map");
    const data = pattern(1536, 5);
    await run(h, [
      [
        [outhdr(VIRTIO_BLK_T_OUT, 10), data.subarray(0, 100), data.subarray(100, 1000), data.subarray(1000)],
        [1],
      ],
    ]);
    const [read] = await run(h, [[[outhdr(VIRTIO_BLK_T_IN, 10)], [700, 836, 1]]]);
    assert.deepEqual(read.written().subarray(0, 1536), Buffer.from(data));
    assert.equal(statusOf(read), VIRTIO_BLK_S_OK);
  });

  test("a request without a status byte is returned empty and ends the run, as Linux (the next kick goes on)", async () => {
    // Polling off, as Linux: the run ends at the broken request and only a kick starts the next one.
    const h = start("split", "set_map", { pollMicros: 0 });
    const broken = h.driver.send(0, [outhdr(VIRTIO_BLK_T_FLUSH)], []);
    const good = h.driver.send(0, [outhdr(VIRTIO_BLK_T_FLUSH)], [1]);
    h.driver.kick(0);
    await h.sim.whenIdle();
    assert.deepEqual(h.driver.collect(0), [broken]);
    assert.equal(broken.usedLen, 0);
    h.driver.kick(0);
    await h.sim.whenIdle();
    assert.deepEqual(h.driver.collect(0), [good]);
    assert.equal(h.device.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
  });

  test("a short get-id buffer gets what fits, the status byte stays last", async () => {
    const h = start("split", "set_map");
    const [id] = await run(h, [[[outhdr(VIRTIO_BLK_T_GET_ID)], [8]]]);
    assert.equal(id.usedLen, 8);
    assert.equal(id.written().subarray(0, 7).toString(), "vdpa_bl");
    assert.equal(statusOf(id), VIRTIO_BLK_S_OK);
  });
});

describe("vdpasim_blk config and features", () => {
  test("Linux's offered features and config space; 128 MiB by default", () => {
    const { device, sim } = createSimBlk();
    assert.equal(sim.getDeviceFeatures(), 0x308007646n);
    device.setFeatures(VDPASIM_BLK_FEATURES);
    const cfg = Buffer.from(device.getConfig(0, device.getConfigSize()));
    assert.equal(cfg.length, 96);
    assert.equal(cfg.readBigUInt64LE(0), 0x40000n);
    assert.equal(cfg.readUInt32LE(8), 4096); // size_max
    assert.equal(cfg.readUInt32LE(12), 32); // seg_max
    assert.equal(cfg.readUInt32LE(20), 512); // blk_size
    assert.equal(cfg.readUInt16LE(26), 1); // min_io_size
    assert.equal(cfg.readUInt32LE(28), 1); // opt_io_size
    assert.equal(cfg.readUInt16LE(34), 1); // num_queues
    assert.equal(cfg.readUInt32LE(36), 0xffffffff); // max_discard_sectors
    assert.equal(cfg.readUInt32LE(40), 1); // max_discard_seg
    assert.equal(cfg.readUInt32LE(44), 512); // discard_sector_alignment (Linux's value, in sectors)
    assert.equal(cfg.readUInt32LE(48), 0xffffffff); // max_write_zeroes_sectors
    assert.equal(cfg.readUInt32LE(52), 1); // max_write_zeroes_seg
    // Rebuilt on every read: a driver's write does not stick.
    device.setConfig(0, Buffer.alloc(8));
    assert.equal(Buffer.from(device.getConfig(0, 8)).readBigUInt64LE(0), 0x40000n);
    assert.deepEqual([device.nvqs, device.ngroups, device.nas], [1, 1, 1]);
    assert.throws(
      () => device.ops.getVendorVqStats!(0),
      (e) => isVdpaError(e, "EOPNOTSUPP"),
    );
  });

  test("size: a positive multiple of 512 bytes", () => {
    assert.equal(createSimBlk({ sizeBytes: 4096 }).blk.capacity, 8);
    for (const bad of [0, 1000, -512, 1.5]) {
      assert.throws(
        () => createSimBlk({ sizeBytes: bad }),
        (e) => isVdpaError(e, "EINVAL"),
      );
    }
  });
});

describe("vdpasim_blk backing file", () => {
  test("writes reach the file; flush syncs; reads come from it", async () => {
    const path = join(tmp, "disk.img");
    const h = start("packed", "dma_map", { backingFile: path, sizeBytes: 64 * 1024 });
    assert.equal(statSync(path).size, 64 * 1024);
    const data = pattern(4096, 11);
    const results = await run(h, [
      [[outhdr(VIRTIO_BLK_T_OUT, 8), data], [1]],
      [[outhdr(VIRTIO_BLK_T_WRITE_ZEROES), range(9, 1)], [1]],
      [[outhdr(VIRTIO_BLK_T_FLUSH)], [1]],
    ]);
    assert.deepEqual(results.map(statusOf), [VIRTIO_BLK_S_OK, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_OK]);
    const file = readFileSync(path);
    const expected = Buffer.from(data);
    expected.fill(0, 512, 1024);
    assert.deepEqual(file.subarray(4096, 8192), expected);
    const [read] = await run(h, [[[outhdr(VIRTIO_BLK_T_IN, 8)], [4096, 1]]]);
    assert.deepEqual(read.written().subarray(0, 4096), expected);
    h.device.ops.free!();
  });

  test("without a size the disk is the file, in whole sectors", async () => {
    const path = join(tmp, "existing.img");
    const content = Buffer.from(pattern(3 * 512 + 100, 2));
    writeFileSync(path, content);
    const h = start("split", "platform", { backingFile: path, sizeBytes: undefined });
    assert.equal(h.blk.capacity, 3);
    const [read, past] = await run(h, [
      [[outhdr(VIRTIO_BLK_T_IN, 1)], [1024, 1]],
      [[outhdr(VIRTIO_BLK_T_IN, 3)], [512, 1]],
    ]);
    assert.deepEqual(read.written().subarray(0, 1024), content.subarray(512, 1536));
    assert.deepEqual([statusOf(read), statusOf(past)], [VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR]);
    h.device.ops.free!();
  });

  test("a missing file without a size: ENOENT", () => {
    assert.throws(
      () => createSimBlk({ backingFile: join(tmp, "nope.img") }),
      (e) => isVdpaError(e, "ENOENT"),
    );
  });
});

describe("vdpasim_blk management device", () => {
  test("shows what Linux shows, accepts our size and backing-file attributes", () => {
    const m = vdpasimBlkMgmtDev();
    assert.equal(m.name, "vdpasim_blk");
    assert.deepEqual(m.idTable, [2]);
    assert.equal(m.supportedFeatures, 0n);
    assert.equal(m.maxSupportedVqs, 0);
    assert.equal(m.configAttrMask, attrBit("VDPATS_BLK_SIZE") | attrBit("VDPATS_BLK_BACKING_FILE"));
    const config = emptyDevSetConfig();
    config.mask = attrBit("VDPATS_BLK_SIZE");
    config.blk.sizeBytes = 8192;
    const dev = m.ops.devAdd(m, "blk0", config);
    assert.equal(dev.name, "blk0");
    assert.equal(dev.ops.getDeviceId(), 2);
    dev.setFeatures(VDPASIM_BLK_FEATURES);
    assert.equal(Buffer.from(dev.getConfig(0, 8)).readBigUInt64LE(0), 16n);
    m.ops.devDel(m, dev);

    const file = emptyDevSetConfig();
    file.mask = attrBit("VDPATS_BLK_BACKING_FILE") | attrBit("VDPATS_BLK_SIZE");
    file.blk = { backingFile: join(tmp, "mgmt.img"), sizeBytes: 4096 };
    const fdev = m.ops.devAdd(m, "blk1", file);
    assert.equal(statSync(file.blk.backingFile!).size, 4096);
    m.ops.devDel(m, fdev);
  });
});
