import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { VDPASIM_NET_FEATURES } from "../../src/devices/sim/index.js";
import { Chain, type RingFormat } from "../../src/ring/index.js";
import {
  featuresFromNames,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_ID_NET,
  VIRTIO_NET_CONFIG,
  VIRTIO_NET_CONFIG_SIZE,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_HDR,
  VIRTIO_NET_OK,
  VIRTIO_NET_S_LINK_UP,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../src/spec/index.js";
import { VirtioNet, VirtioNetDriver, VirtioNetError, type VirtioNetOptions } from "../../src/virtio/net.js";
import { type FakeQueue, FakeTransport, settle } from "../support/fake-transport.js";

const bit = (n: number): bigint => 1n << BigInt(n);
const RX = 0;
const TX = 1;
const CVQ = 2;
const MAC = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
const HDR = 12;

/** What Linux's virtio_net ends with against vdpasim_net's offer. */
const LINUX_NEGOTIATED = featuresFromNames([
  "MTU",
  "MAC",
  "STATUS",
  "CTRL_VQ",
  "CTRL_MAC_ADDR",
  "VERSION_1",
  "ACCESS_PLATFORM",
]);

interface RingVariant {
  label: string;
  format: RingFormat;
  extra: bigint;
}

const VARIANTS: RingVariant[] = [
  { label: "split", format: "split", extra: 0n },
  { label: "packed", format: "packed", extra: bit(VIRTIO_F_RING_PACKED) },
  {
    label: "packed + EVENT_IDX + INDIRECT_DESC",
    format: "packed",
    extra: bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_F_INDIRECT_DESC),
  },
  { label: "split + EVENT_IDX", format: "split", extra: bit(VIRTIO_RING_F_EVENT_IDX) },
];

function netConfig(opts: { mac?: number[]; status?: number; mtu?: number } = {}): Uint8Array {
  const c = new Uint8Array(VIRTIO_NET_CONFIG_SIZE);
  c.set(opts.mac ?? MAC, VIRTIO_NET_CONFIG.mac);
  const status = opts.status ?? VIRTIO_NET_S_LINK_UP;
  c[VIRTIO_NET_CONFIG.status] = status & 0xff;
  const mtu = opts.mtu ?? 1500;
  c[VIRTIO_NET_CONFIG.mtu] = mtu & 0xff;
  c[VIRTIO_NET_CONFIG.mtu + 1] = mtu >> 8;
  return c;
}

/** What the test device saw. */
interface NetDevice {
  /** Frames as the driver sent them, virtio header included. */
  txSeen: Uint8Array[];
  /** Control commands: [class, command, ...data]. */
  ctrlSeen: number[][];
  /** Ack the next control commands with this. */
  ctrlAck: number;
  rxOverruns: number;
}

/** Answers queue `q` until it is empty, re-arming notifications so a later add is kicked again. */
function drain(q: FakeQueue, each: (chain: Chain) => void): void {
  do {
    while (q.device.pop(q.chain)) each(q.chain);
  } while (q.device.enableNotify());
  q.publish();
}

/**
 * A loopback net device: every TX frame goes to the next RX buffer with a device-written header
 * (num_buffers 1), as vdpasim_net does; the control queue answers MAC ADDR_SET into config.
 */
function netDevice(t: FakeTransport): NetDevice {
  const dev: NetDevice = { txSeen: [], ctrlSeen: [], ctrlAck: VIRTIO_NET_OK, rxOverruns: 0 };
  const rxChain = new Chain();
  t.handle(TX, (q, tr) => {
    const rx = tr.queue(RX);
    drain(q, (c) => {
      const bytes = c.readable.toBytes();
      dev.txSeen.push(bytes);
      if (rx.alive && rx.device.pop(rxChain)) {
        const out = Uint8Array.from(bytes);
        out[VIRTIO_NET_HDR.num_buffers] = 1;
        rx.device.push(rxChain, rxChain.writable.copyFrom(out, 0, out.length));
      } else {
        dev.rxOverruns++;
      }
      q.device.push(c, 0);
    });
    rx.publish();
  });
  t.handle(CVQ, (q, tr) => {
    drain(q, (c) => {
      const cmd = [...c.readable.toBytes()];
      dev.ctrlSeen.push(cmd);
      let ack = dev.ctrlAck;
      if (ack === VIRTIO_NET_OK) {
        if (cmd[0] === VIRTIO_NET_CTRL_MAC && cmd[1] === VIRTIO_NET_CTRL_MAC_ADDR_SET && cmd.length === 8) {
          tr.config.set(cmd.slice(2), VIRTIO_NET_CONFIG.mac);
        } else {
          ack = VIRTIO_NET_ERR;
        }
      }
      q.device.push(c, c.writable.copyFrom(Uint8Array.of(ack), 0, 1));
    });
  });
  return dev;
}

