// The vDPA device simulator core (Linux drivers/vdpa/vdpa_sim/vdpa_sim.c): one VdpaConfigOps
// implementation shared by every simulated device type. A device type (net.ts, blk.ts) supplies a
// VdpaSimDevAttr, as Linux's types fill a `struct vdpasim_dev_attr`: device id, offered features, queue
// and group counts, config layout with its refresh hooks, a work function, vendor statistics.
//
// What differs from Linux, on purpose:
// - IOTLBs start EMPTY: Linux seeds each ASID with an identity map because the kernel DMA API hands the
//   simulator physical addresses; here a device reaches only what its current user mapped (ARCHITECTURE,
//   "Addresses and isolation"). resetMap() and compatReset(CLEAN_MAP) restore that default: empty.
// - The DMA model is chosen at creation ("set_map", "dma_map" or "platform"); Linux picks set_map or
//   dma_map with its batch_mapping module parameter and has no platform variant.
// - RING_PACKED, EVENT_IDX and INDIRECT_DESC can be offered (Linux's simulator is split only and offers
//   none of them); the device types offer them only when asked, so what Linux shows stays what we show.
// - A ring fault stops that queue and sets NEEDS_RESET with a config interrupt; Linux's vringh reports an
//   error to the work function, which counts it and retries on the next kick.
//
// Execution: a kick never runs the device. It schedules one run of the work function with setImmediate,
// not queueMicrotask: a work function that re-schedules itself after its batch (Linux: "more than N
// requests, requeue the work") must let the event loop poll sockets and timers in between, and a chain of
// microtasks would starve them. A run that throws is caught here: nothing escapes into the event loop.
//
// Polling while busy (our addition; Linux's vhost-net has the same idea as busyloop_timeout): a run that
// completed something suppresses the driver's notifications on every ring and runs again on the next
// event loop turn, so a busy driver adds buffers without kicking and the device finds them without a
// wake-up (an eventfd kick, an epoll wake and a scheduled run cost more here than the ring work of a
// whole burst). After `pollMicros` without progress the device makes one last run in which an empty
// queue re-enables its notifications and looks again (vhost's enable-then-recheck), and then sleeps
// until a kick. pollMicros 0 is Linux's behaviour: notifications always on, a run per kick.

