import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  createSimNet,
  macMatchesLikeStrncmp,
  type SimNetOptions,
  VDPASIM_NET_CVQ,
  VDPASIM_NET_FEATURES,
  VDPASIM_NET_RXQ,
  VDPASIM_NET_TXQ,
  vdpasimNetMgmtDev,
} from "../../../src/devices/sim/index.js";
import { DmaPool } from "../../../src/memory/index.js";
import type { RingFormat } from "../../../src/ring/index.js";
import {
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_ERR,
  VIRTIO_NET_OK,
} from "../../../src/spec/index.js";
import {
  attrBit,
  type DmaModel,
  emptyDevSetConfig,
  isVdpaError,
  VDPA_RESET_F_CLEAN_MAP,
} from "../../../src/vdpa/index.js";
import { SimDriver, type SimDriverOptions, type SimRequest } from "../../support/sim-driver.js";

const RX = VDPASIM_NET_RXQ;
const TX = VDPASIM_NET_TXQ;
const CVQ = VDPASIM_NET_CVQ;
const MAC = Uint8Array.of(0x00, 0x11, 0x22, 0x33, 0x44, 0x55);
const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const OTHER = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
const MULTICAST = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
const FORMATS: RingFormat[] = ["split", "packed"];
const MODELS: DmaModel[] = ["set_map", "dma_map", "platform"];

/** A frame as a virtio-net driver sends it: header (12 bytes with VERSION_1), dest, src, type, payload. */
function frame(dest: ArrayLike<number>, payload: string, hdrLen = 12): Uint8Array {
  const body = Buffer.from(payload);
  const f = new Uint8Array(hdrLen + 14 + body.length);
  f.set(dest, hdrLen);
  f.set(MAC, hdrLen + 6);
  f[hdrLen + 12] = 0x08;
  f.set(body, hdrLen + 14);
  return f;
}

function start(
  format: RingFormat,
  dmaModel: DmaModel,
  simOpts: SimNetOptions = {},
  drvOpts: Partial<SimDriverOptions> = {},
) {
  const made = createSimNet({ mac: MAC, dmaModel, packed: format === "packed", ...simOpts });
  const driver = new SimDriver(made.device, { format, ...drvOpts }).start();
  return { ...made, driver };
}

function postRx(driver: SimDriver, count: number, len = 2048): SimRequest[] {
  return Array.from({ length: count }, () => driver.send(RX, [], [len]));
}

function le16(bytes: Uint8Array, off: number): number {
  return bytes[off] | (bytes[off + 1] << 8);
}

function ctrl(cls: number, cmd: number, data: ArrayLike<number>): Uint8Array[] {
  return [Uint8Array.of(cls, cmd), Uint8Array.from(data)];
}

