import "./host.js";
import type { DmaPool } from "../memory/index.js";
import { PackedDeviceRing } from "./packed-device.js";
import { PackedDriverRing } from "./packed-driver.js";
import { SplitDeviceRing } from "./split-device.js";
import { SplitDriverRing } from "./split-driver.js";
import type { DeviceRing, DeviceRingOptions, DriverRing, DriverRingOptions, RingFormat } from "./types.js";

export * from "./chain.js";
export * from "./errors.js";
export * from "./loopback.js";
export { PackedDeviceRing } from "./packed-device.js";
export { PackedDriverRing } from "./packed-driver.js";
export { SplitDeviceRing } from "./split-device.js";
export { SplitDriverRing } from "./split-driver.js";
export type * from "./types.js";

/** The device side of a queue in either format. */
export function createDeviceRing(format: RingFormat, opts: DeviceRingOptions): DeviceRing {
  return format === "packed" ? new PackedDeviceRing(opts) : new SplitDeviceRing(opts);
}

/** The driver side of a queue in either format, with its rings allocated from `opts.pool`. */
export function createDriverRing<T>(
  format: RingFormat,
  opts: DriverRingOptions,
): DriverRing<T> & {
  readonly dmaBuffers: readonly import("../memory/index.js").DmaBuffer[];
} {
  return format === "packed" ? new PackedDriverRing<T>(opts) : new SplitDriverRing<T>(opts);
}

export type { DmaPool };
