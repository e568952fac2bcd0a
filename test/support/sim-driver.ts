// A small bus driver for tests: drives a vDPA device through its ops the way virtio_vdpa does (reset,
// ACKNOWLEDGE, DRIVER, features, FEATURES_OK, DMA mappings, queues, DRIVER_OK), with the driver side of
// each ring from src/ring, and sends requests whose buffers come from the same DMA pool.

import { type DmaBuffer, DmaPool, Iotlb, PERM_RW } from "../../src/memory/index.js";
import { BufferList, createDriverRing, type DriverRing, type RingFormat } from "../../src/ring/index.js";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../src/spec/index.js";
import { VdpaBus, type VdpaDevice } from "../../src/vdpa/index.js";

const bit = (n: number): bigint => 1n << BigInt(n);

/** One request in flight or returned: its buffers, and what the device reported. */
export interface SimRequest {
  readonly queue: number;
  readonly outs: DmaBuffer[];
  readonly ins: DmaBuffer[];
  /** Used length, once the device returned the request. */
  usedLen: number;
  /** Bytes the device wrote: the in buffers concatenated, cut at usedLen. */
  written(): Buffer;
}

export interface SimDriverOptions {
  format: RingFormat;
  /** Negotiate EVENT_IDX (the device must offer it). */
  eventIdx?: boolean;
  /** Negotiate INDIRECT_DESC and add multi-buffer requests as indirect tables. */
  indirect?: boolean;
  /** Queue size (default 16). */
  num?: number;
  /** One pool per ASID (index = ASID). Default: one pool, mapped into every ASID the device has. */
  pools?: DmaPool[];
  /** setGroupAsid(group, asid) calls made before the queues are set up. */
  groupAsid?: [group: number, asid: number][];
  /** Features to leave out of the negotiation. */
  withoutFeatures?: bigint;
  /** Queues to set up (default: all). */
  queues?: number[];
  /**
   * Queue -> the pool its ring and buffers come from, when it must differ from its ASID's pool (to build
   * a queue whose memory its ASID does not map).
   */
  queuePool?: Map<number, DmaPool>;
}

export class SimDriver {
  readonly pools: DmaPool[];
  readonly rings = new Map<number, DriverRing<SimRequest>>();
  /** Used-buffer callbacks per queue. */
  readonly callbacks: number[];
  /** Config-change callbacks (NEEDS_RESET reports). */
  configChanges = 0;
  features = 0n;
  /** Whether the last publish of each queue asked for a kick. */
  readonly kickWanted = new Map<number, boolean>();
  private readonly groupAsid: number[];

  constructor(
    readonly device: VdpaDevice,
    readonly opts: SimDriverOptions,
  ) {
    this.pools = opts.pools ?? [new DmaPool({ size: 1 << 20, name: "sim-driver-pool" })];
    this.callbacks = new Array<number>(device.nvqs).fill(0);
    this.groupAsid = new Array<number>(device.ngroups).fill(0);
  }

  get ops() {
    return this.device.ops;
  }

  /** virtio_vdpa's bring-up, in its order. Throws what the device refuses. */
  start(): this {
    const dev = this.device;
    dev.reset();
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    this.features = this.wantedFeatures();
    dev.setFeatures(this.features);
    dev.setStatus(dev.getStatus() | VIRTIO_CONFIG_S_FEATURES_OK);
    if (!(dev.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK)) throw new Error("device refused FEATURES_OK");
    this.mapPools();
    for (const [group, asid] of this.opts.groupAsid ?? []) {
      this.ops.setGroupAsid!(group, asid);
      this.groupAsid[group] = asid;
    }
    this.ops.setConfigCb({ callback: () => this.configChanges++ });
    for (const q of this.opts.queues ?? [...Array(dev.nvqs).keys()]) this.setupQueue(q);
    dev.setStatus(dev.getStatus() | VIRTIO_CONFIG_S_DRIVER_OK);
    return this;
  }

  private wantedFeatures(): bigint {
    let drop = this.opts.withoutFeatures ?? 0n;
    if (this.opts.format !== "packed") drop |= bit(VIRTIO_F_RING_PACKED);
    if (!this.opts.eventIdx) drop |= bit(VIRTIO_RING_F_EVENT_IDX);
    if (!this.opts.indirect) drop |= bit(VIRTIO_F_INDIRECT_DESC);
    const offered = this.ops.getDeviceFeatures();
    if (this.opts.format === "packed" && !(offered & bit(VIRTIO_F_RING_PACKED))) {
      throw new Error("the device does not offer RING_PACKED");
    }
    return offered & ~drop;
  }

