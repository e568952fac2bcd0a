// Both simulators driven through vhost_vdpa the way QEMU drives /dev/vhost-vdpa-N: open, owner, features,
// backend features, status, IOTLB batch, vrings, DRIVER_OK, traffic through the ring engine's driver
// side, then suspend, read the vring bases, resume (nothing lost or doubled), reset, and a second start
// on the same handle, as QEMU starts a device twice per boot. Both ring formats, each DMA model.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createSimBlk } from "../../src/devices/sim/blk.js";
import type { VdpaSim } from "../../src/devices/sim/core.js";
import { createSimNet } from "../../src/devices/sim/net.js";
import { DmaPool, PERM_RW } from "../../src/memory/index.js";
import { BufferList, createDriverRing, type DriverRing, type RingFormat } from "../../src/ring/index.js";
import type { VdpaDevice } from "../../src/vdpa/device.js";
import type { DmaModel } from "../../src/vdpa/dma.js";
import { VdpaBus } from "../../src/vdpa/vdpa-bus.js";
import {
  VHOST_BACKEND_F_RESUME,
  VHOST_BACKEND_F_SUSPEND,
  type VhostVdpa,
  VhostVdpaDriver,
} from "../../src/vhost/vhost-vdpa.js";

const bit = (n: number): bigint => 1n << BigInt(n);
const ACK = 1;
const DRIVER = 2;
const DRIVER_OK = 4;
const FEATURES_OK = 8;
const NEEDS_RESET = 0x40;
const VERSION_1 = 32;
const ACCESS_PLATFORM = 33;
const RING_PACKED = 34;
const EVENT_IDX = 29;
const NET_HDR = 12;
const QUEUE = 16;

