// virtio_vdpa on the simulators: vdpasim_net and vdpasim_blk bound to virtio_vdpa on a vDPA bus, each DMA
// model and both ring formats, driven through the VirtioTransport by a small test driver: Linux's status
// sequence, queue setup in Linux's order and its refusals, traffic through the transport's rings,
// NEEDS_RESET and a re-initialisation on the same transport, unbinding with buffers in flight, and the
// DMA pool mapped into every address space (the net cvq moved to ASID 1).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createSimBlk } from "../../src/devices/sim/blk.js";
import type { VdpaSim } from "../../src/devices/sim/core.js";
import { createSimNet } from "../../src/devices/sim/net.js";
import { Iotlb } from "../../src/memory/index.js";
import { BufferList, type RingFormat } from "../../src/ring/index.js";
import {
  VIRTIO_BLK_OUTHDR_SIZE,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_IN_ORDER,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_NOTIFICATION_DATA,
  VIRTIO_F_ORDER_PLATFORM,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_RING_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BLOCK,
  VIRTIO_ID_NET,
  VIRTIO_NET_CONFIG,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_HDR_V1_SIZE,
  VIRTIO_NET_OK,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../src/spec/index.js";
import type { VdpaDevice } from "../../src/vdpa/device.js";
import type { DmaModel } from "../../src/vdpa/dma.js";
import { VdpaError } from "../../src/vdpa/errors.js";
import { VdpaBus } from "../../src/vdpa/vdpa-bus.js";
import type { TransportQueue, VirtioDriver, VirtioTransport } from "../../src/virtio/transport.js";
import { VirtioBus } from "../../src/virtio/virtio-bus.js";
import {
  VIRTIO_VDPA_IOVA_BASE,
  VIRTIO_VDPA_POOL_SIZE,
  type VirtioVdpaDevice,
  VirtioVdpaDriver,
  vringTransportFeatures,
} from "../../src/virtio/virtio-vdpa.js";

const bit = (n: number): bigint => 1n << BigInt(n);
const ACK = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRIVER = VIRTIO_CONFIG_S_DRIVER;
const FEATURES_OK = VIRTIO_CONFIG_S_FEATURES_OK;
const DRIVER_OK = VIRTIO_CONFIG_S_DRIVER_OK;
const MAC = Uint8Array.of(0x02, 0x11, 0x22, 0x33, 0x44, 0x55);
const MODELS: DmaModel[] = ["set_map", "dma_map", "platform"];
const RX = 0;
const TX = 1;
const CVQ = 2;

interface Variant {
  label: string;
  format: RingFormat;
  packed?: boolean;
  eventIdx?: boolean;
  indirect?: boolean;
}

const VARIANTS: Variant[] = [
  { label: "split", format: "split" },
  { label: "packed + EVENT_IDX", format: "packed", packed: true, eventIdx: true },
  { label: "split + EVENT_IDX + INDIRECT_DESC", format: "split", eventIdx: true, indirect: true },
  { label: "packed + INDIRECT_DESC", format: "packed", packed: true, indirect: true },
];

/** A virtio driver that only records; the tests drive the transport themselves. */
class TestDriver implements VirtioDriver {
  readonly name = "test_virtio";
  readonly deviceIds = [VIRTIO_ID_NET, VIRTIO_ID_BLOCK];
  readonly probed: VirtioTransport[] = [];
  readonly removed: VirtioTransport[] = [];
  onRemove: ((t: VirtioTransport) => void) | null = null;

  probe(t: VirtioTransport): void {
    this.probed.push(t);
  }

  remove(t: VirtioTransport): void {
    this.removed.push(t);
    this.onRemove?.(t);
  }
}

interface World {
  bus: VdpaBus;
  vbus: VirtioBus;
  vv: VirtioVdpaDriver;
  drv: TestDriver;
  device: VdpaDevice;
  sim: VdpaSim;
  t: VirtioVdpaDevice;
  /** Bus events of both buses, in order. */
  events: string[];
}

interface BindOptions {
  dmaModel?: DmaModel;
  packed?: boolean;
  eventIdx?: boolean;
  indirect?: boolean;
  /** Patches applied to the simulator before it is registered. */
  patch?: (sim: VdpaSim) => void;
}

function bind(kind: "net" | "blk", opts: BindOptions = {}): World {
  const bus = new VdpaBus();
  const vbus = new VirtioBus();
  const vv = new VirtioVdpaDriver(vbus);
  const drv = new TestDriver();
  const events: string[] = [];
  bus.on("bound", (d, x) => events.push(`vdpa bound ${d.name} ${x.name}`));
  bus.on("unbound", (d, x) => events.push(`vdpa unbound ${d.name} ${x.name}`));
  bus.on("probe-failed", (d, x, e) => events.push(`vdpa probe-failed ${d.name} ${x.name} ${e.message}`));
  vbus.on("device-added", (d) => events.push(`virtio device-added ${d.name}`));
  vbus.on("bound", (d, x) => events.push(`virtio bound ${d.name} ${x.name}`));
  vbus.on("unbound", (d, x) => events.push(`virtio unbound ${d.name} ${x.name}`));
  vbus.on("device-removed", (d) => events.push(`virtio device-removed ${d.name}`));
  vbus.registerDriver(drv);
  bus.registerDriver(vv);
  const ring = { dmaModel: opts.dmaModel ?? "set_map", packed: opts.packed, eventIdx: opts.eventIdx };
  const made =
    kind === "net"
      ? createSimNet({ ...ring, indirect: opts.indirect, mac: MAC })
      : createSimBlk({ ...ring, indirect: opts.indirect, sizeBytes: 1 << 20 });
  opts.patch?.(made.sim);
  bus.registerDevice(made.device);
  const t = vv.get(made.device);
  return { bus, vbus, vv, drv, device: made.device, sim: made.sim, t: t!, events };
}

/** Records calls to the named simulator ops into `log`, e.g. "setVqNum(0,256)". */
function record(sim: VdpaSim, names: string[], log: string[]): void {
  const target = sim as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of names) {
    const orig = target[name].bind(sim);
    target[name] = (...args: unknown[]) => {
      log.push(`${name}(${args.map(show).join(",")})`);
      return orig(...args);
    };
  }
}

