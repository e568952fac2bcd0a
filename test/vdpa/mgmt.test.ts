// The management commands of src/vdpa/mgmt.ts against fake management devices built here: happy-path replies
// (attribute names, order and values), every error answer with its errno and exact extack text, and the order
// of Linux's checks (a request wrong in two ways gets the first check's answer). Fakes that mimic Linux 6.12's
// vdpasim_net / vdpasim_blk / vduse let replies be compared with ../shared/reference/linux-vdpa-cli.txt.

import assert from "node:assert/strict";
import { beforeEach, describe, test } from "node:test";
import {
  featureTokensIproute2Json,
  mgmtdevFeatureDeviceId,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_ID_BLOCK,
  VIRTIO_ID_CONSOLE,
  VIRTIO_ID_NET,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_RSS,
} from "../../src/spec/index.js";
import type { VdpaConfigOps, VendorStat } from "../../src/vdpa/config-ops.js";
import { VdpaDevice } from "../../src/vdpa/device.js";
import { type ErrnoName, VdpaError } from "../../src/vdpa/errors.js";
import {
  type Attr,
  extackPrefix,
  getAttr,
  getAttrs,
  isValidEtherAddr,
  mgmtdevClasses,
  NetlinkPolicyError,
  VDPA_ATTR_WIRE_TYPE,
  VDPA_CMD,
  VdpaManagement,
} from "../../src/vdpa/mgmt.js";
import {
  attrBit,
  type DevSetConfig,
  type MgmtDev,
  VDPA_ATTR,
  type VdpaAttrName,
} from "../../src/vdpa/mgmt-types.js";
import { VdpaBus, type VdpaDriver } from "../../src/vdpa/vdpa-bus.js";

// ---------------------------------------------------------------------------------------------------------
// Fakes
// ---------------------------------------------------------------------------------------------------------

interface FakeOpts {
  id: number;
  features: bigint;
  config: Uint8Array;
  vendorId?: number;
  vqNumMax?: number;
  vqNumMin?: number;
  stats?: (idx: number) => VendorStat[];
}

/** A device control path with just enough behaviour for the management commands. */
class FakeOps implements VdpaConfigOps {
  config: Uint8Array;
  deviceFeatures: bigint;
  driverFeatures = 0n;
  status = 0;
  id: number;
  vendorId: number;
  vqNumMax: number;
  /** Every setDriverFeatures call, to observe the features_valid rule. */
  setFeaturesCalls: bigint[] = [];
  getConfigCalls = 0;
  getVqNumMin?: () => number;
  getVendorVqStats?: (idx: number) => VendorStat[];

  constructor(o: FakeOpts) {
    this.id = o.id;
    this.deviceFeatures = o.features;
    this.config = o.config;
    this.vendorId = o.vendorId ?? 0;
    this.vqNumMax = o.vqNumMax ?? 256;
    const min = o.vqNumMin;
    if (min !== undefined) this.getVqNumMin = () => min;
    if (o.stats) this.getVendorVqStats = o.stats;
  }

  setVqAddress(): void {}
  setVqNum(): void {}
  kickVq(): void {}
  setVqCb(): void {}
  setVqReady(): void {}
  getVqReady(): boolean {
    return false;
  }
  setVqState(): void {}
  getVqState() {
    return { split: { availIndex: 0 } };
  }
  getVqAlign(): number {
    return 4096;
  }
  getDeviceFeatures(): bigint {
    return this.deviceFeatures;
  }
  setDriverFeatures(features: bigint): void {
    this.setFeaturesCalls.push(features);
    this.driverFeatures = features & this.deviceFeatures;
  }
  getDriverFeatures(): bigint {
    return this.driverFeatures;
  }
  setConfigCb(): void {}
  getVqNumMax(): number {
    return this.vqNumMax;
  }
  getDeviceId(): number {
    return this.id;
  }
  getVendorId(): number {
    return this.vendorId;
  }
  getStatus(): number {
    return this.status;
  }
  setStatus(status: number): void {
    this.status = status;
  }
  reset(): void {
    this.status = 0;
    this.driverFeatures = 0n;
  }
  getConfigSize(): number {
    return this.config.length;
  }
  getConfig(offset: number, buf: Uint8Array, len: number): void {
    this.getConfigCalls++;
    buf.set(this.config.subarray(offset, offset + len));
  }
  setConfig(offset: number, buf: Uint8Array, len: number): void {
    this.config.set(buf.subarray(0, len), offset);
  }
}

const f = (...bits: number[]) => bits.reduce((acc, b) => acc | (1n << BigInt(b)), 0n);

// Linux 6.12 vdpa_sim: VDPASIM_FEATURES = ANY_LAYOUT | VERSION_1 | ACCESS_PLATFORM.
const SIM_FEATURES = f(27, 32, 33);
// vdpa_sim_net.c: + MAC | STATUS | MTU | CTRL_VQ | CTRL_MAC_ADDR.
const SIM_NET_FEATURES = SIM_FEATURES | f(5, 16, 3, 17, 23);
// vdpa_sim_blk.c: + FLUSH | SIZE_MAX | SEG_MAX | BLK_SIZE | TOPOLOGY | MQ | DISCARD | WRITE_ZEROES.
const SIM_BLK_FEATURES = SIM_FEATURES | f(9, 1, 2, 6, 10, 12, 13, 14);
// What virtio_vdpa's virtio-net negotiated with vdpasim_net in the transcript (ANY_LAYOUT is legacy-only).
const NEGOTIATED_NET = f(3, 5, 16, 17, 23, 32, 33);

type NetStats = (idx: number) => VendorStat[];

/** vdpa_sim_net.c vdpasim_net_get_stats names; counters all 0 until set. */
function simNetStats(counters: Record<string, bigint> = {}): NetStats {
  const v = (n: string) => ({ name: n, value: counters[n] ?? 0n });
  return (idx) => {
    if (idx === 0) return ["rx packets", "rx bytes", "rx errors", "rx overruns", "rx drops"].map(v);
    if (idx === 1) return ["tx packets", "tx bytes", "tx errors", "tx drops"].map(v);
    if (idx === 2) return ["cvq requests", "cvq successes", "cvq errors"].map(v);
    throw new VdpaError("EINVAL", "Invalid vq index");
  };
}

/** A 24-byte virtio_net_config: mac, status (LINK_UP), max_virtqueue_pairs, mtu. */
function netConfig(mac: Uint8Array | undefined, mtu: number, maxVqp = 0, status = 1): Uint8Array {
  const cfg = new Uint8Array(24);
  if (mac) cfg.set(mac, 0);
  const dv = new DataView(cfg.buffer);
  dv.setUint16(6, status, true);
  dv.setUint16(8, maxVqp, true);
  dv.setUint16(10, mtu, true);
  return cfg;
}

/** vdpasim_blk_get_config in Linux 6.12: a 96-byte virtio_blk_config. */
function simBlkConfig(): Uint8Array {
  const cfg = new Uint8Array(96);
  const dv = new DataView(cfg.buffer);
  dv.setBigUint64(0, 0x40000n, true); // capacity
  dv.setUint32(8, 0x1000, true); // size_max
  dv.setUint32(12, 32, true); // seg_max
  dv.setUint32(20, 512, true); // blk_size
  dv.setUint16(26, 1, true); // min_io_size
  dv.setUint32(28, 1, true); // opt_io_size
  dv.setUint16(34, 1, true); // num_queues
  dv.setUint32(36, 0xffff_ffff, true); // max_discard_sectors
  dv.setUint32(40, 1, true); // max_discard_seg
  dv.setUint32(44, 512, true); // discard_sector_alignment
  dv.setUint32(48, 0xffff_ffff, true); // max_write_zeroes_sectors
  dv.setUint32(52, 1, true); // max_write_zeroes_seg
  return cfg;
}

interface FakeMgmtDev extends MgmtDev {
  added: { name: string; config: DevSetConfig }[];
  deleted: VdpaDevice[];
  /** Whether the device was still on the bus when devDel ran. */
  deletedWhileRegistered: boolean[];
  setAttrs: { dev: VdpaDevice; config: DevSetConfig }[];
}

interface MgmtSpec {
  name: string;
  busName?: string;
  idTable: number[];
  configAttrMask: bigint;
  supportedFeatures: bigint;
  maxSupportedVqs: number;
  /** Builds the device ops for a devAdd; throw to refuse. */
  build: (config: DevSetConfig) => { ops: FakeOps; nvqs: number };
  setAttr?: boolean;
  /** Makes devAdd return a device without a management device. */
  orphan?: boolean;
}

let bus: VdpaBus;

