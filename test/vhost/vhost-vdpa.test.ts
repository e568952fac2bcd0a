// vhost_vdpa's uAPI rules against a recording fake device: ownership, index checks, status and feature
// rules, config bounds, vring setup checks, backend features, and IOTLB dispatch for each DMA model.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type Iotlb, PERM_RO, PERM_RW, SharedMemoryRegion } from "../../src/memory/index.js";
import { VDPA_RESET_F_CLEAN_MAP, type VdpaConfigOps } from "../../src/vdpa/config-ops.js";
import { VdpaDevice } from "../../src/vdpa/device.js";
import { type ErrnoName, VdpaError } from "../../src/vdpa/errors.js";
import { VdpaBus } from "../../src/vdpa/vdpa-bus.js";
import {
  VHOST_BACKEND_F_DESC_ASID,
  VHOST_BACKEND_F_IOTLB_PERSIST,
  VHOST_BACKEND_F_SUSPEND,
  type VhostVdpa,
  VhostVdpaDriver,
} from "../../src/vhost/vhost-vdpa.js";
import { type FakeDevice, fakeDevice } from "../support/fake-device.js";

const FEATURES_OK = 8;
const DRIVER_OK = 4;
const RING_PACKED = 1n << 34n;
const bit = (n: number): bigint => 1n << BigInt(n);

function throwsVdpa(fn: () => unknown, code: ErrnoName, extack?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VdpaError, String(err));
    assert.equal(err.code, code, err.message);
    if (extack) assert.match(err.extack ?? "", extack);
    return true;
  });
}

interface Setup {
  fake: FakeDevice;
  dev: VdpaDevice;
  vhost: VhostVdpa;
  driver: VhostVdpaDriver;
  bus: VdpaBus;
}

function setup(
  extra: Partial<VdpaConfigOps> = {},
  opts: { ngroups?: number; nas?: number; offered?: bigint; open?: boolean; owner?: boolean } = {},
): Setup {
  const fake = fakeDevice(extra, { nvqs: 2, offered: opts.offered });
  const dev = new VdpaDevice({
    ops: fake,
    nvqs: 2,
    ngroups: opts.ngroups ?? 1,
    nas: opts.nas ?? 1,
    name: "vd0",
  });
  const bus = new VdpaBus();
  const driver = new VhostVdpaDriver();
  bus.registerDriver(driver);
  bus.registerDevice(dev);
  const vhost = driver.get(dev)!;
  assert.ok(vhost, "vhost_vdpa bound the device");
  if (opts.open !== false) vhost.open();
  if (opts.open !== false && opts.owner !== false) vhost.setOwner();
  fake.calls.length = 0;
  return { fake, dev, vhost, driver, bus };
}

describe("vhost_vdpa probe and open", () => {
  test("a platform-translated device with two groups is refused (EOPNOTSUPP) and stays unbound", () => {
    const bus = new VdpaBus();
    const driver = new VhostVdpaDriver();
    bus.registerDriver(driver);
    const failures: string[] = [];
    bus.on("probe-failed", (_d, _drv, err) => failures.push((err as VdpaError).code));
    const dev = new VdpaDevice({ ops: fakeDevice(), nvqs: 2, ngroups: 2 });
    bus.registerDevice(dev);
    assert.deepEqual(failures, ["EOPNOTSUPP"]);
    assert.equal(driver.get(dev), undefined);
    assert.equal(dev.driver, null);
  });

  test("one user at a time; open resets the device with CLEAN_MAP", () => {
    const compat: number[] = [];
    const { vhost, fake } = setup({ compatReset: (f) => compat.push(f) }, { open: false });
    vhost.open();
    assert.deepEqual(compat, [VDPA_RESET_F_CLEAN_MAP]);
    throwsVdpa(() => vhost.open(), "EBUSY");
    vhost.release();
    vhost.open();
    assert.equal(compat.length, 3, "release and the second open reset too");
    assert.ok(!fake.calls.includes("reset"), "compat_reset used instead of reset when flags != 0");
  });

  test("calls on a closed handle are EBADF; unbinding the device releases its user", () => {
    const { vhost, bus, dev, fake } = setup();
    bus.unbind(dev);
    assert.equal(vhost.isOpen, false);
    assert.ok(fake.calls.includes("reset"));
    throwsVdpa(() => vhost.setStatus(1), "EBADF");
  });
});

