// The start of every virtio driver's initialisation (virtio 1.3 "Device Initialization"; Linux
// virtio_dev_probe and virtio_features_ok), written once for the net and blk drivers. The driver then reads
// its config, sets up queues with findVqs, and calls driverOk().

import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
} from "../spec/index.js";
import type { VirtioDriver, VirtioTransport } from "./transport.js";

/**
 * Resets the device, sets ACKNOWLEDGE and DRIVER, lets `choose` pick the features from the offer (it may
 * read device config, as Linux's validate hooks do), finalizes them, sets FEATURES_OK and re-reads the
 * status. Returns the features in effect. When the device does not keep FEATURES_OK, or `choose` throws,
 * the status gets FAILED and the error made by `fail` (or thrown by `choose`) is thrown.
 */
export function negotiateFeatures(
  transport: VirtioTransport,
  choose: (offered: bigint) => bigint,
  fail: (message: string) => Error,
): bigint {
  transport.reset();
  transport.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
  transport.setStatus(VIRTIO_CONFIG_S_DRIVER);
  let features: bigint;
  try {
    const offered = transport.getFeatures();
    features = transport.finalizeFeatures(choose(offered) & offered);
  } catch (err) {
    transport.setStatus(VIRTIO_CONFIG_S_FAILED);
    throw err;
  }
  transport.setStatus(VIRTIO_CONFIG_S_FEATURES_OK);
  // The device may refuse the set by leaving FEATURES_OK clear (spec 3.1.1 step 6).
  if ((transport.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK) === 0) {
    transport.setStatus(VIRTIO_CONFIG_S_FAILED);
    throw fail(`${transport.name}: device did not accept features 0x${features.toString(16)}`);
  }
  return features;
}

/** The last step: the driver is ready; the device may now use its queues and be notified. */
export function driverOk(transport: VirtioTransport): void {
  transport.setStatus(VIRTIO_CONFIG_S_DRIVER_OK);
}

/** Marks the device failed (the driver gave up on it). */
export function driverFailed(transport: VirtioTransport): void {
  transport.setStatus(VIRTIO_CONFIG_S_FAILED);
}

/**
 * Reads `len` config bytes at `offset` so that a field read in several accesses is consistent: retried
 * until the config generation is the same before and after (Linux virtio_cread_bytes).
 */
export function readConfig(transport: VirtioTransport, offset: number, len: number): Uint8Array {
  for (;;) {
    const before = transport.generation();
    const bytes = transport.getConfig(offset, len);
    if (transport.generation() === before) return bytes;
  }
}

/** A little-endian config field of 1, 2, 4 or 8 bytes as a number (8-byte values must fit 2^53). */
export function readConfigUint(transport: VirtioTransport, offset: number, size: 1 | 2 | 4 | 8): number {
  const b = readConfig(transport, offset, size);
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + b[i];
  return v;
}

/**
 * A virtio driver that makes one driver object per bound device (a VirtioNet, a VirtioBlk): probe()
 * creates it, remove() lets it go. `devices` holds the bound ones; `onProbe` hears of each new one.
 */
export abstract class PerDeviceDriver<D extends { remove(): void }> implements VirtioDriver {
  abstract readonly name: string;
  abstract readonly deviceIds: readonly number[];
  readonly devices = new Map<VirtioTransport, D>();

  constructor(private readonly onProbe?: (device: D) => void) {}

  /** Brings the device up as this driver's object; throws to refuse it. */
  protected abstract create(transport: VirtioTransport): D;

  probe(transport: VirtioTransport): void {
    const device = this.create(transport);
    this.devices.set(transport, device);
    this.onProbe?.(device);
  }

  remove(transport: VirtioTransport): void {
    this.devices.get(transport)?.remove();
    this.devices.delete(transport);
  }
}
