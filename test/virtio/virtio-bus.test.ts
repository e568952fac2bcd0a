// The virtio bus: matching by device id, probe/remove order, events, failing probes, driver and device
// registration in either order.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { DmaBuffer } from "../../src/memory/index.js";
import { VIRTIO_CONFIG_S_FAILED, VIRTIO_ID_BLOCK, VIRTIO_ID_NET } from "../../src/spec/index.js";
import type { VirtioDriver, VirtioTransport } from "../../src/virtio/transport.js";
import { VirtioBus, VirtioBusError } from "../../src/virtio/virtio-bus.js";

/** Just enough of a transport for the bus: an id, a name and a status byte. */
function stubTransport(name: string, deviceId: number): VirtioTransport & { status: number } {
  const t = {
    name,
    deviceId,
    vendorId: 0,
    features: 0n,
    status: 0,
    getFeatures: () => 0n,
    finalizeFeatures: (f: bigint) => f,
    getStatus: () => t.status,
    setStatus: (s: number) => {
      t.status |= s;
    },
    reset: () => {
      t.status = 0;
    },
    getConfig: (_o: number, len: number) => new Uint8Array(len),
    setConfig: () => {},
    generation: () => 0,
    findVqs: () => [],
    delVqs: () => {},
    onConfigChange: () => {},
    allocDma: (): DmaBuffer => {
      throw new Error("no DMA in a stub");
    },
    freeDma: () => {},
  };
  return t;
}

/** A driver that writes what happens to it into a shared log. */
class LogDriver implements VirtioDriver {
  failProbe = false;
  constructor(
    readonly name: string,
    readonly deviceIds: readonly number[],
    private readonly log: string[],
  ) {}
  probe(t: VirtioTransport): void {
    this.log.push(`${this.name} probe ${t.name}`);
    if (this.failProbe) throw new Error("no thanks");
  }
  remove(t: VirtioTransport): void {
    this.log.push(`${this.name} remove ${t.name}`);
  }
}

function loggedBus(log: string[]): VirtioBus {
  const bus = new VirtioBus();
  bus.on("device-added", (d) => log.push(`device-added ${d.name}`));
  bus.on("bound", (d, drv) => log.push(`bound ${d.name} ${drv.name}`));
  bus.on("unbound", (d, drv) => log.push(`unbound ${d.name} ${drv.name}`));
  bus.on("device-removed", (d) => log.push(`device-removed ${d.name}`));
  bus.on("probe-failed", (d, drv, err) => log.push(`probe-failed ${d.name} ${drv.name} ${err.message}`));
  return bus;
}