function fakeMgmtDev(spec: MgmtSpec): FakeMgmtDev {
  const mdev: FakeMgmtDev = {
    name: spec.name,
    ...(spec.busName !== undefined ? { busName: spec.busName } : {}),
    idTable: spec.idTable,
    configAttrMask: spec.configAttrMask,
    supportedFeatures: spec.supportedFeatures,
    maxSupportedVqs: spec.maxSupportedVqs,
    added: [],
    deleted: [],
    deletedWhileRegistered: [],
    setAttrs: [],
    ops: {
      devAdd(m, name, config) {
        mdev.added.push({ name, config });
        const { ops, nvqs } = spec.build(config);
        return new VdpaDevice({ ops, name, nvqs, ...(spec.orphan ? {} : { mgmtdev: m }) });
      },
      devDel(_m, dev) {
        mdev.deleted.push(dev);
        mdev.deletedWhileRegistered.push(bus.devices().includes(dev));
      },
      ...(spec.setAttr
        ? {
            devSetAttr(_m: MgmtDev, dev: VdpaDevice, config: DevSetConfig) {
              mdev.setAttrs.push({ dev, config });
              if (config.net.mac) (dev.ops as FakeOps).config.set(config.net.mac, 0);
            },
          }
        : {}),
    },
  };
  return mdev;
}

/** vdpasim_net: config_attr_mask MAC | MTU | DEV_FEATURES, max_supported_vqs 3, 3 queues, MTU 1500 default. */
function simNet(): FakeMgmtDev {
  return fakeMgmtDev({
    name: "vdpasim_net",
    idTable: [VIRTIO_ID_NET],
    configAttrMask: attrBit("DEV_NET_CFG_MACADDR") | attrBit("DEV_NET_CFG_MTU") | attrBit("DEV_FEATURES"),
    supportedFeatures: SIM_NET_FEATURES,
    maxSupportedVqs: 3,
    setAttr: true,
    build(config) {
      let features = SIM_NET_FEATURES;
      if (config.mask & attrBit("DEV_FEATURES")) {
        // vdpasim_create: provisioned features must be a subset of the supported ones.
        if (config.deviceFeatures! & ~SIM_NET_FEATURES) throw new VdpaError("EINVAL");
        features = config.deviceFeatures!;
      }
      const cfg = netConfig(config.net.mac, config.net.mtu ?? 1500);
      return {
        ops: new FakeOps({ id: VIRTIO_ID_NET, features, config: cfg, stats: simNetStats() }),
        nvqs: 3,
      };
    },
  });
}

/** vdpasim_blk: no config attributes, no supported features, max_supported_vqs 0, one queue. */
function simBlk(): FakeMgmtDev {
  return fakeMgmtDev({
    name: "vdpasim_blk",
    idTable: [VIRTIO_ID_BLOCK],
    configAttrMask: 0n,
    supportedFeatures: 0n,
    maxSupportedVqs: 0,
    build: () => ({
      ops: new FakeOps({ id: VIRTIO_ID_BLOCK, features: SIM_BLK_FEATURES, config: simBlkConfig() }),
      nvqs: 1,
    }),
  });
}

/** vduse as mgmtdev show lists it: net and block classes, nothing else said. */
function vduse(): FakeMgmtDev {
  return fakeMgmtDev({
    name: "vduse",
    idTable: [VIRTIO_ID_NET, VIRTIO_ID_BLOCK],
    configAttrMask: 0n,
    supportedFeatures: 0n,
    maxSupportedVqs: 0,
    build: () => {
      throw new VdpaError("EOPNOTSUPP");
    },
  });
}

const MAC = new Uint8Array([0x00, 0x11, 0x22, 0x33, 0x44, 0x55]);

function a(name: VdpaAttrName, value: Attr["value"]): Attr {
  return { name, value };
}

/** Asserts `fn` throws a VdpaError with this errno and extack (undefined: none). */
function throwsVdpa(fn: () => unknown, code: ErrnoName, extack?: string): VdpaError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof VdpaError, `expected a VdpaError, got ${String(caught)}`);
  assert.equal(caught.code, code, `errno of: ${caught.message}`);
  assert.equal(caught.extack, extack);
  return caught;
}

function names(attrs: Attr[]): string[] {
  return attrs.map((x) => x.name);
}

/** The transcript's state: vdpasim_net, vdpasim_blk and vduse registered, in that order. */
function setup() {
  bus = new VdpaBus();
  const mgmt = new VdpaManagement(bus);
  const net = simNet();
  const blk = simBlk();
  const vd = vduse();
  mgmt.registerMgmtDev(net);
  mgmt.registerMgmtDev(blk);
  mgmt.registerMgmtDev(vd);
  return { mgmt, net, blk, vd };
}

function addVdpa0(mgmt: VdpaManagement): VdpaDevice {
  mgmt.devNew([
    a("DEV_NAME", "vdpa0"),
    a("MGMTDEV_DEV_NAME", "vdpasim_net"),
    a("DEV_NET_CFG_MACADDR", MAC),
    a("DEV_NET_CFG_MTU", 1500),
  ]);
  return bus.device("vdpa0")!;
}

function addVdpa1(mgmt: VdpaManagement): VdpaDevice {
  mgmt.devNew([a("DEV_NAME", "vdpa1"), a("MGMTDEV_DEV_NAME", "vdpasim_blk")]);
  return bus.device("vdpa1")!;
}

/** An unmanaged device registered straight on the bus (vdpa_register_device). */
function addUnmanaged(name = "raw0"): VdpaDevice {
  const dev = new VdpaDevice({
    ops: new FakeOps({ id: VIRTIO_ID_NET, features: SIM_NET_FEATURES, config: netConfig(MAC, 1500) }),
    name,
    nvqs: 2,
  });
  bus.registerDevice(dev);
  return dev;
}

/** Drives the device as virtio_vdpa did in the transcript: features negotiated, FEATURES_OK, DRIVER_OK. */
function negotiate(dev: VdpaDevice, features = NEGOTIATED_NET): void {
  dev.reset();
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  dev.setFeatures(features);
  dev.setStatus(dev.getStatus() | VIRTIO_CONFIG_S_FEATURES_OK);
  dev.setStatus(dev.getStatus() | VIRTIO_CONFIG_S_DRIVER_OK);
}

// ---------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------

describe("family constants and helpers", () => {
  test("command numbers follow include/uapi/linux/vdpa.h", () => {
    assert.deepEqual(VDPA_CMD, {
      UNSPEC: 0,
      MGMTDEV_NEW: 1,
      MGMTDEV_GET: 2,
      DEV_NEW: 3,
      DEV_DEL: 4,
      DEV_GET: 5,
      DEV_CONFIG_GET: 6,
      DEV_VSTATS_GET: 7,
      DEV_ATTR_SET: 8,
    });
  });

  test("every attribute has a wire type; NET_STATUS travels as u16", () => {
    for (const name of Object.keys(VDPA_ATTR) as VdpaAttrName[]) assert.ok(VDPA_ATTR_WIRE_TYPE[name], name);
    assert.equal(VDPA_ATTR_WIRE_TYPE.DEV_NET_STATUS, "u16");
    assert.equal(VDPA_ATTR_WIRE_TYPE.DEV_NET_CFG_MACADDR, "binary");
  });

  test("supported classes stop at the first 0 entry, skip ids above 63 and count repeats", () => {
    assert.deepEqual(mgmtdevClasses({ idTable: [1, 2] }), { classes: 6n, count: 2 });
    assert.deepEqual(mgmtdevClasses({ idTable: [1, 0, 2] }), { classes: 2n, count: 1 });
    assert.deepEqual(mgmtdevClasses({ idTable: [64, 2] }), { classes: 4n, count: 1 });
    assert.deepEqual(mgmtdevClasses({ idTable: [1, 1] }), { classes: 2n, count: 2 });
  });

  test("is_valid_ether_addr refuses multicast, broadcast and all-zero addresses", () => {
    assert.equal(isValidEtherAddr(MAC), true);
    assert.equal(isValidEtherAddr(new Uint8Array([0x02, 0, 0, 0, 0, 1])), true);
    assert.equal(isValidEtherAddr(new Uint8Array([0x01, 0, 0x5e, 0, 0, 1])), false);
    assert.equal(isValidEtherAddr(new Uint8Array(6).fill(0xff)), false);
    assert.equal(isValidEtherAddr(new Uint8Array(6)), false);
  });

  test("getAttr gives the first value, getAttrs every value in order", () => {
    const attrs = [a("DEV_VENDOR_ATTR_NAME", "x"), a("DEV_VENDOR_ATTR_NAME", "y")];
    assert.equal(getAttr(attrs, "DEV_VENDOR_ATTR_NAME"), "x");
    assert.deepEqual(getAttrs(attrs, "DEV_VENDOR_ATTR_NAME"), ["x", "y"]);
    assert.equal(getAttr(attrs, "DEV_NAME"), undefined);
  });
});

