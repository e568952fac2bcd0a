// virtio_vdpa (Linux drivers/virtio/virtio_vdpa.c): the vDPA bus driver that turns any vDPA device into a
// virtio device on the virtio bus, so the ordinary virtio drivers (net.ts, blk.ts) run on it without
// knowing it is vDPA. Each transport op maps to a vDPA op as Linux maps them: get/set config ->
// vdpa_get_config/vdpa_set_config, generation -> get_generation or 0, status -> get_status/vdpa_set_status,
// reset -> vdpa_reset(dev, 0), features -> get_device_features, finalize -> ring transport filtering then
// vdpa_set_features, find_vqs/setup_vq and del_vqs in Linux's order, notify -> kick_vq.
//
// Where this DIVERGES from Linux, on purpose:
// - DMA. Linux's virtio_ring allocates rings and buffers through the kernel DMA API on the vDPA device's
//   DMA device, and vdpa_sim makes that work by starting with an identity IOTLB. vdpa-ts has no physical
//   address space and no identity map (ARCHITECTURE, "Addresses and isolation"). So each transport owns
//   a DmaPool (default 32 MiB at IOVA 0x1000_0000) and maps it at probe into EVERY address space the device
//   can use, whatever its DMA model: the platform IOMMU domain (platform), setMap of a table holding the
//   pool for each ASID < nas (set_map), or dmaMap of the pool for each ASID (dma_map). Rings and driver
//   buffers (allocDma) come from that pool, so any queue in any group/ASID can reach them. The pool is
//   unmapped at remove. virtio_vdpa only ever resets with flags 0, as Linux, so a device keeps these maps
//   across resets; a device that drops its maps on its own is not re-mapped (maps are made once, at probe).
// - Config changes (NEEDS_RESET included) reach the driver's handler from the event loop (one
//   setImmediate, coalesced), never inside the device's own work run: Linux's drivers defer the same way
//   (virtio-net and virtio-blk schedule config work from the interrupt), and here a handler that resets
//   and re-initialises the device must not run inside the device's call stack.
// - Transport features kept: INDIRECT_DESC, EVENT_IDX, VERSION_1, ACCESS_PLATFORM, RING_PACKED, what our
//   ring engine implements. Linux's vring_transport_features also keeps ORDER_PLATFORM, IN_ORDER and
//   NOTIFICATION_DATA (that one only with kick_vq_with_data); we drop them with the other bits of 28..41.
// - Queue size: findVqs takes an optional cap (`opts.size`); a device whose min == max keeps its size
//   (Linux's may_reduce_num rule), a split ring is rounded down to a power of two. Linux shrinks only
//   when ring memory cannot be allocated. Ring areas are aligned as the spec requires, not to
//   get_vq_align (Linux lays out a legacy contiguous vring with that alignment; the device gets three
//   addresses either way). Affinity and per-queue DMA devices (get_vq_dma_dev) have no meaning here.

import { type DmaBuffer, DmaPool, Iotlb, PERM_RW } from "../memory/index.js";
import { createDriverRing, type DriverRing, type RingFormat } from "../ring/index.js";
import { featureBit } from "../spec/features.js";
import {
  hasFeature,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_TRANSPORT_F_START,
} from "../spec/index.js";
import type { VqState } from "../vdpa/config-ops.js";
import type { VdpaDevice } from "../vdpa/device.js";
import { VdpaError } from "../vdpa/errors.js";
import type { VdpaDriver } from "../vdpa/vdpa-bus.js";
import type { TransportQueue, VirtioTransport, VirtqueueInfo } from "./transport.js";
import type { VirtioBus } from "./virtio-bus.js";

/** Feature bit n as a mask (control path: bigint). */
const bit = featureBit;