for (const format of FORMATS) {
  for (const dmaModel of MODELS) {
    describe(`vdpasim_net, ${format} ring, ${dmaModel} DMA`, () => {
      test("TX loops to RX through the MAC filter; a kick only schedules the work", async () => {
        const { sim, net, driver, device } = start(format, dmaModel);
        postRx(driver, 4);
        const frames = [
          frame(BROADCAST, "bcast"),
          frame(MAC, "mine"),
          frame(OTHER, "theirs"),
          frame(MULTICAST, "mc"),
        ];
        for (const f of frames) driver.send(TX, [f]);
        driver.kick(TX);
        // Nothing happens inside the kick call.
        assert.equal(net.tx.pkts, 0);
        assert.equal(driver.collect(TX).length, 0);
        await sim.whenIdle();

        const txDone = driver.collect(TX);
        assert.equal(txDone.length, 4);
        assert.ok(txDone.every((r) => r.usedLen === 0));
        const rxDone = driver.collect(RX);
        assert.deepEqual(
          rxDone.map((r) => Buffer.from(r.written())),
          [frames[0], frames[1], frames[3]].map((f) => Buffer.from(f)),
        );
        assert.deepEqual(net.rx, { pkts: 3, bytes: 3 * 26 + 5 + 4 + 2, errors: 0, overruns: 0, drops: 1 });
        assert.equal(net.tx.pkts, 4);
        assert.equal(
          net.tx.bytes,
          frames.reduce((n, f) => n + f.length, 0),
        );
        assert.ok(driver.callbacks[RX] > 0 && driver.callbacks[TX] > 0);
        assert.deepEqual(
          device.ops.getVendorVqStats!(RX).map((s) => [s.name, s.value]),
          [
            ["rx packets", 3n],
            ["rx bytes", 89n],
            ["rx errors", 0n],
            ["rx overruns", 0n],
            ["rx drops", 1n],
          ],
        );
      });

      test("the control queue's MAC_ADDR_SET changes the config MAC; other commands get VIRTIO_NET_ERR", async () => {
        const { sim, net, driver, device } = start(format, dmaModel);
        const newMac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        const ok = driver.send(CVQ, ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, newMac), [1]);
        const bad = driver.send(CVQ, ctrl(4 /* MQ */, 0, [1, 0]), [1]);
        driver.kick(CVQ);
        await sim.whenIdle();
        assert.deepEqual(driver.collect(CVQ), [ok, bad]);
        assert.equal(ok.usedLen, 1);
        assert.equal(ok.written()[0], VIRTIO_NET_OK);
        assert.equal(bad.written()[0], VIRTIO_NET_ERR);
        assert.deepEqual([...device.getConfig(0, 6)], newMac);
        assert.deepEqual(net.cvq, { requests: 2, successes: 1, errors: 1 });

        // The filter follows the new MAC.
        postRx(driver, 1);
        driver.send(TX, [frame(newMac, "to the new mac")]);
        driver.kick(TX);
        await sim.whenIdle();
        assert.equal(driver.collect(RX).length, 1);
      });

      test("a descriptor outside every mapping stops that queue only, without reading other memory", async () => {
        const { sim, net, driver, device } = start(format, dmaModel);
        // Memory that exists but was never mapped for this device, right past the driver's pool.
        const pool = driver.pools[0];
        const secret = new DmaPool({ size: 4096, iovaBase: pool.iovaBase + pool.size, name: "secret" });
        secret.alloc(4096).bytes.fill(0xa5);
        const rxBufs = postRx(driver, 2);
        driver.sendRaw(TX, [[secret.iovaBase, 64]]);
        driver.kick(TX);
        await sim.whenIdle();

        assert.ok(device.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET);
        assert.equal(driver.configChanges, 1);
        assert.deepEqual(sim.lastFault && { queue: sim.lastFault.queue, code: sim.lastFault.code }, {
          queue: TX,
          code: "IOTLB_MISS",
        });
        assert.equal(net.tx.errors, 1);
        assert.equal(driver.collect(RX).length, 0);
        // The rx buffers still hold zeros: not one byte of the unmapped memory went anywhere.
        assert.ok(rxBufs.every((r) => r.ins[0].bytes.every((b) => b === 0)));

        // The TX queue stays stopped; the control queue keeps working.
        driver.send(TX, [frame(BROADCAST, "after the fault")]);
        const cmd = driver.send(CVQ, ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, OTHER), [1]);
        driver.kick(TX);
        driver.kick(CVQ);
        await sim.whenIdle();
        assert.equal(driver.collect(TX).length, 0);
        assert.deepEqual(driver.collect(CVQ), [cmd]);
        assert.equal(cmd.written()[0], VIRTIO_NET_OK);
      });

      test("suspend holds traffic and the ring state; resume replays the kicks, nothing lost or doubled", async () => {
        const { sim, driver, device } = start(format, dmaModel);
        postRx(driver, 8);
        driver.send(TX, [frame(BROADCAST, "one")]);
        driver.kick(TX);
        await sim.whenIdle();
        assert.equal(driver.collect(RX).length, 1);
        assert.equal(driver.collect(TX).length, 1);

        device.ops.suspend!();
        const before = device.ops.getVqState(TX);
        driver.send(TX, [frame(BROADCAST, "two")]);
        driver.send(TX, [frame(BROADCAST, "three")]);
        driver.kick(TX);
        await sim.whenIdle();
        assert.equal(driver.collect(RX).length, 0);
        assert.deepEqual(device.ops.getVqState(TX), before);
        assert.equal(sim.pendingKick, true);

        device.ops.resume!();
        await sim.whenIdle();
        const got = driver.collect(RX).map((r) => r.written().subarray(26).toString());
        assert.deepEqual(got, ["two", "three"]);
        assert.equal(driver.collect(TX).length, 2);
        const after = device.ops.getVqState(TX);
        if (format === "split") assert.deepEqual(after, { split: { availIndex: 3 } });
        else assert.equal(after.packed?.lastAvailIdx, 3);
      });

      test("reset clears status, features and queues but keeps mappings; the device is reusable", async () => {
        const { sim, driver, device } = start(format, dmaModel);
        postRx(driver, 1);
        driver.send(TX, [frame(BROADCAST, "before reset")]);
        driver.kick(TX);
        await sim.whenIdle();
        const generation = sim.getGeneration();

        device.reset();
        assert.equal(device.getStatus(), 0);
        assert.equal(sim.getDriverFeatures(), 0n);
        assert.equal(sim.getVqReady(TX), false);
        assert.equal(sim.vqs[TX].cb, null);
        assert.equal(sim.getGeneration(), generation + 1);
        if (dmaModel === "platform") assert.ok(device.platformDomain!.iotlb.size > 0);
        else assert.ok(sim.asidIotlb(0)!.size > 0);

        // A second bring-up on the same pool and mappings.
        const again = new SimDriver(device, { format, pools: driver.pools }).start();
        postRx(again, 1);
        again.send(TX, [frame(MAC, "after reset")]);
        again.kick(TX);
        await sim.whenIdle();
        assert.equal(again.collect(RX)[0].written().subarray(26).toString(), "after reset");
      });
    });
  }
}