describe("VirtioBus", () => {
  test("a device registered after the driver is probed by the driver of its id", () => {
    const log: string[] = [];
    const bus = loggedBus(log);
    const net = new LogDriver("virtio_net", [VIRTIO_ID_NET], log);
    const blk = new LogDriver("virtio_blk", [VIRTIO_ID_BLOCK], log);
    bus.registerDriver(net);
    bus.registerDriver(blk);
    const d0 = stubTransport("vdpa0", VIRTIO_ID_BLOCK);
    bus.registerDevice(d0);
    assert.deepEqual(log, ["device-added vdpa0", "virtio_blk probe vdpa0", "bound vdpa0 virtio_blk"]);
    assert.equal(bus.driverOf(d0), blk);
    assert.equal(bus.indexOf(d0), 0);
  });

  test("registering a driver binds the unbound devices it matches, and only those", () => {
    const log: string[] = [];
    const bus = loggedBus(log);
    const d0 = stubTransport("vdpa0", VIRTIO_ID_NET);
    const d1 = stubTransport("vdpa1", VIRTIO_ID_BLOCK);
    const d2 = stubTransport("vdpa2", VIRTIO_ID_NET);
    for (const d of [d0, d1, d2]) bus.registerDevice(d);
    assert.equal(bus.driverOf(d0), undefined);
    log.length = 0;
    const net = new LogDriver("virtio_net", [VIRTIO_ID_NET], log);
    bus.registerDriver(net);
    assert.deepEqual(log, [
      "virtio_net probe vdpa0",
      "bound vdpa0 virtio_net",
      "virtio_net probe vdpa2",
      "bound vdpa2 virtio_net",
    ]);
    assert.equal(bus.driverOf(d1), undefined);
    // A second driver for the same id does not steal bound devices.
    log.length = 0;
    bus.registerDriver(new LogDriver("other_net", [VIRTIO_ID_NET], log));
    assert.deepEqual(log, []);
    assert.deepEqual(
      bus.devices().map((d) => bus.indexOf(d)),
      [0, 1, 2],
    );
  });

  test("the first registered driver whose ids include the device's id wins", () => {
    const log: string[] = [];
    const bus = loggedBus(log);
    const a = new LogDriver("a", [VIRTIO_ID_BLOCK, VIRTIO_ID_NET], log);
    const b = new LogDriver("b", [VIRTIO_ID_NET], log);
    bus.registerDriver(a);
    bus.registerDriver(b);
    const d = stubTransport("vdpa0", VIRTIO_ID_NET);
    bus.registerDevice(d);
    assert.equal(bus.driverOf(d), a);
    assert.equal(log.filter((l) => l.startsWith("b ")).length, 0);
  });

  test("removing a device removes its driver first, then the device", () => {
    const log: string[] = [];
    const bus = loggedBus(log);
    bus.registerDriver(new LogDriver("virtio_net", [VIRTIO_ID_NET], log));
    const d0 = stubTransport("vdpa0", VIRTIO_ID_NET);
    bus.registerDevice(d0);
    log.length = 0;
    bus.unregisterDevice(d0);
    assert.deepEqual(log, ["virtio_net remove vdpa0", "unbound vdpa0 virtio_net", "device-removed vdpa0"]);
    assert.deepEqual(bus.devices(), []);
    assert.equal(bus.indexOf(d0), -1);
    assert.throws(
      () => bus.unregisterDevice(d0),
      (e: unknown) => e instanceof VirtioBusError && e.code === "ENODEV",
    );
  });

  test("a driver whose remove throws still leaves the device unbound and removed", () => {
    const log: string[] = [];
    const bus = loggedBus(log);
    const drv = new LogDriver("virtio_net", [VIRTIO_ID_NET], log);
    drv.remove = () => {
      throw new Error("remove failed");
    };
    bus.registerDriver(drv);
    const d0 = stubTransport("vdpa0", VIRTIO_ID_NET);
    bus.registerDevice(d0);
    assert.throws(() => bus.unregisterDevice(d0), /remove failed/);
    assert.equal(bus.driverOf(d0), undefined);
    assert.deepEqual(bus.devices(), []);
    assert.ok(log.includes("device-removed vdpa0"));
  });

  test("a failing probe leaves the device registered, unbound and FAILED", () => {
    const log: string[] = [];
    const bus = loggedBus(log);
    const drv = new LogDriver("virtio_net", [VIRTIO_ID_NET], log);
    drv.failProbe = true;
    bus.registerDriver(drv);
    const d0 = stubTransport("vdpa0", VIRTIO_ID_NET);
    bus.registerDevice(d0);
    assert.deepEqual(log, [
      "device-added vdpa0",
      "virtio_net probe vdpa0",
      "probe-failed vdpa0 virtio_net no thanks",
    ]);
    assert.equal(bus.driverOf(d0), undefined);
    assert.equal(bus.devices().length, 1);
    assert.ok(d0.status & VIRTIO_CONFIG_S_FAILED);
    // Only the new driver is offered the device when it registers.
    log.length = 0;
    bus.registerDriver(new LogDriver("second", [VIRTIO_ID_NET], log));
    assert.deepEqual(log, ["second probe vdpa0", "bound vdpa0 second"]);
  });

  test("unregistering a driver unbinds its devices; indices are reused lowest first", () => {
    const log: string[] = [];
    const bus = loggedBus(log);
    const drv = new LogDriver("virtio_blk", [VIRTIO_ID_BLOCK], log);
    bus.registerDriver(drv);
    const d0 = stubTransport("vdpa0", VIRTIO_ID_BLOCK);
    const d1 = stubTransport("vdpa1", VIRTIO_ID_BLOCK);
    bus.registerDevice(d0);
    bus.registerDevice(d1);
    log.length = 0;
    bus.unregisterDriver(drv);
    assert.deepEqual(log, [
      "virtio_blk remove vdpa0",
      "unbound vdpa0 virtio_blk",
      "virtio_blk remove vdpa1",
      "unbound vdpa1 virtio_blk",
    ]);
    assert.deepEqual(bus.drivers(), []);
    bus.unregisterDevice(d0);
    const d2 = stubTransport("vdpa2", VIRTIO_ID_BLOCK);
    bus.registerDevice(d2);
    assert.equal(bus.indexOf(d2), 0);
    assert.equal(bus.indexOf(d1), 1);
  });

  test("duplicates are refused with EEXIST", () => {
    const bus = new VirtioBus();
    const d0 = stubTransport("vdpa0", VIRTIO_ID_NET);
    bus.registerDevice(d0);
    const isEexist = (e: unknown) => e instanceof VirtioBusError && e.code === "EEXIST";
    assert.throws(() => bus.registerDevice(d0), isEexist);
    bus.registerDriver(new LogDriver("x", [1], []));
    assert.throws(() => bus.registerDriver(new LogDriver("x", [2], [])), isEexist);
  });
});