/** The transport bits virtio_vdpa keeps: what src/ring implements. */
export const VIRTIO_VDPA_TRANSPORT_FEATURES: bigint =
  bit(VIRTIO_F_INDIRECT_DESC) |
  bit(VIRTIO_RING_F_EVENT_IDX) |
  bit(VIRTIO_F_VERSION_1) |
  bit(VIRTIO_F_ACCESS_PLATFORM) |
  bit(VIRTIO_F_RING_PACKED);

/** Bits 28..41: the range Linux's vring_transport_features walks (VIRTIO_TRANSPORT_F_START up to 42). */
const TRANSPORT_RANGE = bit(42) - bit(VIRTIO_TRANSPORT_F_START);

/** Linux vring_transport_features: device bits pass, transport bits only when the ring supports them. */
export function vringTransportFeatures(features: bigint): bigint {
  return (features & ~TRANSPORT_RANGE) | (features & TRANSPORT_RANGE & VIRTIO_VDPA_TRANSPORT_FEATURES);
}

/** Default bytes of each transport's DMA pool: room for virtio-blk's request buffers at queue size 256. */
export const VIRTIO_VDPA_POOL_SIZE = 32 << 20;
/** Default IOVA of each pool's first byte (page aligned). */
export const VIRTIO_VDPA_IOVA_BASE = 0x1000_0000;
/** Largest ring virtio allows (split: a power of two up to this; packed: any size up to this). */
const MAX_QUEUE_SIZE = 32768;

export interface VirtioVdpaOptions {
  /** Bytes of each transport's DMA pool (default 32 MiB). */
  poolSize?: number;
  /** IOVA of each pool's first byte, page aligned (default 0x1000_0000). */
  iovaBase?: number;
}

/** A queue set up by virtio_vdpa (Linux's virtqueue as virtio_vdpa creates it). */
export class VirtioVdpaQueue implements TransportQueue {
  /** False once the queue was deleted: no more notifies or callbacks. */
  alive = true;

  constructor(
    private readonly transport: VirtioVdpaDevice,
    readonly index: number,
    readonly name: string,
    readonly ring: DriverRing<number> & { readonly dmaBuffers: readonly DmaBuffer[] },
    private readonly callback: (() => void) | null,
  ) {}

  get size(): number {
    return this.ring.num;
  }

  /** Linux virtio_vdpa_notify: kick_vq(index). */
  notify(): void {
    if (this.alive) this.transport.vdpa.ops.kickVq(this.index);
  }

  /** The vDPA used-buffer callback (Linux virtio_vdpa_virtqueue_cb -> vring_interrupt). */
  readonly interrupt = (): void => {
    if (this.alive) this.callback?.();
  };
}

/** A vDPA device as a virtio device (Linux `struct virtio_vdpa_device`). */
export class VirtioVdpaDevice implements VirtioTransport {
  readonly name: string;
  readonly deviceId: number;
  readonly vendorId: number;
  /** Rings and driver buffers: mapped into every address space of the device while bound. */
  readonly pool: DmaPool;
  /** Errors thrown by the config-change handler (caught: it runs from the event loop). */
  configHandlerErrors = 0;
  private featuresNow = 0n;
  private queueList: VirtioVdpaQueue[] = [];
  private configHandler: (() => void) | null = null;
  private configPending = false;
  private mapped = false;
  private removed = false;

  constructor(
    readonly vdpa: VdpaDevice,
    opts: VirtioVdpaOptions = {},
  ) {
    this.name = vdpa.name;
    this.deviceId = vdpa.ops.getDeviceId();
    this.vendorId = vdpa.ops.getVendorId();
    const size = opts.poolSize ?? VIRTIO_VDPA_POOL_SIZE;
    const iovaBase = opts.iovaBase ?? VIRTIO_VDPA_IOVA_BASE;
    const range = vdpa.ops.getIovaRange?.();
    if (range && (iovaBase < range.first || iovaBase + size - 1 > range.last)) {
      throw new VdpaError("ERANGE", `DMA pool outside the device's IOVA range`);
    }
    this.pool = new DmaPool({ size, iovaBase, name: `virtio_vdpa:${vdpa.name}` });
  }

