import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  createVdpaSim,
  VDPASIM_FEATURES,
  type VdpaSim,
  type VdpaSimDevAttr,
} from "../../../src/devices/sim/index.js";
import { DmaPool, IOVA_LAST, Iotlb, PERM_RW } from "../../../src/memory/index.js";
import { Chain, type RingFormat } from "../../../src/ring/index.js";
import {
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_RING_PACKED,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../../src/spec/index.js";
import {
  type DmaModel,
  isVdpaError,
  VdpaBus,
  type VdpaConfigOps,
  VdpaDevice,
} from "../../../src/vdpa/index.js";
import { SimDriver } from "../../support/sim-driver.js";

const PACKED = 1n << BigInt(VIRTIO_F_RING_PACKED);
const EVENT_IDX = 1n << BigInt(VIRTIO_RING_F_EVENT_IDX);

/**
 * A whole device type in a few lines: every buffer comes back filled with 0x42 (think of a one-byte
 * entropy source). Two queues in two groups, so group and ASID handling can be seen.
 */
class FillDevice implements VdpaSimDevAttr {
  readonly id = 4;
  readonly supportedFeatures = VDPASIM_FEATURES | PACKED | EVENT_IDX;
  readonly nvqs = 2;
  readonly ngroups = 2;
  readonly nas = 2;
  readonly configSize = 4;
  runs = 0;
  throwNext: Error | null = null;
  /** Called after each completion with the queue and how many this run has completed on it. */
  onComplete: ((queue: number, doneInRun: number) => void) | null = null;
  private readonly chain = new Chain();

  vqGroup(idx: number): number {
    return idx;
  }

  work(sim: VdpaSim): boolean {
    this.runs++;
    if (this.throwNext) throw this.throwNext;
    for (let q = 0; q < this.nvqs; q++) {
      let done = 0;
      while (sim.getDesc(q, this.chain) > 0) {
        const len = this.chain.writeLen;
        this.chain.writable.copyFrom(new Uint8Array(len).fill(0x42), 0, len);
        sim.complete(q, this.chain, len);
        this.onComplete?.(q, ++done);
      }
    }
    return false;
  }
}

function make(dmaModel: DmaModel = "set_map", pollMicros?: number) {
  const attr = new FillDevice();
  const sim = createVdpaSim(attr, { name: "fill", dmaModel, pollMicros });
  const device = new VdpaDevice({ ops: sim, nvqs: 2, ngroups: sim.ngroups, nas: sim.nas });
  sim.setDevice(device);
  // The ops table as bus drivers see it: the optional DMA ops exist only in their model.
  const ops: VdpaConfigOps = sim;
  return { attr, sim, device, ops };
}

describe("vdpa_sim core: the ops table", () => {
  test("each DMA model exposes exactly its ops; VdpaDevice reads the model from them", () => {
    const setMap = make("set_map");
    const dmaMap = make("dma_map");
    const platform = make("platform");
    assert.deepEqual(
      ["setMap" in setMap.sim, "dmaMap" in setMap.sim, "dmaUnmap" in setMap.sim],
      [true, false, false],
    );
    assert.deepEqual(
      ["setMap" in dmaMap.sim, "dmaMap" in dmaMap.sim, "dmaUnmap" in dmaMap.sim],
      [false, true, true],
    );
    assert.deepEqual(
      [
        "setMap" in platform.sim,
        "dmaMap" in platform.sim,
        "dmaUnmap" in platform.sim,
        "resetMap" in platform.sim,
      ],
      [false, false, false, false],
    );
    assert.deepEqual(
      [setMap.device.dmaModel, dmaMap.device.dmaModel, platform.device.dmaModel],
      ["set_map", "dma_map", "platform"],
    );
    assert.deepEqual([platform.sim.ngroups, platform.sim.nas], [1, 1]);
  });

  test("Linux's constants", () => {
    const { sim } = make();
    assert.equal(sim.getVendorId(), 0);
    assert.equal(sim.getVqAlign(), 4096);
    assert.equal(sim.getVqNumMax(), 256);
    assert.equal(sim.getBackendFeatures(), 1n << 6n);
    assert.deepEqual(sim.getIovaRange(), { first: 0, last: IOVA_LAST });
    assert.equal(IOVA_LAST, 2 ** 53 - 1);
    assert.equal(sim.getDeviceId(), 4);
    assert.equal(sim.getConfigSize(), 4);
  });

  test("driver features need ACCESS_PLATFORM and are cut to what is offered", () => {
    const { sim } = make();
    assert.throws(
      () => sim.setDriverFeatures(1n << 32n),
      (e) => isVdpaError(e, "EINVAL"),
    );
    sim.setDriverFeatures(VDPASIM_FEATURES | (1n << 5n));
    assert.equal(sim.getDriverFeatures(), VDPASIM_FEATURES);
  });

  test("get_vq_size: the maximum until DRIVER_OK, then the queue's size", () => {
    const { sim } = make();
    sim.setVqNum(0, 64);
    assert.equal(sim.getVqSize(0), 256);
    sim.setStatus(VIRTIO_CONFIG_S_DRIVER_OK);
    assert.equal(sim.getVqSize(0), 64);
  });

  test("queue indices past nvqs are EINVAL", () => {
    const { sim } = make();
    assert.throws(
      () => sim.setVqNum(2, 8),
      (e) => isVdpaError(e, "EINVAL"),
    );
    assert.throws(
      () => sim.getVqState(-1),
      (e) => isVdpaError(e, "EINVAL"),
    );
  });
});

describe("vdpa_sim core: mappings and address spaces", () => {
  test("IOTLBs start empty; set_map replaces an ASID with a copy of the given table", () => {
    const { sim, ops } = make("set_map");
    assert.equal(sim.asidIotlb(0)!.size, 0);
    assert.equal(sim.asidIotlb(1)!.size, 0);
    const pool = new DmaPool({ size: 65536 });
    const table = new Iotlb();
    pool.mapInto(table);
    ops.setMap!(1, table);
    assert.deepEqual(sim.asidIotlb(1)!.entries(), table.entries());
    table.clear();
    assert.equal(sim.asidIotlb(1)!.size, 1);
    assert.throws(
      () => ops.setMap!(2, table),
      (e) => isVdpaError(e, "EINVAL"),
    );
    ops.resetMap!(1);
    assert.equal(sim.asidIotlb(1)!.size, 0);
  });

  test("dma_map / dma_unmap edit one ASID", () => {
    const { sim, ops } = make("dma_map");
    const pool = new DmaPool({ size: 65536 });
    ops.dmaMap!(0, pool.iovaBase, 65536, pool.region, 0, PERM_RW);
    ops.dmaUnmap!(0, pool.iovaBase, 4096);
    assert.deepEqual(
      sim
        .asidIotlb(0)!
        .entries()
        .map((e) => [e.first - pool.iovaBase, e.last - pool.iovaBase]),
      [[4096, 65535]],
    );
    assert.equal(sim.asidIotlb(1)!.size, 0);
    assert.throws(
      () => ops.dmaMap!(2, 0, 4096, pool.region, 0, PERM_RW),
      (e) => isVdpaError(e, "EINVAL"),
    );
    assert.throws(
      () => ops.dmaMap!(0, 0, 0, pool.region, 0, PERM_RW),
      (e) => isVdpaError(e, "EINVAL"),
    );
  });

  test("set_group_asid: Linux's bounds (group == ngroups passes and does nothing); reset rebinds to ASID 0", () => {
    const { sim } = make("set_map");
    assert.throws(
      () => sim.setGroupAsid(3, 0),
      (e) => isVdpaError(e, "EINVAL"),
    );
    assert.throws(
      () => sim.setGroupAsid(0, 2),
      (e) => isVdpaError(e, "EINVAL"),
    );
    sim.setGroupAsid(2, 1);
    sim.setGroupAsid(1, 1);
    const spaces = (sim as unknown as { spaces: { asidOf(g: number): number } }).spaces;
    assert.equal(spaces.asidOf(1), 1);
    sim.reset();
    assert.equal(spaces.asidOf(1), 0);
  });

  test("platform model: translation goes through the bus's domain, which exists once registered", async () => {
    const { sim, device } = make("platform");
    assert.equal(sim.asidIotlb(0), null);
    new VdpaBus().registerDevice(device);
    assert.equal(sim.asidIotlb(0), device.platformDomain!.iotlb);
    assert.throws(
      () => sim.setGroupAsid(0, 1),
      (e) => isVdpaError(e, "EINVAL"),
    );
    const driver = new SimDriver(device, { format: "split" }).start();
    const req = driver.send(1, [], [8]);
    driver.kick(1);
    await sim.whenIdle();
    assert.deepEqual(driver.collect(1), [req]);
    assert.deepEqual([...req.written()], Array(8).fill(0x42));
  });

  test("platform model without a domain: the queue faults at its first run", async () => {
    const { sim, device } = make("platform");
    sim.setDriverFeatures(VDPASIM_FEATURES);
    sim.setVqNum(0, 8);
    sim.setVqReady(0, true);
    sim.setStatus(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    sim.kickVq(0);
    await sim.whenIdle();
    assert.equal(sim.vqs[0].fault?.code, "IOTLB_MISS");
    assert.ok(device.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
  });

  test("a ring mapped only after it became ready is built at the first run", async () => {
    const { sim, device, ops } = make("dma_map");
    const pool = new DmaPool({ size: 1 << 20 });
    const driver = new SimDriver(device, { format: "split", pools: [pool] });
    driver.start();
    // Unmap everything, then ready the queue again with nothing mapped, then map.
    ops.dmaUnmap!(0, pool.iovaBase, pool.size);
    sim.setVqReady(1, false);
    sim.setVqReady(1, true);
    ops.dmaMap!(0, pool.iovaBase, pool.size, pool.region, 0, PERM_RW);
    const req = driver.send(1, [], [4]);
    driver.kick(1);
    await sim.whenIdle();
    assert.deepEqual(driver.collect(1), [req]);
  });
});

for (const format of ["split", "packed"] as RingFormat[]) {
  describe(`vdpa_sim core: ${format} queue state`, () => {
    const state =
      format === "packed"
        ? { packed: { lastAvailCounter: 0, lastAvailIdx: 5, lastUsedCounter: 0, lastUsedIdx: 5 } }
        : { split: { availIndex: 5 } };

    test("a state set before ready is kept, applied to the ring, and read back from it", () => {
      const { sim, ops } = make();
      sim.setDriverFeatures(VDPASIM_FEATURES | (format === "packed" ? PACKED : 0n));
      const pool = new DmaPool({ size: 1 << 20 });
      const iotlb = new Iotlb();
      pool.mapInto(iotlb);
      ops.setMap!(0, iotlb);
      sim.setVqState(0, state);
      assert.deepEqual(sim.getVqState(0), state);
      const area = pool.alloc(16 * 64, 4096);
      sim.setVqNum(0, 16);
      sim.setVqAddress(0, area.iova, area.iova + 512, area.iova + 768);
      sim.setVqReady(0, true);
      assert.ok(sim.vqs[0].ring);
      assert.deepEqual(sim.getVqState(0), state);
      // Stopping the queue keeps the position.
      sim.setVqReady(0, false);
      assert.deepEqual(sim.getVqState(0), state);
      sim.reset();
      assert.deepEqual(
        sim.getVqState(0),
        { split: { availIndex: 0 } },
        "after reset features are 0, so the state reads as split",
      );
    });

    test("a state of the wrong format or out of range is EINVAL", () => {
      const { sim } = make();
      sim.setDriverFeatures(VDPASIM_FEATURES | (format === "packed" ? PACKED : 0n));
      const wrong =
        format === "packed"
          ? { split: { availIndex: 1 } }
          : { packed: { lastAvailCounter: 1, lastAvailIdx: 0, lastUsedCounter: 1, lastUsedIdx: 0 } };
      assert.throws(
        () => sim.setVqState(0, wrong),
        (e) => isVdpaError(e, "EINVAL"),
      );
      const big =
        format === "packed"
          ? { packed: { lastAvailCounter: 1, lastAvailIdx: 0x8000, lastUsedCounter: 1, lastUsedIdx: 0 } }
          : { split: { availIndex: 0x10000 } };
      assert.throws(
        () => sim.setVqState(0, big),
        (e) => isVdpaError(e, "EINVAL"),
      );
    });

    test("traffic moves the state; setGroupAsid rebuilds the ring on the new ASID and keeps its position", async () => {
      const { sim, device, ops } = make("set_map");
      const pool = new DmaPool({ size: 1 << 20 });
      const driver = new SimDriver(device, { format, pools: [pool, pool] }).start();
      for (let i = 0; i < 3; i++) driver.send(1, [], [4]);
      driver.kick(1);
      await sim.whenIdle();
      assert.equal(driver.collect(1).length, 3);
      const moved = sim.getVqState(1);
      sim.setGroupAsid(1, 1);
      assert.deepEqual(sim.getVqState(1), moved);
      driver.send(1, [], [4]);
      driver.kick(1);
      await sim.whenIdle();
      assert.equal(driver.collect(1).length, 1);
      // ASID 1 loses its map: the queue in it faults, the other one goes on.
      ops.resetMap!(1);
      driver.send(1, [], [4]);
      driver.send(0, [], [4]);
      driver.kick(1);
      driver.kick(0);
      await sim.whenIdle();
      assert.equal(sim.vqs[1].fault?.code, "IOTLB_MISS");
      assert.equal(driver.collect(0).length, 1);
    });
  });
}

describe("vdpa_sim core: status, scheduling and faults", () => {
  test("a kick schedules one run on a later turn; kicks before DRIVER_OK do not run the device", async () => {
    // Linux's behaviour, polling off: exactly one run per burst of kicks.
    const { sim, attr, device } = make("set_map", 0);
    const driver = new SimDriver(device, { format: "split" });
    driver.start();
    const runs = attr.runs;
    driver.send(0, [], [4]);
    driver.kick(0);
    driver.kick(0);
    assert.equal(attr.runs, runs);
    assert.equal(sim.workPending, true);
    await sim.whenIdle();
    assert.equal(attr.runs, runs + 1);

    sim.reset();
    sim.setVqReady(0, true);
    sim.kickVq(0);
    await sim.whenIdle();
    assert.equal(attr.runs, runs + 1);
  });

  test("NEEDS_RESET survives the driver's status writes until reset", async () => {
    const { sim, attr, device } = make();
    const driver = new SimDriver(device, { format: "split" }).start();
    attr.throwNext = new Error("a bug in the device type");
    driver.send(0, [], [4]);
    driver.kick(0);
    await sim.whenIdle();
    // The error stopped the device, not the process.
    assert.equal(sim.deviceBroken, true);
    assert.deepEqual(
      { queue: sim.lastFault?.queue, code: sim.lastFault?.code },
      { queue: -1, code: "DEVICE_ERROR" },
    );
    assert.equal(driver.configChanges, 1);
    device.setStatus(VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
    assert.ok(device.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
    attr.throwNext = null;
    device.reset();
    assert.equal(device.getStatus(), 0);
    assert.equal(sim.deviceBroken, false);
  });

  test("a callback that throws is swallowed and counted", async () => {
    const { sim, device } = make();
    const driver = new SimDriver(device, { format: "split" }).start();
    sim.setVqCb(0, {
      callback: () => {
        throw new Error("driver bug");
      },
    });
    driver.send(0, [], [4]);
    driver.kick(0);
    await sim.whenIdle();
    assert.equal(sim.callbackErrors, 1);
    assert.equal(driver.collect(0).length, 1);
  });

  test("a kick that was already scheduled when the device was suspended is replayed on resume", async () => {
    const { sim, device } = make();
    const driver = new SimDriver(device, { format: "split" }).start();
    driver.send(0, [], [4]);
    driver.kick(0);
    sim.suspend();
    await sim.whenIdle();
    assert.equal(driver.collect(0).length, 0);
    sim.resume();
    await sim.whenIdle();
    assert.equal(driver.collect(0).length, 1);
  });

  test("a queue enabled after DRIVER_OK (ENABLE_AFTER_DRIVER_OK) is looked at without a kick", async () => {
    const { sim, device } = make();
    const driver = new SimDriver(device, { format: "split", eventIdx: false }).start();
    sim.setVqReady(1, false);
    const req = driver.send(1, [], [4]);
    sim.setVqReady(1, true);
    await sim.whenIdle();
    assert.deepEqual(driver.collect(1), [req]);
  });

  test("free() cancels a pending run", async () => {
    const { sim, attr, device } = make();
    const driver = new SimDriver(device, { format: "split" }).start();
    const runs = attr.runs;
    driver.send(0, [], [4]);
    driver.kick(0);
    sim.free();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(attr.runs, runs);
    assert.equal(sim.workPending, false);
  });

  test("config accesses out of bounds are ignored; a generation bump per reset", () => {
    const { sim } = make();
    sim.setConfig(0, Uint8Array.of(1, 2, 3, 4), 4);
    const buf = new Uint8Array(4);
    sim.getConfig(0, buf, 4);
    assert.deepEqual([...buf], [1, 2, 3, 4]);
    sim.setConfig(2, Uint8Array.of(9, 9, 9), 3);
    sim.getConfig(3, buf, 2);
    assert.deepEqual([...buf], [1, 2, 3, 4]);
    const g = sim.getGeneration();
    sim.reset();
    assert.equal(sim.getGeneration(), g + 1);
  });
});

/** Event loop turns until `done()` holds (at most `max`): the device runs once per turn. */
async function turnsUntil(done: () => boolean, max = 1000): Promise<number> {
  for (let n = 0; n < max; n++) {
    if (done()) return n;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  throw new Error(`not done after ${max} event loop turns`);
}

describe("vdpa_sim core: polling while busy", () => {
  for (const format of ["split", "packed"] as RingFormat[]) {
    for (const eventIdx of [false, true]) {
      const name = `${format}${eventIdx ? " + EVENT_IDX" : ""}`;
      test(`${name}: a busy device takes buffers without kicks, then sleeps and asks for kicks again`, async () => {
        // A long budget, so the test sees polling whatever the machine's speed; ended by hand below.
        const { sim, device } = make("set_map", 10_000_000 / 1000);
        const driver = new SimDriver(device, { format, eventIdx }).start();
        driver.send(0, [], [4]);
        assert.equal(driver.kickIfWanted(0), true, "an idle device wants the first kick");
        await turnsUntil(() => driver.collect(0).length === 1);
        assert.equal(sim.polling, true, "progress starts polling");
        for (let i = 0; i < 3; i++) {
          driver.send(0, [], [4]);
          assert.equal(driver.kickIfWanted(0), false, `buffer ${i}: no kick wanted while polling`);
          await turnsUntil(() => driver.collect(0).length === 1);
        }
        assert.equal(sim.pollSleeps, 0);
      });
    }
  }

  /** A split device with this poll time that served one kicked buffer and went quiet. */
  async function servedOne(pollMicros: number) {
    const { sim, device } = make("set_map", pollMicros);
    const driver = new SimDriver(device, { format: "split" }).start();
    driver.send(0, [], [4]);
    driver.kick(0);
    await sim.whenIdle();
    assert.equal(driver.collect(0).length, 1);
    assert.equal(sim.polling, false);
    return { sim, driver };
  }

  test("after the budget without progress the device sleeps; the next buffer wants a kick and waits for it", async () => {
    const { sim, driver } = await servedOne(200);
    assert.equal(sim.pollSleeps, 1);
    assert.equal(sim.workPending, false, "asleep: nothing scheduled");
    driver.send(0, [], [4]);
    assert.equal(driver.kickIfWanted(0), true, "notifications were re-armed before sleeping");
    await sim.whenIdle();
    assert.equal(driver.collect(0).length, 1);
  });

  test("pollMicros 0 is Linux's behaviour: notifications stay on and a buffer without a kick waits", async () => {
    const { sim, driver } = await servedOne(0);
    assert.equal(sim.pollSleeps, 0, "it never polled");
    driver.send(0, [], [4]);
    assert.equal(driver.kickWanted.get(0), true);
    await sim.whenIdle();
    assert.equal(driver.collect(0).length, 0, "not kicked: not served");
    driver.kick(0);
    await sim.whenIdle();
    assert.equal(driver.collect(0).length, 1);
    assert.throws(
      () => make("set_map", -1),
      (e) => isVdpaError(e, "EINVAL"),
    );
  });

  test("suspend ends polling without losing a buffer; resume serves it", async () => {
    const { sim, device } = make("set_map", 10_000);
    const driver = new SimDriver(device, { format: "split" }).start();
    driver.send(0, [], [4]);
    driver.kick(0);
    await turnsUntil(() => driver.collect(0).length === 1);
    assert.equal(sim.polling, true);
    sim.suspend();
    driver.send(0, [], [4]);
    await sim.whenIdle();
    assert.equal(driver.collect(0).length, 0, "suspended: nothing served");
    sim.resume();
    await turnsUntil(() => driver.collect(0).length === 1);
    sim.reset();
    assert.equal(sim.polling, false, "reset ends polling");
  });

  test("used buffers are published every 16 inside a run; the driver's callback comes once, at its end", async () => {
    const { sim, attr, device } = make("set_map", 0);
    const driver = new SimDriver(device, { format: "split", num: 64 }).start();
    const seen: number[] = [];
    attr.onComplete = (q, done) => {
      // What the driver can already take back while the device is still working.
      if (q === 0 && done % 8 === 0) seen.push(driver.collect(0).length);
      if (q === 0 && done === 40) assert.equal(driver.callbacks[0], 0, "no callback inside the run");
    };
    for (let i = 0; i < 40; i++) driver.send(0, [], [4]);
    driver.kick(0);
    await sim.whenIdle();
    assert.deepEqual(seen, [0, 16, 0, 16, 0]);
    assert.equal(driver.collect(0).length, 8, "the rest at the end of the run");
    assert.equal(driver.callbacks[0], 1);
  });
});