describe("management device registration", () => {
  beforeEach(() => {
    bus = new VdpaBus();
  });

  test("vdpa_mgmtdev_register: EINVAL without ops, devAdd or devDel", () => {
    const mgmt = new VdpaManagement(bus);
    const good = simNet();
    throwsVdpa(
      () => mgmt.registerMgmtDev({ ...good, ops: { devAdd: good.ops.devAdd } } as unknown as MgmtDev),
      "EINVAL",
      "a management device needs devAdd and devDel",
    );
    throwsVdpa(
      () => mgmt.registerMgmtDev({ ...good, ops: { devDel: good.ops.devDel } } as unknown as MgmtDev),
      "EINVAL",
      "a management device needs devAdd and devDel",
    );
    throwsVdpa(
      () => mgmt.registerMgmtDev({ ...good, ops: undefined } as unknown as MgmtDev),
      "EINVAL",
      "a management device needs a name and ops",
    );
    assert.deepEqual(mgmt.mgmtDevs(), []);
  });

  test("a second management device with the same handle is EEXIST; another bus is a different handle", () => {
    const mgmt = new VdpaManagement(bus);
    mgmt.registerMgmtDev(simNet());
    throwsVdpa(
      () => mgmt.registerMgmtDev(simNet()),
      "EEXIST",
      "management device vdpasim_net is already registered",
    );
    const onPci = { ...simNet(), busName: "pci" };
    mgmt.registerMgmtDev(onPci);
    assert.equal(mgmt.findMgmtDev("pci", "vdpasim_net"), onPci);
    assert.notEqual(mgmt.findMgmtDev(undefined, "vdpasim_net"), onPci);
  });

  test("vdpa_mgmtdev_unregister deletes exactly that parent's devices: off the bus first, then devDel", () => {
    const { mgmt, net, blk } = setup();
    const vdpa0 = addVdpa0(mgmt);
    const vdpa1 = addVdpa1(mgmt);
    mgmt.devNew([a("DEV_NAME", "vdpa2"), a("MGMTDEV_DEV_NAME", "vdpasim_net")]);
    const vdpa2 = bus.device("vdpa2")!;
    const removed: string[] = [];
    bus.on("device-removed", (d) => removed.push(d.name));
    mgmt.unregisterMgmtDev(net);
    assert.deepEqual(removed, ["vdpa0", "vdpa2"]);
    assert.deepEqual(net.deleted, [vdpa0, vdpa2]);
    assert.deepEqual(net.deletedWhileRegistered, [false, false]);
    assert.deepEqual(bus.devices(), [vdpa1]);
    assert.deepEqual(blk.deleted, []);
    assert.deepEqual(
      mgmt.mgmtDevs().map((m) => m.name),
      ["vdpasim_blk", "vduse"],
    );
    throwsVdpa(() => mgmt.unregisterMgmtDev(net), "ENODEV", "management device not registered");
  });
});

describe("MGMTDEV_GET", () => {
  test("dump: the transcript's three management devices, attributes in vdpa_mgmtdev_fill order", () => {
    const { mgmt } = setup();
    const replies = mgmt.mgmtdevDump();
    assert.deepEqual(replies, [
      [
        a("MGMTDEV_DEV_NAME", "vdpasim_net"),
        a("MGMTDEV_SUPPORTED_CLASSES", 2n),
        a("DEV_MGMTDEV_MAX_VQS", 3),
        a("DEV_SUPPORTED_FEATURES", 0x308830028n),
      ],
      // max_vqs and supported features are always sent, 0 included ("max_supported_vqs 0", "dev_features")
      [
        a("MGMTDEV_DEV_NAME", "vdpasim_blk"),
        a("MGMTDEV_SUPPORTED_CLASSES", 4n),
        a("DEV_MGMTDEV_MAX_VQS", 0),
        a("DEV_SUPPORTED_FEATURES", 0n),
      ],
      [
        a("MGMTDEV_DEV_NAME", "vduse"),
        a("MGMTDEV_SUPPORTED_CLASSES", 6n),
        a("DEV_MGMTDEV_MAX_VQS", 0),
        a("DEV_SUPPORTED_FEATURES", 0n),
      ],
    ]);
  });

  test("the reply's features print as the transcript's dev_features", () => {
    const { mgmt } = setup();
    const reply = mgmt.mgmtdevGet([a("MGMTDEV_DEV_NAME", "vdpasim_net")]);
    const classes = getAttr(reply, "MGMTDEV_SUPPORTED_CLASSES") as bigint;
    const features = getAttr(reply, "DEV_SUPPORTED_FEATURES") as bigint;
    assert.deepEqual(featureTokensIproute2Json(features, mgmtdevFeatureDeviceId(classes)), [
      "MTU",
      "MAC",
      "STATUS",
      "CTRL_VQ",
      "CTRL_MAC_ADDR",
      "ANY_LAYOUT",
      "VERSION_1",
      "ACCESS_PLATFORM",
    ]);
  });

  test("doit: one device by handle; a parent on a bus leads with MGMTDEV_BUS_NAME", () => {
    const { mgmt } = setup();
    const pci = fakeMgmtDev({
      name: "0000:03:00.2",
      busName: "pci",
      idTable: [VIRTIO_ID_NET],
      configAttrMask: 0n,
      supportedFeatures: f(32),
      maxSupportedVqs: 257,
      build: () => {
        throw new VdpaError("EIO");
      },
    });
    mgmt.registerMgmtDev(pci);
    assert.deepEqual(mgmt.mgmtdevGet([a("MGMTDEV_BUS_NAME", "pci"), a("MGMTDEV_DEV_NAME", "0000:03:00.2")]), [
      a("MGMTDEV_BUS_NAME", "pci"),
      a("MGMTDEV_DEV_NAME", "0000:03:00.2"),
      a("MGMTDEV_SUPPORTED_CLASSES", 2n),
      a("DEV_MGMTDEV_MAX_VQS", 257),
      a("DEV_SUPPORTED_FEATURES", 1n << 32n),
    ]);
    assert.equal(mgmt.mgmtdevDump().length, 4);
  });

  test("errors: EINVAL without a name, ENODEV without a match, both 'Fail to find the specified mgmt device'", () => {
    const { mgmt } = setup();
    const msg = "Fail to find the specified mgmt device";
    throwsVdpa(() => mgmt.mgmtdevGet([]), "EINVAL", msg);
    throwsVdpa(() => mgmt.mgmtdevGet([a("MGMTDEV_BUS_NAME", "pci")]), "EINVAL", msg);
    throwsVdpa(() => mgmt.mgmtdevGet([a("MGMTDEV_DEV_NAME", "nosuch")]), "ENODEV", msg);
    // A bus name only matches parents on a bus.
    throwsVdpa(
      () => mgmt.mgmtdevGet([a("MGMTDEV_BUS_NAME", "pci"), a("MGMTDEV_DEV_NAME", "vdpasim_net")]),
      "ENODEV",
      msg,
    );
  });

  test("the policy is checked first, dumps included", () => {
    const { mgmt } = setup();
    const err = throwsVdpa(() => mgmt.mgmtdevGet([a("DEV_ID", 1)]), "EINVAL", "Unsupported attribute");
    assert.ok(err instanceof NetlinkPolicyError);
    assert.equal(err.attr, "DEV_ID");
    throwsVdpa(
      () => mgmt.mgmtdevDump([a("MGMTDEV_DEV_NAME", 5 as unknown as string)]),
      "ERANGE",
      "Attribute failed policy validation",
    );
  });
});