  get features(): bigint {
    return this.featuresNow;
  }

  /** Queues of the current findVqs, in index order (empty after delVqs). */
  get queues(): readonly VirtioVdpaQueue[] {
    return this.queueList;
  }

  // ---- Features, status, config ----

  getFeatures(): bigint {
    return this.vdpa.ops.getDeviceFeatures();
  }

  finalizeFeatures(features: bigint): bigint {
    const kept = vringTransportFeatures(features);
    this.vdpa.setFeatures(kept);
    this.featuresNow = kept;
    return kept;
  }

  getStatus(): number {
    return this.vdpa.ops.getStatus();
  }

  /** Adds bits, as Linux's virtio_add_status: vdpa_set_status(get_status | status). */
  setStatus(status: number): void {
    this.vdpa.setStatus(this.vdpa.ops.getStatus() | status);
  }

  /** Linux virtio_vdpa_reset: vdpa_reset(dev, 0), never CLEAN_MAP, so the pool stays mapped. */
  reset(): void {
    this.vdpa.reset(0);
    this.featuresNow = 0n;
  }

  getConfig(offset: number, len: number): Uint8Array {
    return this.vdpa.getConfig(offset, len);
  }

  setConfig(offset: number, data: Uint8Array): void {
    this.vdpa.setConfig(offset, data);
  }

  generation(): number {
    return this.vdpa.ops.getGeneration?.() ?? 0;
  }

  onConfigChange(cb: (() => void) | null): void {
    this.configHandler = cb;
  }

  // ---- Queues ----

  /**
   * Linux virtio_vdpa_find_vqs: named entries get consecutive queue indices from 0, null names get null;
   * any failure deletes every queue of the transport and throws; after all queues the config callback is
   * installed.
   */
  findVqs(infos: VirtqueueInfo[], opts: { size?: number } = {}): (TransportQueue | null)[] {
    this.checkAlive();
    const cap = opts.size;
    if (cap !== undefined && (!Number.isInteger(cap) || cap < 1)) {
      throw new VdpaError("EINVAL", `bad queue size cap ${cap}`);
    }
    const out: (VirtioVdpaQueue | null)[] = [];
    let index = 0;
    try {
      for (const info of infos) {
        if (info.name === null) {
          out.push(null);
          continue;
        }
        out.push(this.setupVq(index++, info.name, info.callback, cap));
      }
    } catch (err) {
      this.delVqs();
      throw err;
    }
    this.vdpa.ops.setConfigCb({ callback: this.configInterrupt });
    return out;
  }

  /** Linux virtio_vdpa_setup_vq, step by step. */
  private setupVq(
    index: number,
    name: string,
    callback: (() => void) | null,
    cap: number | undefined,
  ): VirtioVdpaQueue {
    const dev = this.vdpa;
    const ops = dev.ops;
    if (index >= dev.nvqs) throw new VdpaError("ENOENT", `${this.name}: no queue ${index}`);
    // A queue that is already set up is refused and left alone.
    if (ops.getVqReady(index)) throw new VdpaError("ENOENT", `${this.name}: queue ${index} is already ready`);
    let ring: VirtioVdpaQueue["ring"];
    try {
      const max = ops.getVqSize ? ops.getVqSize(index) : ops.getVqNumMax();
      if (max === 0) throw new VdpaError("ENOENT", `${this.name}: queue ${index} has size 0`);
      ring = this.createRing(index, max, dev.getVqNumMin(), cap);
    } catch (err) {
      this.stopVq(index);
      throw err;
    }
    const q = new VirtioVdpaQueue(this, index, name, ring, callback);
    try {
      ops.setVqCb(index, callback ? { callback: q.interrupt } : null);
      ops.setVqNum(index, ring.num);
      const a = ring.addresses;
      try {
        ops.setVqAddress(index, a.desc, a.driver, a.device);
      } catch (err) {
        throw new VdpaError("EINVAL", `${this.name}: set_vq_address ${index}: ${(err as Error).message}`);
      }
      const state: VqState =
        ring.format === "packed"
          ? { packed: { lastAvailCounter: 1, lastAvailIdx: 0, lastUsedCounter: 1, lastUsedIdx: 0 } }
          : { split: { availIndex: 0 } };
      ops.setVqState(index, state);
      ops.setVqReady(index, true);
    } catch (err) {
      q.alive = false;
      this.releaseRing(ring);
      this.stopVq(index);
      throw err;
    }
    this.queueList.push(q);
    return q;
  }