describe("ownership and indices", () => {
  test("vring calls need an owner (EPERM) and a valid index (ENOBUFS), in that order", () => {
    const { vhost } = setup({}, { owner: false });
    throwsVdpa(() => vhost.setVringNum(5, 256), "EPERM");
    vhost.setOwner();
    throwsVdpa(() => vhost.setOwner(), "EBUSY");
    throwsVdpa(() => vhost.setVringNum(2, 256), "ENOBUFS");
    throwsVdpa(() => vhost.setVringEnable(-1, true), "ENOBUFS");
  });

  test("vDPA-specific queries need no owner", () => {
    const { vhost } = setup({}, { owner: false });
    assert.equal(vhost.getDeviceId(), 1);
    assert.equal(vhost.getVqsCount(), 2);
    assert.equal(vhost.getGroupNum(), 1);
    assert.equal(vhost.getAsNum(), 1);
    assert.equal(vhost.getVringNum(), 256);
    assert.equal(vhost.getConfigSize(), 24);
    assert.deepEqual(vhost.getIovaRange(), { first: 0, last: Number.MAX_SAFE_INTEGER });
  });
});

describe("features and status", () => {
  test("features are refused after FEATURES_OK (EBUSY); a device refusing them is EINVAL", () => {
    const { vhost, fake } = setup({
      setDriverFeatures(f) {
        if (!(f & bit(33))) throw new VdpaError("EINVAL");
        fake.features = f;
      },
    });
    throwsVdpa(() => vhost.setFeatures(bit(32)), "EINVAL");
    vhost.setFeatures(bit(32) | bit(33));
    assert.equal(fake.features, bit(32) | bit(33));
    vhost.setStatus(1 | 2 | FEATURES_OK);
    throwsVdpa(() => vhost.setFeatures(bit(32) | bit(33)), "EBUSY");
  });

  test("status bits can only be cleared by writing 0, which resets", () => {
    const { vhost, fake } = setup();
    vhost.setStatus(1);
    vhost.setStatus(3);
    throwsVdpa(() => vhost.setStatus(2), "EINVAL");
    assert.equal(fake.status, 3);
    vhost.setStatus(0);
    assert.equal(fake.status, 0);
    assert.ok(fake.calls.includes("reset"));
  });

  test("IOTLB_PERSIST keeps maps over a reset: reset without CLEAN_MAP", () => {
    const compat: number[] = [];
    const { vhost, fake } = setup({
      compatReset: (f) => compat.push(f),
      resetMap() {},
      dmaMap() {},
      dmaUnmap() {},
    });
    compat.length = 0;
    vhost.setBackendFeatures(bit(VHOST_BACKEND_F_IOTLB_PERSIST));
    vhost.setStatus(1);
    vhost.setStatus(0);
    assert.deepEqual(compat, [], "flags 0: plain reset");
    assert.ok(fake.calls.includes("reset"));
  });
});

describe("config", () => {
  test("zero length, offset past the end and length past the end are EINVAL", () => {
    const { vhost } = setup();
    throwsVdpa(() => vhost.getConfig(0, 0), "EINVAL");
    throwsVdpa(() => vhost.getConfig(25, 1), "EINVAL");
    throwsVdpa(() => vhost.getConfig(20, 5), "EINVAL");
    assert.deepEqual([...vhost.getConfig(20, 4)], [20, 21, 22, 23]);
    vhost.setConfig(0, Uint8Array.of(9, 9));
    assert.deepEqual([...vhost.getConfig(0, 3)], [9, 9, 2]);
  });
});