describe("DEV_NEW", () => {
  test("the transcript's `dev add name vdpa0 mgmtdev vdpasim_net mac 00:11:22:33:44:55 mtu 1500`", () => {
    const { mgmt, net } = setup();
    const events: string[] = [];
    bus.on("device-added", (d) => events.push(`added ${d.name}`));
    bus.on("bound", (d, drv) => events.push(`bound ${d.name} ${drv.name}`));
    const vhost: VdpaDriver = { name: "vhost_vdpa", probe() {}, remove() {} };
    bus.registerDriver(vhost);
    assert.deepEqual(
      mgmt.devNew([
        a("DEV_NAME", "vdpa0"),
        a("MGMTDEV_DEV_NAME", "vdpasim_net"),
        a("DEV_NET_CFG_MACADDR", MAC),
        a("DEV_NET_CFG_MTU", 1500),
      ]),
      {},
    );
    assert.equal(net.added.length, 1);
    const { name, config } = net.added[0];
    assert.equal(name, "vdpa0");
    assert.equal(config.mask, attrBit("DEV_NET_CFG_MACADDR") | attrBit("DEV_NET_CFG_MTU"));
    assert.deepEqual(config.net.mac, MAC);
    assert.notEqual(config.net.mac, MAC, "the parent gets a copy");
    assert.equal(config.net.mtu, 1500);
    assert.equal(config.deviceFeatures, undefined);
    const dev = bus.device("vdpa0")!;
    assert.equal(dev.index, 0);
    assert.equal(dev.mgmtdev, net);
    assert.deepEqual(events, ["added vdpa0", "bound vdpa0 vhost_vdpa"]);
  });

  test("provisioned device features and max_vqp reach the parent with their mask bits", () => {
    bus = new VdpaBus();
    const mgmt = new VdpaManagement(bus);
    const mq = fakeMgmtDev({
      name: "mqnet",
      idTable: [VIRTIO_ID_NET],
      configAttrMask:
        attrBit("DEV_NET_CFG_MAX_VQP") |
        attrBit("DEV_FEATURES") |
        attrBit("VDPATS_BLK_SIZE") |
        attrBit("VDPATS_BLK_BACKING_FILE"),
      supportedFeatures: SIM_NET_FEATURES | f(VIRTIO_NET_F_MQ),
      maxSupportedVqs: 9,
      build: () => ({
        ops: new FakeOps({ id: VIRTIO_ID_NET, features: SIM_NET_FEATURES, config: netConfig(MAC, 1500, 4) }),
        nvqs: 9,
      }),
    });
    mgmt.registerMgmtDev(mq);
    mgmt.devNew([
      a("MGMTDEV_DEV_NAME", "mqnet"),
      a("DEV_FEATURES", f(VIRTIO_NET_F_MQ, 32)),
      a("DEV_NET_CFG_MAX_VQP", 4),
      a("DEV_NAME", "mq0"),
      a("VDPATS_BLK_SIZE", 1n << 30n),
      a("VDPATS_BLK_BACKING_FILE", "/tmp/disk.img"),
    ]);
    const { config } = mq.added[0];
    assert.equal(
      config.mask,
      attrBit("DEV_NET_CFG_MAX_VQP") |
        attrBit("DEV_FEATURES") |
        attrBit("VDPATS_BLK_SIZE") |
        attrBit("VDPATS_BLK_BACKING_FILE"),
    );
    assert.equal(config.deviceFeatures, f(VIRTIO_NET_F_MQ, 32));
    assert.equal(config.net.maxVqPairs, 4);
    assert.deepEqual(config.blk, { sizeBytes: 2 ** 30, backingFile: "/tmp/disk.img" });
  });

  test("transcript: a name in use is EEXIST with no message; the parent's devDel cleans up", () => {
    const { mgmt, net } = setup();
    addVdpa0(mgmt);
    throwsVdpa(() => mgmt.devNew([a("DEV_NAME", "vdpa0"), a("MGMTDEV_DEV_NAME", "vdpasim_net")]), "EEXIST");
    assert.equal(net.added.length, 2);
    assert.equal(net.deleted.length, 1);
    assert.notEqual(net.deleted[0], bus.device("vdpa0"));
    assert.equal(bus.devices().length, 1);
  });

  test("transcript: an unknown management device is ENODEV 'Fail to find the specified management device'", () => {
    const { mgmt } = setup();
    const msg = "Fail to find the specified management device";
    const err = throwsVdpa(
      () => mgmt.devNew([a("DEV_NAME", "vdpa9"), a("MGMTDEV_DEV_NAME", "nosuchmgmt")]),
      "ENODEV",
      msg,
    );
    assert.equal(extackPrefix(err), "vdpa: ");
    throwsVdpa(() => mgmt.devNew([a("DEV_NAME", "vdpa9")]), "EINVAL", msg);
  });

  test("c.6: max_vqp on vdpasim_net is 'Some provided attributes are not supported: 0x1000'", () => {
    const { mgmt, net } = setup();
    throwsVdpa(
      () =>
        mgmt.devNew([
          a("DEV_NAME", "vdpa1"),
          a("MGMTDEV_DEV_NAME", "vdpasim_net"),
          a("DEV_NET_CFG_MAX_VQP", 2),
        ]),
      "EOPNOTSUPP",
      "Some provided attributes are not supported: 0x1000",
    );
    // Only the unsupported bits are listed: device_features on vdpasim_blk is bit 20.
    throwsVdpa(
      () => mgmt.devNew([a("DEV_NAME", "b"), a("MGMTDEV_DEV_NAME", "vdpasim_blk"), a("DEV_FEATURES", f(32))]),
      "EOPNOTSUPP",
      "Some provided attributes are not supported: 0x100000",
    );
    assert.equal(net.added.length, 0);
  });

  test("no DEV_NAME is EINVAL with no message, before every other check", () => {
    const { mgmt } = setup();
    throwsVdpa(() => mgmt.devNew([a("MGMTDEV_DEV_NAME", "vdpasim_net")]), "EINVAL");
    throwsVdpa(() => mgmt.devNew([a("DEV_NET_CFG_MAX_VQP", 0), a("MGMTDEV_DEV_NAME", "nosuch")]), "EINVAL");
  });

  test("MAX_VQP 0: 'At least one pair of VQs is required', before the feature and mgmtdev checks", () => {
    const { mgmt } = setup();
    throwsVdpa(
      () =>
        mgmt.devNew([
          a("DEV_NAME", "x"),
          a("MGMTDEV_DEV_NAME", "nosuch"),
          a("DEV_FEATURES", 0n),
          a("DEV_NET_CFG_MACADDR", MAC),
          a("DEV_NET_CFG_MAX_VQP", 0),
        ]),
      "EINVAL",
      "At least one pair of VQs is required",
    );
  });

  test("device features lacking MAC, MTU or MQ for the given attributes: 'Missing features 0x%llx ...'", () => {
    const { mgmt } = setup();
    throwsVdpa(
      () =>
        mgmt.devNew([
          a("DEV_NAME", "x"),
          a("MGMTDEV_DEV_NAME", "nosuch"),
          a("DEV_NET_CFG_MACADDR", MAC),
          a("DEV_NET_CFG_MTU", 9000),
          a("DEV_NET_CFG_MAX_VQP", 2),
          a("DEV_FEATURES", f(32)),
        ]),
      "EINVAL",
      "Missing features 0x400028 for provided attributes",
    );
    // max_vqp 1 needs no MQ; MTU alone misses bit 3.
    throwsVdpa(
      () =>
        mgmt.devNew([
          a("DEV_NAME", "x"),
          a("MGMTDEV_DEV_NAME", "vdpasim_net"),
          a("DEV_NET_CFG_MTU", 9000),
          a("DEV_NET_CFG_MAX_VQP", 1),
          a("DEV_FEATURES", f(5, 32)),
        ]),
      "EINVAL",
      "Missing features 0x8 for provided attributes",
    );
  });

  test("provisioned features that cover the attributes go through to the parent", () => {
    const { mgmt, net } = setup();
    mgmt.devNew([
      a("DEV_NAME", "vdpa0"),
      a("MGMTDEV_DEV_NAME", "vdpasim_net"),
      a("DEV_NET_CFG_MACADDR", MAC),
      a("DEV_FEATURES", f(5, 32, 33)),
    ]);
    assert.equal(net.added[0].config.mask, attrBit("DEV_NET_CFG_MACADDR") | attrBit("DEV_FEATURES"));
    assert.equal((bus.device("vdpa0")!.ops as FakeOps).deviceFeatures, f(5, 32, 33));
  });

  test("net attributes on a parent without the net class", () => {
    const { mgmt } = setup();
    mgmt.registerMgmtDev(
      fakeMgmtDev({
        name: "blkmac",
        idTable: [VIRTIO_ID_BLOCK],
        configAttrMask: attrBit("DEV_NET_CFG_MACADDR"),
        supportedFeatures: 0n,
        maxSupportedVqs: 0,
        build: () => {
          throw new VdpaError("EIO");
        },
      }),
    );
    throwsVdpa(
      () => mgmt.devNew([a("DEV_NAME", "x"), a("MGMTDEV_DEV_NAME", "blkmac"), a("DEV_NET_CFG_MACADDR", MAC)]),
      "EINVAL",
      "Network class attributes provided on unsupported management device",
    );
  });

  test("multi-class parent: device-specific features without net attributes are ambiguous", () => {
    const { mgmt } = setup();
    const multi = fakeMgmtDev({
      name: "multi",
      idTable: [VIRTIO_ID_NET, VIRTIO_ID_BLOCK],
      configAttrMask: attrBit("DEV_FEATURES") | attrBit("DEV_NET_CFG_MACADDR"),
      supportedFeatures: 0n,
      maxSupportedVqs: 0,
      build: () => ({
        ops: new FakeOps({ id: VIRTIO_ID_NET, features: f(5, 32), config: netConfig(MAC, 0) }),
        nvqs: 2,
      }),
    });
    mgmt.registerMgmtDev(multi);
    const msg = "Management device supports multi-class while device features specified are ambiguous";
    throwsVdpa(
      () => mgmt.devNew([a("DEV_NAME", "m0"), a("MGMTDEV_DEV_NAME", "multi"), a("DEV_FEATURES", f(5, 32))]),
      "EINVAL",
      msg,
    );
    // Bit 42 is a transport bit, 43 a device bit (VIRTIO_DEVICE_F_MASK).
    throwsVdpa(
      () => mgmt.devNew([a("DEV_NAME", "m0"), a("MGMTDEV_DEV_NAME", "multi"), a("DEV_FEATURES", f(43))]),
      "EINVAL",
      msg,
    );
    // Transport bits only: not ambiguous.
    mgmt.devNew([a("DEV_NAME", "m0"), a("MGMTDEV_DEV_NAME", "multi"), a("DEV_FEATURES", f(28, 32, 33, 42))]);
    // A net attribute settles the class.
    mgmt.devNew([
      a("DEV_NAME", "m1"),
      a("MGMTDEV_DEV_NAME", "multi"),
      a("DEV_FEATURES", f(5, 32)),
      a("DEV_NET_CFG_MACADDR", MAC),
    ]);
    assert.deepEqual(
      multi.added.map((x) => x.name),
      ["m0", "m1"],
    );
  });

  test("a repeated id counts as multi-class (Linux counts table entries)", () => {
    const { mgmt } = setup();
    mgmt.registerMgmtDev(
      fakeMgmtDev({
        name: "twice",
        idTable: [VIRTIO_ID_NET, VIRTIO_ID_NET],
        configAttrMask: attrBit("DEV_FEATURES"),
        supportedFeatures: 0n,
        maxSupportedVqs: 0,
        build: () => {
          throw new VdpaError("EIO");
        },
      }),
    );
    throwsVdpa(
      () => mgmt.devNew([a("DEV_NAME", "t"), a("MGMTDEV_DEV_NAME", "twice"), a("DEV_FEATURES", f(5))]),
      "EINVAL",
      "Management device supports multi-class while device features specified are ambiguous",
    );
  });

  test("the parent's own refusal comes before the name-in-use check (EINVAL, not EEXIST)", () => {
    const { mgmt } = setup();
    addVdpa0(mgmt);
    throwsVdpa(
      () =>
        mgmt.devNew([a("DEV_NAME", "vdpa0"), a("MGMTDEV_DEV_NAME", "vdpasim_net"), a("DEV_FEATURES", f(60))]),
      "EINVAL",
    );
  });

  test("names: checked before devAdd; '/' becomes '!' so the given name is not found afterwards", () => {
    const { mgmt, net } = setup();
    throwsVdpa(
      () => mgmt.devNew([a("DEV_NAME", ""), a("MGMTDEV_DEV_NAME", "vdpasim_net")]),
      "EINVAL",
      "device name must be 1 to 64 characters",
    );
    throwsVdpa(
      () => mgmt.devNew([a("DEV_NAME", "a b"), a("MGMTDEV_DEV_NAME", "vdpasim_net")]),
      "EINVAL",
      "device name may only hold printable ASCII characters without spaces",
    );
    assert.equal(net.added.length, 0);
    mgmt.devNew([a("DEV_NAME", "a/b"), a("MGMTDEV_DEV_NAME", "vdpasim_net")]);
    assert.equal(net.added[0].name, "a/b");
    assert.ok(bus.device("a!b"));
    throwsVdpa(() => mgmt.devGet([a("DEV_NAME", "a/b")]), "ENODEV", "device not found");
    assert.equal(getAttr(mgmt.devGet([a("DEV_NAME", "a!b")]), "DEV_NAME"), "a!b");
  });

  test("a device returned without its management device is EINVAL (_vdpa_register_device) and cleaned up", () => {
    const { mgmt } = setup();
    const orphan = fakeMgmtDev({
      name: "orphan",
      idTable: [VIRTIO_ID_NET],
      configAttrMask: 0n,
      supportedFeatures: 0n,
      maxSupportedVqs: 0,
      orphan: true,
      build: () => ({ ops: new FakeOps({ id: 1, features: 0n, config: netConfig(MAC, 0) }), nvqs: 2 }),
    });
    mgmt.registerMgmtDev(orphan);
    throwsVdpa(() => mgmt.devNew([a("DEV_NAME", "o"), a("MGMTDEV_DEV_NAME", "orphan")]), "EINVAL");
    assert.equal(orphan.deleted.length, 1);
    assert.equal(bus.devices().length, 0);
  });

  test("policy: MTU below 68, a short MAC, oversized or mistyped values, attributes outside the policy", () => {
    const { mgmt, net } = setup();
    const base = [a("DEV_NAME", "p"), a("MGMTDEV_DEV_NAME", "vdpasim_net")];
    throwsVdpa(() => mgmt.devNew([...base, a("DEV_NET_CFG_MTU", 67)]), "ERANGE", "integer out of range");
    mgmt.devNew([...base, a("DEV_NET_CFG_MTU", 68)]);
    mgmt.devDel([a("DEV_NAME", "p")]);
    throwsVdpa(
      () => mgmt.devNew([...base, a("DEV_NET_CFG_MACADDR", new Uint8Array(5))]),
      "ERANGE",
      "binary attribute size out of range",
    );
    throwsVdpa(
      () => mgmt.devNew([...base, a("DEV_NET_CFG_MACADDR", "00:11:22:33:44:55")]),
      "ERANGE",
      "Attribute failed policy validation",
    );
    throwsVdpa(
      () => mgmt.devNew([...base, a("DEV_NET_CFG_MTU", 70000)]),
      "EINVAL",
      "invalid attribute length",
    );
    throwsVdpa(
      () => mgmt.devNew([...base, a("DEV_NET_CFG_MAX_VQP", -1)]),
      "EINVAL",
      "invalid attribute length",
    );
    throwsVdpa(
      () => mgmt.devNew([...base, a("DEV_NET_CFG_MAX_VQP", 1.5)]),
      "EINVAL",
      "invalid attribute length",
    );
    throwsVdpa(
      () => mgmt.devNew([...base, a("DEV_FEATURES", 1n << 64n)]),
      "EINVAL",
      "invalid attribute length",
    );
    throwsVdpa(
      () => mgmt.devNew([...base, a("DEV_FEATURES", 5)]),
      "ERANGE",
      "Attribute failed policy validation",
    );
    throwsVdpa(() => mgmt.devNew([...base, a("DEV_ID", 1)]), "EINVAL", "Unsupported attribute");
    throwsVdpa(() => mgmt.devNew([...base, a("DEV_BLK_READ_ONLY", 1)]), "EINVAL", "Unsupported attribute");
    throwsVdpa(
      () => mgmt.devNew([...base, { name: "NO_SUCH" as VdpaAttrName, value: 1 }]),
      "EINVAL",
      "Unknown attribute type",
    );
    assert.equal(net.added.length, 1);
  });

  test("policy answers come before the handler's and the first bad attribute in message order wins", () => {
    const { mgmt } = setup();
    // No DEV_NAME either: the policy still answers first.
    const err = throwsVdpa(() => mgmt.devNew([a("DEV_NET_CFG_MTU", 10)]), "ERANGE", "integer out of range");
    assert.equal(extackPrefix(err), "");
    throwsVdpa(
      () => mgmt.devNew([a("DEV_NET_CFG_MACADDR", new Uint8Array(7)), a("DEV_NET_CFG_MTU", 10)]),
      "ERANGE",
      "binary attribute size out of range",
    );
    throwsVdpa(
      () => mgmt.devNew([a("DEV_NET_CFG_MTU", 10), a("DEV_NET_CFG_MACADDR", new Uint8Array(7))]),
      "ERANGE",
      "integer out of range",
    );
  });

  test("a repeated attribute: the last one wins (nla_parse)", () => {
    const { mgmt, net } = setup();
    mgmt.devNew([
      a("DEV_NAME", "first"),
      a("MGMTDEV_DEV_NAME", "vdpasim_net"),
      a("DEV_NET_CFG_MTU", 1500),
      a("DEV_NET_CFG_MTU", 9000),
      a("DEV_NAME", "second"),
    ]);
    assert.equal(net.added[0].name, "second");
    assert.equal(net.added[0].config.net.mtu, 9000);
  });
});

