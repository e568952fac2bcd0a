import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { FeatureClass } from "../../src/spec/index.js";
import * as spec from "../../src/spec/index.js";
import {
  FEATURES,
  featureBit,
  featureBits,
  featureByBit,
  featureClassOf,
  featureNamesIproute2,
  featuresFromNames,
  featureTokensIproute2Json,
  hasFeature,
  isTransportFeature,
  mgmtdevFeatureDeviceId,
  parseFeatureName,
  VDPA_TRANSPORT_FEATURE_END,
  VDPA_TRANSPORT_FEATURE_START,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_DEVICE_F_MASK,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_NET_F_MAC,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from "../../src/spec/index.js";

// iproute2 v6.1.0 vdpa/vdpa.c, net_feature_strs[] and ext_feature_strs[] (indices resolved to bit numbers).
const IPROUTE2_61_NET_NAMES: [number, string][] = [
  [0, "CSUM"],
  [1, "GUEST_CSUM"],
  [2, "CTRL_GUEST_OFFLOADS"],
  [3, "MTU"],
  [5, "MAC"],
  [7, "GUEST_TSO4"],
  [8, "GUEST_TSO6"],
  [9, "GUEST_ECN"],
  [10, "GUEST_UFO"],
  [11, "HOST_TSO4"],
  [12, "HOST_TSO6"],
  [13, "HOST_ECN"],
  [14, "HOST_UFO"],
  [15, "MRG_RXBUF"],
  [16, "STATUS"],
  [17, "CTRL_VQ"],
  [18, "CTRL_RX"],
  [19, "CTRL_VLAN"],
  [20, "CTRL_RX_EXTRA"],
  [21, "GUEST_ANNOUNCE"],
  [22, "MQ"],
  [24, "NOTIFY_ON_EMPTY"],
  [23, "CTRL_MAC_ADDR"],
  [27, "ANY_LAYOUT"],
  [61, "RSC_EXT"],
  [57, "HASH_REPORT"],
  [60, "RSS"],
  [62, "STANDBY"],
  [63, "SPEED_DUPLEX"],
];
const IPROUTE2_61_EXT_NAMES: [number, string][] = [
  [28, "RING_INDIRECT_DESC"],
  [29, "RING_EVENT_IDX"],
  [32, "VERSION_1"],
  [33, "ACCESS_PLATFORM"],
  [34, "RING_PACKED"],
  [35, "IN_ORDER"],
  [36, "ORDER_PLATFORM"],
  [37, "SR_IOV"],
  [38, "NOTIFICATION_DATA"],
];

// Lines captured from a real Linux 6.12 + iproute2 6.1.0 system (reference/linux-vdpa-cli.txt) and from
// iproute2 commit messages (kernel-vdpa.md c.6), each with the feature word the kernel sent. The words come
// from the drivers: vdpa_sim_net offers MAC|MTU|CTRL_VQ|CTRL_MAC_ADDR|STATUS|ANY_LAYOUT|VERSION_1|
// ACCESS_PLATFORM, and virtio-net negotiates all of them but ANY_LAYOUT.
const CLI_FIXTURE = `
$ vdpa mgmtdev show vdpasim_net
vdpasim_net: 
  supported_classes net
  max_supported_vqs 3
  dev_features MTU MAC STATUS CTRL_VQ CTRL_MAC_ADDR ANY_LAYOUT VERSION_1 ACCESS_PLATFORM
$ vdpa mgmtdev show vdpasim_blk
vdpasim_blk: 
  supported_classes block
  max_supported_vqs 0
  dev_features
$ vdpa dev config show vdpa0
vdpa0: mac 00:11:22:33:44:55 link up link_announce false mtu 1500 
  negotiated_features MTU MAC STATUS CTRL_VQ CTRL_MAC_ADDR VERSION_1 ACCESS_PLATFORM
$ vdpa mgmtdev show
auxiliary/mlx5_core.sf.1:
  supported_classes net
  max_supported_vqs 257
  dev_features CSUM GUEST_CSUM MTU HOST_TSO4 HOST_TSO6 STATUS CTRL_VQ MQ CTRL_MAC_ADDR VERSION_1 ACCESS_PLATFORM
# vdpa dev config show dev1
dev1: mac 52:54:00:12:34:56 link up link_announce false mtu 65535
      negotiated_features CTRL_VQ VERSION_1 ACCESS_PLATFORM
`;
const CLI_JSON_FIXTURE =
  '{"mgmtdev":{"vdpasim_net":{"supported_classes":["net"],"max_supported_vqs":3,"dev_features":["MTU","MAC",' +
  '"STATUS","CTRL_VQ","CTRL_MAC_ADDR","ANY_LAYOUT","VERSION_1","ACCESS_PLATFORM"]},"vdpasim_blk":{' +
  '"supported_classes":["block"],"max_supported_vqs":0,"dev_features":[]},"vduse":{"supported_classes":' +
  '["net","block"],"max_supported_vqs":0,"dev_features":[]}}}';
// Feature words, in the order the feature lines appear in CLI_FIXTURE, with the class bitmask or device id.
const FIXTURE_WORDS: { features: bigint; deviceId: number }[] = [
  { features: 0x3_0883_0028n, deviceId: mgmtdevFeatureDeviceId(1n << 1n) },
  { features: 0n, deviceId: mgmtdevFeatureDeviceId(1n << 2n) },
  { features: 0x3_0083_0028n, deviceId: 1 },
  { features: 0x3_00c3_180bn, deviceId: mgmtdevFeatureDeviceId(1n << 1n) },
  // iproute2 commit a4442ce5: "vdpa dev add ... device_features 0x300020000"
  { features: 0x3_0002_0000n, deviceId: 1 },
];

function fixtureFeatureLines(text: string): string[][] {
  const lines: string[][] = [];
  for (const line of text.split("\n")) {
    const m = /^\s+(?:dev_features|negotiated_features)(.*)$/.exec(line);
    if (m) lines.push(m[1].split(" ").filter((t) => t !== ""));
  }
  return lines;
}

describe("feature table", () => {
  test("each bit appears at most once per class, and names are unique per class", () => {
    for (const cls of ["transport", "net", "blk"] as FeatureClass[]) {
      const rows = FEATURES.filter((f) => f.cls === cls);
      assert.equal(new Set(rows.map((f) => f.bit)).size, rows.length, `${cls} bits`);
      assert.equal(new Set(rows.map((f) => f.specName)).size, rows.length, `${cls} spec names`);
    }
    // A device class and the transport never share a bit, so a device sees one meaning per bit.
    const transportBits = new Set(FEATURES.filter((f) => f.cls === "transport").map((f) => f.bit));
    for (const f of FEATURES) if (f.cls !== "transport") assert.ok(!transportBits.has(f.bit), f.specName);
  });

  test("bits are within 0..127 and transport bits 28..41 sit in vdpa's transport range", () => {
    for (const f of FEATURES) {
      assert.ok(Number.isInteger(f.bit) && f.bit >= 0 && f.bit <= 127, f.specName);
      if (f.cls === "transport" && !f.legacy) assert.ok(isTransportFeature(f.bit), f.specName);
      if (f.cls !== "transport") assert.ok(!isTransportFeature(f.bit), f.specName);
    }
    assert.equal(VDPA_TRANSPORT_FEATURE_START, 28);
    assert.equal(VDPA_TRANSPORT_FEATURE_END, 42);
    assert.equal(VIRTIO_DEVICE_F_MASK, 0xffff_f800_0fff_ffffn);
  });

  test("every Linux macro is exported with its bit", () => {
    const exported = spec as unknown as Record<string, unknown>;
    for (const f of FEATURES) {
      if (f.linuxMacro !== undefined) assert.equal(exported[f.linuxMacro], f.bit, f.linuxMacro);
      for (const alias of f.aliases ?? []) assert.equal(exported[alias], f.bit, alias);
    }
    assert.equal(VIRTIO_F_VERSION_1, 32);
    assert.equal(VIRTIO_RING_F_INDIRECT_DESC, 28);
    assert.equal(VIRTIO_RING_F_EVENT_IDX, 29);
    assert.equal(VIRTIO_F_RING_PACKED, 34);
    assert.equal(VIRTIO_F_ACCESS_PLATFORM, 33);
    assert.equal(VIRTIO_NET_F_MAC, 5);
    assert.equal(VIRTIO_BLK_F_FLUSH, 9);
  });

  test("spec and Linux names differ where the headers do", () => {
    assert.equal(featureByBit("transport", 28)?.specName, "VIRTIO_F_INDIRECT_DESC");
    assert.equal(featureByBit("transport", 28)?.linuxMacro, "VIRTIO_RING_F_INDIRECT_DESC");
    assert.equal(featureByBit("transport", 29)?.linuxMacro, "VIRTIO_RING_F_EVENT_IDX");
    assert.equal(featureByBit("blk", 15)?.specName, "VIRTIO_BLK_F_LIFETIME");
    assert.equal(featureByBit("blk", 15)?.linuxMacro, undefined);
  });

  test("the classes cover the bits the task lists", () => {
    const bitsOf = (cls: FeatureClass) =>
      FEATURES.filter((f) => f.cls === cls)
        .map((f) => f.bit)
        .sort((a, b) => a - b);
    assert.deepEqual(bitsOf("transport"), [24, 27, 28, 29, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41]);
    assert.deepEqual(bitsOf("blk"), [0, 1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
    const netBits = bitsOf("net");
    for (let bit = 0; bit <= 23; bit++) if (bit !== 4) assert.ok(netBits.includes(bit), `net bit ${bit}`);
    for (const bit of [50, 52, 53, 54, 55, 56, 57, 59, 60, 61, 62, 63, 65, 66, 67, 68]) {
      assert.ok(netBits.includes(bit), `net bit ${bit}`);
    }
  });

  test("featureByBit: a class falls back to transport bits, other classes' bits stay out", () => {
    assert.equal(featureByBit("net", 32)?.specName, "VIRTIO_F_VERSION_1");
    assert.equal(featureByBit("net", 22)?.specName, "VIRTIO_NET_F_MQ");
    assert.equal(featureByBit("blk", 12)?.specName, "VIRTIO_BLK_F_MQ");
    assert.equal(featureByBit("blk", 24)?.specName, "VIRTIO_F_NOTIFY_ON_EMPTY");
    assert.equal(featureByBit("transport", 5), undefined);
    assert.equal(featureByBit("net", 4), undefined);
    assert.equal(featureClassOf(1), "net");
    assert.equal(featureClassOf(2), "blk");
    assert.equal(featureClassOf(3), undefined);
  });

  test("featureBit, hasFeature, featureBits", () => {
    assert.equal(featureBit(0), 1n);
    assert.equal(featureBit(33), 0x2_0000_0000n);
    assert.equal(featureBit(127), 1n << 127n);
    assert.throws(() => featureBit(128), RangeError);
    assert.throws(() => featureBit(-1), RangeError);
    assert.throws(() => featureBit(1.5), RangeError);
    assert.equal(hasFeature(0x3_0000_0000n, VIRTIO_F_VERSION_1), true);
    assert.equal(hasFeature(0x3_0000_0000n, VIRTIO_F_RING_PACKED), false);
    assert.deepEqual(featureBits(0x3_0883_0028n), [3, 5, 16, 17, 23, 27, 32, 33]);
    assert.deepEqual(featureBits(0n), []);
    assert.deepEqual(featureBits(1n << 68n), [68]);
  });
});

describe("iproute2 6.1 feature names", () => {
  test("iproute2Name matches iproute2 v6.1.0's tables exactly; other bits have none", () => {
    const expected = new Map<number, string>([...IPROUTE2_61_NET_NAMES, ...IPROUTE2_61_EXT_NAMES]);
    for (const f of FEATURES) {
      if (f.cls === "blk") {
        assert.equal(f.iproute2Name, undefined, f.specName);
        continue;
      }
      assert.equal(f.iproute2Name, expected.get(f.bit), f.specName);
    }
    const named = FEATURES.filter((f) => f.iproute2Name !== undefined).length;
    assert.equal(named, expected.size);
  });

  test("a net device names every bit iproute2 names, and prints bit_N for the rest", () => {
    const expected = new Map<number, string>([...IPROUTE2_61_NET_NAMES, ...IPROUTE2_61_EXT_NAMES]);
    for (let bit = 0; bit < 64; bit++) {
      assert.deepEqual(
        featureNamesIproute2(featureBit(bit), 1),
        [expected.get(bit) ?? `bit_${bit}`],
        `bit ${bit}`,
      );
    }
  });

  test("other classes get names only for transport bits 28..41 (so bit_24 and bit_27)", () => {
    const ext = new Map<number, string>(IPROUTE2_61_EXT_NAMES);
    for (const deviceId of [0, 2, 3]) {
      for (let bit = 0; bit < 64; bit++) {
        assert.deepEqual(featureNamesIproute2(featureBit(bit), deviceId), [ext.get(bit) ?? `bit_${bit}`]);
      }
    }
    // vdpa_sim_blk's device features, shown under a block-only management device (derived from code).
    const simBlk = featuresFromNames(
      [
        "VIRTIO_BLK_F_SIZE_MAX",
        "VIRTIO_BLK_F_SEG_MAX",
        "VIRTIO_BLK_F_BLK_SIZE",
        "VIRTIO_BLK_F_TOPOLOGY",
        "VIRTIO_BLK_F_MQ",
        "VIRTIO_BLK_F_DISCARD",
        "VIRTIO_BLK_F_WRITE_ZEROES",
        "VIRTIO_F_ANY_LAYOUT",
        "VIRTIO_F_VERSION_1",
        "VIRTIO_F_ACCESS_PLATFORM",
      ],
      "blk",
    );
    assert.deepEqual(featureNamesIproute2(simBlk, mgmtdevFeatureDeviceId(1n << 2n)), [
      "bit_1",
      "bit_2",
      "bit_6",
      "bit_10",
      "bit_12",
      "bit_13",
      "bit_14",
      "bit_27",
      "VERSION_1",
      "ACCESS_PLATFORM",
    ]);
  });

  test("bits above 63 are never printed; JSON holds unnamed bits as numbers", () => {
    assert.deepEqual(featureNamesIproute2((1n << 65n) | (1n << 32n), 1), ["VERSION_1"]);
    const word = (1n << 39n) | (1n << 40n) | (1n << 42n) | (1n << 5n);
    assert.deepEqual(featureNamesIproute2(word, 1), ["MAC", "bit_39", "bit_40", "bit_42"]);
    assert.deepEqual(featureTokensIproute2Json(word, 1), ["MAC", 39, 40, 42]);
  });

  test("management devices with the net class (even with block too) use the net table", () => {
    assert.equal(mgmtdevFeatureDeviceId(1n << 1n), 1);
    assert.equal(mgmtdevFeatureDeviceId((1n << 1n) | (1n << 2n)), 1);
    assert.equal(mgmtdevFeatureDeviceId(1n << 2n), 0);
    assert.equal(mgmtdevFeatureDeviceId(0n), 0);
  });

  test("reproduces the feature lines of linux-vdpa-cli.txt and iproute2's commit samples", () => {
    const lines = fixtureFeatureLines(CLI_FIXTURE);
    assert.equal(lines.length, FIXTURE_WORDS.length);
    lines.forEach((tokens, i) => {
      const { features, deviceId } = FIXTURE_WORDS[i];
      assert.deepEqual(featureNamesIproute2(features, deviceId), tokens, `line ${i}`);
      // And back: the printed names give the same word.
      assert.equal(featuresFromNames(tokens, "net"), features, `line ${i}`);
    });
  });

  test("reproduces the -j mgmtdev output of linux-vdpa-cli.txt", () => {
    const json = JSON.parse(CLI_JSON_FIXTURE) as {
      mgmtdev: Record<string, { supported_classes: string[]; dev_features: (string | number)[] }>;
    };
    const words: Record<string, bigint> = { vdpasim_net: 0x3_0883_0028n, vdpasim_blk: 0n, vduse: 0n };
    for (const [name, dev] of Object.entries(json.mgmtdev)) {
      const classes = dev.supported_classes.reduce(
        (acc, c) => acc | (1n << BigInt(c === "net" ? 1 : c === "block" ? 2 : 0)),
        0n,
      );
      assert.deepEqual(
        featureTokensIproute2Json(words[name], mgmtdevFeatureDeviceId(classes)),
        dev.dev_features,
      );
    }
  });
});

describe("parseFeatureName", () => {
  test("round-trips every printed token for net and blk", () => {
    for (let bit = 0; bit < 64; bit++) {
      for (const [cls, deviceId] of [
        ["net", 1],
        ["blk", 2],
      ] as [FeatureClass, number][]) {
        const [token] = featureNamesIproute2(featureBit(bit), deviceId);
        assert.equal(parseFeatureName(token, cls), bit, `${cls} ${token}`);
      }
    }
  });

  test("accepts spec names, Linux macros and aliases within the class", () => {
    assert.equal(parseFeatureName("VIRTIO_F_INDIRECT_DESC"), 28);
    assert.equal(parseFeatureName("VIRTIO_RING_F_INDIRECT_DESC"), 28);
    assert.equal(parseFeatureName("VIRTIO_F_IOMMU_PLATFORM"), 33);
    assert.equal(parseFeatureName("VIRTIO_BLK_F_WCE", "blk"), 9);
    assert.equal(parseFeatureName("MQ", "net"), 22);
    assert.equal(parseFeatureName("VIRTIO_BLK_F_MQ", "blk"), 12);
    assert.equal(parseFeatureName("VIRTIO_BLK_F_MQ", "net"), undefined);
    assert.equal(parseFeatureName("bit_127"), 127);
    assert.equal(parseFeatureName("bit_128"), undefined);
    assert.equal(parseFeatureName("mac"), undefined);
    assert.throws(() => featuresFromNames(["NOPE"]), RangeError);
  });
});
