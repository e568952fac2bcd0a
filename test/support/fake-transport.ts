// A VirtioTransport played by the test itself: the transport owns a DMA pool mapped into an IOTLB, builds
// the driver side of each ring with createDriverRing and the matching device side with createDeviceRing,
// and lets the test answer requests with DeviceRing pop/push. The drivers under test see only the
// VirtioTransport interface, so passing here shows they cannot reach the device any other way.
//
// Like a real transport, nothing runs inside the caller's stack: a notify schedules the test's queue
// handler, and used-buffer and config-change callbacks fire from the event loop (setImmediate).

import { AddressSpace, type DmaBuffer, DmaPool, Iotlb } from "../../src/memory/index.js";
import {
  Chain,
  createDeviceRing,
  createDriverRing,
  type DeviceRing,
  type DriverRing,
  type RingFormat,
} from "../../src/ring/index.js";
import {
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_TRANSPORT_F_END,
  VIRTIO_TRANSPORT_F_START,
} from "../../src/spec/index.js";
import type { TransportQueue, VirtioTransport, VirtqueueInfo } from "../../src/virtio/transport.js";

const bit = (n: number): bigint => 1n << BigInt(n);

/** The ring features this transport implements; other transport bits are dropped at finalizeFeatures. */
const TRANSPORT_FEATURES =
  bit(VIRTIO_F_INDIRECT_DESC) |
  bit(VIRTIO_RING_F_EVENT_IDX) |
  bit(VIRTIO_F_RING_PACKED) |
  bit(VIRTIO_F_VERSION_1) |
  bit(VIRTIO_F_ACCESS_PLATFORM);

let transportsMade = 0;

export interface FakeTransportOptions {
  deviceId: number;
  /** Features the device offers. */
  features: bigint;
  /** Initial config space (copied). */
  config: Uint8Array;
  /** Largest ring the device allows (default 64). */
  queueMax?: number;
  /** Pool bytes (default 8 MiB). */
  poolSize?: number;
  /** The device's answer to FEATURES_OK: false leaves the bit clear, as a device refusing the set. */
  acceptFeatures?: (features: bigint) => boolean;
}

/** One queue as both sides see it. */
export class FakeQueue implements TransportQueue {
  readonly device: DeviceRing;
  /** A chain to pop into, for handlers that answer one request at a time. */
  readonly chain = new Chain();
  /** False once the transport was reset or the queues deleted: the device must not touch it. */
  alive = true;
  notifies = 0;
  callbacksFired = 0;
  private notifyScheduled = false;
  private callbackScheduled = false;

  constructor(
    private readonly transport: FakeTransport,
    readonly index: number,
    readonly name: string,
    readonly ring: DriverRing<number> & { readonly dmaBuffers: readonly DmaBuffer[] },
    readonly callback: (() => void) | null,
    space: AddressSpace,
    eventIdx: boolean,
  ) {
    this.device = createDeviceRing(ring.format, {
      num: ring.num,
      addresses: ring.addresses,
      ringSpace: space,
      eventIdx,
    });
  }

  get size(): number {
    return this.ring.num;
  }

  notify(): void {
    this.notifies++;
    if ((this.transport.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK) === 0) this.transport.earlyNotifies++;
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    setImmediate(() => {
      this.notifyScheduled = false;
      if (this.alive && !this.transport.paused.has(this.index)) this.transport.runHandler(this);
    });
  }

  /** Publishes pushed used elements and, when the ring asks for it, calls the driver back later. */
  publish(): void {
    if (!this.alive) return;
    if (this.device.publishUsed()) this.interrupt();
  }

  /** Calls the driver's callback from the event loop (coalesced like an interrupt). */
  interrupt(): void {
    if (this.callbackScheduled || !this.callback) return;
    this.callbackScheduled = true;
    setImmediate(() => {
      this.callbackScheduled = false;
      if (!this.alive) return;
      this.callbacksFired++;
      this.callback?.();
    });
  }
}

/** Answers the requests of one queue; called from the event loop after the driver notified it. */
export type QueueHandler = (queue: FakeQueue, transport: FakeTransport) => void;

export class FakeTransport implements VirtioTransport {
  readonly name: string;
  readonly deviceId: number;
  readonly vendorId = 0x1af4;
  readonly pool: DmaPool;
  readonly iotlb: Iotlb;
  readonly space: AddressSpace;
  config: Uint8Array;
  offered: bigint;
  features = 0n;
  status = 0;
  configGeneration = 0;
  /** Every status write and reset, in order, e.g. ["reset", "status 1", "status 3", ...]. */
  readonly log: string[] = [];
  /** Queues of the current findVqs (empty after delVqs). */
  queues: FakeQueue[] = [];
  /** Notifies made before DRIVER_OK (a driver bug). */
  earlyNotifies = 0;
  /** Queue indices whose handler is held back (the device is "busy"); see resume(). */
  readonly paused = new Set<number>();
  /** The driver's pool blocks outside rings, for leak checks. */
  private readonly driverDma = new Set<number>();
  private readonly handlers = new Map<number, QueueHandler>();
  private readonly queueMax: number;
  private readonly acceptFeatures: (features: bigint) => boolean;
  private configCb: (() => void) | null = null;

  constructor(opts: FakeTransportOptions) {
    transportsMade++;
    this.name = `fake${transportsMade}`;
    this.deviceId = opts.deviceId;
    this.offered = opts.features;
    this.config = Uint8Array.from(opts.config);
    this.queueMax = opts.queueMax ?? 64;
    this.acceptFeatures = opts.acceptFeatures ?? (() => true);
    const poolSize = opts.poolSize ?? 8 << 20;
    this.pool = new DmaPool({ size: poolSize, iovaBase: 0x8000_0000, name: `${this.name}-pool` });
    this.iotlb = new Iotlb(`${this.name}-iotlb`);
    this.pool.mapInto(this.iotlb);
    this.space = new AddressSpace(this.iotlb);
  }