describe("DEV_DEL", () => {
  test("the device leaves the bus (unbound first), then the parent's devDel runs", () => {
    const { mgmt, net } = setup();
    const removedBy: string[] = [];
    bus.registerDriver({ name: "vhost_vdpa", probe() {}, remove: (d) => removedBy.push(d.name) });
    const dev = addVdpa0(mgmt);
    const events: string[] = [];
    bus.on("unbound", (d) => events.push(`unbound ${d.name}`));
    bus.on("device-removed", (d) => events.push(`removed ${d.name}`));
    assert.deepEqual(mgmt.devDel([a("DEV_NAME", "vdpa0")]), {});
    assert.deepEqual(events, ["unbound vdpa0", "removed vdpa0"]);
    assert.deepEqual(removedBy, ["vdpa0"]);
    assert.deepEqual(net.deleted, [dev]);
    assert.deepEqual(net.deletedWhileRegistered, [false]);
    assert.equal(bus.device("vdpa0"), undefined);
    // Its index is free again.
    addVdpa0(mgmt);
    assert.equal(bus.device("vdpa0")!.index, 0);
  });

  test("errors: EINVAL without a name; ENODEV 'device not found'; unmanaged device", () => {
    const { mgmt } = setup();
    addUnmanaged();
    throwsVdpa(() => mgmt.devDel([]), "EINVAL");
    throwsVdpa(() => mgmt.devDel([a("DEV_NAME", "vdpa0")]), "ENODEV", "device not found");
    throwsVdpa(
      () => mgmt.devDel([a("DEV_NAME", "raw0")]),
      "EINVAL",
      "Only user created device can be deleted by user",
    );
    assert.ok(bus.device("raw0"));
  });
});