function show(v: unknown): string {
  if (typeof v === "bigint") return `0x${v.toString(16)}`;
  if (v !== null && typeof v === "object" && "callback" in v) return "cb";
  if (v !== null && typeof v === "object") return JSON.stringify(v);
  return String(v);
}

/** reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK (re-read): what bring-up.ts does. */
function negotiate(t: VirtioTransport, v: Variant): bigint {
  t.reset();
  assert.equal(t.getStatus(), 0);
  t.setStatus(ACK);
  assert.equal(t.getStatus(), ACK);
  t.setStatus(DRIVER);
  assert.equal(t.getStatus(), ACK | DRIVER);
  const offered = t.getFeatures();
  let drop = bit(VIRTIO_F_ANY_LAYOUT);
  if (v.format === "split") drop |= bit(VIRTIO_F_RING_PACKED);
  if (!v.eventIdx) drop |= bit(VIRTIO_RING_F_EVENT_IDX);
  if (!v.indirect) drop |= bit(VIRTIO_F_INDIRECT_DESC);
  const features = t.finalizeFeatures(offered & ~drop);
  assert.equal(t.features, features);
  t.setStatus(FEATURES_OK);
  assert.ok(t.getStatus() & FEATURES_OK, "the device kept FEATURES_OK");
  return features;
}

interface Up {
  queues: TransportQueue[];
  /** Used-buffer callbacks per queue index. */
  calls: number[];
}