function setup(
  variant: RingVariant = VARIANTS[0],
  opts: {
    offer?: bigint;
    config?: Uint8Array;
    queueMax?: number;
    net?: VirtioNetOptions;
    acceptFeatures?: (f: bigint) => boolean;
  } = {},
) {
  const t = new FakeTransport({
    deviceId: VIRTIO_ID_NET,
    features: (opts.offer ?? VDPASIM_NET_FEATURES) | variant.extra,
    config: opts.config ?? netConfig(),
    queueMax: opts.queueMax ?? 16,
    acceptFeatures: opts.acceptFeatures,
  });
  const dev = netDevice(t);
  const net = new VirtioNet(t, opts.net);
  return { t, dev, net };
}

/** An Ethernet frame: destination, source MAC, IPv4 type, then `payload`. */
function frame(payload: string, dest: number[] = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]): Uint8Array {
  const body = Buffer.from(payload);
  const f = new Uint8Array(14 + body.length);
  f.set(dest, 0);
  f.set(MAC, 6);
  f[12] = 0x08;
  f.set(body, 14);
  return f;
}

async function until(cond: () => boolean, what: string, turns = 200): Promise<void> {
  for (let i = 0; i < turns && !cond(); i++) await settle(1);
  assert.ok(cond(), `timed out waiting for ${what}`);
}

describe("virtio-net: bring-up and features", () => {
  test("against vdpasim_net's offer it negotiates what Linux's virtio_net does, in Linux's order", () => {
    assert.equal(VDPASIM_NET_FEATURES, 0x308830028n);
    const { t, net } = setup();
    assert.equal(net.features, LINUX_NEGOTIATED);
    assert.equal(t.features, LINUX_NEGOTIATED);
    assert.deepEqual(t.log, [
      "reset",
      "status 1",
      "status 2",
      `features 0x${LINUX_NEGOTIATED.toString(16)}`,
      "status 8",
      "findVqs input.0,output.0,control",
      "status 4",
    ]);
    assert.equal(t.earlyNotifies, 0);
    net.remove();
  });

  test("ring features are taken when offered; unsupported offload bits are not", () => {
    const rings = bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_F_INDIRECT_DESC);
    const offloads = bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_NET_F_GUEST_CSUM);
    const { t, net } = setup(VARIANTS[0], { offer: VDPASIM_NET_FEATURES | rings | offloads });
    assert.equal(net.features, LINUX_NEGOTIATED | rings);
    assert.equal(t.format, "packed");
    net.remove();
  });

  test("CTRL_MAC_ADDR is dropped without CTRL_VQ, and an MTU below 68 drops the MTU feature", () => {
    const offer = VDPASIM_NET_FEATURES & ~bit(VIRTIO_NET_F_CTRL_VQ);
    const { t, net } = setup(VARIANTS[0], { offer, config: netConfig({ mtu: 60 }) });
    assert.equal(
      net.features,
      featuresFromNames(["MAC", "STATUS", "VERSION_1", "ACCESS_PLATFORM"]),
      "no CTRL_VQ, CTRL_MAC_ADDR, MTU",
    );
    assert.equal(net.mtu, 1500);
    assert.deepEqual(
      t.queues.map((q) => q.name),
      ["input.0", "output.0"],
    );
    net.remove();
  });

  test("reads MAC, MTU and link state from config", () => {
    const { net } = setup(VARIANTS[0], { config: netConfig({ mtu: 9000, status: 0 }) });
    assert.equal(net.macString, "00:11:22:33:44:55");
    assert.equal(net.mtu, 9000);
    assert.equal(net.maxFrameSize, 14 + 4 + 9000);
    assert.equal(net.linkUp, false);
    net.remove();
  });

  test("without the MAC feature the MAC is random, unicast and locally administered", () => {
    const { net } = setup(VARIANTS[0], { offer: VDPASIM_NET_FEATURES & ~featuresFromNames(["MAC"]) });
    assert.equal(net.mac[0] & 0x03, 0x02);
    net.remove();
  });

  test("a device that refuses FEATURES_OK fails the bring-up with FAILED and keeps no memory", () => {
    const t = new FakeTransport({
      deviceId: VIRTIO_ID_NET,
      features: VDPASIM_NET_FEATURES,
      config: netConfig(),
      acceptFeatures: () => false,
    });
    const blocks = t.pool.stats().liveBlocks;
    assert.throws(
      () => new VirtioNet(t),
      (err: unknown) => err instanceof VirtioNetError && err.code === "FAILED",
    );
    assert.ok(t.getStatus() & VIRTIO_CONFIG_S_FAILED);
    assert.equal(t.pool.stats().liveBlocks, blocks);
    assert.ok(!t.log.includes("status 4"), "never DRIVER_OK");
  });

  test("a legacy device (no VERSION_1) is refused", () => {
    const t = new FakeTransport({
      deviceId: VIRTIO_ID_NET,
      features: VDPASIM_NET_FEATURES & ~featuresFromNames(["VERSION_1"]),
      config: netConfig(),
    });
    assert.throws(() => new VirtioNet(t), /FAILED: .*legacy/);
    assert.ok(t.getStatus() & VIRTIO_CONFIG_S_FAILED);
  });

  test("VirtioNetDriver binds transports of device id 1 and removes them", async () => {
    const probed: VirtioNet[] = [];
    const driver = new VirtioNetDriver({ onProbe: (n) => probed.push(n) });
    assert.deepEqual(driver.deviceIds, [1]);
    assert.equal(driver.name, "virtio_net");
    const t = new FakeTransport({
      deviceId: VIRTIO_ID_NET,
      features: VDPASIM_NET_FEATURES,
      config: netConfig(),
    });
    netDevice(t);
    driver.probe(t);
    assert.equal(probed.length, 1);
    assert.equal(driver.devices.get(t), probed[0]);
    await settle();
    driver.remove(t);
    assert.equal(probed[0].state, "removed");
    assert.equal(driver.devices.size, 0);
    assert.equal(t.driverDmaBlocks, 0);
  });
});

