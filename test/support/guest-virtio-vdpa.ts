// A stand-in for Linux's virtio_vdpa bus driver together with the guest's virtio_net / virtio_blk drivers,
// for replaying what a Linux guest does after `echo DEV > /sys/bus/vdpa/drivers/virtio_vdpa/bind`: the
// device is brought up (reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK) by SimDriver.
//
// Feature choice: a guest driver for a modern (VERSION_1) device takes its features from its modern
// feature table, which has none of the legacy-only bits (virtio_net keeps VIRTIO_F_ANY_LAYOUT in its
// legacy table only). So every offered bit is accepted except those FEATURES marks legacy for the
// device's class or the transport, when VERSION_1 is offered.

import {
  featureBits,
  featureByBit,
  featureClassOf,
  hasFeature,
  VIRTIO_F_VERSION_1,
} from "../../src/spec/index.js";
import type { VdpaDevice } from "../../src/vdpa/device.js";
import type { VdpaDriver } from "../../src/vdpa/vdpa-bus.js";
import { SimDriver } from "./sim-driver.js";

/** The legacy-only bits among `offered` for a device of class `deviceId` (0n without VERSION_1). */
export function legacyOnlyFeatures(offered: bigint, deviceId: number): bigint {
  if (!hasFeature(offered, VIRTIO_F_VERSION_1)) return 0n;
  const cls = featureClassOf(deviceId) ?? "transport";
  let legacy = 0n;
  for (const b of featureBits(offered)) if (featureByBit(cls, b)?.legacy) legacy |= 1n << BigInt(b);
  return legacy;
}

export class GuestVirtioVdpaDriver implements VdpaDriver {
  readonly name = "virtio_vdpa";
  private readonly guests = new Map<VdpaDevice, SimDriver>();

  probe(dev: VdpaDevice): void {
    const drop = legacyOnlyFeatures(dev.ops.getDeviceFeatures(), dev.ops.getDeviceId());
    this.guests.set(dev, new SimDriver(dev, { format: "split", withoutFeatures: drop }).start());
  }

  /** virtio_vdpa's remove ends with the guest driver resetting the device. */
  remove(dev: VdpaDevice): void {
    this.guests.delete(dev);
    dev.reset();
  }

  /** The guest driver of a bound device. */
  guest(dev: VdpaDevice): SimDriver {
    const g = this.guests.get(dev);
    if (!g) throw new Error(`${dev.name} is not bound to ${this.name}`);
    return g;
  }
}