function bringUp(t: VirtioTransport, v: Variant, nqueues: number, size?: number): Up {
  negotiate(t, v);
  const calls = new Array<number>(nqueues).fill(0);
  const infos = Array.from({ length: nqueues }, (_, i) => ({ name: `q${i}`, callback: () => calls[i]++ }));
  const queues = t.findVqs(infos, size === undefined ? undefined : { size });
  t.setStatus(DRIVER_OK);
  assert.equal(t.getStatus(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  return { queues: queues as TransportQueue[], calls };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

async function waitFor(cond: () => boolean, what: string, turns = 500): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await turn();
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function waitUsed(q: TransportQueue): Promise<{ token: number; len: number }> {
  let got: { token: number; len: number } | null = null;
  await waitFor(() => {
    const token = q.ring.getUsed();
    if (token !== undefined) got = { token, len: q.ring.usedLen };
    return got !== null;
  }, `a used buffer on queue ${q.index}`);
  return got!;
}

/** Adds a request, publishes it and kicks when the ring asks for it (EVENT_IDX honoured). */
function submit(q: TransportQueue, bufs: BufferList, token: number): void {
  assert.ok(q.ring.add(bufs, token), `queue ${q.index} has room`);
  if (q.ring.publishAvail()) q.notify();
}

/** One broadcast frame sent on tx comes back on rx, header and all. */
async function netRoundTrip(t: VirtioTransport, up: Up, seed: number): Promise<void> {
  const [rx, tx] = up.queues;
  const rxBuf = t.allocDma(2048);
  submit(rx, new BufferList().in(rxBuf.iova, 2048), 100 + seed);
  const len = VIRTIO_NET_HDR_V1_SIZE + 64;
  const txBuf = t.allocDma(len);
  const frame = txBuf.bytes;
  frame.fill(0, 0, VIRTIO_NET_HDR_V1_SIZE);
  frame.fill(0xff, VIRTIO_NET_HDR_V1_SIZE, VIRTIO_NET_HDR_V1_SIZE + 6);
  for (let i = VIRTIO_NET_HDR_V1_SIZE + 6; i < len; i++) frame[i] = (i * 7 + seed) & 0xff;
  submit(tx, new BufferList().out(txBuf.iova, len), 200 + seed);
  assert.deepEqual(await waitUsed(tx), { token: 200 + seed, len: 0 });
  assert.deepEqual(await waitUsed(rx), { token: 100 + seed, len });
  assert.deepEqual(rxBuf.bytes.subarray(0, len), frame);
  await waitFor(() => up.calls[RX] > 0 && up.calls[TX] > 0, "rx and tx callbacks");
  t.freeDma(rxBuf);
  t.freeDma(txBuf);
}

/** A blk request: 16-byte header, optional data, 1-byte status. Returns the status buffer's byte. */
async function blkRequest(
  t: VirtioTransport,
  q: TransportQueue,
  type: number,
  sector: number,
  data: Buffer,
  token: number,
): Promise<{ status: number; len: number }> {
  const hdr = t.allocDma(VIRTIO_BLK_OUTHDR_SIZE);
  hdr.bytes.writeUInt32LE(type, 0);
  hdr.bytes.writeUInt32LE(0, 4);
  hdr.bytes.writeBigUInt64LE(BigInt(sector), 8);
  const dma = t.allocDma(data.length);
  const status = t.allocDma(1);
  status.bytes[0] = 0xee;
  const bufs = new BufferList().out(hdr.iova, VIRTIO_BLK_OUTHDR_SIZE);
  if (type === VIRTIO_BLK_T_OUT) {
    dma.bytes.set(data);
    bufs.out(dma.iova, data.length);
  } else {
    bufs.in(dma.iova, data.length);
  }
  bufs.in(status.iova, 1);
  submit(q, bufs, token);
  const used = await waitUsed(q);
  assert.equal(used.token, token);
  if (type === VIRTIO_BLK_T_IN) data.set(dma.bytes);
  const result = { status: status.bytes[0], len: used.len };
  for (const b of [hdr, dma, status]) t.freeDma(b);
  return result;
}

async function blkWriteRead(t: VirtioTransport, up: Up, seed: number): Promise<void> {
  const q = up.queues[0];
  const data = Buffer.alloc(1024);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13 + seed) & 0xff;
  const w = await blkRequest(t, q, VIRTIO_BLK_T_OUT, 8 + seed, data, 1);
  assert.deepEqual(w, { status: VIRTIO_BLK_S_OK, len: 1 });
  const back = Buffer.alloc(1024);
  const r = await blkRequest(t, q, VIRTIO_BLK_T_IN, 8 + seed, back, 2);
  assert.deepEqual(r, { status: VIRTIO_BLK_S_OK, len: 1025 });
  assert.deepEqual(back, data);
  await waitFor(() => up.calls[0] >= 2, "blk callbacks");
}

/** Whether the transport's whole pool is mapped in `asid` of the device (whatever its DMA model). */
function poolMapped(w: World, asid: number): boolean {
  const iotlb = w.sim.asidIotlb(asid);
  const e = iotlb?.lookup(w.t.pool.iovaBase);
  return (
    e !== undefined &&
    e.region === w.t.pool.region &&
    e.first === w.t.pool.iovaBase &&
    e.last === w.t.pool.iovaBase + w.t.pool.size - 1 &&
    e.offset === 0
  );
}

function isVdpaError(code: string): (e: unknown) => boolean {
  return (e: unknown) => e instanceof VdpaError && e.code === code;
}

describe("virtio_vdpa: binding", () => {
  for (const model of MODELS) {
    test(`${model}: vdpasim_net becomes a virtio device; the pool is mapped into every ASID`, () => {
      const w = bind("net", { dmaModel: model });
      assert.deepEqual(w.events, [
        "virtio device-added vdpa0",
        "virtio bound vdpa0 test_virtio",
        "vdpa bound vdpa0 virtio_vdpa",
      ]);
      assert.deepEqual(w.drv.probed, [w.t]);
      assert.deepEqual(w.vbus.devices(), [w.t]);
      assert.equal(w.t.name, "vdpa0");
      assert.equal(w.t.deviceId, VIRTIO_ID_NET);
      assert.equal(w.t.vendorId, 0);
      assert.equal(w.t.pool.iovaBase, VIRTIO_VDPA_IOVA_BASE);
      assert.equal(w.t.pool.size, VIRTIO_VDPA_POOL_SIZE);
      for (let asid = 0; asid < w.device.nas; asid++) assert.ok(poolMapped(w, asid), `ASID ${asid} mapped`);
      assert.equal(w.device.nas, model === "platform" ? 1 : 2);
      if (model === "platform") assert.equal(w.device.platformDomain!.iotlb.size, 1);
    });
  }

  test("device id 0 is refused with EINVAL, nothing mapped, nothing on the virtio bus", () => {
    const w = bind("net", {
      patch: (sim) => {
        (sim as unknown as { getDeviceId: () => number }).getDeviceId = () => 0;
      },
    });
    assert.equal(w.t, undefined);
    assert.equal(w.events.length, 1);
    assert.match(w.events[0], /^vdpa probe-failed vdpa0 virtio_vdpa EINVAL/);
    assert.deepEqual(w.vbus.devices(), []);
    assert.equal(w.sim.asidIotlb(0)!.size, 0);
    assert.throws(() => w.bus.bind(w.device, "virtio_vdpa"), isVdpaError("EINVAL"));
  });

  test("unbinding and binding again makes a new transport that works", async () => {
    const w = bind("net");
    const first = w.t;
    w.bus.unbind(w.device);
    assert.equal(w.vv.get(w.device), undefined);
    assert.ok(!poolMapped(w, 0) && !poolMapped(w, 1));
    w.bus.bind(w.device, "virtio_vdpa");
    const t = w.vv.get(w.device)!;
    assert.notEqual(t, first);
    assert.deepEqual(w.drv.probed, [first, t]);
    assert.equal(w.vbus.indexOf(t), 0);
    const up = bringUp(t, VARIANTS[0], 3);
    await netRoundTrip(t, up, 1);
  });

  test("config, generation, name: the vDPA device's, through VdpaDevice's checks", () => {
    const w = bind("net");
    const t = w.t;
    assert.deepEqual(t.getConfig(VIRTIO_NET_CONFIG.mac, 6), MAC);
    const mac = Uint8Array.of(0x02, 0, 0, 0, 0, 9);
    t.setConfig(VIRTIO_NET_CONFIG.mac, mac);
    assert.deepEqual(w.sim.config.subarray(VIRTIO_NET_CONFIG.mac, VIRTIO_NET_CONFIG.mac + 6), mac);
    const g = t.generation();
    assert.equal(g, w.sim.generation);
    t.reset();
    assert.equal(t.generation(), g + 1);
    assert.throws(() => t.getConfig(0, 1000), isVdpaError("EINVAL"));
    assert.equal(t.getFeatures(), w.sim.getDeviceFeatures());
  });
});

describe("virtio_vdpa: features and status", () => {
  test("vring_transport_features keeps device bits and the five ring bits of 28..41", () => {
    const transportAll = bit(42) - bit(28);
    const device = bit(0) | bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_F_ANY_LAYOUT) | bit(50) | bit(63);
    const kept = vringTransportFeatures(device | transportAll | bit(42));
    assert.equal(
      kept,
      device |
        bit(VIRTIO_F_INDIRECT_DESC) |
        bit(VIRTIO_RING_F_EVENT_IDX) |
        bit(VIRTIO_F_VERSION_1) |
        bit(VIRTIO_F_ACCESS_PLATFORM) |
        bit(VIRTIO_F_RING_PACKED) |
        bit(42),
    );
    for (const b of [
      VIRTIO_F_IN_ORDER,
      VIRTIO_F_ORDER_PLATFORM,
      VIRTIO_F_NOTIFICATION_DATA,
      VIRTIO_F_RING_RESET,
    ]) {
      assert.equal(kept & bit(b), 0n, `bit ${b} dropped`);
    }
  });

  test("finalizeFeatures filters, then sets the features on the device", () => {
    const w = bind("net", { packed: true, eventIdx: true, indirect: true });
    const offered = w.t.getFeatures();
    const kept = w.t.finalizeFeatures(offered | bit(VIRTIO_F_IN_ORDER) | bit(VIRTIO_F_NOTIFICATION_DATA));
    assert.equal(kept, offered);
    assert.equal(w.t.features, offered);
    assert.equal(w.sim.getDriverFeatures(), offered);
    assert.ok(w.device.featuresValid);
    // The simulator refuses a set without ACCESS_PLATFORM: the error reaches the driver.
    assert.throws(() => w.t.finalizeFeatures(bit(VIRTIO_F_VERSION_1)), isVdpaError("EINVAL"));
  });

  test("the status sequence reaches the device as Linux's virtio core writes it; reset is vdpa_reset(0)", () => {
    const w = bind("net");
    const log: string[] = [];
    record(w.sim, ["reset", "compatReset", "setStatus", "setDriverFeatures", "setConfigCb"], log);
    const features = negotiate(w.t, VARIANTS[0]);
    w.t.findVqs([
      { name: "rx", callback: null },
      { name: "tx", callback: null },
      { name: "ctrl", callback: null },
    ]);
    w.t.setStatus(DRIVER_OK);
    assert.deepEqual(log, [
      "reset()",
      "compatReset(0)",
      "setStatus(1)",
      "setStatus(3)",
      `setDriverFeatures(${show(features)})`,
      "setStatus(11)",
      "setConfigCb(cb)",
      "setStatus(15)",
    ]);
    assert.equal(
      features,
      bit(VIRTIO_F_VERSION_1) |
        bit(VIRTIO_F_ACCESS_PLATFORM) |
        (w.t.getFeatures() & (bit(28) - 1n) & ~bit(27)),
    );
    // A reset keeps the pool mapped (flags 0, no CLEAN_MAP) and forgets the features.
    w.t.reset();
    assert.equal(w.t.getStatus(), 0);
    assert.equal(w.t.features, 0n);
    assert.ok(poolMapped(w, 0) && poolMapped(w, 1));
  });
});

describe("virtio_vdpa: queue setup", () => {
  const QUEUE_OPS = [
    "getVqReady",
    "getVqSize",
    "setVqCb",
    "setVqNum",
    "setVqAddress",
    "setVqState",
    "setVqReady",
  ];

  for (const v of [VARIANTS[0], VARIANTS[1]]) {
    test(`${v.label}: each queue is set up in Linux's order, then the config callback`, () => {
      const w = bind("net", v);
      negotiate(w.t, v);
      const log: string[] = [];
      record(w.sim, [...QUEUE_OPS, "setConfigCb"], log);
      const qs = w.t.findVqs([
        { name: "rx", callback: () => {} },
        { name: "tx", callback: () => {} },
        { name: "ctrl", callback: null },
      ]) as TransportQueue[];
      const state =
        v.format === "packed"
          ? '{"packed":{"lastAvailCounter":1,"lastAvailIdx":0,"lastUsedCounter":1,"lastUsedIdx":0}}'
          : '{"split":{"availIndex":0}}';
      const expected: string[] = [];
      for (const q of qs) {
        const i = q.index;
        const a = q.ring.addresses;
        expected.push(
          `getVqReady(${i})`,
          `getVqSize(${i})`,
          `setVqCb(${i},${i === CVQ ? "null" : "cb"})`,
          `setVqNum(${i},256)`,
          `setVqAddress(${i},${a.desc},${a.driver},${a.device})`,
          `setVqState(${i},${state})`,
          `setVqReady(${i},true)`,
        );
      }
      expected.push("setConfigCb(cb)");
      assert.deepEqual(log, expected);
      assert.deepEqual(
        qs.map((q) => [q.index, q.name, q.size, q.ring.format]),
        [
          [0, "rx", 256, v.format],
          [1, "tx", 256, v.format],
          [2, "ctrl", 256, v.format],
        ],
      );
      for (const q of qs) {
        const vq = w.sim.vqs[q.index];
        assert.equal(vq.ready, true);
        assert.equal(vq.num, 256);
        assert.deepEqual(
          [vq.descArea, vq.driverArea, vq.deviceArea],
          [q.ring.addresses.desc, q.ring.addresses.driver, q.ring.addresses.device],
        );
      }
    });
  }

  test("null names get null and use no queue index", () => {
    const w = bind("net");
    negotiate(w.t, VARIANTS[0]);
    const qs = w.t.findVqs([
      { name: null, callback: null },
      { name: "rx", callback: null },
      { name: null, callback: null },
      { name: "tx", callback: null },
    ]);
    assert.equal(qs[0], null);
    assert.equal(qs[2], null);
    assert.deepEqual([qs[1]!.index, qs[3]!.index], [0, 1]);
    assert.equal(w.sim.vqs[2].ready, false);
  });

  test("a queue that is already ready is refused with ENOENT and left alone; earlier queues are deleted", () => {
    const w = bind("net");
    negotiate(w.t, VARIANTS[0]);
    w.sim.setVqReady(TX, true);
    const before = w.t.pool.stats().liveBlocks;
    const log: string[] = [];
    record(w.sim, ["setVqReady"], log);
    assert.throws(
      () =>
        w.t.findVqs([
          { name: "rx", callback: null },
          { name: "tx", callback: null },
        ]),
      isVdpaError("ENOENT"),
    );
    assert.deepEqual(log, ["setVqReady(0,true)", "setVqReady(0,false)"]);
    assert.equal(w.sim.vqs[RX].ready, false);
    assert.equal(w.sim.vqs[TX].ready, true, "the refused queue is not touched");
    assert.equal(w.t.pool.stats().liveBlocks, before, "ring memory returned");
    assert.deepEqual(w.t.queues, []);
  });

  test("findVqs twice without delVqs: queue 0 is already ready, so everything is deleted (Linux)", () => {
    const w = bind("blk");
    negotiate(w.t, VARIANTS[0]);
    const [q] = w.t.findVqs([{ name: "req", callback: null }]);
    assert.throws(() => w.t.findVqs([{ name: "req", callback: null }]), isVdpaError("ENOENT"));
    assert.deepEqual(w.t.queues, []);
    assert.equal((q as { alive?: boolean }).alive, false);
  });

  test("a queue index past nvqs is ENOENT; the queues before it are deleted", () => {
    const w = bind("blk");
    negotiate(w.t, VARIANTS[0]);
    const before = w.t.pool.stats().liveBlocks;
    const log: string[] = [];
    record(w.sim, ["setVqReady"], log);
    assert.throws(
      () =>
        w.t.findVqs([
          { name: "req0", callback: null },
          { name: "req1", callback: null },
        ]),
      isVdpaError("ENOENT"),
    );
    assert.deepEqual(log, ["setVqReady(0,true)", "setVqReady(0,false)"]);
    assert.equal(w.t.pool.stats().liveBlocks, before);
  });

  test("a queue of size 0 is ENOENT, and the queue is disabled", () => {
    const w = bind("blk", {
      patch: (sim) => {
        (sim as unknown as { getVqSize: () => number }).getVqSize = () => 0;
      },
    });
    negotiate(w.t, VARIANTS[0]);
    const log: string[] = [];
    record(w.sim, ["setVqReady", "setVqNum"], log);
    assert.throws(() => w.t.findVqs([{ name: "req", callback: null }]), isVdpaError("ENOENT"));
    assert.deepEqual(log, ["setVqReady(0,false)"]);
  });

  test("set_vq_address failing is EINVAL; the ring is freed and the queue disabled", () => {
    const w = bind("net");
    negotiate(w.t, VARIANTS[0]);
    const before = w.t.pool.stats().liveBlocks;
    const sim = w.sim as unknown as { setVqAddress: (i: number) => void };
    const orig = w.sim.setVqAddress.bind(w.sim);
    sim.setVqAddress = (i: number, ...rest: unknown[]) => {
      if (i === TX) throw new Error("no such area");
      (orig as (...a: unknown[]) => void)(i, ...rest);
    };
    const log: string[] = [];
    record(w.sim, ["setVqReady"], log);
    assert.throws(
      () =>
        w.t.findVqs([
          { name: "rx", callback: null },
          { name: "tx", callback: null },
        ]),
      (e: unknown) => isVdpaError("EINVAL")(e) && /no such area/.test((e as Error).message),
    );
    assert.deepEqual(log, ["setVqReady(0,true)", "setVqReady(1,false)", "setVqReady(0,false)"]);
    assert.equal(w.t.pool.stats().liveBlocks, before);
  });

  test("a size cap shrinks rings: split to a power of two, packed exactly; never past the maximum", () => {
    const sizes = (format: RingFormat, cap: number): number[] => {
      const w = bind("net", { packed: format === "packed" });
      const up = bringUp(w.t, { label: format, format }, 3, cap);
      return up.queues.map((q) => w.sim.vqs[q.index].num);
    };
    assert.deepEqual(sizes("split", 64), [64, 64, 64]);
    assert.deepEqual(sizes("split", 100), [64, 64, 64]);
    assert.deepEqual(sizes("packed", 100), [100, 100, 100]);
    assert.deepEqual(sizes("split", 5000), [256, 256, 256]);
    const w = bind("blk");
    negotiate(w.t, VARIANTS[0]);
    assert.throws(() => w.t.findVqs([{ name: "req", callback: null }], { size: 0 }), isVdpaError("EINVAL"));
  });

  test("a device whose min equals its max keeps that size whatever the cap", () => {
    const w = bind("blk", {
      patch: (sim) => {
        (sim as unknown as { getVqNumMin: () => number }).getVqNumMin = () => 256;
      },
    });
    const up = bringUp(w.t, VARIANTS[0], 1, 16);
    assert.equal(up.queues[0].size, 256);
  });

  test("delVqs disables every queue and returns the ring memory; a deleted queue neither kicks nor calls back", () => {
    const w = bind("net");
    const before = w.t.pool.stats().liveBlocks;
    const up = bringUp(w.t, VARIANTS[0], 3);
    assert.ok(w.t.pool.stats().liveBlocks > before);
    const kicks: string[] = [];
    record(w.sim, ["kickVq"], kicks);
    up.queues[TX].notify();
    assert.deepEqual(kicks, ["kickVq(1)"]);
    w.t.reset();
    w.t.delVqs();
    assert.equal(w.t.pool.stats().liveBlocks, before);
    assert.ok(w.sim.vqs.every((vq) => !vq.ready));
    up.queues[TX].notify();
    assert.deepEqual(kicks, ["kickVq(1)"]);
    (up.queues[RX] as unknown as { interrupt: () => void }).interrupt();
    assert.equal(up.calls[RX], 0);
  });
});

describe("virtio_vdpa: traffic", () => {
  for (const model of MODELS) {
    for (const v of VARIANTS) {
      test(`${model}, ${v.label}: vdpasim_net loops a tx frame back to rx`, async () => {
        const w = bind("net", { dmaModel: model, ...v });
        const up = bringUp(w.t, v, 3);
        assert.equal(up.queues[0].ring.format, v.format);
        await netRoundTrip(w.t, up, 1);
        await netRoundTrip(w.t, up, 2);
        assert.equal(w.sim.lastFault, null);
      });

      test(`${model}, ${v.label}: vdpasim_blk writes and reads back`, async () => {
        const w = bind("blk", { dmaModel: model, ...v });
        const up = bringUp(w.t, v, 1);
        assert.equal(up.queues[0].ring.format, v.format);
        await blkWriteRead(w.t, up, 3);
        assert.equal(w.sim.lastFault, null);
      });
    }
  }
});

describe("virtio_vdpa: NEEDS_RESET and re-initialisation", () => {
  const cases: { kind: "net" | "blk"; model: DmaModel; v: Variant }[] = [
    { kind: "net", model: "set_map", v: VARIANTS[0] },
    { kind: "net", model: "dma_map", v: VARIANTS[1] },
    { kind: "blk", model: "platform", v: VARIANTS[0] },
    { kind: "blk", model: "set_map", v: VARIANTS[3] },
  ];
  for (const { kind, model, v } of cases) {
    test(`${kind}, ${model}, ${v.label}: a hostile descriptor reaches onConfigChange; reset + re-init works`, async () => {
      const w = bind(kind, { dmaModel: model, ...v });
      const t = w.t;
      const nq = kind === "net" ? 3 : 1;
      const idle = t.pool.stats().liveBlocks;
      let up = bringUp(t, v, nq);
      let changes = 0;
      let statusSeen = 0;
      t.onConfigChange(() => {
        changes++;
        statusSeen = t.getStatus();
      });
      // A buffer outside everything the device has mapped.
      const q = kind === "net" ? up.queues[TX] : up.queues[0];
      submit(q, new BufferList().out(0x7000_0000, 64).in(0x7000_1000, 16), 7);
      await waitFor(() => changes > 0, "the config-change handler");
      assert.ok(statusSeen & VIRTIO_CONFIG_S_NEEDS_RESET);
      assert.equal(w.sim.lastFault?.code, "IOTLB_MISS");
      assert.equal(w.sim.lastFault?.queue, q.index);

      // What a driver does: reset, take back what is in flight, delete the queues, start again.
      t.reset();
      assert.equal(t.getStatus(), 0);
      assert.deepEqual(q.ring.detachUnused(), [7]);
      t.delVqs();
      assert.equal(t.pool.stats().liveBlocks, idle);
      up = bringUp(t, v, nq);
      if (kind === "net") await netRoundTrip(t, up, 5);
      else await blkWriteRead(t, up, 5);
      assert.equal(changes, 1);
      assert.equal(t.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    });
  }

  test("a config-change handler that throws is counted, not thrown into the event loop", async () => {
    const w = bind("blk");
    const up = bringUp(w.t, VARIANTS[0], 1);
    w.t.onConfigChange(() => {
      throw new Error("driver bug");
    });
    submit(up.queues[0], new BufferList().out(0x7000_0000, 16).in(0x7000_1000, 1), 1);
    await waitFor(() => w.t.configHandlerErrors === 1, "the handler error");
  });
});

describe("virtio_vdpa: unbinding", () => {
  for (const model of MODELS) {
    test(`${model}: unbind with buffers in flight removes the virtio driver first, then resets and unmaps`, async () => {
      const w = bind("net", { dmaModel: model });
      const t = w.t;
      const up = bringUp(t, VARIANTS[0], 3);
      await netRoundTrip(t, up, 1);
      const rx = up.queues[RX];
      for (let i = 0; i < 4; i++) {
        const b = t.allocDma(2048);
        submit(rx, new BufferList().in(b.iova, 2048), 10 + i);
      }
      await turn();
      let statusAtRemove = -1;
      let detached: number[] = [];
      w.drv.onRemove = (vt) => {
        statusAtRemove = vt.getStatus();
        assert.ok(
          w.sim.vqs.every((vq) => vq.ready),
          "queues still up when the driver goes",
        );
        // A driver's remove: reset, take back the buffers, delete the queues.
        vt.reset();
        detached = rx.ring.detachUnused();
        vt.delVqs();
      };
      w.events.length = 0;
      w.bus.unbind(w.device);
      assert.deepEqual(w.events, [
        "virtio unbound vdpa0 test_virtio",
        "virtio device-removed vdpa0",
        "vdpa unbound vdpa0 virtio_vdpa",
      ]);
      assert.equal(statusAtRemove, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
      assert.deepEqual(detached, [10, 11, 12, 13]);
      assert.deepEqual(w.drv.removed, [t]);
      assert.equal(w.sim.status, 0);
      assert.ok(w.sim.vqs.every((vq) => !vq.ready));
      for (let asid = 0; asid < w.device.nas; asid++)
        assert.ok(!poolMapped(w, asid), `ASID ${asid} unmapped`);
      assert.equal(w.sim.asidIotlb(0)!.size, 0);
      assert.deepEqual(w.vbus.devices(), []);
      assert.equal(w.vv.get(w.device), undefined);
      assert.ok(t.isRemoved);
      assert.throws(() => t.findVqs([{ name: "rx", callback: null }]), isVdpaError("ENODEV"));
    });
  }

  test("a virtio driver that leaves its queues up: virtio_vdpa still resets, deletes and unmaps", async () => {
    const w = bind("blk", { dmaModel: "dma_map" });
    const up = bringUp(w.t, VARIANTS[0], 1);
    const b = w.t.allocDma(16);
    submit(up.queues[0], new BufferList().out(b.iova, 16).in(b.iova, 1), 1);
    w.bus.unregisterDevice(w.device);
    assert.deepEqual(w.drv.removed, [w.t]);
    assert.equal(w.sim.status, 0);
    assert.equal(w.sim.vqs[0].ready, false);
    assert.deepEqual(w.t.queues, []);
    assert.ok(!poolMapped(w, 0));
    // The device is gone: nothing runs later, nothing throws.
    for (let i = 0; i < 5; i++) await turn();
  });
});

describe("virtio_vdpa: address spaces", () => {
  for (const model of ["set_map", "dma_map"] as const) {
    test(`${model}: the net cvq moved to ASID 1 works on the pool mapped there`, async () => {
      const w = bind("net", { dmaModel: model });
      const t = w.t;
      negotiate(t, VARIANTS[0]);
      w.device.ops.setGroupAsid!(1, 1);
      const calls = [0, 0, 0];
      const qs = t.findVqs(
        ["rx", "tx", "ctrl"].map((name, i) => ({ name, callback: () => calls[i]++ })),
      ) as TransportQueue[];
      t.setStatus(DRIVER_OK);
      const up: Up = { queues: qs, calls };

      const cmd = t.allocDma(8);
      const ack = t.allocDma(1);
      const newMac = Uint8Array.of(0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee);
      cmd.bytes[0] = VIRTIO_NET_CTRL_MAC;
      cmd.bytes[1] = VIRTIO_NET_CTRL_MAC_ADDR_SET;
      cmd.bytes.set(newMac, 2);
      ack.bytes[0] = 0xff;
      submit(qs[CVQ], new BufferList().out(cmd.iova, 8).in(ack.iova, 1), 1);
      assert.deepEqual(await waitUsed(qs[CVQ]), { token: 1, len: 1 });
      assert.equal(ack.bytes[0], VIRTIO_NET_OK);
      assert.deepEqual(t.getConfig(VIRTIO_NET_CONFIG.mac, 6), newMac);
      await netRoundTrip(t, up, 3);

      // Proof that the cvq translates through ASID 1: take the pool out of ASID 1 only.
      if (model === "dma_map") w.device.ops.dmaUnmap!(1, t.pool.iovaBase, t.pool.size);
      else w.device.ops.setMap!(1, new Iotlb("empty"));
      assert.ok(!poolMapped(w, 1) && poolMapped(w, 0));
      submit(qs[CVQ], new BufferList().out(cmd.iova, 8).in(ack.iova, 1), 2);
      await waitFor(() => w.sim.vqs[CVQ].fault !== null, "the cvq fault");
      assert.equal(w.sim.vqs[CVQ].fault?.code, "IOTLB_MISS");
      await netRoundTrip(t, up, 4);
    });
  }

  test("blk has one ASID: the pool is mapped there only", () => {
    const w = bind("blk", { dmaModel: "dma_map" });
    assert.equal(w.device.nas, 1);
    assert.ok(poolMapped(w, 0));
  });
});