describe("vring setup", () => {
  test("SET_VRING_NUM needs a power of two in 1..65535", () => {
    const { vhost, fake } = setup();
    for (const bad of [0, 3, 65536, 1.5]) throwsVdpa(() => vhost.setVringNum(0, bad), "EINVAL");
    vhost.setVringNum(0, 128);
    assert.deepEqual(fake.calls, ["setVqNum 0 128"]);
  });

  test("SET_VRING_ADDR: flags, alignment, and no change after DRIVER_OK unless suspended", () => {
    const { vhost, fake } = setup({ suspend() {}, resume() {} });
    throwsVdpa(() => vhost.setVringAddr(0, { desc: 0, avail: 0, used: 0, flags: 2 }), "EOPNOTSUPP");
    throwsVdpa(() => vhost.setVringAddr(0, { desc: 0, avail: 1, used: 0 }), "EINVAL");
    throwsVdpa(() => vhost.setVringAddr(0, { desc: 0, avail: 0, used: 2 }), "EINVAL");
    vhost.setVringAddr(0, { desc: 0x1000, avail: 0x2000, used: 0x3000 });
    assert.deepEqual(fake.calls, ["setVqAddress 0 4096 8192 12288"]);
    vhost.setStatus(1 | 2 | FEATURES_OK | DRIVER_OK);
    throwsVdpa(() => vhost.setVringAddr(0, { desc: 0x1000, avail: 0x2000, used: 0x3000 }), "EINVAL");
    throwsVdpa(() => vhost.setVringBase(0, 5), "EINVAL");
    vhost.suspend();
    assert.equal(vhost.isSuspended, true);
    vhost.setVringAddr(0, { desc: 0x1000, avail: 0x2000, used: 0x3000 });
    vhost.setVringBase(0, 5);
    vhost.resume();
    assert.equal(vhost.isSuspended, false);
  });

  test("a device refusing the addresses is EINVAL", () => {
    const { vhost } = setup({
      setVqAddress() {
        throw new VdpaError("EFAULT");
      },
    });
    throwsVdpa(() => vhost.setVringAddr(0, { desc: 0, avail: 0, used: 0 }), "EINVAL");
  });

  test("split vring base: at most 0xffff, read back from the device", () => {
    const { vhost, fake } = setup();
    throwsVdpa(() => vhost.setVringBase(1, 0x10000), "EINVAL");
    vhost.setVringBase(1, 0xfffe);
    assert.deepEqual(fake.state[1], { split: { availIndex: 0xfffe } });
    fake.state[1] = { split: { availIndex: 7 } };
    assert.equal(vhost.getVringBase(1), 7);
  });

  test("packed vring base: avail index + wrap in bits 0-15, used index + wrap in 16-31", () => {
    const { vhost, fake } = setup({}, { offered: bit(32) | bit(33) | RING_PACKED });
    vhost.setFeatures(bit(32) | bit(33) | RING_PACKED);
    vhost.setVringBase(0, 5 | 0x8000 | ((9 | 0) << 16));
    assert.deepEqual(fake.state[0], {
      packed: { lastAvailIdx: 5, lastAvailCounter: 1, lastUsedIdx: 9, lastUsedCounter: 0 },
    });
    fake.state[0] = { packed: { lastAvailIdx: 3, lastAvailCounter: 0, lastUsedIdx: 2, lastUsedCounter: 1 } };
    assert.equal(vhost.getVringBase(0), (3 | ((2 | 0x8000) << 16)) >>> 0);
  });

  test("kick, call and enable reach the device", () => {
    const { vhost, fake } = setup();
    vhost.setVringCall(0, () => {});
    vhost.setVringCall(1, null);
    vhost.setVringEnable(0, true);
    vhost.kick(0);
    const err = () => {};
    vhost.setVringErr(1, err);
    assert.equal(vhost.vringErr(1), err);
    assert.deepEqual(fake.calls, ["setVqCb 0 set", "setVqCb 1 null", "setVqReady 0 true", "kickVq 0"]);
  });
});

