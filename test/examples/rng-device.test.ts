// The README's "write your own device type" example, run: a virtio-rng device type in one file, on the
// bus, in each DMA model and both ring formats, driven like virtio_vdpa would.

import assert from "node:assert/strict";
import { test } from "node:test";
import { createSimRng } from "../../examples/rng-device.js";
import type { RingFormat } from "../../src/ring/index.js";
import type { DmaModel } from "../../src/vdpa/index.js";
import { VdpaBus } from "../../src/vdpa/index.js";
import { SimDriver } from "../support/sim-driver.js";

for (const format of ["split", "packed"] as RingFormat[]) {
  for (const dmaModel of ["set_map", "dma_map", "platform"] as DmaModel[]) {
    test(`virtio-rng example (${format}, ${dmaModel}): buffers come back full of random bytes`, async () => {
      const { device, sim, rng } = createSimRng("rng0", dmaModel);
      new VdpaBus().registerDevice(device);
      assert.equal(device.ops.getDeviceId(), 4);
      const driver = new SimDriver(device, { format }).start();
      const reqs = [driver.send(0, [], [64]), driver.send(0, [], [4096])];
      for (const r of reqs) r.ins[0].bytes.fill(0);
      driver.kick(0);
      await sim.whenIdle();
      const done = driver.collect(0);
      assert.equal(done.length, 2);
      assert.deepEqual(
        done.map((r) => r.usedLen),
        [64, 4096],
      );
      // 4096 random bytes are all zero with probability 2^-32768.
      assert.ok(done[1].written().some((b) => b !== 0));
      assert.equal(rng.bytesServed, 64 + 4096);
      assert.equal(sim.lastFault, null);
    });
  }
}
