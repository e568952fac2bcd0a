// The vDPA bus (src/vdpa/vdpa-bus.ts): indices and names, duplicate names, the platform IOMMU domain, driver
// matching with driver_override, explicit bind/unbind, the probe-time queue size check, and event order.

import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";
import type { VdpaConfigOps } from "../../src/vdpa/config-ops.js";
import { VdpaDevice } from "../../src/vdpa/device.js";
import { PlatformDomain } from "../../src/vdpa/dma.js";
import { type ErrnoName, VdpaError } from "../../src/vdpa/errors.js";
import { VdpaBus, type VdpaDriver } from "../../src/vdpa/vdpa-bus.js";

/** A control path that does nothing; `extra` adds optional ops (setMap, dmaMap, getVqNumMin, free...). */
function fakeOps(extra: Partial<VdpaConfigOps> = {}): VdpaConfigOps {
  return {
    setVqAddress() {},
    setVqNum() {},
    kickVq() {},
    setVqCb() {},
    setVqReady() {},
    getVqReady: () => false,
    setVqState() {},
    getVqState: () => ({ split: { availIndex: 0 } }),
    getVqAlign: () => 4096,
    getDeviceFeatures: () => 0n,
    setDriverFeatures() {},
    getDriverFeatures: () => 0n,
    setConfigCb() {},
    getVqNumMax: () => 256,
    getDeviceId: () => 1,
    getVendorId: () => 0,
    getStatus: () => 0,
    setStatus() {},
    reset() {},
    getConfigSize: () => 0,
    getConfig() {},
    setConfig() {},
    ...extra,
  };
}

function device(name?: string, extra: Partial<VdpaConfigOps> = {}): VdpaDevice {
  return new VdpaDevice({ ops: fakeOps(extra), nvqs: 2, ...(name !== undefined ? { name } : {}) });
}

interface RecordingDriver extends VdpaDriver {
  probed: string[];
  removed: string[];
}

function driver(name: string, refuse?: (dev: VdpaDevice) => boolean): RecordingDriver {
  const drv: RecordingDriver = {
    name,
    probed: [],
    removed: [],
    probe(dev) {
      if (refuse?.(dev)) throw new VdpaError("ENODEV", `${name} refuses ${dev.name}`);
      drv.probed.push(dev.name);
    },
    remove(dev) {
      drv.removed.push(dev.name);
    },
  };
  return drv;
}

function throwsVdpa(fn: () => unknown, code: ErrnoName, extack?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VdpaError, String(err));
    assert.equal(err.code, code, err.message);
    assert.equal(err.extack, extack);
    return true;
  });
}

/** Records every bus event as one string, in order. */
function recordEvents(bus: VdpaBus): string[] {
  const events: string[] = [];
  bus.on("device-added", (d) => events.push(`device-added ${d.name}`));
  bus.on("bound", (d, drv) => events.push(`bound ${d.name} ${drv.name}`));
  bus.on("unbound", (d, drv) => events.push(`unbound ${d.name} ${drv.name}`));
  bus.on("device-removed", (d) => events.push(`device-removed ${d.name}`));
  bus.on("probe-failed", (d, drv, err) =>
    events.push(`probe-failed ${d.name} ${drv.name} ${(err as VdpaError).code}`),
  );
  return events;
}

let bus: VdpaBus;
beforeEach(() => {
  bus = new VdpaBus();
});

describe("indices and names", () => {
  test("each device gets the lowest free index; a freed index is reused", () => {
    const [d0, d1, d2] = [device("a"), device("b"), device("c")];
    for (const d of [d0, d1, d2]) bus.registerDevice(d);
    assert.deepEqual(
      [d0, d1, d2].map((d) => d.index),
      [0, 1, 2],
    );
    bus.unregisterDevice(d1);
    const d3 = device("d");
    bus.registerDevice(d3);
    assert.equal(d3.index, 1);
    const d4 = device("e");
    bus.registerDevice(d4);
    assert.equal(d4.index, 3);
    assert.deepEqual(
      bus.devices().map((d) => d.name),
      ["a", "c", "d", "e"],
    );
  });

  test("a device without a name is called vdpa<index>", () => {
    const named = device("x");
    const anon = device();
    bus.registerDevice(named);
    bus.registerDevice(anon);
    assert.equal(anon.name, "vdpa1");
    assert.equal(bus.device("vdpa1"), anon);
  });

  test("a name in use is EEXIST with no message; so is registering the same device twice", () => {
    const first = device("vdpa0");
    bus.registerDevice(first);
    throwsVdpa(() => bus.registerDevice(device("vdpa0")), "EEXIST");
    throwsVdpa(() => bus.registerDevice(first), "EEXIST", "vdpa0 is already registered");
    // vdpa<index> clashes too: index 2 is free but a device (at index 1) already took the name vdpa2.
    bus.registerDevice(device("vdpa2"));
    throwsVdpa(() => bus.registerDevice(device()), "EEXIST");
    assert.equal(bus.devices().length, 2);
  });

  test("names: '/' becomes '!', bad names are EINVAL (VdpaBus.checkName applies the same rule)", () => {
    assert.equal(device("pci/0000:03:00.2").name, "pci!0000:03:00.2");
    assert.equal(VdpaBus.checkName("a/b/c"), "a!b!c");
    throwsVdpa(() => device(""), "EINVAL", "device name must be 1 to 64 characters");
    throwsVdpa(() => device("x".repeat(65)), "EINVAL", "device name must be 1 to 64 characters");
    assert.equal(device("x".repeat(64)).name.length, 64);
    throwsVdpa(
      () => device("a b"),
      "EINVAL",
      "device name may only hold printable ASCII characters without spaces",
    );
    throwsVdpa(
      () => device("é"),
      "EINVAL",
      "device name may only hold printable ASCII characters without spaces",
    );
    throwsVdpa(() => VdpaBus.checkName("."), "EINVAL", "device name cannot be . or ..");
    throwsVdpa(() => VdpaBus.checkName(".."), "EINVAL", "device name cannot be . or ..");
  });

  test("unregistering a device that is not on the bus is ENODEV", () => {
    throwsVdpa(() => bus.unregisterDevice(device("x")), "ENODEV", "device not found");
  });
});