describe("groups, address spaces, suspend", () => {
  test("GET_VRING_GROUP: EOPNOTSUPP without the op, EIO for a group past ngroups", () => {
    throwsVdpa(() => setup().vhost.getVringGroup(0), "EOPNOTSUPP");
    throwsVdpa(() => setup().vhost.getVringDescGroup(0), "EOPNOTSUPP");
    const { vhost } = setup({ getVqGroup: (i) => i, getVqDescGroup: () => 0, setMap() {} }, { ngroups: 1 });
    assert.equal(vhost.getVringGroup(0), 0);
    throwsVdpa(() => vhost.getVringGroup(1), "EIO");
    assert.equal(vhost.getVringDescGroup(1), 0);
  });

  test("SET_GROUP_ASID: asid past nas EINVAL, no op EOPNOTSUPP, and the group checked against nvqs", () => {
    const calls: string[] = [];
    const { vhost } = setup(
      { setMap() {}, setGroupAsid: (g, a) => calls.push(`${g}->${a}`) },
      { ngroups: 2, nas: 2 },
    );
    throwsVdpa(() => vhost.setGroupAsid(0, 2), "EINVAL");
    throwsVdpa(() => vhost.setGroupAsid(2, 0), "ENOBUFS");
    vhost.setGroupAsid(1, 1);
    assert.deepEqual(calls, ["1->1"]);
    throwsVdpa(() => setup().vhost.setGroupAsid(0, 0), "EOPNOTSUPP");
  });

  test("suspend and resume: nothing before DRIVER_OK, EOPNOTSUPP without the op", () => {
    const { vhost } = setup();
    vhost.suspend();
    assert.equal(vhost.isSuspended, false);
    vhost.setStatus(1 | 2 | FEATURES_OK | DRIVER_OK);
    throwsVdpa(() => vhost.suspend(), "EOPNOTSUPP");
    throwsVdpa(() => vhost.resume(), "EOPNOTSUPP");
  });

  test("GET_VRING_SIZE needs get_vq_size", () => {
    throwsVdpa(() => setup().vhost.getVringSize(0), "EOPNOTSUPP");
    assert.equal(setup({ getVqSize: () => 64 }).vhost.getVringSize(1), 64);
  });
});

describe("backend features", () => {
  test("offered bits follow the device's ops", () => {
    const plain = setup().vhost.getBackendFeatures();
    assert.equal(plain & bit(VHOST_BACKEND_F_SUSPEND), 0n);
    assert.notEqual(plain & bit(VHOST_BACKEND_F_IOTLB_PERSIST), 0n, "platform devices keep maps");
    const rich = setup({
      suspend() {},
      getVqDescGroup: () => 0,
      dmaMap() {},
      dmaUnmap() {},
    }).vhost.getBackendFeatures();
    assert.notEqual(rich & bit(VHOST_BACKEND_F_SUSPEND), 0n);
    assert.notEqual(rich & bit(VHOST_BACKEND_F_DESC_ASID), 0n);
    assert.equal(
      rich & bit(VHOST_BACKEND_F_IOTLB_PERSIST),
      0n,
      "own translation without reset_map: not persistent",
    );
  });

  test("SET_BACKEND_FEATURES refuses what the device cannot do, in Linux's order", () => {
    const { vhost } = setup({ dmaMap() {}, dmaUnmap() {} });
    throwsVdpa(() => vhost.setBackendFeatures(bit(12)), "EOPNOTSUPP");
    throwsVdpa(() => vhost.setBackendFeatures(bit(VHOST_BACKEND_F_SUSPEND)), "EOPNOTSUPP");
    throwsVdpa(() => vhost.setBackendFeatures(bit(VHOST_BACKEND_F_DESC_ASID)), "EINVAL");
    throwsVdpa(() => vhost.setBackendFeatures(bit(VHOST_BACKEND_F_DESC_ASID) | bit(3)), "EOPNOTSUPP");
    throwsVdpa(() => vhost.setBackendFeatures(bit(VHOST_BACKEND_F_IOTLB_PERSIST)), "EOPNOTSUPP");
    vhost.setBackendFeatures(bit(1) | bit(2) | bit(3));
  });
});