  /** The ring format the negotiated features select. */
  get format(): RingFormat {
    return this.features & bit(VIRTIO_F_RING_PACKED) ? "packed" : "split";
  }

  /** Sets the function that answers queue `index` after each notify. */
  handle(index: number, handler: QueueHandler): this {
    this.handlers.set(index, handler);
    return this;
  }

  /** Holds queue `index`: notifies are counted but not answered until resume(). */
  pause(index: number): void {
    this.paused.add(index);
  }

  /** Releases a paused queue and answers what arrived meanwhile (from the event loop). */
  resume(index: number): void {
    this.paused.delete(index);
    const q = this.queues[index];
    if (q) setImmediate(() => q.alive && !this.paused.has(index) && this.runHandler(q));
  }

  /** Runs the handler of `q` now (normally after a notify). */
  runHandler(q: FakeQueue): void {
    this.handlers.get(q.index)?.(q, this);
  }

  /** The queue with `index` of the current set (throws when there is none). */
  queue(index: number): FakeQueue {
    const q = this.queues[index];
    if (!q) throw new Error(`no queue ${index}`);
    return q;
  }

  /** Changes config bytes and the generation, then signals a config change from the event loop. */
  changeConfig(offset: number, data: Uint8Array): void {
    this.config.set(data, offset);
    this.configGeneration++;
    this.configChanged();
  }

  /** Sets NEEDS_RESET and signals it, as a device that hit an error it cannot recover from. */
  needsReset(): void {
    this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    this.log.push("needs-reset");
    this.configChanged();
  }

  configChanged(): void {
    setImmediate(() => this.configCb?.());
  }

  /** Pool blocks the driver holds through allocDma (rings excluded). */
  get driverDmaBlocks(): number {
    return this.driverDma.size;
  }

  // ---- VirtioTransport ----

  getFeatures(): bigint {
    return this.offered;
  }

  finalizeFeatures(features: bigint): bigint {
    if (features & ~this.offered) {
      throw new Error(`driver asked for features the device does not offer: 0x${features.toString(16)}`);
    }
    // Device bits pass through; of the transport range (28..42) only what this transport implements.
    const transportRange = bit(VIRTIO_TRANSPORT_F_END + 1) - bit(VIRTIO_TRANSPORT_F_START);
    const kept = (features & ~transportRange) | (features & TRANSPORT_FEATURES);
    this.features = kept;
    this.log.push(`features 0x${kept.toString(16)}`);
    return kept;
  }

  getStatus(): number {
    return this.status;
  }

  setStatus(status: number): void {
    let s = status;
    if (s & VIRTIO_CONFIG_S_FEATURES_OK && !this.acceptFeatures(this.features)) {
      s &= ~VIRTIO_CONFIG_S_FEATURES_OK;
    }
    this.status |= s;
    this.log.push(`status ${status}`);
  }

  reset(): void {
    this.status = 0;
    this.features = 0n;
    for (const q of this.queues) q.alive = false;
    this.log.push("reset");
  }

  getConfig(offset: number, len: number): Uint8Array {
    if (offset < 0 || offset + len > this.config.length) throw new RangeError("config read out of range");
    return this.config.slice(offset, offset + len);
  }

  setConfig(offset: number, data: Uint8Array): void {
    this.config.set(data, offset);
  }

  generation(): number {
    return this.configGeneration;
  }

  findVqs(infos: VirtqueueInfo[], opts: { size?: number } = {}): (TransportQueue | null)[] {
    if ((this.status & VIRTIO_CONFIG_S_FEATURES_OK) === 0) throw new Error("findVqs before FEATURES_OK");
    if (this.queues.length > 0) throw new Error("findVqs with queues already set up");
    const num = Math.min(opts.size ?? this.queueMax, this.queueMax);
    const eventIdx = (this.features & bit(VIRTIO_RING_F_EVENT_IDX)) !== 0n;
    const indirect = (this.features & bit(VIRTIO_F_INDIRECT_DESC)) !== 0n;
    const out: (FakeQueue | null)[] = [];
    let index = 0;
    for (const info of infos) {
      if (info.name === null) {
        out.push(null);
        continue;
      }
      const ring = createDriverRing<number>(this.format, { num, pool: this.pool, eventIdx, indirect });
      const q = new FakeQueue(this, index, info.name, ring, info.callback, this.space, eventIdx);
      this.queues[index] = q;
      out.push(q);
      index++;
    }
    this.log.push(`findVqs ${out.map((q) => q?.name ?? "-").join(",")}`);
    return out;
  }

  delVqs(): void {
    for (const q of this.queues) {
      q.alive = false;
      for (const b of q.ring.dmaBuffers) this.pool.release(b);
    }
    this.queues = [];
    this.log.push("delVqs");
  }

  onConfigChange(cb: (() => void) | null): void {
    this.configCb = cb;
  }

  allocDma(size: number, align?: number): DmaBuffer {
    const b = this.pool.alloc(size, align);
    this.driverDma.add(b.iova);
    return b;
  }

  freeDma(buf: DmaBuffer): void {
    this.driverDma.delete(buf.iova);
    this.pool.release(buf);
  }
}

/** Resolves after the event loop has run `turns` times (callbacks and handlers are setImmediate). */
export async function settle(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((r) => setImmediate(r));
}