describe("platform IOMMU domain", () => {
  test("only devices without their own translation get one, named after the device", () => {
    const platform = device("plat");
    const setMap = device("sm", { setMap() {} });
    const dmaMap = device("dm", { dmaMap() {}, dmaUnmap() {} });
    for (const d of [platform, setMap, dmaMap]) bus.registerDevice(d);
    assert.ok(platform.platformDomain instanceof PlatformDomain);
    assert.equal(platform.platformDomain.deviceName, "plat");
    assert.equal(platform.platformDomain.iotlb.size, 0, "nothing is mapped at first");
    assert.equal(setMap.platformDomain, null);
    assert.equal(dmaMap.platformDomain, null);
    assert.deepEqual(
      [platform, setMap, dmaMap].map((d) => d.dmaModel),
      ["platform", "set_map", "dma_map"],
    );
  });

  test("an unnamed device's domain carries its vdpa<index> name", () => {
    const d = device();
    bus.registerDevice(d);
    assert.equal(d.platformDomain?.deviceName, "vdpa0");
  });
});

describe("drivers and matching", () => {
  test("the first registered driver wins; events: device-added then bound", () => {
    const events = recordEvents(bus);
    const vhost = driver("vhost_vdpa");
    const virtio = driver("virtio_vdpa");
    bus.registerDriver(vhost);
    bus.registerDriver(virtio);
    const d = device("vdpa0");
    bus.registerDevice(d);
    assert.equal(bus.driverOf(d), vhost);
    assert.equal(d.driver, vhost);
    assert.deepEqual(vhost.probed, ["vdpa0"]);
    assert.deepEqual(virtio.probed, []);
    assert.deepEqual(events, ["device-added vdpa0", "bound vdpa0 vhost_vdpa"]);
  });

  test("a driver registered later is offered every unbound device; a duplicate driver name is EEXIST", () => {
    const d0 = device("d0");
    const d1 = device("d1");
    bus.registerDevice(d0);
    bus.registerDevice(d1);
    const vhost = driver("vhost_vdpa");
    bus.registerDriver(vhost);
    assert.deepEqual(vhost.probed, ["d0", "d1"]);
    throwsVdpa(
      () => bus.registerDriver(driver("vhost_vdpa")),
      "EEXIST",
      "a driver named vhost_vdpa is already registered",
    );
  });

  test("driver_override: only the named driver matches; trimmed; '' clears; too long is EINVAL", () => {
    const vhost = driver("vhost_vdpa");
    const virtio = driver("virtio_vdpa");
    bus.registerDriver(vhost);
    bus.registerDriver(virtio);
    const d = device("vdpa0");
    bus.setDriverOverride(d, " virtio_vdpa\n");
    assert.equal(d.driverOverride, "virtio_vdpa");
    bus.registerDevice(d);
    assert.equal(bus.driverOf(d), virtio);

    const lonely = device("vdpa1");
    bus.setDriverOverride(lonely, "nosuch");
    bus.registerDevice(lonely);
    assert.equal(bus.driverOf(lonely), undefined, "no driver matches the override");

    bus.setDriverOverride(lonely, "");
    assert.equal(lonely.driverOverride, null);
    bus.setDriverOverride(lonely, "x");
    bus.setDriverOverride(lonely, null);
    assert.equal(lonely.driverOverride, null);
    throwsVdpa(() => bus.setDriverOverride(lonely, "x".repeat(4095)), "EINVAL", "driver_override too long");
  });

  test("setting an override does not unbind the current driver", () => {
    const vhost = driver("vhost_vdpa");
    bus.registerDriver(vhost);
    bus.registerDriver(driver("virtio_vdpa"));
    const d = device("vdpa0");
    bus.registerDevice(d);
    bus.setDriverOverride(d, "virtio_vdpa");
    assert.equal(bus.driverOf(d), vhost);
    bus.unbind(d);
    throwsVdpa(() => bus.bind(d, "vhost_vdpa"), "ENODEV", "vdpa0 has driver_override virtio_vdpa");
    bus.bind(d, "virtio_vdpa");
    assert.equal(bus.driverOf(d)?.name, "virtio_vdpa");
  });

  test("explicit bind/unbind as the transcript's sysfs rebind, with its events", () => {
    const vhost = driver("vhost_vdpa");
    const virtio = driver("virtio_vdpa");
    bus.registerDriver(vhost);
    bus.registerDriver(virtio);
    const d = device("vdpa0");
    bus.registerDevice(d);
    const events = recordEvents(bus);
    throwsVdpa(() => bus.bind(d, "virtio_vdpa"), "EBUSY", "vdpa0 is bound to vhost_vdpa");
    bus.unbind(d);
    assert.equal(d.driver, null);
    throwsVdpa(() => bus.unbind(d), "ENODEV", "vdpa0 is not bound");
    throwsVdpa(() => bus.bind(d, "nosuch"), "ENODEV", "no driver nosuch");
    bus.bind(d, "virtio_vdpa");
    assert.deepEqual(vhost.removed, ["vdpa0"]);
    assert.deepEqual(virtio.probed, ["vdpa0"]);
    assert.deepEqual(events, ["unbound vdpa0 vhost_vdpa", "bound vdpa0 virtio_vdpa"]);
    throwsVdpa(() => bus.bind(device("other"), "vhost_vdpa"), "ENODEV", "device not found");
  });

  test("probe refuses num_max < num_min: the device stays unbound; an explicit bind throws", () => {
    const events = recordEvents(bus);
    const vhost = driver("vhost_vdpa");
    bus.registerDriver(vhost);
    const d = device("bad", { getVqNumMax: () => 16, getVqNumMin: () => 32 });
    bus.registerDevice(d);
    assert.equal(bus.driverOf(d), undefined);
    assert.deepEqual(vhost.probed, []);
    assert.deepEqual(events, ["device-added bad", "probe-failed bad vhost_vdpa EINVAL"]);
    throwsVdpa(() => bus.bind(d, "vhost_vdpa"), "EINVAL", "queue size max 16 below min 32");
    // max == min is fine.
    const ok = device("ok", { getVqNumMax: () => 32, getVqNumMin: () => 32 });
    bus.registerDevice(ok);
    assert.equal(bus.driverOf(ok), vhost);
  });

  test("a driver's refusal leaves the device unbound and reports probe-failed", () => {
    const events = recordEvents(bus);
    const picky = driver("picky", (dev) => dev.name === "no");
    bus.registerDriver(picky);
    bus.registerDevice(device("no"));
    bus.registerDevice(device("yes"));
    assert.deepEqual(events, [
      "device-added no",
      "probe-failed no picky ENODEV",
      "device-added yes",
      "bound yes picky",
    ]);
    throwsVdpa(() => bus.bind(bus.device("no")!, "picky"), "ENODEV", "picky refuses no");
  });

  test("unregistering a bound device unbinds it first, then frees it: unbound, device-removed", () => {
    let freed = 0;
    const vhost = driver("vhost_vdpa");
    bus.registerDriver(vhost);
    const d = device("vdpa0", {
      free() {
        freed++;
      },
    });
    bus.registerDevice(d);
    const events = recordEvents(bus);
    bus.unregisterDevice(d);
    assert.deepEqual(events, ["unbound vdpa0 vhost_vdpa", "device-removed vdpa0"]);
    assert.deepEqual(vhost.removed, ["vdpa0"]);
    assert.equal(freed, 1);
    assert.equal(bus.driverOf(d), undefined);
    assert.deepEqual(bus.devices(), []);
  });

  test("a full life: device-added, bound, unbound, device-removed", () => {
    const events = recordEvents(bus);
    bus.registerDriver(driver("vhost_vdpa"));
    const d = device("vdpa0");
    bus.registerDevice(d);
    bus.unregisterDevice(d);
    assert.deepEqual(events, [
      "device-added vdpa0",
      "bound vdpa0 vhost_vdpa",
      "unbound vdpa0 vhost_vdpa",
      "device-removed vdpa0",
    ]);
  });

  test("unregistering a driver unbinds its devices and leaves others alone", () => {
    const vhost = driver("vhost_vdpa");
    const virtio = driver("virtio_vdpa");
    bus.registerDriver(vhost);
    bus.registerDriver(virtio);
    const a = device("a");
    const b = device("b");
    bus.setDriverOverride(b, "virtio_vdpa");
    bus.registerDevice(a);
    bus.registerDevice(b);
    bus.unregisterDriver(vhost);
    assert.deepEqual(vhost.removed, ["a"]);
    assert.equal(bus.driverOf(a), undefined);
    assert.equal(bus.driverOf(b), virtio);
    assert.deepEqual(
      bus.drivers().map((d) => d.name),
      ["virtio_vdpa"],
    );
  });
});