  /** The driver ring in the negotiated format, sized from the device's maximum and the driver's cap. */
  private createRing(
    index: number,
    max: number,
    min: number,
    cap: number | undefined,
  ): VirtioVdpaQueue["ring"] {
    const f = this.featuresNow;
    const format: RingFormat = hasFeature(f, VIRTIO_F_RING_PACKED) ? "packed" : "split";
    let num = max;
    // Linux: the ring may shrink unless the device allows exactly one size.
    if (max !== min) {
      if (cap !== undefined) num = Math.min(num, Math.max(cap, min));
      num = Math.min(num, MAX_QUEUE_SIZE);
      if (format === "split") num = 2 ** Math.floor(Math.log2(num));
    }
    if (num < min) throw new VdpaError("ENOMEM", `${this.name}: no ring size for queue ${index}`);
    try {
      return createDriverRing<number>(format, {
        num,
        pool: this.pool,
        eventIdx: hasFeature(f, VIRTIO_RING_F_EVENT_IDX),
        indirect: hasFeature(f, VIRTIO_F_INDIRECT_DESC),
      });
    } catch (err) {
      // Linux: vring creation failed -> ENOMEM (a bad size or no memory).
      throw new VdpaError("ENOMEM", `${this.name}: queue ${index}: ${(err as Error).message}`);
    }
  }

  /** Linux virtio_vdpa_del_vqs: per queue set_vq_ready(0) (best effort), then its ring memory freed. */
  delVqs(): void {
    const queues = this.queueList;
    this.queueList = [];
    for (const q of queues) {
      q.alive = false;
      this.stopVq(q.index);
      this.releaseRing(q.ring);
    }
  }

  private stopVq(index: number): void {
    try {
      this.vdpa.ops.setVqReady(index, false);
    } catch {
      // Best effort, as Linux.
    }
  }

  private releaseRing(ring: VirtioVdpaQueue["ring"]): void {
    for (const b of ring.dmaBuffers) this.pool.release(b);
  }

  // ---- DMA ----

  allocDma(size: number, align?: number): DmaBuffer {
    return this.pool.alloc(size, align);
  }

  freeDma(buf: DmaBuffer): void {
    this.pool.release(buf);
  }

  /**
   * Maps the pool into every address space the device can use (see the header: our divergence from
   * Linux). Undoes what it did when a mapping fails.
   */
  mapPool(): void {
    const dev = this.vdpa;
    const ops = dev.ops;
    const pool = this.pool;
    if (dev.dmaModel === "platform") {
      const domain = dev.platformDomain;
      if (!domain) throw new VdpaError("ENODEV", `${this.name}: no platform IOMMU domain attached`);
      pool.mapInto(domain.iotlb);
    } else if (dev.dmaModel === "set_map") {
      const table = new Iotlb(`virtio_vdpa:${this.name}`);
      pool.mapInto(table);
      try {
        for (let asid = 0; asid < dev.nas; asid++) ops.setMap!(asid, table);
      } catch (err) {
        this.mapped = true;
        this.unmapPool();
        throw err;
      }
    } else {
      try {
        for (let asid = 0; asid < dev.nas; asid++) {
          ops.dmaMap!(asid, pool.iovaBase, pool.size, pool.region, 0, PERM_RW);
        }
      } catch (err) {
        this.mapped = true;
        this.unmapPool();
        throw err;
      }
    }
    this.mapped = true;
  }

