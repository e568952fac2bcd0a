// VdpaDevice (src/vdpa/device.ts) and DMA groups (src/vdpa/dma.ts): __vdpa_alloc_device's checks, the
// features_valid rule, config bounds, reset with compat flags, and group-to-ASID binding.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Iotlb } from "../../src/memory/index.js";
import { VDPA_RESET_F_CLEAN_MAP, type VdpaConfigOps } from "../../src/vdpa/config-ops.js";
import { VdpaDevice } from "../../src/vdpa/device.js";
import { GroupAddressSpaces } from "../../src/vdpa/dma.js";
import { type ErrnoName, VdpaError } from "../../src/vdpa/errors.js";

interface Recorder {
  calls: string[];
  config: Uint8Array;
}

/** A control path that records the calls the wrappers make. */
function fakeOps(extra: Partial<VdpaConfigOps> = {}): VdpaConfigOps & Recorder {
  const rec: Recorder = { calls: [], config: Uint8Array.from({ length: 24 }, (_, i) => i) };
  const ops: VdpaConfigOps = {
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
    setDriverFeatures: (f) => {
      rec.calls.push(`setDriverFeatures ${f}`);
    },
    getDriverFeatures: () => 0n,
    setConfigCb() {},
    getVqNumMax: () => 256,
    getDeviceId: () => 1,
    getVendorId: () => 0,
    getStatus: () => 0,
    setStatus: (s) => {
      rec.calls.push(`setStatus ${s}`);
    },
    reset: () => {
      rec.calls.push("reset");
    },
    getConfigSize: () => rec.config.length,
    getConfig: (off, buf, len) => {
      rec.calls.push(`getConfig ${off} ${len}`);
      buf.set(rec.config.subarray(off, off + len));
    },
    setConfig: (off, buf, len) => {
      rec.calls.push(`setConfig ${off} ${len}`);
      rec.config.set(buf.subarray(0, len), off);
    },
    ...extra,
  };
  return Object.assign(ops, rec);
}

function throwsVdpa(fn: () => unknown, code: ErrnoName, extack?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VdpaError, String(err));
    assert.equal(err.code, code, err.message);
    assert.equal(err.extack, extack);
    return true;
  });
}

describe("VdpaDevice construction (__vdpa_alloc_device)", () => {
  test("checks in Linux's order: ops, dma_map/dma_unmap pairing, use_va needs own translation", () => {
    throwsVdpa(
      () => new VdpaDevice({ ops: undefined as unknown as VdpaConfigOps, nvqs: 1 }),
      "EINVAL",
      "a vDPA device needs an ops table",
    );
    throwsVdpa(
      () => new VdpaDevice({ ops: fakeOps({ dmaMap() {} }), nvqs: 1 }),
      "EINVAL",
      "dma_map and dma_unmap come together",
    );
    throwsVdpa(
      () => new VdpaDevice({ ops: fakeOps({ dmaUnmap() {} }), nvqs: 1, useVa: true }),
      "EINVAL",
      "dma_map and dma_unmap come together",
    );
    throwsVdpa(
      () => new VdpaDevice({ ops: fakeOps(), nvqs: 1, useVa: true }),
      "EINVAL",
      "use_va needs the device's own translation (set_map or dma_map)",
    );
    assert.equal(new VdpaDevice({ ops: fakeOps({ setMap() {} }), nvqs: 1, useVa: true }).useVa, true);
  });

  test("queue, group and address space counts", () => {
    throwsVdpa(() => new VdpaDevice({ ops: fakeOps(), nvqs: -1 }), "EINVAL", "bad number of virtqueues -1");
    throwsVdpa(
      () => new VdpaDevice({ ops: fakeOps(), nvqs: 0x10000 }),
      "EINVAL",
      "bad number of virtqueues 65536",
    );
    throwsVdpa(
      () => new VdpaDevice({ ops: fakeOps(), nvqs: 2, ngroups: 0 }),
      "EINVAL",
      "a device needs at least one group and one address space",
    );
    throwsVdpa(
      () => new VdpaDevice({ ops: fakeOps(), nvqs: 2, nas: 0 }),
      "EINVAL",
      "a device needs at least one group and one address space",
    );
    const d = new VdpaDevice({ ops: fakeOps(), nvqs: 3 });
    assert.deepEqual([d.nvqs, d.ngroups, d.nas, d.index, d.name, d.mgmtdev], [3, 1, 1, -1, "", null]);
    assert.equal(d.ownTranslation, false);
    assert.equal(new VdpaDevice({ ops: fakeOps({ setMap() {} }), nvqs: 1 }).ownTranslation, true);
  });
});