/** What QEMU does on a start: features, status, one IOTLB batch, every vring, DRIVER_OK. */
function startDevice(
  vhost: VhostVdpa,
  pool: DmaPool,
  format: RingFormat,
  queues: number[],
  calls: number[],
): Map<number, DriverRing<number>> {
  const offered = vhost.getFeatures();
  let features = bit(VERSION_1) | bit(ACCESS_PLATFORM) | bit(EVENT_IDX);
  if (format === "packed") features |= bit(RING_PACKED);
  assert.equal(offered & features, features, "the device offers what the test negotiates");
  const backend = vhost.getBackendFeatures();
  vhost.setBackendFeatures(
    backend & (bit(1) | bit(2) | bit(3) | bit(VHOST_BACKEND_F_SUSPEND) | bit(VHOST_BACKEND_F_RESUME)),
  );
  vhost.setStatus(ACK | DRIVER);
  vhost.setFeatures(features);
  vhost.setStatus(ACK | DRIVER | FEATURES_OK);
  assert.ok(vhost.getStatus() & FEATURES_OK, "device kept FEATURES_OK");
  vhost.iotlbBatchBegin(0);
  vhost.iotlbUpdate(0, pool.iovaBase, pool.size, pool.region, 0, PERM_RW);
  vhost.iotlbBatchEnd(0);
  const rings = new Map<number, DriverRing<number>>();
  for (const q of queues) {
    const ring = createDriverRing<number>(format, { num: QUEUE, pool, eventIdx: true, indirect: false });
    rings.set(q, ring);
    vhost.setVringNum(q, QUEUE);
    const a = ring.addresses;
    vhost.setVringAddr(q, { desc: a.desc, avail: a.driver, used: a.device });
    vhost.setVringBase(q, format === "packed" ? (0x8000 | (0x8000 << 16)) >>> 0 : 0);
    vhost.setVringCall(q, () => calls[q]++);
    vhost.setVringEnable(q, true);
  }
  vhost.setStatus(ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  return rings;
}

/** QEMU's stop: reset the device and give the rings' memory back. */
function stopDevice(vhost: VhostVdpa, pool: DmaPool, rings: Map<number, DriverRing<number>>): void {
  vhost.setStatus(0);
  for (const ring of rings.values())
    for (const b of (ring as unknown as { dmaBuffers: { iova: number }[] }).dmaBuffers) pool.release(b.iova);
  vhost.iotlbInvalidate(0, 0, 0);
}

interface Rig {
  vhost: VhostVdpa;
  sim: VdpaSim;
  device: VdpaDevice;
  pool: DmaPool;
}

function rig(device: VdpaDevice, sim: VdpaSim): Rig {
  const bus = new VdpaBus();
  const driver = new VhostVdpaDriver();
  bus.registerDriver(driver);
  bus.registerDevice(device);
  const vhost = driver.get(device)!;
  vhost.open();
  vhost.setOwner();
  return { vhost, sim, device, pool: new DmaPool({ size: 1 << 20, iovaBase: 0x1_0000_0000 }) };
}

function broadcastFrame(seq: number): Uint8Array {
  const f = new Uint8Array(NET_HDR + 64);
  f.fill(0xff, NET_HDR, NET_HDR + 6); // destination: broadcast, which Linux's filter always passes
  f[NET_HDR + 12] = 0x08;
  f[NET_HDR + 16] = seq & 0xff;
  f[NET_HDR + 17] = seq >> 8;
  return f;
}

/** Fills the rx ring, sends `count` frames starting at `first`; returns the rx buffers by token. */
function sendFrames(
  r: Rig,
  rings: Map<number, DriverRing<number>>,
  first: number,
  count: number,
): Map<number, { iova: number; bytes: Buffer }> {
  const rx = rings.get(0)!;
  const tx = rings.get(1)!;
  const bufs = new BufferList(2);
  const rxBufs = new Map<number, { iova: number; bytes: Buffer }>();
  for (let i = 0; i < count; i++) {
    const b = r.pool.alloc(2048);
    rxBufs.set(first + i, b);
    assert.ok(rx.add(bufs.clear().in(b.iova, b.size), first + i));
  }
  rx.publishAvail();
  r.vhost.kick(0);
  for (let i = 0; i < count; i++) {
    const frame = broadcastFrame(first + i);
    const b = r.pool.alloc(frame.length);
    b.bytes.set(frame);
    assert.ok(tx.add(bufs.clear().out(b.iova, frame.length), first + i));
  }
  tx.publishAvail();
  r.vhost.kick(1);
  return rxBufs;
}

/** Reclaims received frames: sequence numbers in the order they arrived. */
function received(rings: Map<number, DriverRing<number>>, rxBufs: Map<number, { bytes: Buffer }>): number[] {
  const rx = rings.get(0)!;
  const seqs: number[] = [];
  for (let t = rx.getUsed(); t !== undefined; t = rx.getUsed()) {
    assert.equal(rx.usedLen, NET_HDR + 64, "the whole frame, header included, came back");
    const bytes = rxBufs.get(t)!.bytes;
    seqs.push(bytes[NET_HDR + 16] | (bytes[NET_HDR + 17] << 8));
  }
  const tx = rings.get(1)!;
  while (tx.getUsed() !== undefined) assert.equal(tx.usedLen, 0, "Linux completes tx with length 0");
  return seqs;
}

const MODELS: DmaModel[] = ["set_map", "dma_map", "platform"];
const FORMATS: RingFormat[] = ["split", "packed"];

for (const format of FORMATS) {
  for (const dmaModel of MODELS) {
    describe(`vhost_vdpa + vdpasim_net, ${format} rings, ${dmaModel}`, () => {
      test("QEMU's sequence: traffic, suspend + vring bases + resume, reset, second start", async () => {
        const { device, sim } = createSimNet({
          name: "net0",
          dmaModel,
          packed: format === "packed",
          eventIdx: true,
        });
        const r = rig(device, sim);
        const calls = [0, 0, 0];
        assert.equal(r.vhost.getVqsCount(), 3);
        assert.equal(r.vhost.getConfigSize() >= 10, true);
        let rings = startDevice(r.vhost, r.pool, format, [0, 1], calls);

        let rxBufs = sendFrames(r, rings, 0, 5);
        await sim.whenIdle();
        assert.deepEqual(received(rings, rxBufs), [0, 1, 2, 3, 4]);
        assert.ok(calls[0] > 0 && calls[1] > 0, "used-buffer callbacks fired on both queues");

        // Migration-style stop: suspend, read stable bases, resume. Frames sent while suspended wait.
        r.vhost.suspend();
        const bases = [r.vhost.getVringBase(0), r.vhost.getVringBase(1)];
        if (format === "split") assert.deepEqual(bases, [5, 5]);
        else
          assert.deepEqual(
            bases,
            [0x8000 | 5 | ((0x8000 | 5) << 16), 0x8000 | 5 | ((0x8000 | 5) << 16)].map((b) => b >>> 0),
          );
        rxBufs = sendFrames(r, rings, 5, 3);
        await sim.whenIdle();
        assert.deepEqual(received(rings, rxBufs), [], "nothing moves while suspended");
        r.vhost.resume();
        await sim.whenIdle();
        assert.deepEqual(received(rings, rxBufs), [5, 6, 7], "kicks from the suspended time replayed once");

        // Stop and start again on the same handle (QEMU does this twice per boot).
        stopDevice(r.vhost, r.pool, rings);
        assert.equal(r.vhost.getStatus(), 0);
        rings = startDevice(r.vhost, r.pool, format, [0, 1], calls);
        rxBufs = sendFrames(r, rings, 100, 4);
        await sim.whenIdle();
        assert.deepEqual(received(rings, rxBufs), [100, 101, 102, 103]);
        assert.equal(sim.lastFault, null);
        r.vhost.release();
      });

      test("a descriptor outside every mapping: that queue stops with NEEDS_RESET, never other bytes", async () => {
        const { device, sim } = createSimNet({
          name: "net1",
          dmaModel,
          packed: format === "packed",
          eventIdx: true,
        });
        const r = rig(device, sim);
        let configChanges = 0;
        r.vhost.setConfigCall(() => configChanges++);
        const rings = startDevice(r.vhost, r.pool, format, [0, 1], [0, 0, 0]);
        const rx = rings.get(0)!;
        const good = r.pool.alloc(2048);
        good.bytes.fill(0xaa);
        const bufs = new BufferList(2);
        rx.add(bufs.clear().in(good.iova, 2048), 1);
        rx.publishAvail();
        const tx = rings.get(1)!;
        // An address nobody mapped: 1 MiB past the pool.
        tx.add(bufs.clear().out(r.pool.iovaBase + r.pool.size + 0x10_0000, 64), 2);
        tx.publishAvail();
        r.vhost.kick(1);
        await sim.whenIdle();
        assert.ok(r.vhost.getStatus() & NEEDS_RESET, "NEEDS_RESET set");
        assert.equal(configChanges, 1, "the config callback told the driver");
        assert.equal(sim.vqs[1].fault?.code, "IOTLB_MISS");
        assert.equal(rx.getUsed(), undefined, "nothing was delivered");
        assert.ok(
          good.bytes.every((b) => b === 0xaa),
          "the rx buffer was not touched",
        );
        r.vhost.release();
      });
    });

    describe(`vhost_vdpa + vdpasim_blk, ${format} rings, ${dmaModel}`, () => {
      test("write, read back and flush through the vhost object; suspend and resume in between", async () => {
        const { device, sim } = createSimBlk({
          name: "blk0",
          dmaModel,
          sizeBytes: 1 << 20,
          packed: format === "packed",
          eventIdx: true,
        });
        const r = rig(device, sim);
        const calls = [0];
        const rings = startDevice(r.vhost, r.pool, format, [0], calls);
        const q = rings.get(0)!;
        const bufs = new BufferList(4);
        const request = (
          type: number,
          sector: number,
          data: Uint8Array | null,
          readLen: number,
          token: number,
        ) => {
          const hdr = r.pool.alloc(16);
          hdr.bytes.writeUInt32LE(type, 0);
          hdr.bytes.writeBigUInt64LE(BigInt(sector), 8);
          bufs.clear().out(hdr.iova, 16);
          if (data) {
            const d = r.pool.alloc(data.length);
            d.bytes.set(data);
            bufs.out(d.iova, data.length);
          }
          const into = readLen ? r.pool.alloc(readLen) : null;
          if (into) bufs.in(into.iova, readLen);
          const status = r.pool.alloc(1);
          status.bytes[0] = 0xff;
          bufs.in(status.iova, 1);
          assert.ok(q.add(bufs, token));
          return { status: status.bytes, data: into?.bytes };
        };
        const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff);
        const w = request(1, 8, pattern, 0, 1);
        q.publishAvail();
        r.vhost.kick(0);
        await sim.whenIdle();
        assert.equal(q.getUsed(), 1);
        assert.equal(w.status[0], 0, "write OK");

        r.vhost.suspend();
        const rd = request(0, 8, null, 4096, 2);
        const fl = request(4, 0, null, 0, 3);
        q.publishAvail();
        r.vhost.kick(0);
        await sim.whenIdle();
        assert.equal(q.getUsed(), undefined, "suspended: nothing processed");
        const base = r.vhost.getVringBase(0);
        assert.equal(
          format === "split" ? base : base & 0x7fff,
          format === "split" ? 1 : 3,
          "one request (3 descriptors) consumed",
        );
        r.vhost.resume();
        await sim.whenIdle();
        assert.deepEqual([q.getUsed(), q.getUsed(), q.getUsed()], [2, 3, undefined]);
        assert.equal(rd.status[0], 0);
        assert.deepEqual(new Uint8Array(rd.data!), pattern, "read back what was written");
        assert.equal(fl.status[0], 0, "flush OK");
        assert.ok(calls[0] > 0);
        r.vhost.release();
      });
    });
  }
}
