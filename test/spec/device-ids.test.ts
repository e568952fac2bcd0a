import assert from "node:assert/strict";
import { describe, test } from "node:test";
import * as spec from "../../src/spec/index.js";
import {
  classNamesIproute2,
  DEVICE_IDS,
  deviceIdInfo,
  deviceIdName,
  deviceTypeName,
  VIRTIO_ID_BLOCK,
  VIRTIO_ID_NET,
} from "../../src/spec/index.js";

// The virtio ids listed in the project's reference (kernel-vdpa.md, "Virtio spec facts").
const REFERENCE_IDS = [
  1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
  32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 45,
];

describe("virtio device ids", () => {
  test("the table holds exactly the reference ids, each once, in order", () => {
    assert.deepEqual(
      DEVICE_IDS.map((d) => d.id),
      REFERENCE_IDS,
    );
  });

  test("every macro is exported with its id", () => {
    const exported = spec as unknown as Record<string, unknown>;
    for (const d of DEVICE_IDS) assert.equal(exported[d.linuxMacro], d.id, d.linuxMacro);
    assert.equal(VIRTIO_ID_NET, 1);
    assert.equal(VIRTIO_ID_BLOCK, 2);
    assert.equal(deviceIdInfo(45)?.linuxMacro, "VIRTIO_ID_SPI");
    assert.equal(deviceIdInfo(14), undefined);
  });

  test("iproute2 6.1 class names (parse_class) and type names (device_type_name)", () => {
    assert.equal(deviceIdName(1), "net");
    assert.equal(deviceIdName(2), "block");
    assert.equal(deviceIdName(3), "< unknown class >");
    assert.equal(deviceIdName(99), "< unknown class >");
    assert.equal(deviceTypeName(1), "network");
    assert.equal(deviceTypeName(2), "block");
    assert.equal(deviceTypeName(26), "<unknown type>");
  });

  test("supported_classes lines from linux-vdpa-cli.txt", () => {
    // "supported_classes net" (vdpasim_net), "block" (vdpasim_blk), "net block" (vduse)
    assert.deepEqual(classNamesIproute2(1n << 1n), ["net"]);
    assert.deepEqual(classNamesIproute2(1n << 2n), ["block"]);
    assert.deepEqual(classNamesIproute2((1n << 1n) | (1n << 2n)), ["net", "block"]);
  });

  test("supported_classes skips bit 0, stops at bit 63 and marks unknown classes", () => {
    assert.deepEqual(classNamesIproute2(1n), []);
    assert.deepEqual(classNamesIproute2((1n << 4n) | (1n << 64n)), ["< unknown class >"]);
  });
});