  /** Removes the pool from every address space (best effort: the device may already be gone). */
  unmapPool(): void {
    if (!this.mapped) return;
    this.mapped = false;
    const dev = this.vdpa;
    const ops = dev.ops;
    const pool = this.pool;
    const attempt = (fn: () => void): void => {
      try {
        fn();
      } catch {
        // Nothing was mapped there, or the device refuses: nothing more to do.
      }
    };
    if (dev.dmaModel === "platform") {
      const domain = dev.platformDomain;
      if (domain) attempt(() => pool.unmapFrom(domain.iotlb));
      return;
    }
    for (let asid = 0; asid < dev.nas; asid++) {
      if (dev.dmaModel === "set_map") attempt(() => ops.setMap!(asid, new Iotlb("virtio_vdpa:empty")));
      else attempt(() => ops.dmaUnmap!(asid, pool.iovaBase, pool.size));
    }
  }

  // ---- Lifecycle ----

  /**
   * After the virtio driver was removed: nothing may reach it any more, the device is reset (flags 0)
   * and stops, its queues are deleted and the pool unmapped.
   */
  shutdown(): void {
    if (this.removed) return;
    this.removed = true;
    this.configHandler = null;
    try {
      this.vdpa.ops.setConfigCb(null);
      this.reset();
    } finally {
      this.delVqs();
      this.unmapPool();
    }
  }

  /** Whether the transport was shut down (its vDPA device left virtio_vdpa). */
  get isRemoved(): boolean {
    return this.removed;
  }

  private checkAlive(): void {
    if (this.removed) throw new VdpaError("ENODEV", `${this.name}: removed from virtio_vdpa`);
  }

  /** The vDPA config callback (Linux virtio_vdpa_config_cb -> virtio_config_changed), deferred. */
  private readonly configInterrupt = (): void => {
    if (this.configPending) return;
    this.configPending = true;
    setImmediate(() => {
      this.configPending = false;
      const handler = this.configHandler;
      if (!handler || this.removed) return;
      try {
        handler();
      } catch {
        this.configHandlerErrors++;
      }
    });
  };
}

/** The virtio_vdpa bus driver: one VirtioVdpaDevice per bound vDPA device, on a virtio bus. */
export class VirtioVdpaDriver implements VdpaDriver {
  readonly name = "virtio_vdpa";
  private readonly transports = new Map<VdpaDevice, VirtioVdpaDevice>();

  constructor(
    readonly virtioBus: VirtioBus,
    private readonly opts: VirtioVdpaOptions = {},
  ) {}

  /**
   * Linux virtio_vdpa_probe: device id 0 is EINVAL; otherwise the transport is made, its DMA pool mapped
   * (our addition) and the device registered on the virtio bus, where a virtio driver may bind it.
   */
  probe(dev: VdpaDevice): void {
    if (dev.ops.getDeviceId() === 0) throw new VdpaError("EINVAL");
    const transport = new VirtioVdpaDevice(dev, this.opts);
    transport.mapPool();
    try {
      this.virtioBus.registerDevice(transport);
    } catch (err) {
      transport.unmapPool();
      throw err;
    }
    this.transports.set(dev, transport);
  }

  /**
   * Linux virtio_vdpa_remove: the virtio device leaves the virtio bus (its driver's remove runs first);
   * then, our cleanup, the device is reset, its queues deleted and the pool unmapped.
   */
  remove(dev: VdpaDevice): void {
    const transport = this.transports.get(dev);
    if (!transport) return;
    this.transports.delete(dev);
    try {
      this.virtioBus.unregisterDevice(transport);
    } finally {
      transport.shutdown();
    }
  }

  /** The virtio transport of a bound device. */
  get(dev: VdpaDevice): VirtioVdpaDevice | undefined {
    return this.transports.get(dev);
  }
}