describe("vdpasim_net address spaces", () => {
  for (const format of FORMATS) {
    for (const dmaModel of ["set_map", "dma_map"] as DmaModel[]) {
      test(`${format}/${dmaModel}: setGroupAsid moves the cvq to ASID 1, which must map its buffers`, async () => {
        const data = new DmaPool({ size: 1 << 20, iovaBase: 0x1000_0000, name: "asid0" });
        const ctrlPool = new DmaPool({ size: 1 << 20, iovaBase: 0x2000_0000, name: "asid1" });
        const { sim, driver, device } = start(
          format,
          dmaModel,
          {},
          { pools: [data, ctrlPool], groupAsid: [[1, 1]] },
        );
        assert.equal(device.ops.getVqGroup!(CVQ), 1);
        const cmd = driver.send(CVQ, ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, OTHER), [1]);
        driver.kick(CVQ);
        await sim.whenIdle();
        assert.deepEqual(driver.collect(CVQ), [cmd]);
        assert.deepEqual([...device.getConfig(0, 6)], OTHER);

        // A cvq buffer in ASID 0's memory is not reachable once the cvq lives in ASID 1.
        driver.sendRaw(CVQ, [[data.alloc(8).iova, 8]], [[ctrlPool.alloc(1).iova, 1]]);
        driver.kick(CVQ);
        await sim.whenIdle();
        assert.equal(sim.vqs[CVQ].fault?.code, "IOTLB_MISS");
        // The data queues, still in ASID 0, keep running.
        postRx(driver, 1);
        driver.send(TX, [frame(BROADCAST, "data")]);
        driver.kick(TX);
        await sim.whenIdle();
        assert.equal(driver.collect(RX).length, 1);
      });
    }
  }

  test("a cvq ring that its ASID does not map faults at the first run; data queues go on", async () => {
    const data = new DmaPool({ size: 1 << 20, iovaBase: 0x1000_0000, name: "asid0" });
    const ctrlPool = new DmaPool({ size: 1 << 20, iovaBase: 0x2000_0000, name: "asid1" });
    const { sim, driver } = start(
      "split",
      "set_map",
      {},
      {
        pools: [data, ctrlPool],
        groupAsid: [[1, 1]],
        queuePool: new Map([[CVQ, data]]),
      },
    );
    driver.send(CVQ, ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, OTHER), [1]);
    driver.kick(CVQ);
    postRx(driver, 1);
    driver.send(TX, [frame(BROADCAST, "data")]);
    driver.kick(TX);
    await sim.whenIdle();
    assert.equal(sim.vqs[CVQ].fault?.code, "IOTLB_MISS");
    assert.equal(driver.collect(RX).length, 1);
  });

  test("compatReset(CLEAN_MAP) empties every ASID; a plain reset keeps them", () => {
    const { sim, device } = start("split", "dma_map");
    device.reset();
    assert.ok(sim.asidIotlb(0)!.size > 0 && sim.asidIotlb(1)!.size > 0);
    device.reset(VDPA_RESET_F_CLEAN_MAP);
    assert.equal(sim.asidIotlb(0)!.size, 0);
    assert.equal(sim.asidIotlb(1)!.size, 0);
  });
});

