// The real drivers on the real simulators through virtio_vdpa, end to end: both ring formats, each DMA
// model. Frames loop back, blocks round-trip, a device fault (NEEDS_RESET) is recovered from while
// traffic flows, and unbinding with requests in flight completes or fails every one of them.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createSimBlk } from "../../src/devices/sim/blk.js";
import { createSimNet } from "../../src/devices/sim/net.js";
import { RingError } from "../../src/ring/errors.js";
import type { VdpaDevice } from "../../src/vdpa/device.js";
import type { DmaModel } from "../../src/vdpa/dma.js";
import { VdpaBus } from "../../src/vdpa/vdpa-bus.js";
import { type VirtioBlk, VirtioBlkDriver } from "../../src/virtio/blk.js";
import { type VirtioNet, VirtioNetDriver } from "../../src/virtio/net.js";
import { VirtioBus } from "../../src/virtio/virtio-bus.js";
import { VirtioVdpaDriver } from "../../src/virtio/virtio-vdpa.js";

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await tick();
  assert.ok(cond(), `timed out waiting for ${what}`);
}

function bind<T>(device: VdpaDevice, driver: VirtioNetDriver | VirtioBlkDriver): { bus: VdpaBus; drv: T } {
  const virtioBus = new VirtioBus();
  let drv: T | undefined;
  virtioBus.on("bound", (transport) => {
    drv = (driver.devices as Map<unknown, unknown>).get(transport) as T;
  });
  virtioBus.registerDriver(driver);
  const bus = new VdpaBus();
  bus.registerDriver(new VirtioVdpaDriver(virtioBus));
  bus.registerDevice(device);
  assert.ok(drv, "the virtio driver bound");
  return { bus, drv: drv as T };
}

function broadcast(seq: number): Uint8Array {
  const f = new Uint8Array(60);
  f.fill(0xff, 0, 6);
  f[20] = seq & 0xff;
  f[21] = seq >> 8;
  return f;
}

const MODELS: DmaModel[] = ["set_map", "dma_map", "platform"];

for (const packed of [false, true]) {
  for (const dmaModel of MODELS) {
    const label = `${packed ? "packed" : "split"}, ${dmaModel}`;
    describe(`virtio-net on vdpasim_net (${label})`, () => {
      test("frames loop back; a queue fault is recovered from while traffic flows", async () => {
        const { device, sim } = createSimNet({
          name: "n0",
          dmaModel,
          packed,
          eventIdx: packed,
          indirect: packed,
        });
        const { drv: net, bus } = bind<VirtioNet>(device, new VirtioNetDriver({ queueSize: 64 }));
        assert.equal(net.features & (1n << 34n), packed ? 1n << 34n : 0n, "ring format negotiated");
        const seen: number[] = [];
        net.onReceive((frame) => seen.push(frame[20] | (frame[21] << 8)));
        for (let i = 0; i < 40; i++) assert.ok(net.send(broadcast(i)));
        net.flush();
        await until(() => seen.length === 40, "40 frames");
        assert.deepEqual(
          seen,
          Array.from({ length: 40 }, (_, i) => i),
        );

        // The device breaks its tx queue mid-stream: NEEDS_RESET, the driver resets and comes back.
        const resets: (Error | null)[] = [];
        net.onReset((err) => resets.push(err));
        for (let i = 0; i < 10; i++) net.send(broadcast(100 + i));
        sim.faultQueue(sim.vqs[1], new RingError("DESC_LOOP", "injected by the test"));
        net.flush();
        await until(() => resets.length > 0 && net.state === "running", "recovery");
        assert.equal(resets[0], null, "recovered");
        assert.equal(net.stats.resets, 1);
        seen.length = 0;
        for (let i = 0; i < 5; i++) assert.ok(net.send(broadcast(200 + i)));
        net.flush();
        await until(() => seen.length === 5, "traffic after recovery");
        assert.deepEqual(seen, [200, 201, 202, 203, 204]);

        // Unbind with frames in flight: each send completes or fails; nothing is left waiting.
        const pending = Array.from({ length: 8 }, (_, i) =>
          net.sendAsync(broadcast(300 + i)).then(
            () => "ok",
            () => "failed",
          ),
        );
        bus.unbind(device);
        const outcomes = await Promise.all(pending);
        assert.equal(outcomes.length, 8);
        assert.equal(device.getStatus(), 0, "the device was reset");
      });
    });

    describe(`virtio-blk on vdpasim_blk (${label})`, () => {
      test("write, read back, flush, get-id; unbind with reads in flight fails them", async () => {
        const { device } = createSimBlk({
          name: "b0",
          dmaModel,
          sizeBytes: 4 << 20,
          packed,
          eventIdx: packed,
          indirect: packed,
        });
        const { drv: blk, bus } = bind<VirtioBlk>(device, new VirtioBlkDriver({ queueSize: 32 }));
        assert.equal(blk.capacity, (4 << 20) / 512);
        const data = Uint8Array.from({ length: 64 * 1024 }, (_, i) => (i * 13 + 7) & 0xff);
        await blk.write(100, data);
        assert.deepEqual(await blk.read(100, data.length / 512), data);
        await blk.flush();
        assert.equal(await blk.getId(), "vdpa_blk_sim");
        await assert.rejects(blk.read(blk.capacity, 1), /RangeError|capacity|past/i);
        const reads = Array.from({ length: 16 }, (_, i) =>
          blk.read(i * 8, 8).then(
            () => "ok",
            (e: Error) => e.name,
          ),
        );
        bus.unbind(device);
        const outcomes = await Promise.all(reads);
        assert.equal(outcomes.length, 16, "every request settled");
        assert.ok(
          outcomes.every((o) => o === "ok" || o === "VirtioBlkError"),
          outcomes.join(","),
        );
      });
    });
  }
}