  /** Maps the pools the way the device's DMA model wants. */
  mapPools(): void {
    const dev = this.device;
    if (dev.dmaModel === "platform") {
      // The bus attaches the platform IOMMU domain at registration.
      if (!dev.platformDomain) new VdpaBus().registerDevice(dev);
      dev.platformDomain!.iotlb.begin();
      for (const pool of this.pools) pool.mapInto(dev.platformDomain!.iotlb);
      dev.platformDomain!.iotlb.commit();
      return;
    }
    for (let asid = 0; asid < dev.nas; asid++) {
      const pools = this.opts.pools ? [this.pools[asid]].filter((p) => p) : this.pools;
      if (dev.dmaModel === "set_map") {
        const iotlb = new Iotlb(`driver:asid${asid}`);
        for (const pool of pools) pool.mapInto(iotlb);
        this.ops.setMap!(asid, iotlb);
      } else {
        for (const pool of pools) this.ops.dmaMap!(asid, pool.iovaBase, pool.size, pool.region, 0, PERM_RW);
      }
    }
  }

  /** The pool queue `q` allocates from: its override, else its ASID's pool, else the first. */
  poolOf(q: number): DmaPool {
    const override = this.opts.queuePool?.get(q);
    if (override) return override;
    const group = this.ops.getVqGroup?.(q) ?? 0;
    return this.pools[this.groupAsid[group]] ?? this.pools[0];
  }

  /** virtio_vdpa setup_vq: callback, size, addresses, initial state, ready. */
  private setupQueue(q: number): void {
    const num = this.opts.num ?? 16;
    const ring = createDriverRing<SimRequest>(this.opts.format, {
      num,
      pool: this.poolOf(q),
      eventIdx: this.opts.eventIdx ?? false,
      indirect: this.opts.indirect ?? false,
    });
    this.rings.set(q, ring);
    const ops = this.ops;
    ops.setVqCb(q, { callback: () => this.callbacks[q]++ });
    ops.setVqNum(q, num);
    ops.setVqAddress(q, ring.addresses.desc, ring.addresses.driver, ring.addresses.device);
    ops.setVqState(
      q,
      this.opts.format === "packed"
        ? { packed: { lastAvailCounter: 1, lastAvailIdx: 0, lastUsedCounter: 1, lastUsedIdx: 0 } }
        : { split: { availIndex: 0 } },
    );
    ops.setVqReady(q, true);
  }

  /**
   * Adds a request to queue `q`: each `outs` entry becomes a device-readable buffer holding those bytes,
   * each `inLens` entry a device-writable buffer of that size. Published, not kicked.
   */
  send(q: number, outs: Uint8Array[], inLens: number[] = []): SimRequest {
    const pool = this.poolOf(q);
    const outBufs = outs.map((bytes) => {
      const b = pool.alloc(Math.max(bytes.length, 1), 16);
      b.bytes.set(bytes);
      return b;
    });
    const inBufs = inLens.map((len) => pool.alloc(Math.max(len, 1), 16));
    const bufs = new BufferList();
    for (const [i, b] of outBufs.entries()) bufs.out(b.iova, outs[i].length);
    for (const [i, b] of inBufs.entries()) bufs.in(b.iova, inLens[i]);
    return this.addRequest(q, bufs, outBufs, inBufs);
  }

  /** Adds a request made of raw (iova, len) buffers, for hostile descriptors. */
  sendRaw(
    q: number,
    outs: [iova: number, len: number][],
    ins: [iova: number, len: number][] = [],
  ): SimRequest {
    const bufs = new BufferList();
    for (const [iova, len] of outs) bufs.out(iova, len);
    for (const [iova, len] of ins) bufs.in(iova, len);
    return this.addRequest(q, bufs, [], []);
  }

  private addRequest(q: number, bufs: BufferList, outs: DmaBuffer[], ins: DmaBuffer[]): SimRequest {
    const ring = this.ringOf(q);
    const req: SimRequest = {
      queue: q,
      outs,
      ins,
      usedLen: -1,
      written() {
        const all = Buffer.concat(ins.map((b) => b.bytes));
        return all.subarray(0, Math.max(this.usedLen, 0));
      },
    };
    if (!ring.add(bufs, req, this.opts.indirect ?? false)) throw new Error(`queue ${q} is full`);
    this.kickWanted.set(q, ring.publishAvail());
    return req;
  }

  /** The driver's notification (virtio_vdpa's notify: kick_vq). */
  kick(q: number): void {
    this.ops.kickVq(q);
  }

  /** Kicks when the last publish asked for it (EVENT_IDX / NO_NOTIFY honoured). */
  kickIfWanted(q: number): boolean {
    const wanted = this.kickWanted.get(q) ?? false;
    if (wanted) this.kick(q);
    return wanted;
  }

  /** Every request the device returned on `q` so far, with usedLen filled in. */
  collect(q: number): SimRequest[] {
    const ring = this.ringOf(q);
    const out: SimRequest[] = [];
    for (let req = ring.getUsed(); req; req = ring.getUsed()) {
      req.usedLen = ring.usedLen;
      out.push(req);
    }
    return out;
  }

  ringOf(q: number): DriverRing<SimRequest> {
    const ring = this.rings.get(q);
    if (!ring) throw new Error(`queue ${q} is not set up`);
    return ring;
  }
}