describe("vdpasim_net datapath details", () => {
  for (const format of FORMATS) {
    test(`${format}: with EVENT_IDX the driver kicks only when asked, and nothing stalls`, async () => {
      const { sim, driver } = start(format, "set_map", { eventIdx: true }, { eventIdx: true });
      postRx(driver, 12);
      let kicks = 0;
      for (let i = 0; i < 12; i++) {
        driver.send(TX, [frame(BROADCAST, `frame ${i}`)]);
        if (driver.kickIfWanted(TX)) kicks++;
        await sim.whenIdle();
        assert.equal(driver.collect(RX).length, 1, `frame ${i} came back`);
        driver.collect(TX);
      }
      assert.ok(kicks >= 1);
    });

    test(`${format}: indirect descriptors carry a frame split over several buffers`, async () => {
      const { sim, driver } = start(format, "dma_map", { indirect: true }, { indirect: true });
      postRx(driver, 1);
      const f = frame(MAC, "split over three buffers");
      driver.send(TX, [f.subarray(0, 12), f.subarray(12, 20), f.subarray(20)]);
      driver.kick(TX);
      await sim.whenIdle();
      assert.deepEqual(Buffer.from(driver.collect(RX)[0].written()), Buffer.from(f));
    });
  }

  test("a frame in odd pieces, header and MAC split, lands whole in an RX chain of odd pieces", async () => {
    const { sim, net, driver } = start("split", "dma_map");
    const f = frame(MAC, "pieces that split the header, the MAC and the payload at odd places");
    const rx = driver.send(RX, [], [3, 17, 1, 2048]);
    const dropped = frame(OTHER, "the MAC is split too, and does not match");
    driver.send(TX, [f.subarray(0, 5), f.subarray(5, 15), f.subarray(15, 16), f.subarray(16)]);
    driver.send(TX, [dropped.subarray(0, 13), dropped.subarray(13)]);
    driver.kick(TX);
    await sim.whenIdle();
    assert.deepEqual(driver.collect(RX), [rx]);
    assert.equal(rx.usedLen, f.length);
    assert.deepEqual(Buffer.from(rx.written()), Buffer.from(f));
    assert.equal(net.rx.drops, 1, "the filter read the split MAC of the second frame");
    assert.equal(driver.collect(TX).length, 2);
  });

  test("no rx buffer: the frame is consumed and counted as an rx overrun", async () => {
    const { sim, net, driver } = start("split", "set_map");
    driver.send(TX, [frame(BROADCAST, "nowhere to go")]);
    driver.kick(TX);
    await sim.whenIdle();
    assert.equal(driver.collect(TX).length, 1);
    assert.equal(net.rx.overruns, 1);
    assert.equal(net.rx.pkts, 0);
  });

  test("at most one page is copied; a short rx buffer gets what fits", async () => {
    const { sim, net, driver } = start("split", "set_map");
    postRx(driver, 1, 100);
    postRx(driver, 1, 8192);
    driver.send(TX, [frame(BROADCAST, "x".repeat(200))]);
    driver.send(TX, [frame(BROADCAST, "y".repeat(6000))]);
    driver.kick(TX);
    await sim.whenIdle();
    assert.deepEqual(
      driver.collect(RX).map((r) => r.usedLen),
      [100, 4096],
    );
    assert.equal(net.tx.bytes, 226 + 4096);
  });

  test("runs stop after workBatch frames and re-schedule themselves", async () => {
    const { sim, driver } = start("split", "set_map", { workBatch: 2 });
    postRx(driver, 5);
    for (let i = 0; i < 5; i++) driver.send(TX, [frame(BROADCAST, `f${i}`)]);
    const runsBefore = sim.workRuns;
    driver.kick(TX);
    await sim.whenIdle();
    assert.equal(driver.collect(RX).length, 5);
    assert.ok(sim.workRuns - runsBefore >= 3);
  });

  test("without VERSION_1 the header is 10 bytes", async () => {
    const { sim, net, driver } = start(
      "split",
      "set_map",
      {},
      { withoutFeatures: 1n << BigInt(VIRTIO_F_VERSION_1) },
    );
    postRx(driver, 2);
    driver.send(TX, [frame(MAC, "legacy", 10)]);
    driver.send(TX, [frame(OTHER, "legacy", 10)]);
    driver.kick(TX);
    await sim.whenIdle();
    assert.equal(driver.collect(RX).length, 1);
    assert.equal(net.rx.drops, 1);
  });

  test("a frame shorter than header + MAC is dropped", async () => {
    const { sim, net, driver } = start("split", "set_map");
    postRx(driver, 1);
    driver.send(TX, [new Uint8Array(17)]);
    driver.kick(TX);
    await sim.whenIdle();
    assert.equal(net.rx.drops, 1);
  });

  test("Linux's strncmp quirk: the MAC compare stops at a shared zero byte", async () => {
    assert.equal(
      macMatchesLikeStrncmp(Uint8Array.of(0, 1, 2, 3, 4, 5), 0, Uint8Array.of(0, 9, 9, 9, 9, 9), 0),
      true,
    );
    assert.equal(
      macMatchesLikeStrncmp(Uint8Array.of(2, 0, 7, 7, 7, 7), 0, Uint8Array.of(2, 0, 9, 9, 9, 9), 0),
      true,
    );
    assert.equal(
      macMatchesLikeStrncmp(Uint8Array.of(2, 1, 7, 7, 7, 7), 0, Uint8Array.of(2, 1, 9, 9, 9, 9), 0),
      false,
    );
    // With the default all-zero MAC, any unicast destination starting with 00 is accepted.
    const { sim, driver } = start("split", "set_map", { mac: undefined });
    postRx(driver, 2);
    driver.send(TX, [frame([0x00, 0xde, 0xad, 0xbe, 0xef, 0x01], "accepted")]);
    driver.send(TX, [frame(OTHER, "dropped")]);
    driver.kick(TX);
    await sim.whenIdle();
    assert.deepEqual(
      driver.collect(RX).map((r) => r.written().subarray(26).toString()),
      ["accepted"],
    );
  });

  test("the cvq is ignored unless CTRL_VQ was negotiated", async () => {
    const { sim, net, driver } = start("split", "set_map", {}, { withoutFeatures: 1n << 17n });
    driver.send(CVQ, ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, OTHER), [1]);
    driver.kick(CVQ);
    await sim.whenIdle();
    assert.equal(net.cvq.requests, 0);
    assert.equal(driver.collect(CVQ).length, 0);
  });

  test("a short MAC command partly overwrites the MAC and answers ERR, as Linux", async () => {
    const { sim, driver, device } = start("split", "set_map");
    const cmd = driver.send(CVQ, ctrl(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, [0xaa, 0xbb]), [1]);
    driver.kick(CVQ);
    await sim.whenIdle();
    assert.deepEqual(driver.collect(CVQ), [cmd]);
    assert.equal(cmd.written()[0], VIRTIO_NET_ERR);
    assert.deepEqual([...device.getConfig(0, 6)], [0xaa, 0xbb, 0x22, 0x33, 0x44, 0x55]);
  });
});