describe("IOTLB messages", () => {
  const region = new SharedMemoryRegion(1 << 20, "guest");

  test("dma_map devices get each update and invalidation; overlaps and bad ranges answer EFAULT", () => {
    const calls: string[] = [];
    const { vhost } = setup({
      dmaMap: (asid, iova, size, _r, off, perm) => calls.push(`map ${asid} ${iova} ${size} ${off} ${perm}`),
      dmaUnmap: (asid, iova, size) => calls.push(`unmap ${asid} ${iova} ${size}`),
    });
    vhost.iotlbUpdate(0, 0x1000, 0x2000, region, 0, PERM_RW);
    throwsVdpa(() => vhost.iotlbUpdate(0, 0x2000, 0x1000, region, 0, PERM_RW), "EFAULT", /overlaps/);
    throwsVdpa(() => vhost.iotlbUpdate(0, 0x9000, 0, region, 0, PERM_RW), "EFAULT");
    throwsVdpa(() => vhost.iotlbUpdate(1, 0x9000, 0x1000, region, 0, PERM_RW), "EFAULT", /ASID 1/);
    vhost.iotlbUpdate(0, 0x8000, 0x1000, region, 0, PERM_RW);
    // As on Linux, invalidating part of a mapping removes the whole mapping.
    vhost.iotlbInvalidate(0, 0x1000, 0x1000);
    assert.deepEqual(calls, [
      `map 0 4096 8192 0 ${PERM_RW}`,
      `map 0 32768 4096 0 ${PERM_RW}`,
      "unmap 0 4096 8192",
    ]);
    assert.deepEqual(
      vhost.mappings(0).map((e) => [e.first, e.last]),
      [[0x8000, 0x8fff]],
    );
  });

  test("set_map devices get one table per message outside a batch, one per batch inside", () => {
    const tables: string[] = [];
    const { vhost } = setup(
      {
        setMap: (asid, iotlb: Iotlb) =>
          tables.push(
            `${asid}:${iotlb
              .entries()
              .map((e) => e.first.toString(16))
              .join(",")}`,
          ),
      },
      { nas: 2, ngroups: 2 },
    );
    vhost.iotlbUpdate(0, 0x1000, 0x1000, region, 0, PERM_RO);
    vhost.iotlbBatchBegin(1);
    vhost.iotlbUpdate(1, 0x1000, 0x1000, region, 0, PERM_RW);
    vhost.iotlbUpdate(1, 0x4000, 0x1000, region, 0x1000, PERM_RW);
    throwsVdpa(
      () => vhost.iotlbUpdate(0, 0x8000, 0x1000, region, 0, PERM_RW),
      "EFAULT",
      /batch open on ASID 1/,
    );
    vhost.iotlbBatchEnd(1);
    vhost.iotlbInvalidate(0, 0, 0);
    assert.deepEqual(tables, ["0:1000", "1:1000,4000", "0:"]);
  });

  test("platform devices: messages program the bus's IOMMU domain", () => {
    const { vhost, dev } = setup();
    vhost.iotlbUpdate(0, 0x4000, 0x1000, region, 0x2000, PERM_RW);
    assert.deepEqual(
      dev.platformDomain!.iotlb.entries().map((e) => [e.first, e.offset]),
      [[0x4000, 0x2000]],
    );
    vhost.iotlbInvalidate(0, 0x4000, 0x1000);
    assert.equal(dev.platformDomain!.iotlb.size, 0);
  });

  test("IOTLB messages need an owner; release drops every mapping and tells the device", () => {
    const calls: string[] = [];
    const { vhost } = setup(
      {
        dmaMap: () => calls.push("map"),
        dmaUnmap: () => calls.push("unmap"),
        resetMap: (a) => calls.push(`reset_map ${a}`),
      },
      { owner: false },
    );
    throwsVdpa(() => vhost.iotlbUpdate(0, 0x1000, 0x1000, region, 0, PERM_RW), "EFAULT", /EPERM/);
    vhost.setOwner();
    vhost.iotlbUpdate(0, 0x1000, 0x1000, region, 0, PERM_RW);
    vhost.release();
    assert.deepEqual(calls, ["map", "unmap", "reset_map 0"]);
    assert.deepEqual(vhost.mappings(0), []);
    vhost.open();
    vhost.setOwner();
  });
});