describe("DEV_GET", () => {
  test("transcript values for vdpa0 and vdpa1, in vdpa_dev_fill order", () => {
    const { mgmt } = setup();
    addVdpa0(mgmt);
    addVdpa1(mgmt);
    assert.deepEqual(mgmt.devGet([a("DEV_NAME", "vdpa0")]), [
      a("MGMTDEV_DEV_NAME", "vdpasim_net"),
      a("DEV_NAME", "vdpa0"),
      a("DEV_ID", 1),
      a("DEV_VENDOR_ID", 0),
      a("DEV_MAX_VQS", 3),
      a("DEV_MAX_VQ_SIZE", 256),
      a("DEV_MIN_VQ_SIZE", 1),
    ]);
    assert.deepEqual(mgmt.devGet([a("DEV_NAME", "vdpa1")]), [
      a("MGMTDEV_DEV_NAME", "vdpasim_blk"),
      a("DEV_NAME", "vdpa1"),
      a("DEV_ID", 2),
      a("DEV_VENDOR_ID", 0),
      a("DEV_MAX_VQS", 1),
      a("DEV_MAX_VQ_SIZE", 256),
      a("DEV_MIN_VQ_SIZE", 1),
    ]);
  });

  test("a parent on a bus, a vendor id and get_vq_num_min", () => {
    const { mgmt } = setup();
    mgmt.registerMgmtDev(
      fakeMgmtDev({
        name: "mlx5_core.sf.1",
        busName: "auxiliary",
        idTable: [VIRTIO_ID_NET],
        configAttrMask: 0n,
        supportedFeatures: 0n,
        maxSupportedVqs: 257,
        build: () => ({
          ops: new FakeOps({
            id: VIRTIO_ID_NET,
            features: 0n,
            config: netConfig(MAC, 0),
            vendorId: 0x15b3,
            vqNumMax: 32768,
            vqNumMin: 64,
          }),
          nvqs: 257,
        }),
      }),
    );
    mgmt.devNew([
      a("DEV_NAME", "vdpa-a"),
      a("MGMTDEV_BUS_NAME", "auxiliary"),
      a("MGMTDEV_DEV_NAME", "mlx5_core.sf.1"),
    ]);
    assert.deepEqual(mgmt.devGet([a("DEV_NAME", "vdpa-a")]), [
      a("MGMTDEV_BUS_NAME", "auxiliary"),
      a("MGMTDEV_DEV_NAME", "mlx5_core.sf.1"),
      a("DEV_NAME", "vdpa-a"),
      a("DEV_ID", 1),
      a("DEV_VENDOR_ID", 0x15b3),
      a("DEV_MAX_VQS", 257),
      a("DEV_MAX_VQ_SIZE", 32768),
      a("DEV_MIN_VQ_SIZE", 64),
    ]);
  });

  test("dump: managed devices in bus order, unmanaged ones skipped; empty bus gives no replies", () => {
    const { mgmt } = setup();
    assert.deepEqual(mgmt.devDump(), []);
    addVdpa0(mgmt);
    addUnmanaged();
    addVdpa1(mgmt);
    assert.deepEqual(
      mgmt.devDump().map((r) => getAttr(r, "DEV_NAME")),
      ["vdpa0", "vdpa1"],
    );
  });

  test("errors: EINVAL without a name; ENODEV 'device not found'; EINVAL with no text when unmanaged", () => {
    const { mgmt } = setup();
    addUnmanaged();
    throwsVdpa(() => mgmt.devGet([]), "EINVAL");
    throwsVdpa(() => mgmt.devGet([a("DEV_NAME", "nosuch")]), "ENODEV", "device not found");
    throwsVdpa(() => mgmt.devGet([a("DEV_NAME", "raw0")]), "EINVAL");
  });
});

describe("DEV_CONFIG_GET", () => {
  test("transcript vdpa0 before negotiation: no NEGOTIATED_FEATURES; MTU, MAC, STATUS by device features", () => {
    const { mgmt } = setup();
    const dev = addVdpa0(mgmt);
    assert.deepEqual(mgmt.devConfigGet([a("DEV_NAME", "vdpa0")]), [
      a("DEV_NAME", "vdpa0"),
      a("DEV_ID", 1),
      a("DEV_FEATURES", 0x308830028n),
      a("DEV_NET_CFG_MTU", 1500),
      a("DEV_NET_CFG_MACADDR", MAC),
      a("DEV_NET_STATUS", 1),
    ]);
    // The raw get_config op: no set_features(0) side effect (Linux >= 6.1).
    assert.deepEqual((dev.ops as FakeOps).setFeaturesCalls, []);
    assert.equal(dev.featuresValid, false);
  });

  test("transcript vdpa0 after virtio_vdpa negotiated: NEGOTIATED_FEATURES right after DEV_ID", () => {
    const { mgmt } = setup();
    const dev = addVdpa0(mgmt);
    negotiate(dev);
    const reply = mgmt.devConfigGet([a("DEV_NAME", "vdpa0")]);
    assert.deepEqual(names(reply), [
      "DEV_NAME",
      "DEV_ID",
      "DEV_NEGOTIATED_FEATURES",
      "DEV_FEATURES",
      "DEV_NET_CFG_MTU",
      "DEV_NET_CFG_MACADDR",
      "DEV_NET_STATUS",
    ]);
    const negotiated = getAttr(reply, "DEV_NEGOTIATED_FEATURES") as bigint;
    assert.equal(negotiated, 0x300830028n);
    assert.deepEqual(featureTokensIproute2Json(negotiated, VIRTIO_ID_NET), [
      "MTU",
      "MAC",
      "STATUS",
      "CTRL_VQ",
      "CTRL_MAC_ADDR",
      "VERSION_1",
      "ACCESS_PLATFORM",
    ]);
  });

  test("fields follow DEVICE features, not negotiated ones; MAX_VQP with MQ or RSS", () => {
    bus = new VdpaBus();
    const mgmt = new VdpaManagement(bus);
    let features = f(VIRTIO_NET_F_MQ, 32);
    mgmt.registerMgmtDev(
      fakeMgmtDev({
        name: "n",
        idTable: [VIRTIO_ID_NET],
        configAttrMask: 0n,
        supportedFeatures: 0n,
        maxSupportedVqs: 0,
        build: () => ({
          ops: new FakeOps({ id: VIRTIO_ID_NET, features, config: netConfig(MAC, 9000, 4, 3) }),
          nvqs: 9,
        }),
      }),
    );
    mgmt.devNew([a("DEV_NAME", "mq"), a("MGMTDEV_DEV_NAME", "n")]);
    features = f(VIRTIO_NET_F_RSS, 3, 16);
    mgmt.devNew([a("DEV_NAME", "rss"), a("MGMTDEV_DEV_NAME", "n")]);
    const mq = bus.device("mq")!;
    negotiate(mq, f(32));
    assert.deepEqual(mgmt.devConfigGet([a("DEV_NAME", "mq")]), [
      a("DEV_NAME", "mq"),
      a("DEV_ID", 1),
      a("DEV_NEGOTIATED_FEATURES", f(32)),
      a("DEV_FEATURES", f(VIRTIO_NET_F_MQ, 32)),
      a("DEV_NET_CFG_MAX_VQP", 4),
    ]);
    assert.deepEqual(mgmt.devConfigGet([a("DEV_NAME", "rss")]), [
      a("DEV_NAME", "rss"),
      a("DEV_ID", 1),
      a("DEV_FEATURES", f(VIRTIO_NET_F_RSS, 3, 16)),
      a("DEV_NET_CFG_MTU", 9000),
      a("DEV_NET_STATUS", 3),
      a("DEV_NET_CFG_MAX_VQP", 4),
    ]);
  });

  test("a config space shorter than virtio_net_config reads as zeros past its end", () => {
    bus = new VdpaBus();
    const mgmt = new VdpaManagement(bus);
    mgmt.registerMgmtDev(
      fakeMgmtDev({
        name: "short",
        idTable: [VIRTIO_ID_NET],
        configAttrMask: 0n,
        supportedFeatures: 0n,
        maxSupportedVqs: 0,
        build: () => ({
          ops: new FakeOps({
            id: VIRTIO_ID_NET,
            features: f(3, 5),
            config: netConfig(MAC, 1500).slice(0, 10),
          }),
          nvqs: 2,
        }),
      }),
    );
    mgmt.devNew([a("DEV_NAME", "s"), a("MGMTDEV_DEV_NAME", "short")]);
    const reply = mgmt.devConfigGet([a("DEV_NAME", "s")]);
    assert.equal(getAttr(reply, "DEV_NET_CFG_MTU"), 0);
    assert.deepEqual(getAttr(reply, "DEV_NET_CFG_MACADDR"), MAC);
  });

  test("block: vdpasim_blk's whole config in vdpa_dev_blk_config_fill order (BLK_SIZE before SEG_MAX)", () => {
    const { mgmt } = setup();
    addVdpa1(mgmt);
    assert.deepEqual(mgmt.devConfigGet([a("DEV_NAME", "vdpa1")]), [
      a("DEV_NAME", "vdpa1"),
      a("DEV_ID", 2),
      a("DEV_FEATURES", 0x308007646n),
      a("DEV_BLK_CFG_CAPACITY", 0x40000n),
      a("DEV_BLK_CFG_SIZE_MAX", 4096),
      a("DEV_BLK_CFG_BLK_SIZE", 512),
      a("DEV_BLK_CFG_SEG_MAX", 32),
      a("DEV_BLK_CFG_NUM_QUEUES", 1),
      a("DEV_BLK_CFG_PHY_BLK_EXP", 0),
      a("DEV_BLK_CFG_ALIGN_OFFSET", 0),
      a("DEV_BLK_CFG_MIN_IO_SIZE", 1),
      a("DEV_BLK_CFG_OPT_IO_SIZE", 1),
      a("DEV_BLK_CFG_MAX_DISCARD_SEC", 0xffff_ffff),
      a("DEV_BLK_CFG_MAX_DISCARD_SEG", 1),
      a("DEV_BLK_CFG_DISCARD_SEC_ALIGN", 512),
      a("DEV_BLK_CFG_MAX_WRITE_ZEROES_SEC", 0xffff_ffff),
      a("DEV_BLK_CFG_MAX_WRITE_ZEROES_SEG", 1),
      a("DEV_BLK_READ_ONLY", 0),
      a("DEV_BLK_FLUSH", 1),
    ]);
  });

  test("block without optional features: capacity, read-only and flush are always there", () => {
    bus = new VdpaBus();
    const mgmt = new VdpaManagement(bus);
    mgmt.registerMgmtDev(
      fakeMgmtDev({
        name: "ro",
        idTable: [VIRTIO_ID_BLOCK],
        configAttrMask: 0n,
        supportedFeatures: 0n,
        maxSupportedVqs: 0,
        build: () => ({
          ops: new FakeOps({ id: VIRTIO_ID_BLOCK, features: f(5, 32), config: simBlkConfig() }),
          nvqs: 1,
        }),
      }),
    );
    mgmt.devNew([a("DEV_NAME", "r"), a("MGMTDEV_DEV_NAME", "ro")]);
    assert.deepEqual(mgmt.devConfigGet([a("DEV_NAME", "r")]), [
      a("DEV_NAME", "r"),
      a("DEV_ID", 2),
      a("DEV_FEATURES", f(5, 32)),
      a("DEV_BLK_CFG_CAPACITY", 0x40000n),
      a("DEV_BLK_READ_ONLY", 1),
      a("DEV_BLK_FLUSH", 0),
    ]);
  });

  test("other classes: EOPNOTSUPP with no text; a dump silently stops at such a device", () => {
    const { mgmt } = setup();
    mgmt.registerMgmtDev(
      fakeMgmtDev({
        name: "console",
        idTable: [VIRTIO_ID_CONSOLE],
        configAttrMask: 0n,
        supportedFeatures: 0n,
        maxSupportedVqs: 0,
        build: () => ({
          ops: new FakeOps({ id: VIRTIO_ID_CONSOLE, features: 0n, config: new Uint8Array(12) }),
          nvqs: 2,
        }),
      }),
    );
    addVdpa0(mgmt);
    addUnmanaged();
    mgmt.devNew([a("DEV_NAME", "con0"), a("MGMTDEV_DEV_NAME", "console")]);
    addVdpa1(mgmt);
    throwsVdpa(() => mgmt.devConfigGet([a("DEV_NAME", "con0")]), "EOPNOTSUPP");
    assert.deepEqual(
      mgmt.devConfigDump().map((r) => getAttr(r, "DEV_NAME")),
      ["vdpa0"],
    );
    mgmt.devDel([a("DEV_NAME", "con0")]);
    assert.deepEqual(
      mgmt.devConfigDump().map((r) => getAttr(r, "DEV_NAME")),
      ["vdpa0", "vdpa1"],
    );
  });

  test("errors: EINVAL without a name; ENODEV 'device not found'; EINVAL 'unmanaged vdpa device'", () => {
    const { mgmt } = setup();
    addUnmanaged();
    throwsVdpa(() => mgmt.devConfigGet([]), "EINVAL");
    throwsVdpa(() => mgmt.devConfigGet([a("DEV_NAME", "x")]), "ENODEV", "device not found");
    throwsVdpa(() => mgmt.devConfigGet([a("DEV_NAME", "raw0")]), "EINVAL", "unmanaged vdpa device");
  });
});