describe("vdpasim_net config, features and statistics", () => {
  test("config: the MAC and MTU given, status LINK_UP forced on every read, max_virtqueue_pairs 0", () => {
    const { device, sim } = createSimNet({ mac: MAC, mtu: 9000 });
    device.setFeatures(VDPASIM_NET_FEATURES);
    const cfg = device.getConfig(0, device.getConfigSize());
    assert.equal(cfg.length, 24);
    assert.deepEqual([...cfg.subarray(0, 6)], [...MAC]);
    assert.equal(le16(cfg, 6), 1);
    assert.equal(le16(cfg, 8), 0);
    assert.equal(le16(cfg, 10), 9000);
    // A driver write of the status is undone by the next read.
    device.setConfig(6, Uint8Array.of(0, 0));
    assert.equal(device.getConfig(6, 2)[0], 1);
    // Out of bounds at the ops level: silently ignored, as Linux.
    const buf = Uint8Array.of(7, 7);
    sim.getConfig(23, buf, 2);
    assert.deepEqual([...buf], [7, 7]);
    sim.setConfig(23, Uint8Array.of(1, 1), 2);
    assert.equal(sim.config[23], 0);
  });

  test("defaults: MAC zeros, MTU 1500, Linux's offered features", () => {
    const { device, sim } = createSimNet();
    assert.equal(sim.getDeviceFeatures(), 0x308830028n);
    device.setFeatures(VDPASIM_NET_FEATURES);
    assert.deepEqual([...device.getConfig(0, 6)], [0, 0, 0, 0, 0, 0]);
    assert.equal(le16(device.getConfig(10, 2), 0), 1500);
  });

  test("vendor statistics: Linux's names per queue; another index is EINVAL", () => {
    const { device } = createSimNet();
    assert.deepEqual(
      device.ops.getVendorVqStats!(TX).map((s) => s.name),
      ["tx packets", "tx bytes", "tx errors", "tx drops"],
    );
    assert.deepEqual(
      device.ops.getVendorVqStats!(CVQ).map((s) => s.name),
      ["cvq requests", "cvq successes", "cvq errors"],
    );
    assert.throws(
      () => device.ops.getVendorVqStats!(3),
      (e) => isVdpaError(e, "EINVAL"),
    );
  });

  test("provisioned features: a subset is offered as is; RING_PACKED is our accepted extra; others EINVAL", () => {
    assert.equal(createSimNet({ features: 0x300020000n }).sim.getDeviceFeatures(), 0x300020000n);
    const packed = VDPASIM_NET_FEATURES | (1n << 34n);
    assert.equal(createSimNet({ features: packed }).sim.getDeviceFeatures(), packed);
    assert.throws(
      () => createSimNet({ features: VDPASIM_NET_FEATURES | (1n << 22n) }),
      (e) => isVdpaError(e, "EINVAL"),
    );
  });

  test("topology: 3 queues, the cvq alone in group 1, 2 ASIDs; the platform model has 1 and 1", () => {
    const own = createSimNet();
    assert.deepEqual([own.device.nvqs, own.device.ngroups, own.device.nas], [3, 2, 2]);
    assert.deepEqual(
      [0, 1, 2].map((q) => own.device.ops.getVqGroup!(q)),
      [0, 0, 1],
    );
    const platform = createSimNet({ dmaModel: "platform" });
    assert.deepEqual([platform.device.ngroups, platform.device.nas], [1, 1]);
    assert.equal(platform.device.ops.getVqGroup!(CVQ), 0);
  });
});