for (const variant of VARIANTS) {
  describe(`virtio-net datapath, ${variant.label} ring`, () => {
    test("frames round trip through a loopback device: zero header on tx, header stripped on rx", async () => {
      const { t, dev, net } = setup(variant);
      const got: string[] = [];
      net.onReceive((f, len) => got.push(Buffer.from(f.subarray(0, len)).toString("latin1")));
      const sent = Array.from({ length: 40 }, (_, i) => frame(`frame ${i} ${"x".repeat(i * 7)}`));
      for (const f of sent) {
        // More frames than slots: wait for completions when the ring is full.
        while (!net.send(f)) {
          net.flush();
          await settle(1);
        }
      }
      net.flush();
      await until(() => got.length === sent.length, "all frames back");
      assert.deepEqual(
        got,
        sent.map((f) => Buffer.from(f).toString("latin1")),
      );
      for (const [i, bytes] of dev.txSeen.entries()) {
        assert.deepEqual([...bytes.subarray(0, HDR)], new Array(HDR).fill(0), `tx header ${i}`);
        assert.deepEqual(bytes.subarray(HDR), sent[i]);
      }
      await until(() => net.stats.txPackets === sent.length, "tx completions");
      const bytes = sent.reduce((n, f) => n + f.length, 0);
      assert.equal(net.stats.txBytes, bytes);
      assert.equal(net.stats.rxPackets, sent.length);
      assert.equal(net.stats.rxBytes, bytes);
      assert.equal(t.earlyNotifies, 0);
      net.remove();
    });

    test("the receive queue stays full: every buffer is re-posted after its frame", async () => {
      const { t, net } = setup(variant);
      const rxRing = t.queue(RX).ring;
      assert.equal(net.rxSlots, 16);
      assert.equal(rxRing.inFlight, 16, "all posted at start");
      let n = 0;
      net.onReceive(() => n++);
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < 10; i++) assert.ok(net.send(frame(`r${round} f${i}`)));
        net.flush();
        await until(() => n === (round + 1) * 10, "frames");
        assert.equal(rxRing.inFlight, 16, `refilled after round ${round}`);
      }
      net.remove();
    });

    test("send() returns false when every tx slot is in flight, and works again after completions", async () => {
      const { t, net } = setup(variant);
      t.pause(TX);
      let ready = 0;
      net.onTxReady(() => ready++);
      for (let i = 0; i < net.txSlots; i++) assert.ok(net.send(frame(`f${i}`)), `slot ${i}`);
      assert.equal(net.txFreeSlots, 0);
      assert.equal(net.send(frame("one too many")), false);
      assert.equal(net.stats.txBusy, 1);
      net.flush();
      await settle();
      assert.equal(net.send(frame("still full")), false);
      t.resume(TX);
      await until(() => net.txFreeSlots === net.txSlots, "tx slots back");
      assert.equal(ready, 1, "onTxReady once");
      assert.ok(net.send(frame("again")));
      net.flush();
      await until(() => net.stats.txPackets === net.txSlots + 1, "the last frame");
      net.remove();
    });

    test("sendAsync waits for slots and resolves on completion; frames() yields copies", async () => {
      const { net } = setup(variant);
      const it = net.frames();
      const sent = Array.from({ length: 50 }, (_, i) => frame(`async ${i}`));
      const all = Promise.all(sent.map((f) => net.sendAsync(f)));
      const got: string[] = [];
      for await (const f of it) {
        got.push(Buffer.from(f).toString("latin1"));
        if (got.length === sent.length) break;
      }
      await all;
      assert.deepEqual(
        got,
        sent.map((f) => Buffer.from(f).toString("latin1")),
      );
      assert.equal(net.stats.txPackets, 50);
      net.remove();
    });

    test("frames nobody receives are dropped and counted", async () => {
      const { net } = setup(variant);
      for (let i = 0; i < 5; i++) net.send(frame(`lost ${i}`));
      net.flush();
      await until(() => net.stats.rxDropped === 5, "drops");
      assert.equal(net.stats.rxPackets, 0);
      net.remove();
    });

    test("setMac goes through the control queue (class MAC, ADDR_SET, 6 bytes, ack OK)", async () => {
      const { t, dev, net } = setup(variant);
      const newMac = Uint8Array.of(0x52, 0x54, 0x00, 0xab, 0xcd, 0xef);
      await net.setMac(newMac);
      assert.deepEqual(dev.ctrlSeen, [[VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, ...newMac]]);
      assert.equal(net.macString, "52:54:00:ab:cd:ef");
      assert.deepEqual([...t.config.subarray(0, 6)], [...newMac]);
      assert.equal(net.stats.ctrlOk, 1);

      dev.ctrlAck = VIRTIO_NET_ERR;
      await assert.rejects(
        net.setMac(Uint8Array.of(2, 0, 0, 0, 0, 1)),
        (err: unknown) => err instanceof VirtioNetError && err.code === "CTRL_ERR",
      );
      assert.equal(net.stats.ctrlErr, 1);
      assert.equal(net.macString, "52:54:00:ab:cd:ef", "unchanged after ERR");
      net.remove();
    });

    test("link state follows config changes (STATUS feature)", async () => {
      const { t, net } = setup(variant);
      const events: boolean[] = [];
      net.onLinkChange((up) => events.push(up));
      assert.equal(net.linkUp, true);
      t.changeConfig(VIRTIO_NET_CONFIG.status, Uint8Array.of(0, 0));
      await until(() => events.length === 1, "link down");
      assert.equal(net.linkUp, false);
      t.changeConfig(VIRTIO_NET_CONFIG.mtu, Uint8Array.of(0xdc, 0x05));
      await settle();
      assert.deepEqual(events, [false], "no event for another field");
      t.changeConfig(VIRTIO_NET_CONFIG.status, Uint8Array.of(VIRTIO_NET_S_LINK_UP, 0));
      await until(() => events.length === 2, "link up");
      assert.deepEqual(events, [false, true]);
      net.remove();
    });

    test("NEEDS_RESET: in-flight sends fail, the device is brought up again and keeps working", async () => {
      const { t, dev, net } = setup(variant);
      await net.setMac(Uint8Array.of(0x52, 0x54, 0, 0, 0, 7));
      const resets: (Error | null)[] = [];
      net.onReset((err) => resets.push(err));
      t.pause(TX);
      const inFlight = Array.from({ length: 5 }, (_, i) =>
        net.sendAsync(frame(`doomed ${i}`)).then(
          () => "sent",
          (err: unknown) => (err instanceof VirtioNetError ? err.code : String(err)),
        ),
      );
      await settle();
      t.needsReset();
      assert.deepEqual(await Promise.all(inFlight), new Array(5).fill("RESET"));
      await until(() => resets.length === 1, "onReset");
      assert.deepEqual(resets, [null]);
      assert.equal(net.stats.resets, 1);
      assert.equal(net.stats.txErrors, 5);
      assert.equal(net.state, "running");
      assert.equal(t.log.filter((l) => l === "status 4").length, 2, "DRIVER_OK twice");
      assert.equal(t.queue(RX).ring.inFlight, net.rxSlots, "rx filled again");
      // The MAC set by the user is set again on the new device.
      await until(() => dev.ctrlSeen.length === 2, "MAC set again");
      assert.deepEqual(dev.ctrlSeen[1], [1, 1, 0x52, 0x54, 0, 0, 0, 7]);

      t.resume(TX);
      const got: number[] = [];
      net.onReceive((_f, len) => got.push(len));
      await net.sendAsync(frame("after the reset"));
      await until(() => got.length === 1, "a frame after the reset");
      assert.equal(t.earlyNotifies, 0);
      net.remove();
      assert.equal(t.driverDmaBlocks, 0);
    });

    test("remove() with frames in flight: each fails with REMOVED, none hangs, memory returned", async () => {
      const { t, net } = setup(variant);
      const poolBlocks = t.pool.stats().liveBlocks;
      assert.ok(poolBlocks > 0);
      t.pause(TX);
      const results = Array.from({ length: net.txSlots + 4 }, (_, i) =>
        net.sendAsync(frame(`f${i}`)).then(
          () => "sent",
          (err: unknown) => (err instanceof VirtioNetError ? err.code : String(err)),
        ),
      );
      const it = net.frames();
      const next = it.next();
      await settle();
      net.remove();
      const codes = await Promise.all(results);
      assert.deepEqual(codes, new Array(codes.length).fill("REMOVED"));
      assert.deepEqual(await next, { value: undefined, done: true });
      assert.equal(net.state, "removed");
      assert.equal(t.driverDmaBlocks, 0);
      assert.equal(t.pool.stats().liveBlocks, 0, "rings freed too");
      assert.equal(t.queues.length, 0);
      assert.throws(() => net.send(frame("late")), /REMOVED/);
      await assert.rejects(net.sendAsync(frame("late")), /REMOVED/);
      net.remove();
    });
  });
}