import {
  ACCESS_READ,
  type AddressSpace,
  DmaFault,
  IOVA_LAST,
  Iotlb,
  type MemoryRegion,
  type Perm,
  type SegmentList,
} from "../../memory/index.js";
import type { DeviceRing, RingFormat, RingState } from "../../ring/index.js";
import { type Chain, createDeviceRing, isDatapathFault } from "../../ring/index.js";
import {
  hasFeature,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../spec/index.js";
import {
  type IovaRange,
  VDPA_RESET_F_CLEAN_MAP,
  type VdpaCallback,
  type VdpaConfigOps,
  type VendorStat,
  type VqState,
} from "../../vdpa/config-ops.js";
import type { VdpaDevice } from "../../vdpa/device.js";
import { type DmaModel, GroupAddressSpaces } from "../../vdpa/dma.js";
import { VdpaError } from "../../vdpa/errors.js";

/** Linux VDPASIM_QUEUE_ALIGN (PAGE_SIZE on x86-64). */
export const VDPASIM_QUEUE_ALIGN = 4096;
/** Linux VDPASIM_QUEUE_MAX: largest queue size; the simulator has no minimum (1). */
export const VDPASIM_QUEUE_MAX = 256;
/** Linux VDPASIM_VENDOR_ID. */
export const VDPASIM_VENDOR_ID = 0;
/** Linux VDPASIM_FEATURES: what every simulated device offers besides its class bits. */
export const VDPASIM_FEATURES =
  (1n << BigInt(VIRTIO_F_ANY_LAYOUT)) |
  (1n << BigInt(VIRTIO_F_VERSION_1)) |
  (1n << BigInt(VIRTIO_F_ACCESS_PLATFORM));
/**
 * Ring features our simulator can offer beyond Linux's: RING_PACKED, EVENT_IDX, INDIRECT_DESC. Offered
 * only on request (a device type's option, or provisioned device features), never by default.
 */
export const VDPASIM_RING_OPTION_FEATURES =
  (1n << BigInt(VIRTIO_F_RING_PACKED)) |
  (1n << BigInt(VIRTIO_RING_F_EVENT_IDX)) |
  (1n << BigInt(VIRTIO_F_INDIRECT_DESC));
/** vhost VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK, the only backend feature Linux's simulator reports. */
export const VDPASIM_BACKEND_FEATURES = 1n << 6n;
/**
 * Requests a work function handles per run before it asks to be run again. Linux requeues after 5
 * (`> 4`); a kthread requeue is nearly free, while here every re-run is an event loop turn with a poll
 * system call, so batches are bigger. Re-running still lets sockets and timers in between.
 */
export const VDPASIM_WORK_BATCH = 64;
/**
 * How long a device that was busy keeps polling its rings with notifications suppressed before it
 * sleeps on kicks again. About the cost of two wake-ups here: shorter and a steady driver's gaps
 * between bursts each cost a kick; longer only burns CPU after the traffic stops.
 */
export const VDPASIM_POLL_MICROS = 50;
/**
 * A queue's used elements are published (used.idx moved) after this many completions even in the middle
 * of a run, so a driver on another core starts on the first buffers while the device works on the rest.
 * The driver's callback, if it wants one, still comes once, at the end of the run.
 */
export const VDPASIM_PUBLISH_BATCH = 16;

/**
 * What a simulated device type supplies (Linux `struct vdpasim_dev_attr`). The object also carries the
 * type's own state (statistics, storage), since `this` is the device type.
 */
export interface VdpaSimDevAttr {
  /** Virtio device id (1 net, 2 block). */
  readonly id: number;
  /** Features offered (get_device_features), after provisioning. */
  readonly supportedFeatures: bigint;
  readonly nvqs: number;
  /** Virtqueue groups and address spaces with a device-owned IOTLB; the platform model forces 1 and 1. */
  readonly ngroups: number;
  readonly nas: number;
  /** Bytes of config space. */
  readonly configSize: number;
  /** Group of queue `idx` (get_vq_group); 0 when absent. */
  vqGroup?(idx: number): number;
  /** Refreshes `config` before every read (Linux get_config hook). */
  getConfig?(sim: VdpaSim, config: Uint8Array): void;
  /** Called after the driver wrote `config` (Linux set_config hook). */
  setConfig?(sim: VdpaSim, config: Uint8Array): void;
  /**
   * Processes the queues; called only while the device runs (DRIVER_OK and not suspended). Returns true
   * when it stopped at sim.workBatch with work left, to be run again. Faults on a queue are handled by
   * sim.getDesc/sim.complete; anything else it throws stops the whole device (NEEDS_RESET).
   */
  work(sim: VdpaSim): boolean;
  /** Vendor statistics of queue `idx`; throws EINVAL for a queue without any. Absent: EOPNOTSUPP. */
  vendorVqStats?(sim: VdpaSim, idx: number): VendorStat[];
  /** Releases the type's resources (Linux dev_attr free hook). */
  free?(sim: VdpaSim): void;
}

/** A fault that stopped a queue (queue >= 0) or the whole device (queue -1), for observability. */
export interface SimFault {
  readonly queue: number;
  /** RingError / DmaFault code (DESC_LOOP, IOTLB_MISS, ...), or DEVICE_ERROR for anything else. */
  readonly code: string;
  readonly message: string;
}

/** Ring position before any ring exists: split index 0, packed wrap counters 1 (virtio's initial state). */
function initialRingState(): RingState {
  return { availIdx: 0, usedIdx: 0, availWrap: 1, usedWrap: 1 };
}

/** One virtqueue as the simulator keeps it (Linux `struct vdpasim_virtqueue`). */
export class SimVirtqueue {
  /** Size set by set_vq_num; kept across reset, as Linux does. */
  num = 0;
  descArea = 0;
  driverArea = 0;
  deviceArea = 0;
  ready = false;
  cb: VdpaCallback | null = null;
  /** The ring engine, built when the queue becomes ready with the negotiated format. */
  ring: DeviceRing | null = null;
  /** Position while no ring exists: set before ready, or saved when the queue stops being ready. */
  state: RingState = initialRingState();
  /** The fault that stopped this queue; it stays stopped until reset. */
  fault: SimFault | null = null;
  /** Used elements pushed and not yet published. */
  pendingUsed = 0;
  /** A publish in this run asked for the driver to be notified; the callback comes at the run's end. */
  notifyPending = false;

  constructor(readonly index: number) {}

  reset(): void {
    this.ready = false;
    this.descArea = this.driverArea = this.deviceArea = 0;
    // Linux's vdpasim_vq_reset drops the callback too; the driver installs it again at setup.
    this.cb = null;
    this.ring = null;
    this.state = initialRingState();
    this.fault = null;
    this.pendingUsed = 0;
    this.notifyPending = false;
  }
}

/** Options of the vdpasim management devices (vdpasimNetMgmtDev, vdpasimBlkMgmtDev). */
export interface SimMgmtDevOptions {
  /** DMA model of the devices it creates; default "set_map". */
  dmaModel?: DmaModel;
  /** Busy-poll time of the devices it creates, in microseconds (default VDPASIM_POLL_MICROS). */
  pollMicros?: number;
}

export interface VdpaSimOptions {
  /** Used in IOTLB names and messages. */
  name?: string;
  /** Default "set_map", Linux's default (batch_mapping=1). */
  dmaModel?: DmaModel;
  /** Requests per work run (default VDPASIM_WORK_BATCH). */
  workBatch?: number;
  /** Busy-poll time after the last progress, in microseconds (default VDPASIM_POLL_MICROS; 0: never). */
  pollMicros?: number;
}

/**
 * The simulator core for the platform DMA model: it implements neither setMap nor dmaMap/dmaUnmap, so
 * VdpaDevice sees a platform-translated device and the bus attaches an IOMMU domain at registration.
 * createVdpaSim() returns the subclass matching the requested model.
 */
export class VdpaSim implements VdpaConfigOps {
  readonly name: string;
  readonly dmaModel: DmaModel;
  readonly workBatch: number;
  /** Busy-poll time in microseconds (see the file's comment); 0 turns polling off. */
  readonly pollMicros: number;
  readonly vqs: SimVirtqueue[];
  /** Config space; device types refresh it in getConfig and may write it (CVQ MAC, dev set). */
  readonly config: Uint8Array;
  /** Groups and address spaces as VdpaDevice must be built with (1 and 1 in the platform model). */
  readonly ngroups: number;
  readonly nas: number;

  /** Status byte; NEEDS_RESET is set by the device and survives driver writes until reset. */
  status = 0;
  /** Negotiated features (driver features & offered). */
  /** Negotiated features (bigint: control path only). */
  private negotiatedFeatures = 0n;
  /** The same, bits 0-31 and 32-63 as plain numbers: negotiated() runs per request. */
  private featuresLo = 0;
  private featuresHi = 0;

  get features(): bigint {
    return this.negotiatedFeatures;
  }

  set features(features: bigint) {
    this.negotiatedFeatures = features;
    this.featuresLo = Number(features & 0xffffffffn);
    this.featuresHi = Number((features >> 32n) & 0xffffffffn);
  }
  /** Linux's `running`: DRIVER_OK was written and the device is not suspended. */
  running = false;
  /** A kick arrived while suspended (or a run was skipped): resume() replays it. */
  pendingKick = false;
  generation = 0;
  configCb: VdpaCallback | null = null;
  /** The last fault that stopped a queue or the device, kept across reset for observability. */
  lastFault: SimFault | null = null;
  /** Set when the work function threw something other than a queue fault: no more runs until reset. */
  deviceBroken = false;
  /** Completed work runs (observability and tests). */
  workRuns = 0;
  /** Buffers completed (used elements pushed) since creation: a run's progress is its change. */
  completions = 0;
  /** True while the device polls its rings with the driver's notifications suppressed. */
  polling = false;
  /** Times the device went from polling back to sleeping on kicks (observability and tests). */
  pollSleeps = 0;
  /** performance.now() of the last run that completed something while polling. */
  private lastProgress = 0;
  /** Callbacks that threw (a driver bug); swallowed so the event loop survives. */
  callbackErrors = 0;

  /** The VdpaDevice wrapping this core, for the platform IOMMU domain the bus attaches to it. */
  protected device: VdpaDevice | null = null;
  protected spaces: GroupAddressSpaces | null = null;
  private scheduled: NodeJS.Immediate | null = null;
  private freed = false;

  constructor(
    readonly attr: VdpaSimDevAttr,
    opts: VdpaSimOptions = {},
  ) {
    this.name = opts.name ?? "vdpasim";
    this.dmaModel = opts.dmaModel ?? "set_map";
    this.workBatch = opts.workBatch ?? VDPASIM_WORK_BATCH;
    if (!Number.isInteger(this.workBatch) || this.workBatch < 1) {
      throw new VdpaError("EINVAL", `work batch ${opts.workBatch} must be a positive integer`);
    }
    this.pollMicros = opts.pollMicros ?? VDPASIM_POLL_MICROS;
    if (!(this.pollMicros >= 0 && this.pollMicros <= 1e6)) {
      throw new VdpaError("EINVAL", `poll time ${opts.pollMicros} us must be in 0..1000000`);
    }
    const platform = this.dmaModel === "platform";
    this.ngroups = platform ? 1 : attr.ngroups;
    this.nas = platform ? 1 : attr.nas;
    this.vqs = Array.from({ length: attr.nvqs }, (_, i) => new SimVirtqueue(i));
    this.config = new Uint8Array(attr.configSize);
  }

  /** Links the VdpaDevice built around this core (needed by the platform model; harmless otherwise). */
  setDevice(device: VdpaDevice): void {
    this.device = device;
  }

  /** True when feature `bit` was negotiated. */
  negotiated(bit: number): boolean {
    if (bit < 32) return ((this.featuresLo >>> bit) & 1) === 1;
    if (bit < 64) return ((this.featuresHi >>> (bit - 32)) & 1) === 1;
    return hasFeature(this.negotiatedFeatures, bit);
  }

  get ringFormat(): RingFormat {
    return this.negotiated(VIRTIO_F_RING_PACKED) ? "packed" : "split";
  }

  /**
   * The group address spaces; in the platform model they exist once the bus attached its domain (null
   * before, so nothing can be translated yet).
   */
  protected addressSpaces(): GroupAddressSpaces | null {
    if (this.spaces) return this.spaces;
    const domain = this.device?.platformDomain;
    if (domain) this.spaces = new GroupAddressSpaces(1, [domain.iotlb]);
    return this.spaces;
  }

  /** The IOTLB that ASID `asid` translates through (the bus domain's in the platform model), or null. */
  asidIotlb(asid: number): Iotlb | null {
    return this.addressSpaces()?.iotlb(asid) ?? null;
  }

  private vqAt(idx: number): SimVirtqueue {
    const vq = this.vqs[idx];
    if (!Number.isInteger(idx) || !vq) throw new VdpaError("EINVAL", `no virtqueue ${idx}`);
    return vq;
  }

  // ---- Virtqueues ----

  setVqAddress(idx: number, descArea: number, driverArea: number, deviceArea: number): void {
    const vq = this.vqAt(idx);
    vq.descArea = descArea;
    vq.driverArea = driverArea;
    vq.deviceArea = deviceArea;
  }

  setVqNum(idx: number, num: number): void {
    this.vqAt(idx).num = num;
  }

  /** Linux: while DRIVER_OK but not running (suspended) the kick is remembered, else a ready queue runs. */
  kickVq(idx: number): void {
    const vq = this.vqAt(idx);
    if (!this.running && this.status & VIRTIO_CONFIG_S_DRIVER_OK) {
      this.pendingKick = true;
      return;
    }
    if (vq.ready) this.schedule();
  }

  setVqCb(idx: number, cb: VdpaCallback | null): void {
    this.vqAt(idx).cb = cb;
  }

  /**
   * Linux builds the ring (vringh) on a false -> true transition, keeping the avail index and setting the
   * used index equal to it (no in-flight buffers are restored). A ring whose areas are not mapped yet is
   * built at the first run instead, so a mapping that arrives after ready still works; if it is still
   * missing then, the queue faults. A queue enabled after DRIVER_OK (vhost's ENABLE_AFTER_DRIVER_OK) gets
   * a run, which Linux leaves to the next kick: with EVENT_IDX that kick may never come.
   */
  setVqReady(idx: number, ready: boolean): void {
    const vq = this.vqAt(idx);
    const wasReady = vq.ready;
    vq.ready = ready;
    if (ready && !wasReady) {
      this.tryBuildRing(vq);
      if (this.running) this.schedule();
    } else if (!ready && wasReady) {
      if (vq.ring) vq.state = vq.ring.getState();
      vq.ring = null;
    }
  }

  getVqReady(idx: number): boolean {
    return this.vqAt(idx).ready;
  }

  /**
   * Before ready the state is kept and applied when the ring is built; on a ready queue it moves the ring
   * (Linux writes vringh's last_avail_idx directly). Split: availIndex; packed: both indices and counters.
   */
  setVqState(idx: number, state: VqState): void {
    const vq = this.vqAt(idx);
    const next = this.ringStateFrom(state, vq);
    if (vq.ring) {
      try {
        vq.ring.setState(next);
      } catch {
        throw new VdpaError("EINVAL", `bad ring state for a queue of ${vq.num}`);
      }
    } else {
      vq.state = next;
    }
  }

  private ringStateFrom(state: VqState, vq: SimVirtqueue): RingState {
    if (this.ringFormat === "packed") {
      const p = state.packed;
      if (!p) throw new VdpaError("EINVAL", "packed ring state expected");
      const idxOk = (n: number) => Number.isInteger(n) && n >= 0 && n <= 0x7fff;
      const bitOk = (n: number) => n === 0 || n === 1;
      if (
        !idxOk(p.lastAvailIdx) ||
        !idxOk(p.lastUsedIdx) ||
        !bitOk(p.lastAvailCounter) ||
        !bitOk(p.lastUsedCounter)
      ) {
        throw new VdpaError("EINVAL", "packed ring state out of range");
      }
      return {
        availIdx: p.lastAvailIdx,
        availWrap: p.lastAvailCounter,
        usedIdx: p.lastUsedIdx,
        usedWrap: p.lastUsedCounter,
      };
    }
    const s = state.split;
    if (!s || !Number.isInteger(s.availIndex) || s.availIndex < 0 || s.availIndex > 0xffff) {
      throw new VdpaError("EINVAL", "split ring state expected");
    }
    // Linux writes only the avail index; the used index follows it when the ring is (re)built.
    const usedIdx = vq.ring ? vq.ring.getState().usedIdx : s.availIndex;
    return { ...initialRingState(), availIdx: s.availIndex, usedIdx };
  }

  /** The ring's position when it exists, else the kept one. Stable while suspended or not ready. */
  getVqState(idx: number): VqState {
    const vq = this.vqAt(idx);
    const st = vq.ring ? vq.ring.getState() : vq.state;
    if (this.ringFormat === "packed") {
      return {
        packed: {
          lastAvailIdx: st.availIdx,
          lastAvailCounter: st.availWrap ?? 1,
          lastUsedIdx: st.usedIdx,
          lastUsedCounter: st.usedWrap ?? 1,
        },
      };
    }
    return { split: { availIndex: st.availIdx } };
  }

  /** Linux forwards to the type's get_stats hook, -EOPNOTSUPP without one. */
  getVendorVqStats(idx: number): VendorStat[] {
    if (!this.attr.vendorVqStats) throw new VdpaError("EOPNOTSUPP");
    return this.attr.vendorVqStats(this, idx);
  }

  /**
   * Linux: the queue's size once DRIVER_OK, the maximum before. (Linux has this op only in its dma_map
   * ops table, an accident of history; we offer it in every model.)
   */
  getVqSize(idx: number): number {
    const vq = this.vqAt(idx);
    return this.status & VIRTIO_CONFIG_S_DRIVER_OK ? vq.num : VDPASIM_QUEUE_MAX;
  }

  getVqAlign(): number {
    return VDPASIM_QUEUE_ALIGN;
  }

  getVqGroup(idx: number): number {
    this.vqAt(idx);
    if (this.dmaModel === "platform") return 0;
    return this.attr.vqGroup?.(idx) ?? 0;
  }

  // ---- Features, status, config ----

  getDeviceFeatures(): bigint {
    return this.attr.supportedFeatures;
  }

  getBackendFeatures(): bigint {
    return VDPASIM_BACKEND_FEATURES;
  }

  /** Linux: "DMA mapping must be done by driver": ACCESS_PLATFORM is required; keeps features & offered. */
  setDriverFeatures(features: bigint): void {
    if (!hasFeature(features, VIRTIO_F_ACCESS_PLATFORM)) {
      throw new VdpaError("EINVAL", "the simulator needs VIRTIO_F_ACCESS_PLATFORM");
    }
    this.features = features & this.attr.supportedFeatures;
  }

  getDriverFeatures(): bigint {
    return this.features;
  }

  /** Linux ignores it (no config interrupts); we keep it to report NEEDS_RESET. */
  setConfigCb(cb: VdpaCallback | null): void {
    this.configCb = cb;
  }

  getVqNumMax(): number {
    return VDPASIM_QUEUE_MAX;
  }

  getDeviceId(): number {
    return this.attr.id;
  }

  getVendorId(): number {
    return VDPASIM_VENDOR_ID;
  }

  getStatus(): number {
    return this.status;
  }

  /**
   * Linux stores the byte and sets running = DRIVER_OK (so writing DRIVER_OK also ends a suspend). The
   * device's NEEDS_RESET survives: a driver clears status bits only by resetting. One addition: the
   * DRIVER_OK edge schedules a run, so buffers made available before it are not stranded until a kick.
   */
  setStatus(status: number): void {
    const wasOk = (this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
    this.status = (status & 0xff) | (this.status & VIRTIO_CONFIG_S_NEEDS_RESET);
    this.running = (this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
    if (this.running && !wasOk && this.vqs.some((vq) => vq.ready)) this.schedule();
  }

  reset(): void {
    this.compatReset(0);
  }

  /**
   * Linux vdpasim_do_reset: every queue reset and its group back on ASID 0, features and status cleared,
   * not running, generation bumped. Mappings survive a plain reset; CLEAN_MAP empties every IOTLB the
   * device owns (Linux restores identity maps there; our default mapping is empty). The platform model
   * owns no IOTLB: the bus's domain is its driver's business.
   */
  compatReset(flags: number): void {
    for (const vq of this.vqs) vq.reset();
    this.spaces?.resetBindings();
    if (flags & VDPA_RESET_F_CLEAN_MAP) this.cleanMaps();
    this.running = false;
    this.pendingKick = false;
    this.polling = false;
    this.deviceBroken = false;
    this.features = 0n;
    this.status = 0;
    this.generation++;
  }

  /** Drops every mapping the device owns (compatReset with CLEAN_MAP). None in the platform model. */
  protected cleanMaps(): void {}

  suspend(): void {
    this.running = false;
  }

  /** Linux: running again, and if kicks arrived meanwhile, every queue is kicked. */
  resume(): void {
    this.running = true;
    if (this.pendingKick) {
      this.pendingKick = false;
      for (const vq of this.vqs) this.kickVq(vq.index);
    }
  }

  getConfigSize(): number {
    return this.attr.configSize;
  }

  /** Linux: out of bounds is silently ignored; the type refreshes the config before it is copied. */
  getConfig(offset: number, buf: Uint8Array, len: number): void {
    if (!this.configRangeOk(offset, len)) return;
    this.attr.getConfig?.(this, this.config);
    buf.set(this.config.subarray(offset, offset + len));
  }

  /** Linux: out of bounds is silently ignored; then the type's hook sees the new bytes. */
  setConfig(offset: number, buf: Uint8Array, len: number): void {
    if (!this.configRangeOk(offset, len) || len > buf.length) return;
    this.config.set(buf.subarray(0, len), offset);
    this.attr.setConfig?.(this, this.config);
  }

  private configRangeOk(offset: number, len: number): boolean {
    return (
      Number.isInteger(offset) &&
      Number.isInteger(len) &&
      offset >= 0 &&
      len >= 0 &&
      offset + len <= this.attr.configSize
    );
  }

  getGeneration(): number {
    return this.generation;
  }

  /** Linux reports [0, U64_MAX]; our IOTLBs translate [0, 2^53 - 1]. */
  getIovaRange(): IovaRange {
    return { first: 0, last: IOVA_LAST };
  }

  /**
   * Linux: group > ngroups or asid >= nas is EINVAL (group == ngroups passes and changes nothing). Rings
   * of the moved group are rebuilt on the new ASID: they cache views of their ring areas, and the old
   * views must not outlive the binding.
   */
  setGroupAsid(group: number, asid: number): void {
    const spaces = this.addressSpaces();
    if (!spaces) {
      if (!Number.isInteger(group) || group < 0 || group > this.ngroups || asid !== 0)
        throw new VdpaError("EINVAL");
      return;
    }
    spaces.setGroupAsid(group, asid);
    for (const vq of this.vqs) {
      if (vq.ring && this.getVqGroup(vq.index) === group) {
        vq.state = vq.ring.getState();
        vq.ring = null;
        this.tryBuildRing(vq, vq.state);
      }
    }
  }

  /** Stops work for good (Linux vdpasim_free); called by the bus when the device is unregistered. */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = null;
    this.attr.free?.(this);
  }

  // ---- Rings ----

  /** Builds the ring engine of a ready queue; returns the fault instead of throwing. */
  private buildRing(vq: SimVirtqueue, state?: RingState): Error | null {
    const spaces = this.addressSpaces();
    if (!spaces) {
      return new DmaFault("IOTLB_MISS", vq.descArea, 0, ACCESS_READ, "no platform IOMMU domain attached yet");
    }
    const space: AddressSpace = spaces.groupSpaces[this.getVqGroup(vq.index)];
    try {
      const ring = createDeviceRing(this.ringFormat, {
        num: vq.num,
        addresses: { desc: vq.descArea, driver: vq.driverArea, device: vq.deviceArea },
        ringSpace: space,
        eventIdx: this.negotiated(VIRTIO_RING_F_EVENT_IDX),
      });
      ring.setState(state ?? this.startState(vq.state));
      vq.ring = ring;
      return null;
    } catch (err) {
      return err as Error;
    }
  }

  /** Linux sets the used index equal to the avail index when a split queue starts. */
  private startState(kept: RingState): RingState {
    if (this.ringFormat === "packed") return kept;
    return { ...kept, usedIdx: kept.availIdx };
  }

  private tryBuildRing(vq: SimVirtqueue, state?: RingState): void {
    if (!vq.fault) this.buildRing(vq, state);
  }

  /**
   * For work functions: true when queue `idx` can be processed (ready, not stopped, ring built). A ring
   * that cannot be built now faults the queue.
   */
  queueUsable(idx: number): boolean {
    const vq = this.vqs[idx];
    if (!vq?.ready || vq.fault) return false;
    if (vq.ring) return true;
    const err = this.buildRing(vq);
    if (err) this.faultQueue(vq, err);
    return err === null;
  }

  /**
   * For work functions, Linux vringh_getdesc: 1 with the next available chain in `chain`, 0 when the
   * queue is empty, -1 when the queue is unusable or just faulted (stopped, NEEDS_RESET set, config
   * callback fired). On an empty queue a device that is not polling re-enables notifications and
   * re-checks availability, as vhost does; a polling one leaves them suppressed and looks again later.
   */
  getDesc(idx: number, chain: Chain): 1 | 0 | -1 {
    if (!this.queueUsable(idx)) return -1;
    const vq = this.vqs[idx];
    const ring = vq.ring!;
    try {
      if (ring.pop(chain)) return 1;
      if (!this.polling && ring.enableNotify() && ring.pop(chain)) return 1;
      return 0;
    } catch (err) {
      this.faultQueue(vq, err as Error);
      return -1;
    }
  }

  /** For work functions, Linux vringh_complete: returns `chain` with `len` bytes written. */
  complete(idx: number, chain: Chain, len: number): void {
    const vq = this.vqs[idx];
    if (!vq.ring || vq.fault) return;
    try {
      vq.ring.push(chain, len);
      this.completions++;
      if (++vq.pendingUsed >= VDPASIM_PUBLISH_BATCH) this.publishQueue(vq);
    } catch (err) {
      this.faultQueue(vq, err as Error);
    }
  }

  /** Publishes what the run completed and calls back where the driver asked to be notified. */
  private publishUsed(): void {
    for (const vq of this.vqs) {
      if (vq.fault) continue;
      try {
        this.publishQueue(vq);
      } catch (err) {
        this.faultQueue(vq, err as Error);
        continue;
      }
      this.deliverNotification(vq);
    }
  }

  /** Moves the queue's used index over what it completed; the notification is owed until the run ends. */
  private publishQueue(vq: SimVirtqueue): void {
    if (vq.pendingUsed === 0 || !vq.ring) return;
    vq.pendingUsed = 0;
    if (vq.ring.publishUsed()) vq.notifyPending = true;
  }

  /** Calls the driver back if a publish of this run asked for it. */
  private deliverNotification(vq: SimVirtqueue): void {
    if (!vq.notifyPending) return;
    vq.notifyPending = false;
    if (vq.cb) this.callBack(vq.cb);
  }

  /**
   * A broken ring stops THAT queue until reset: the fault is recorded, NEEDS_RESET set and the driver
   * told through the config callback; other queues keep running. Buffers the queue completed earlier in
   * the run are still published (best effort), so the driver gets back what was really done.
   */
  faultQueue(vq: SimVirtqueue, err: Error): void {
    if (vq.fault) return;
    try {
      this.publishQueue(vq);
    } catch {
      // The ring areas themselves are unreachable: nothing can be published.
    }
    vq.fault = toFault(vq.index, err);
    // Keep the position for getVqState: a failed pop consumed nothing.
    if (vq.ring) vq.state = vq.ring.getState();
    vq.ring = null;
    vq.pendingUsed = 0;
    this.deliverNotification(vq);
    this.raiseNeedsReset(vq.fault);
  }

  private raiseNeedsReset(fault: SimFault): void {
    this.lastFault = fault;
    this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    if (this.configCb) this.callBack(this.configCb);
  }

  private callBack(cb: VdpaCallback): void {
    try {
      cb.callback();
    } catch {
      this.callbackErrors++;
    }
  }

  // ---- Work scheduling ----

  /** Linux vdpasim_schedule_work: at most one run pending; it runs on a later event loop turn. */
  schedule(): void {
    if (this.scheduled || this.freed) return;
    this.scheduled = setImmediate(this.runWork);
  }

  /** True while a run is pending. */
  get workPending(): boolean {
    return this.scheduled !== null;
  }

  /** Resolves once no run is pending (tests, and callers that want the device quiet). */
  async whenIdle(): Promise<void> {
    while (this.scheduled) await new Promise<void>((resolve) => setImmediate(resolve));
  }

  private readonly runWork = (): void => {
    this.scheduled = null;
    let more = false;
    const before = this.completions;
    try {
      if (this.status & VIRTIO_CONFIG_S_DRIVER_OK && !this.deviceBroken) {
        if (this.running) more = this.attr.work(this);
        // Suspended after the kick scheduled this run: Linux drops the kick; we keep it for resume().
        else this.pendingKick = true;
      }
    } catch (err) {
      this.deviceBroken = true;
      this.raiseNeedsReset(toFault(-1, err as Error));
    }
    this.publishUsed();
    this.workRuns++;
    if (this.pollMicros > 0 && this.running && !this.deviceBroken) this.pollStep(this.completions !== before);
    if (more) this.schedule();
  };

  /**
   * After a run: start or go on polling when it made progress, keep polling within the time budget,
   * else end with one run that re-arms notifications on the queues it finds empty (the next run is
   * that run when `polling` has just turned false; it may find work and start polling again).
   */
  private pollStep(progress: boolean): void {
    if (progress) {
      if (!this.polling) {
        this.polling = true;
        this.suppressNotifications();
      }
      this.lastProgress = performance.now();
      this.schedule();
      return;
    }
    if (!this.polling) return;
    if (performance.now() - this.lastProgress >= this.pollMicros / 1000) {
      this.polling = false;
      this.pollSleeps++;
    }
    this.schedule();
  }

  /** Asks the driver not to kick any ring in use (split: NO_NOTIFY or avail_event behind it; packed: DISABLE). */
  private suppressNotifications(): void {
    for (const vq of this.vqs) {
      if (!vq.ring || vq.fault) continue;
      try {
        vq.ring.disableNotify();
      } catch (err) {
        this.faultQueue(vq, err as Error);
      }
    }
  }
}

function toFault(queue: number, err: Error): SimFault {
  const code = isDatapathFault(err) ? err.code : "DEVICE_ERROR";
  return { queue, code, message: err.message };
}

/** Shared by the models where the device translates DMA itself: one empty IOTLB per ASID. */
abstract class VdpaSimOwnIotlb extends VdpaSim {
  constructor(attr: VdpaSimDevAttr, opts: VdpaSimOptions) {
    super(attr, opts);
    const iotlbs = Array.from({ length: this.nas }, (_, a) => new Iotlb(`${this.name}:asid${a}`));
    this.spaces = new GroupAddressSpaces(this.ngroups, iotlbs);
  }

  /** The IOTLB of `asid`; EINVAL past nas (Linux checks asid >= nas in every mapping op). */
  iotlb(asid: number): Iotlb {
    return this.spaces!.iotlb(asid);
  }

  /** Restores the ASID's default mapping, which is empty here (Linux: the identity map). */
  resetMap(asid: number): void {
    this.iotlb(asid).clear();
  }

  protected override cleanMaps(): void {
    for (const iotlb of this.spaces!.iotlbs) iotlb.clear();
  }
}

/** The set_map model (Linux's batch ops table): a whole table per ASID. */
export class VdpaSimSetMap extends VdpaSimOwnIotlb {
  /**
   * Linux vdpasim_set_map: the ASID is emptied and every entry of `iotlb` copied in; here in one batch,
   * so translations see the old table or the new one, never a half. On error the ASID is left empty,
   * as in Linux.
   */
  setMap(asid: number, iotlb: Iotlb): void {
    const target = this.iotlb(asid);
    try {
      target.begin();
      target.clear();
      for (const e of iotlb.entries()) target.map(e.first, e.last - e.first + 1, e.region, e.offset, e.perm);
      target.commit();
    } catch (err) {
      target.abort();
      target.clear();
      throw new VdpaError("EINVAL", (err as Error).message);
    }
  }
}

/** The dma_map model (Linux's non-batch ops table): entries one by one. */
export class VdpaSimDmaMap extends VdpaSimOwnIotlb {
  dmaMap(asid: number, iova: number, size: number, region: MemoryRegion, offset: number, perm: Perm): void {
    const target = this.iotlb(asid);
    try {
      target.map(iova, size, region, offset, perm);
    } catch (err) {
      throw new VdpaError("EINVAL", (err as Error).message);
    }
  }

  dmaUnmap(asid: number, iova: number, size: number): void {
    const target = this.iotlb(asid);
    try {
      target.unmap(iova, size);
    } catch (err) {
      throw new VdpaError("EINVAL", (err as Error).message);
    }
  }
}

/**
 * Builds the simulator core for `attr` in the requested DMA model. The object is the device's ops table:
 * only the set_map model has setMap, only the dma_map model has dmaMap/dmaUnmap, and the platform model
 * has neither, which is how VdpaDevice tells the models apart.
 */
export function createVdpaSim(attr: VdpaSimDevAttr, opts: VdpaSimOptions = {}): VdpaSim {
  switch (opts.dmaModel ?? "set_map") {
    case "set_map":
      return new VdpaSimSetMap(attr, opts);
    case "dma_map":
      return new VdpaSimDmaMap(attr, opts);
    case "platform":
      return new VdpaSim(attr, opts);
    default:
      throw new VdpaError("EINVAL", `unknown DMA model ${String(opts.dmaModel)}`);
  }
}

/** Checks a provisioned feature set against what a device type may offer (Linux vdpasim_create). */
export function provisionFeatures(requested: bigint | undefined, offered: bigint, allowed: bigint): bigint {
  if (requested === undefined) return offered;
  if (requested & ~allowed) {
    throw new VdpaError(
      "EINVAL",
      `device features 0x${requested.toString(16)} outside 0x${allowed.toString(16)}`,
    );
  }
  return requested;
}

/** Writes one byte at `pos` in `segs`; false when pos is past their end. */
export function writeSegmentByte(segs: SegmentList, pos: number, value: number): boolean {
  for (let i = 0; i < segs.count; i++) {
    const segLen = segs.lengths[i];
    if (pos < segLen) {
      segs.regions[i].bytes[segs.offsets[i] + pos] = value;
      return true;
    }
    pos -= segLen;
  }
  return false;
}