describe("vdpasim_net management device", () => {
  test("shows what Linux shows", () => {
    const m = vdpasimNetMgmtDev();
    assert.equal(m.name, "vdpasim_net");
    assert.equal(m.busName, undefined);
    assert.deepEqual(m.idTable, [1]);
    assert.equal(m.supportedFeatures, 0x308830028n);
    assert.equal(m.maxSupportedVqs, 3);
    assert.equal(
      m.configAttrMask,
      attrBit("DEV_NET_CFG_MACADDR") | attrBit("DEV_NET_CFG_MTU") | attrBit("DEV_FEATURES"),
    );
  });

  test("devAdd builds an unregistered device from the attributes; devSetAttr changes the MAC only", () => {
    const m = vdpasimNetMgmtDev({ dmaModel: "dma_map" });
    const config = emptyDevSetConfig();
    config.mask = attrBit("DEV_NET_CFG_MACADDR") | attrBit("DEV_NET_CFG_MTU");
    config.net = { mac: MAC, mtu: 1400 };
    const dev = m.ops.devAdd(m, "vdpa0", config);
    assert.equal(dev.name, "vdpa0");
    assert.equal(dev.index, -1);
    assert.equal(dev.mgmtdev, m);
    assert.equal(dev.dmaModel, "dma_map");
    dev.setFeatures(VDPASIM_NET_FEATURES);
    assert.deepEqual([...dev.getConfig(0, 6)], [...MAC]);
    assert.equal(le16(dev.getConfig(10, 2), 0), 1400);

    const set = emptyDevSetConfig();
    set.mask = attrBit("DEV_NET_CFG_MACADDR");
    set.net.mac = Uint8Array.from(OTHER);
    m.ops.devSetAttr!(m, dev, set);
    assert.deepEqual([...dev.getConfig(0, 6)], OTHER);
    const mtuOnly = emptyDevSetConfig();
    mtuOnly.mask = attrBit("DEV_NET_CFG_MTU");
    mtuOnly.net.mtu = 1000;
    assert.throws(
      () => m.ops.devSetAttr!(m, dev, mtuOnly),
      (e) => isVdpaError(e, "EOPNOTSUPP"),
    );
  });

  test("device_features outside the supported set: EINVAL", () => {
    const m = vdpasimNetMgmtDev();
    const config = emptyDevSetConfig();
    config.mask = attrBit("DEV_FEATURES");
    config.deviceFeatures = 1n << 0n;
    assert.throws(
      () => m.ops.devAdd(m, "vdpa1", config),
      (e) => isVdpaError(e, "EINVAL"),
    );
  });
});