describe("virtio-net: faults and limits", () => {
  test("a device returning a buffer that is not in flight is recovered from by a reset", async () => {
    const { t, net } = setup();
    const resets: (Error | null)[] = [];
    net.onReset((err) => resets.push(err));
    const tx = t.queue(TX);
    const bogus = new Chain();
    bogus.id = 7;
    bogus.descCount = 1;
    tx.device.push(bogus, 0);
    tx.publish();
    await until(() => resets.length === 1, "recovery");
    assert.equal(net.stats.resets, 1);
    assert.equal(net.state, "running");
    let n = 0;
    net.onReceive(() => n++);
    net.send(frame("still works"));
    net.flush();
    await until(() => n === 1, "a frame after recovery");
    net.remove();
  });

  test("a reset the device refuses leaves the driver failed; pending work fails with FAILED", async () => {
    let accept = true;
    const { t, net } = setup(VARIANTS[0], { acceptFeatures: () => accept });
    const resets: (Error | null)[] = [];
    net.onReset((err) => resets.push(err));
    t.pause(TX);
    for (let i = 0; i < net.txSlots; i++) net.send(frame(`f${i}`));
    const waiting = net.sendAsync(frame("waiting for a slot"));
    accept = false;
    t.needsReset();
    await assert.rejects(waiting, (err: unknown) => err instanceof VirtioNetError && err.code === "FAILED");
    assert.equal(resets.length, 1);
    assert.ok(resets[0] instanceof VirtioNetError);
    assert.equal(net.state, "failed");
    assert.ok(t.getStatus() & VIRTIO_CONFIG_S_FAILED);
    assert.throws(() => net.send(frame("x")), /FAILED/);
    net.remove();
    assert.equal(t.driverDmaBlocks, 0);
  });

  test("frames longer than the MTU allows are refused", () => {
    const { net } = setup();
    assert.throws(() => net.send(new Uint8Array(net.maxFrameSize + 1)), RangeError);
    net.remove();
  });

  test("setMac without CTRL_MAC_ADDR is UNSUPPORTED", async () => {
    const { net } = setup(VARIANTS[0], { offer: VDPASIM_NET_FEATURES & ~bit(VIRTIO_NET_F_CTRL_MAC_ADDR) });
    await assert.rejects(net.setMac(Uint8Array.of(2, 0, 0, 0, 0, 1)), /UNSUPPORTED/);
    net.remove();
  });
});
