// A driver side and a device side of one virtqueue wired through a DMA pool and an IOTLB, in one
// process. The demo, the benchmark and the tests all build on it; it is also the quickest way for a user
// to try a device's request handler without any bus.

import { AddressSpace, DmaPool, Iotlb } from "../memory/index.js";
import { PackedDeviceRing } from "./packed-device.js";
import { PackedDriverRing } from "./packed-driver.js";
import { SplitDeviceRing } from "./split-device.js";
import { SplitDriverRing } from "./split-driver.js";
import type { DeviceRing, DriverRing, RingFormat } from "./types.js";

export interface LoopbackOptions {
  format: RingFormat;
  num: number;
  eventIdx?: boolean;
  indirect?: boolean;
  maxIndirect?: number;
  maxChain?: number;
  /** Pool bytes (rings and buffers); default 4 MiB. */
  poolSize?: number;
  /** Map the pool into the IOTLB as this many equal entries (default 1), to exercise lookups. */
  iotlbEntries?: number;
}

export interface Loopback<T> {
  pool: DmaPool;
  iotlb: Iotlb;
  space: AddressSpace;
  driver: DriverRing<T>;
  device: DeviceRing;
}

export function createLoopback<T>(opts: LoopbackOptions): Loopback<T> {
  const poolSize = opts.poolSize ?? 4 << 20;
  const pool = new DmaPool({ size: poolSize, iovaBase: 0x4000_0000, name: `${opts.format}-pool` });
  const iotlb = new Iotlb(`${opts.format}-iotlb`);
  const entries = opts.iotlbEntries ?? 1;
  const chunk = poolSize / entries;
  if (!Number.isInteger(chunk) || chunk % 4096 !== 0)
    throw new RangeError("pool size must split into page-sized entries");
  iotlb.begin();
  for (let k = 0; k < entries; k++) iotlb.map(pool.iovaBase + k * chunk, chunk, pool.region, k * chunk, 3);
  iotlb.commit();
  const space = new AddressSpace(iotlb);
  const ringOpts = {
    num: opts.num,
    pool,
    eventIdx: opts.eventIdx ?? false,
    indirect: opts.indirect ?? false,
    maxIndirect: opts.maxIndirect,
  };
  const driver: DriverRing<T> =
    opts.format === "packed" ? new PackedDriverRing<T>(ringOpts) : new SplitDriverRing<T>(ringOpts);
  const devOpts = {
    num: opts.num,
    addresses: driver.addresses,
    ringSpace: space,
    eventIdx: opts.eventIdx ?? false,
    maxChain: opts.maxChain,
  };
  const device: DeviceRing =
    opts.format === "packed" ? new PackedDeviceRing(devOpts) : new SplitDeviceRing(devOpts);
  return { pool, iotlb, space, driver, device };
}