describe("DEV_VSTATS_GET", () => {
  test("transcript `vstats show vdpa0 qidx 0` / `qidx 1`: names and values in the device's order", () => {
    const { mgmt } = setup();
    const dev = addVdpa0(mgmt);
    negotiate(dev);
    const q0 = mgmt.devVstatsGet([a("DEV_NAME", "vdpa0"), a("DEV_QUEUE_INDEX", 0)]);
    assert.deepEqual(q0, [
      a("DEV_NAME", "vdpa0"),
      a("DEV_ID", 1),
      a("DEV_NEGOTIATED_FEATURES", NEGOTIATED_NET),
      a("DEV_QUEUE_INDEX", 0),
      a("DEV_VENDOR_ATTR_NAME", "rx packets"),
      a("DEV_VENDOR_ATTR_VALUE", 0n),
      a("DEV_VENDOR_ATTR_NAME", "rx bytes"),
      a("DEV_VENDOR_ATTR_VALUE", 0n),
      a("DEV_VENDOR_ATTR_NAME", "rx errors"),
      a("DEV_VENDOR_ATTR_VALUE", 0n),
      a("DEV_VENDOR_ATTR_NAME", "rx overruns"),
      a("DEV_VENDOR_ATTR_VALUE", 0n),
      a("DEV_VENDOR_ATTR_NAME", "rx drops"),
      a("DEV_VENDOR_ATTR_VALUE", 0n),
    ]);
    const q1 = mgmt.devVstatsGet([a("DEV_NAME", "vdpa0"), a("DEV_QUEUE_INDEX", 1)]);
    assert.deepEqual(getAttrs(q1, "DEV_VENDOR_ATTR_NAME"), [
      "tx packets",
      "tx bytes",
      "tx errors",
      "tx drops",
    ]);
  });

  test("MAX_VQP before QUEUE_INDEX when the NEGOTIATED features have MQ", () => {
    bus = new VdpaBus();
    const mgmt = new VdpaManagement(bus);
    mgmt.registerMgmtDev(
      fakeMgmtDev({
        name: "mq",
        idTable: [VIRTIO_ID_NET],
        configAttrMask: 0n,
        supportedFeatures: 0n,
        maxSupportedVqs: 0,
        build: () => ({
          ops: new FakeOps({
            id: VIRTIO_ID_NET,
            features: f(VIRTIO_NET_F_MQ, 17, 32),
            config: netConfig(MAC, 1500, 2),
            stats: () => [{ name: "received_desc", value: 321812n }],
          }),
          nvqs: 5,
        }),
      }),
    );
    mgmt.devNew([a("DEV_NAME", "m"), a("MGMTDEV_DEV_NAME", "mq")]);
    const dev = bus.device("m")!;
    negotiate(dev, f(17, 32));
    assert.deepEqual(names(mgmt.devVstatsGet([a("DEV_NAME", "m"), a("DEV_QUEUE_INDEX", 1)])), [
      "DEV_NAME",
      "DEV_ID",
      "DEV_NEGOTIATED_FEATURES",
      "DEV_QUEUE_INDEX",
      "DEV_VENDOR_ATTR_NAME",
      "DEV_VENDOR_ATTR_VALUE",
    ]);
    negotiate(dev, f(VIRTIO_NET_F_MQ, 17, 32));
    assert.deepEqual(mgmt.devVstatsGet([a("DEV_NAME", "m"), a("DEV_QUEUE_INDEX", 1)]), [
      a("DEV_NAME", "m"),
      a("DEV_ID", 1),
      a("DEV_NEGOTIATED_FEATURES", f(VIRTIO_NET_F_MQ, 17, 32)),
      a("DEV_NET_CFG_MAX_VQP", 2),
      a("DEV_QUEUE_INDEX", 1),
      a("DEV_VENDOR_ATTR_NAME", "received_desc"),
      a("DEV_VENDOR_ATTR_VALUE", 321812n),
    ]);
  });

  test("the config read applies features_valid: FEATURES_OK without set_features first sets features 0", () => {
    const { mgmt } = setup();
    const dev = addVdpa0(mgmt);
    const ops = dev.ops as FakeOps;
    ops.driverFeatures = NEGOTIATED_NET; // written behind the core's back
    ops.status = VIRTIO_CONFIG_S_FEATURES_OK;
    const reply = mgmt.devVstatsGet([a("DEV_NAME", "vdpa0"), a("DEV_QUEUE_INDEX", 0)]);
    assert.deepEqual(ops.setFeaturesCalls, [0n]);
    assert.equal(dev.featuresValid, true);
    assert.equal(getAttr(reply, "DEV_NEGOTIATED_FEATURES"), 0n);
    // Once valid, no further set_features.
    mgmt.devVstatsGet([a("DEV_NAME", "vdpa0"), a("DEV_QUEUE_INDEX", 0)]);
    assert.deepEqual(ops.setFeaturesCalls, [0n]);
  });

  test("a counter the device refuses: its error is the answer", () => {
    const { mgmt } = setup();
    negotiate(addVdpa0(mgmt));
    throwsVdpa(
      () => mgmt.devVstatsGet([a("DEV_NAME", "vdpa0"), a("DEV_QUEUE_INDEX", 3)]),
      "EINVAL",
      "Invalid vq index",
    );
  });

  test("errors in Linux's order", () => {
    const { mgmt } = setup();
    addUnmanaged();
    const vdpa0 = addVdpa0(mgmt);
    addVdpa1(mgmt);
    const q = (n: number) => a("DEV_QUEUE_INDEX", n);
    throwsVdpa(() => mgmt.devVstatsGet([]), "EINVAL");
    throwsVdpa(() => mgmt.devVstatsGet([a("DEV_NAME", "vdpa0")]), "EINVAL");
    throwsVdpa(() => mgmt.devVstatsGet([a("DEV_NAME", "x"), q(0)]), "ENODEV", "device not found");
    throwsVdpa(() => mgmt.devVstatsGet([a("DEV_NAME", "raw0"), q(0)]), "EINVAL", "unmanaged vdpa device");
    // Class before range: a block device with a huge index is EOPNOTSUPP.
    throwsVdpa(() => mgmt.devVstatsGet([a("DEV_NAME", "vdpa1"), q(0x9000)]), "EOPNOTSUPP");
    // Range before FEATURES_OK (vdpa0 is not negotiated) and before the stats op.
    throwsVdpa(
      () => mgmt.devVstatsGet([a("DEV_NAME", "vdpa0"), q(0x8001)]),
      "ERANGE",
      "queue index exceeds max value",
    );
    throwsVdpa(
      () => mgmt.devVstatsGet([a("DEV_NAME", "vdpa0"), q(0x8000)]),
      "EAGAIN",
      "feature negotiation not complete",
    );
    // No stats op: EOPNOTSUPP even before FEATURES_OK.
    (vdpa0.ops as FakeOps).getVendorVqStats = undefined;
    throwsVdpa(() => mgmt.devVstatsGet([a("DEV_NAME", "vdpa0"), q(0)]), "EOPNOTSUPP");
  });
});