describe("config access and the features_valid rule", () => {
  test("a config read before any setFeatures first sets features 0, once", () => {
    const ops = fakeOps();
    const d = new VdpaDevice({ ops, nvqs: 2 });
    assert.deepEqual(d.getConfig(6, 2), new Uint8Array([6, 7]));
    assert.deepEqual(d.getConfig(0, 1), new Uint8Array([0]));
    assert.deepEqual(ops.calls, ["setDriverFeatures 0", "getConfig 6 2", "getConfig 0 1"]);
    assert.equal(d.featuresValid, true);
  });

  test("after setFeatures no extra call; reset clears the flag so the next read sets 0 again", () => {
    const ops = fakeOps();
    const d = new VdpaDevice({ ops, nvqs: 2 });
    d.setFeatures(1n << 32n);
    d.getConfig(0, 6);
    d.reset();
    d.getConfig(0, 6);
    assert.deepEqual(ops.calls, [
      "setDriverFeatures 4294967296",
      "getConfig 0 6",
      "reset",
      "setDriverFeatures 0",
      "getConfig 0 6",
    ]);
  });

  test("out-of-bounds reads and writes are EINVAL and never reach the device", () => {
    const ops = fakeOps();
    const d = new VdpaDevice({ ops, nvqs: 2 });
    throwsVdpa(() => d.getConfig(20, 5), "EINVAL", "config access 20+5 outside 24 bytes");
    throwsVdpa(() => d.getConfig(-1, 1), "EINVAL", "config access -1+1 outside 24 bytes");
    throwsVdpa(() => d.getConfig(0.5, 1), "EINVAL", "config access 0.5+1 outside 24 bytes");
    throwsVdpa(() => d.setConfig(23, new Uint8Array(2)), "EINVAL", "config access 23+2 outside 24 bytes");
    assert.deepEqual(ops.calls, []);
    assert.equal(d.featuresValid, false, "a refused read sets no features");
    assert.equal(d.getConfig(24, 0).length, 0);
    d.setConfig(22, new Uint8Array([0xaa, 0xbb]));
    assert.deepEqual(d.getConfig(22, 2), new Uint8Array([0xaa, 0xbb]));
  });

  test("setStatus keeps the low byte; getVqNumMin defaults to 1", () => {
    const ops = fakeOps();
    const d = new VdpaDevice({ ops, nvqs: 2 });
    d.setStatus(0x10f);
    assert.deepEqual(ops.calls, ["setStatus 15"]);
    assert.equal(d.getVqNumMin(), 1);
    assert.equal(new VdpaDevice({ ops: fakeOps({ getVqNumMin: () => 64 }), nvqs: 1 }).getVqNumMin(), 64);
  });
});

describe("reset(flags)", () => {
  test("compatReset only when the device has it and flags != 0; otherwise reset", () => {
    const withCompat = fakeOps({});
    withCompat.compatReset = (flags) => {
      withCompat.calls.push(`compatReset ${flags}`);
    };
    const d = new VdpaDevice({ ops: withCompat, nvqs: 2 });
    d.reset();
    d.reset(0);
    d.reset(VDPA_RESET_F_CLEAN_MAP);
    assert.deepEqual(withCompat.calls, ["reset", "reset", "compatReset 1"]);

    const plain = fakeOps();
    const p = new VdpaDevice({ ops: plain, nvqs: 2 });
    p.setFeatures(0n);
    p.reset(VDPA_RESET_F_CLEAN_MAP);
    assert.deepEqual(plain.calls, ["setDriverFeatures 0", "reset"]);
    assert.equal(p.featuresValid, false);
  });
});

describe("GroupAddressSpaces", () => {
  function spaces(ngroups: number, nas: number) {
    const iotlbs = Array.from({ length: nas }, (_, i) => new Iotlb(`as${i}`));
    return { g: new GroupAddressSpaces(ngroups, iotlbs), iotlbs };
  }

  test("every group starts on ASID 0 and keeps one AddressSpace object across moves", () => {
    const { g, iotlbs } = spaces(2, 2);
    assert.equal(g.nas, 2);
    const space1 = g.groupSpaces[1];
    assert.equal(g.asidOf(0), 0);
    assert.equal(g.asidOf(1), 0);
    assert.equal(space1.iotlb, iotlbs[0]);
    g.setGroupAsid(1, 1);
    assert.equal(g.asidOf(1), 1);
    assert.equal(g.groupSpaces[1], space1);
    assert.equal(space1.iotlb, iotlbs[1]);
    assert.equal(g.groupSpaces[0].iotlb, iotlbs[0]);
    g.resetBindings();
    assert.equal(g.asidOf(1), 0);
    assert.equal(space1.iotlb, iotlbs[0]);
  });

  test("group == ngroups is accepted and changes nothing (the simulator's `group > ngroups` check)", () => {
    const { g, iotlbs } = spaces(2, 2);
    g.setGroupAsid(2, 1);
    assert.equal(g.asidOf(0), 0);
    assert.equal(g.asidOf(1), 0);
    assert.equal(g.groupSpaces[0].iotlb, iotlbs[0]);
    assert.equal(g.groupSpaces.length, 2);
  });

  test("group > ngroups, a bad ASID, or non-integers are EINVAL", () => {
    const { g } = spaces(2, 2);
    throwsVdpa(() => g.setGroupAsid(3, 0), "EINVAL");
    throwsVdpa(() => g.setGroupAsid(-1, 0), "EINVAL");
    throwsVdpa(() => g.setGroupAsid(0, 2), "EINVAL");
    throwsVdpa(() => g.setGroupAsid(0, 0.5), "EINVAL");
    // The group check comes first: group 3 with a bad ASID is still the group's answer (both EINVAL).
    throwsVdpa(() => g.setGroupAsid(3, 9), "EINVAL");
    assert.equal(g.asidOf(0), 0);
  });

  test("iotlb(asid) and the constructor's checks", () => {
    const { g, iotlbs } = spaces(1, 2);
    assert.equal(g.iotlb(1), iotlbs[1]);
    throwsVdpa(() => g.iotlb(2), "EINVAL");
    throwsVdpa(() => g.iotlb(-1), "EINVAL");
    throwsVdpa(
      () => new GroupAddressSpaces(0, [new Iotlb()]),
      "EINVAL",
      "a device needs at least one group and one address space",
    );
    throwsVdpa(
      () => new GroupAddressSpaces(1, []),
      "EINVAL",
      "a device needs at least one group and one address space",
    );
  });
});
