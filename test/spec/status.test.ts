import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  STATUS_BITS,
  statusNames,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_CONFIG_S_SUSPEND,
} from "../../src/spec/index.js";

describe("device status bits", () => {
  test("values match virtio_config.h (and 0x10 for the 1.4 SUSPEND bit)", () => {
    assert.equal(VIRTIO_CONFIG_S_ACKNOWLEDGE, 0x01);
    assert.equal(VIRTIO_CONFIG_S_DRIVER, 0x02);
    assert.equal(VIRTIO_CONFIG_S_DRIVER_OK, 0x04);
    assert.equal(VIRTIO_CONFIG_S_FEATURES_OK, 0x08);
    assert.equal(VIRTIO_CONFIG_S_SUSPEND, 0x10);
    assert.equal(VIRTIO_CONFIG_S_NEEDS_RESET, 0x40);
    assert.equal(VIRTIO_CONFIG_S_FAILED, 0x80);
  });

  test("the table's masks are 1 << bit, distinct, and its macros follow the names", () => {
    const masks = new Set<number>();
    for (const s of STATUS_BITS) {
      assert.equal(s.mask, 1 << s.bit, s.name);
      assert.equal(s.linuxMacro, `VIRTIO_CONFIG_S_${s.name}`);
      masks.add(s.mask);
    }
    assert.equal(masks.size, STATUS_BITS.length);
    assert.deepEqual(
      STATUS_BITS.filter((s) => s.virtio14).map((s) => s.name),
      ["SUSPEND"],
    );
  });

  test("statusNames lists set bits lowest first", () => {
    assert.deepEqual(statusNames(0), []);
    assert.deepEqual(statusNames(0x0f), ["ACKNOWLEDGE", "DRIVER", "DRIVER_OK", "FEATURES_OK"]);
    assert.deepEqual(statusNames(0x4b), ["ACKNOWLEDGE", "DRIVER", "FEATURES_OK", "NEEDS_RESET"]);
    assert.deepEqual(statusNames(0x80), ["FAILED"]);
    assert.deepEqual(statusNames(0x1f), ["ACKNOWLEDGE", "DRIVER", "DRIVER_OK", "FEATURES_OK", "SUSPEND"]);
  });

  test("statusNames names the reserved bit bit_5 and ignores bits above the status byte", () => {
    assert.deepEqual(statusNames(0x20), ["bit_5"]);
    assert.deepEqual(statusNames(0x124), ["DRIVER_OK", "bit_5"]);
  });
});