describe("DEV_ATTR_SET", () => {
  test("sets the MAC through devSetAttr with only the MAC mask bit", () => {
    const { mgmt, net } = setup();
    const dev = addVdpa0(mgmt);
    const mac = new Uint8Array([0x00, 0x11, 0x22, 0x33, 0x44, 0x66]);
    assert.deepEqual(mgmt.devAttrSet([a("DEV_NAME", "vdpa0"), a("DEV_NET_CFG_MACADDR", mac)]), {});
    assert.equal(net.setAttrs.length, 1);
    assert.equal(net.setAttrs[0].dev, dev);
    assert.equal(net.setAttrs[0].config.mask, attrBit("DEV_NET_CFG_MACADDR"));
    assert.deepEqual(net.setAttrs[0].config.net, { mac });
    assert.deepEqual(getAttr(mgmt.devConfigGet([a("DEV_NAME", "vdpa0")]), "DEV_NET_CFG_MACADDR"), mac);
  });

  test("a parent without the net class: success with the warning '<name> device not supported'", () => {
    const { mgmt } = setup();
    addVdpa1(mgmt);
    assert.deepEqual(mgmt.devAttrSet([a("DEV_NAME", "vdpa1"), a("DEV_NET_CFG_MACADDR", new Uint8Array(6))]), {
      warning: "vdpa1 device not supported",
    });
    assert.deepEqual(mgmt.devAttrSet([a("DEV_NAME", "vdpa1")]), { warning: "vdpa1 device not supported" });
  });

  test("net parent: no MAC, an invalid MAC, no devSetAttr, in that order", () => {
    const { mgmt } = setup();
    const noSet = fakeMgmtDev({
      name: "noset",
      idTable: [VIRTIO_ID_NET],
      configAttrMask: 0n,
      supportedFeatures: 0n,
      maxSupportedVqs: 0,
      build: () => ({
        ops: new FakeOps({ id: VIRTIO_ID_NET, features: 0n, config: netConfig(MAC, 0) }),
        nvqs: 2,
      }),
    });
    mgmt.registerMgmtDev(noSet);
    addVdpa0(mgmt);
    mgmt.devNew([a("DEV_NAME", "ns"), a("MGMTDEV_DEV_NAME", "noset")]);
    throwsVdpa(() => mgmt.devAttrSet([a("DEV_NAME", "vdpa0")]), "EOPNOTSUPP");
    throwsVdpa(() => mgmt.devAttrSet([a("DEV_NAME", "vdpa0"), a("DEV_NET_CFG_MTU", 1400)]), "EOPNOTSUPP");
    for (const bad of [
      new Uint8Array([1, 0, 0x5e, 0, 0, 1]),
      new Uint8Array(6).fill(0xff),
      new Uint8Array(6),
    ]) {
      throwsVdpa(
        () => mgmt.devAttrSet([a("DEV_NAME", "vdpa0"), a("DEV_NET_CFG_MACADDR", bad)]),
        "EOPNOTSUPP",
        "Invalid MAC address",
      );
      throwsVdpa(
        () => mgmt.devAttrSet([a("DEV_NAME", "ns"), a("DEV_NET_CFG_MACADDR", bad)]),
        "EOPNOTSUPP",
        "Invalid MAC address",
      );
    }
    throwsVdpa(
      () => mgmt.devAttrSet([a("DEV_NAME", "ns"), a("DEV_NET_CFG_MACADDR", MAC)]),
      "EOPNOTSUPP",
      "Operation not supported by the device.",
    );
  });

  test("the parent's refusal is the answer", () => {
    const { mgmt, net } = setup();
    addVdpa0(mgmt);
    net.ops.devSetAttr = () => {
      throw new VdpaError("EBUSY");
    };
    throwsVdpa(() => mgmt.devAttrSet([a("DEV_NAME", "vdpa0"), a("DEV_NET_CFG_MACADDR", MAC)]), "EBUSY");
  });

  test("errors: policy, no name, not found, unmanaged", () => {
    const { mgmt } = setup();
    addUnmanaged();
    addVdpa0(mgmt);
    throwsVdpa(
      () => mgmt.devAttrSet([a("DEV_NAME", "vdpa0"), a("DEV_NET_CFG_MACADDR", new Uint8Array(8))]),
      "ERANGE",
      "binary attribute size out of range",
    );
    throwsVdpa(() => mgmt.devAttrSet([a("DEV_NET_CFG_MACADDR", MAC)]), "EINVAL");
    throwsVdpa(
      () => mgmt.devAttrSet([a("DEV_NAME", "x"), a("DEV_NET_CFG_MACADDR", MAC)]),
      "ENODEV",
      "device not found",
    );
    throwsVdpa(
      () => mgmt.devAttrSet([a("DEV_NAME", "raw0"), a("DEV_NET_CFG_MACADDR", MAC)]),
      "EINVAL",
      "unmanaged vdpa device",
    );
  });
});

describe("run (genetlink dispatch)", () => {
  test("doit and dump replies, acks and warnings", () => {
    const { mgmt } = setup();
    assert.equal(mgmt.run("MGMTDEV_GET", [], { dump: true }).replies.length, 3);
    assert.deepEqual(
      mgmt.run(VDPA_CMD.DEV_NEW, [a("DEV_NAME", "vdpa1"), a("MGMTDEV_DEV_NAME", "vdpasim_blk")]),
      {
        replies: [],
      },
    );
    assert.deepEqual(mgmt.run("DEV_GET", [a("DEV_NAME", "vdpa1")]).replies, [
      mgmt.devGet([a("DEV_NAME", "vdpa1")]),
    ]);
    assert.deepEqual(mgmt.run("DEV_GET", [], { dump: true }).replies.length, 1);
    assert.deepEqual(mgmt.run("DEV_CONFIG_GET", [], { dump: true }).replies.length, 1);
    assert.deepEqual(mgmt.run("DEV_ATTR_SET", [a("DEV_NAME", "vdpa1")]), {
      replies: [],
      warning: "vdpa1 device not supported",
    });
    assert.deepEqual(mgmt.run("DEV_DEL", [a("DEV_NAME", "vdpa1")]), { replies: [] });
  });

  test("EOPNOTSUPP for a dump of a doit-only command and for commands without a handler", () => {
    const { mgmt } = setup();
    throwsVdpa(() => mgmt.run("DEV_NEW", [], { dump: true }), "EOPNOTSUPP");
    throwsVdpa(() => mgmt.run("DEV_VSTATS_GET", [], { dump: true }), "EOPNOTSUPP");
    throwsVdpa(() => mgmt.run("MGMTDEV_NEW"), "EOPNOTSUPP");
    throwsVdpa(() => mgmt.run(99), "EOPNOTSUPP");
  });
});
