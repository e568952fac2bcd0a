// vhost_vdpa (Linux drivers/vhost/vdpa.c): the bus driver that hands a vDPA device to a vhost user such as
// QEMU. On Linux the user opens /dev/vhost-vdpa-N and issues ioctls and IOTLB messages; here each ioctl is
// a method of VhostVdpa with Linux's checks, in Linux's order, and Linux's errno names; each IOTLB message
// is a typed call. The vhost-user server (a later layer) serves the same object over a socket.
//
// Ownership: as on Linux, the vDPA-specific calls (features, status, config, counts) need no owner; the
// generic vhost calls (vring setup, IOTLB messages) need setOwner() first (EPERM otherwise).

import type { MemoryRegion, Perm } from "../memory/index.js";
import { IOVA_LAST, Iotlb } from "../memory/index.js";
import { featureBit } from "../spec/features.js";
import { VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK } from "../spec/status.js";
import type { IovaRange, VdpaCallback, VqState } from "../vdpa/config-ops.js";
import { VDPA_RESET_F_CLEAN_MAP } from "../vdpa/config-ops.js";
import type { VdpaDevice } from "../vdpa/device.js";
import { VdpaError } from "../vdpa/errors.js";
import type { VdpaDriver } from "../vdpa/vdpa-bus.js";

/** vhost backend feature bits (include/uapi/linux/vhost_types.h, mainline numbering). */
export const VHOST_BACKEND_F_IOTLB_MSG_V2 = 1;
export const VHOST_BACKEND_F_IOTLB_BATCH = 2;
export const VHOST_BACKEND_F_IOTLB_ASID = 3;
export const VHOST_BACKEND_F_SUSPEND = 4;
export const VHOST_BACKEND_F_RESUME = 5;
export const VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK = 6;
export const VHOST_BACKEND_F_DESC_ASID = 7;
export const VHOST_BACKEND_F_IOTLB_PERSIST = 8;

/** Feature bit n as a mask (control path: bigint). */
const bit = featureBit;
/** Bits SET_BACKEND_FEATURES accepts at all. */
const BACKEND_KNOWN =
  bit(VHOST_BACKEND_F_IOTLB_MSG_V2) |
  bit(VHOST_BACKEND_F_IOTLB_BATCH) |
  bit(VHOST_BACKEND_F_IOTLB_ASID) |
  bit(VHOST_BACKEND_F_DESC_ASID) |
  bit(VHOST_BACKEND_F_IOTLB_PERSIST) |
  bit(VHOST_BACKEND_F_SUSPEND) |
  bit(VHOST_BACKEND_F_RESUME) |
  bit(VHOST_BACKEND_F_ENABLE_AFTER_DRIVER_OK);

/** VIRTIO_F_RING_PACKED: decides how vring bases are encoded. */
const RING_PACKED = 1n << 34n;
/** VHOST_VRING_F_LOG, the only vring address flag vhost knows. */
export const VHOST_VRING_F_LOG = 1;

/** VHOST_SET_VRING_ADDR's payload (`struct vhost_vring_addr`); addresses are IOVAs for vhost-vdpa. */
export interface VringAddr {
  flags?: number;
  desc: number;
  used: number;
  avail: number;
  log?: number;
}

/** What vhost keeps per virtqueue (the parts of `struct vhost_virtqueue` vhost-vdpa uses). */
interface VhostVq {
  num: number;
  lastAvailIdx: number;
  lastUsedIdx: number;
  call: (() => void) | null;
  err: (() => void) | null;
}

/** One IOTLB per address space, created on first use as vhost-vdpa does. */
interface AsState {
  iotlb: Iotlb;
}

export class VhostVdpa {
  private opened = false;
  private owner: unknown = null;
  private backendFeatures = 0n;
  private ackedFeatures = 0n;
  private suspended = false;
  private inBatch = false;
  private batchAsid = 0;
  private readonly spaces = new Map<number, AsState>();
  private readonly vqs: VhostVq[];

  constructor(readonly dev: VdpaDevice) {
    this.vqs = Array.from({ length: dev.nvqs }, () => ({
      num: 0,
      lastAvailIdx: 0,
      lastUsedIdx: 0,
      call: null,
      err: null,
    }));
  }

  get isOpen(): boolean {
    return this.opened;
  }

  get isSuspended(): boolean {
    return this.suspended;
  }

  // ---- open / release ----

  /** Linux vhost_vdpa_open: one user at a time (EBUSY); the device starts from a reset. */
  open(): void {
    if (this.opened) throw new VdpaError("EBUSY");
    this.opened = true;
    this.resetDevice();
  }

  /**
   * Linux vhost_vdpa_release: reset the device, drop every mapping (telling the device), forget callbacks,
   * owner and backend features. The device is ready for the next user.
   */
  release(): void {
    if (!this.opened) return;
    this.resetDevice();
    for (const asid of [...this.spaces.keys()]) this.removeAs(asid);
    this.dev.ops.setConfigCb(null);
    for (let i = 0; i < this.vqs.length; i++) {
      this.dev.ops.setVqCb(i, null);
      this.vqs[i] = { num: 0, lastAvailIdx: 0, lastUsedIdx: 0, call: null, err: null };
    }
    this.owner = null;
    this.backendFeatures = 0n;
    this.ackedFeatures = 0n;
    this.inBatch = false;
    this.opened = false;
  }

  // ---- calls that need no owner ----

  /** VHOST_SET_OWNER: EBUSY when owned. */
  setOwner(owner: unknown = {}): void {
    this.checkOpen();
    if (this.owner !== null) throw new VdpaError("EBUSY");
    this.owner = owner;
  }

  /** VHOST_GET_FEATURES: the device's offered features. */
  getFeatures(): bigint {
    return this.dev.ops.getDeviceFeatures();
  }

  /** VHOST_SET_FEATURES: EBUSY after FEATURES_OK; the device refusing them is EINVAL. */
  setFeatures(features: bigint): void {
    this.checkOpen();
    if (this.dev.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK) throw new VdpaError("EBUSY");
    try {
      this.dev.setFeatures(features);
    } catch {
      throw new VdpaError("EINVAL");
    }
    this.ackedFeatures = this.dev.ops.getDriverFeatures();
  }

  /** VHOST_GET_BACKEND_FEATURES: what this device supports of the vhost backend features. */
  getBackendFeatures(): bigint {
    const ops = this.dev.ops;
    let f =
      bit(VHOST_BACKEND_F_IOTLB_MSG_V2) | bit(VHOST_BACKEND_F_IOTLB_BATCH) | bit(VHOST_BACKEND_F_IOTLB_ASID);
    if (ops.suspend) f |= bit(VHOST_BACKEND_F_SUSPEND);
    if (ops.resume) f |= bit(VHOST_BACKEND_F_RESUME);
    if (ops.getVqDescGroup) f |= bit(VHOST_BACKEND_F_DESC_ASID);
    if (this.persistentMaps()) f |= bit(VHOST_BACKEND_F_IOTLB_PERSIST);
    return f | (ops.getBackendFeatures?.() ?? 0n);
  }

  /** VHOST_SET_BACKEND_FEATURES, with Linux's refusals in Linux's order. */
  setBackendFeatures(features: bigint): void {
    this.checkOpen();
    const ops = this.dev.ops;
    if (features & ~BACKEND_KNOWN) throw new VdpaError("EOPNOTSUPP");
    if (features & bit(VHOST_BACKEND_F_SUSPEND) && !ops.suspend) throw new VdpaError("EOPNOTSUPP");
    if (features & bit(VHOST_BACKEND_F_RESUME) && !ops.resume) throw new VdpaError("EOPNOTSUPP");
    if (features & bit(VHOST_BACKEND_F_DESC_ASID)) {
      if (!(features & bit(VHOST_BACKEND_F_IOTLB_ASID))) throw new VdpaError("EINVAL");
      if (!ops.getVqDescGroup) throw new VdpaError("EOPNOTSUPP");
    }
    if (features & bit(VHOST_BACKEND_F_IOTLB_PERSIST) && !this.persistentMaps())
      throw new VdpaError("EOPNOTSUPP");
    this.backendFeatures = features;
  }

  /** VHOST_VDPA_GET_DEVICE_ID. */
  getDeviceId(): number {
    return this.dev.ops.getDeviceId();
  }

  /** VHOST_VDPA_GET_STATUS. */
  getStatus(): number {
    return this.dev.getStatus();
  }

  /**
   * VHOST_VDPA_SET_STATUS: clearing a bit other than by writing 0 is EINVAL; 0 resets the device (and
   * drops its maps, CLEAN_MAP, unless the user negotiated IOTLB_PERSIST).
   */
  setStatus(status: number): void {
    this.checkOpen();
    const old = this.dev.getStatus();
    if (status !== 0 && (old & ~status) !== 0) throw new VdpaError("EINVAL");
    if (status === 0) this.resetDevice();
    else this.dev.setStatus(status);
  }

  /** VHOST_VDPA_GET_CONFIG. */
  getConfig(offset: number, len: number): Uint8Array {
    this.checkConfigAccess(offset, len);
    return this.dev.getConfig(offset, len);
  }

  /** VHOST_VDPA_SET_CONFIG. */
  setConfig(offset: number, data: Uint8Array): void {
    this.checkConfigAccess(offset, data.length);
    this.dev.setConfig(offset, data);
  }

  /** VHOST_VDPA_GET_VRING_NUM: the largest queue size. */
  getVringNum(): number {
    return this.dev.ops.getVqNumMax();
  }

  /** VHOST_VDPA_SET_CONFIG_CALL: the config-change callback (NEEDS_RESET arrives here too); null unbinds. */
  setConfigCall(call: (() => void) | null): void {
    this.checkOpen();
    this.dev.ops.setConfigCb(call ? { callback: call } : null);
  }

  /** VHOST_VDPA_GET_IOVA_RANGE. */
  getIovaRange(): IovaRange {
    return this.dev.ops.getIovaRange?.() ?? { first: 0, last: IOVA_LAST };
  }

  /** VHOST_VDPA_GET_CONFIG_SIZE. */
  getConfigSize(): number {
    return this.dev.getConfigSize();
  }

  /** VHOST_VDPA_GET_AS_NUM. */
  getAsNum(): number {
    return this.dev.nas;
  }

  /** VHOST_VDPA_GET_VQS_COUNT. */
  getVqsCount(): number {
    return this.dev.nvqs;
  }

  /** VHOST_VDPA_GET_GROUP_NUM. */
  getGroupNum(): number {
    return this.dev.ngroups;
  }

  /** VHOST_VDPA_SUSPEND: nothing to do before DRIVER_OK; EOPNOTSUPP without the op. */
  suspend(): void {
    this.checkOpen();
    if (!(this.dev.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK)) return;
    if (!this.dev.ops.suspend) throw new VdpaError("EOPNOTSUPP");
    this.dev.ops.suspend();
    this.suspended = true;
  }

  /** VHOST_VDPA_RESUME: the same pattern. */
  resume(): void {
    this.checkOpen();
    if (!(this.dev.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK)) return;
    if (!this.dev.ops.resume) throw new VdpaError("EOPNOTSUPP");
    this.dev.ops.resume();
    this.suspended = false;
  }

  // ---- per-vring calls (owner, then index < nvqs: ENOBUFS) ----

  /** VHOST_VDPA_SET_VRING_ENABLE. */
  setVringEnable(idx: number, enable: boolean): void {
    this.checkVring(idx);
    this.dev.ops.setVqReady(idx, enable);
  }

  /** VHOST_VDPA_GET_VRING_GROUP: EOPNOTSUPP without the op; a group past ngroups is EIO. */
  getVringGroup(idx: number): number {
    this.checkVring(idx);
    const ops = this.dev.ops;
    if (!ops.getVqGroup) throw new VdpaError("EOPNOTSUPP");
    const group = ops.getVqGroup(idx);
    if (group >= this.dev.ngroups) throw new VdpaError("EIO");
    return group;
  }

  /** VHOST_VDPA_GET_VRING_DESC_GROUP. */
  getVringDescGroup(idx: number): number {
    this.checkVring(idx);
    const ops = this.dev.ops;
    if (!ops.getVqDescGroup) throw new VdpaError("EOPNOTSUPP");
    const group = ops.getVqDescGroup(idx);
    if (group >= this.dev.ngroups) throw new VdpaError("EIO");
    return group;
  }

  /**
   * VHOST_VDPA_SET_GROUP_ASID. Linux routes it through the vring path, so the *group* number is also
   * checked against the number of virtqueues (ENOBUFS): a quirk we keep.
   */
  setGroupAsid(group: number, asid: number): void {
    this.checkVring(group);
    if (asid >= this.dev.nas) throw new VdpaError("EINVAL");
    if (!this.dev.ops.setGroupAsid) throw new VdpaError("EOPNOTSUPP");
    this.dev.ops.setGroupAsid(group, asid);
  }

  /** VHOST_VDPA_GET_VRING_SIZE. */
  getVringSize(idx: number): number {
    this.checkVring(idx);
    if (!this.dev.ops.getVqSize) throw new VdpaError("EOPNOTSUPP");
    return this.dev.ops.getVqSize(idx);
  }

  /** VHOST_SET_VRING_NUM: vhost requires a power of two in 1..65535. */
  setVringNum(idx: number, num: number): void {
    this.checkVring(idx);
    if (!Number.isInteger(num) || num <= 0 || num > 0xffff || (num & (num - 1)) !== 0)
      throw new VdpaError("EINVAL");
    this.vqs[idx].num = num;
    this.dev.ops.setVqNum(idx, num);
  }

  /**
   * VHOST_SET_VRING_ADDR: unknown flags EOPNOTSUPP; misaligned avail (2) or used/log (4) EINVAL; refused
   * after DRIVER_OK unless suspended; a device refusing the addresses is EINVAL.
   */
  setVringAddr(idx: number, addr: VringAddr): void {
    this.checkVring(idx);
    const flags = addr.flags ?? 0;
    if (flags & ~VHOST_VRING_F_LOG) throw new VdpaError("EOPNOTSUPP");
    if (addr.avail % 2 !== 0 || addr.used % 4 !== 0 || (addr.log ?? 0) % 4 !== 0)
      throw new VdpaError("EINVAL");
    this.checkStopped();
    try {
      this.dev.ops.setVqAddress(idx, addr.desc, addr.avail, addr.used);
    } catch {
      throw new VdpaError("EINVAL");
    }
  }

  /**
   * VHOST_SET_VRING_BASE. Split: the next avail index (<= 0xffff). Packed: avail index with its wrap
   * counter in bit 15, used index and counter in bits 16-31. Refused after DRIVER_OK unless suspended.
   */
  setVringBase(idx: number, num: number): void {
    this.checkVring(idx);
    this.checkStopped();
    const packed = (this.ackedFeatures & RING_PACKED) !== 0n;
    if (!Number.isInteger(num) || num < 0 || num > 0xffffffff || (!packed && num > 0xffff))
      throw new VdpaError("EINVAL");
    const vq = this.vqs[idx];
    vq.lastAvailIdx = num & 0xffff;
    vq.lastUsedIdx = packed ? num >>> 16 : vq.lastAvailIdx;
    const state: VqState = packed
      ? {
          packed: {
            lastAvailIdx: vq.lastAvailIdx & 0x7fff,
            lastAvailCounter: vq.lastAvailIdx >>> 15,
            lastUsedIdx: vq.lastUsedIdx & 0x7fff,
            lastUsedCounter: vq.lastUsedIdx >>> 15,
          },
        }
      : { split: { availIndex: vq.lastAvailIdx } };
    this.dev.ops.setVqState(idx, state);
  }

  /** VHOST_GET_VRING_BASE: read from the device (stable once it is suspended or stopped). */
  getVringBase(idx: number): number {
    this.checkVring(idx);
    const state = this.dev.ops.getVqState(idx);
    const vq = this.vqs[idx];
    if ((this.ackedFeatures & RING_PACKED) !== 0n) {
      const p = state.packed;
      if (!p) throw new VdpaError("EINVAL");
      vq.lastAvailIdx = p.lastAvailIdx | (p.lastAvailCounter << 15);
      vq.lastUsedIdx = p.lastUsedIdx | (p.lastUsedCounter << 15);
      return (vq.lastAvailIdx | (vq.lastUsedIdx << 16)) >>> 0;
    }
    if (!state.split) throw new VdpaError("EINVAL");
    vq.lastAvailIdx = state.split.availIndex & 0xffff;
    return vq.lastAvailIdx;
  }

  /**
   * The driver side's kick for ring `idx`. Linux polls the eventfd given by VHOST_SET_VRING_KICK and calls
   * kick_vq; in-process users call this (the vhost-user server calls it from its kick fds).
   */
  kick(idx: number): void {
    this.checkVring(idx);
    this.dev.ops.kickVq(idx);
  }

  /** VHOST_SET_VRING_CALL: the used-buffer callback of ring `idx`; null unbinds. */
  setVringCall(idx: number, call: (() => void) | null): void {
    this.checkVring(idx);
    this.vqs[idx].call = call;
    const cb: VdpaCallback | null = call ? { callback: call } : null;
    this.dev.ops.setVqCb(idx, cb);
  }

  /** VHOST_SET_VRING_ERR: stored, as Linux's vhost-vdpa does (the device reports faults via NEEDS_RESET). */
  setVringErr(idx: number, err: (() => void) | null): void {
    this.checkVring(idx);
    this.vqs[idx].err = err;
  }

  /** The error callback of ring `idx`, for the vhost-user server to signal. */
  vringErr(idx: number): (() => void) | null {
    return this.vqs[idx]?.err ?? null;
  }

  // ---- IOTLB messages (owner; every failure answers EFAULT, as vhost's write() does) ----

  /** VHOST_IOTLB_UPDATE: map [iova, iova + size) to `region` at `offset` with `perm` in ASID `asid`. */
  iotlbUpdate(
    asid: number,
    iova: number,
    size: number,
    region: MemoryRegion,
    offset: number,
    perm: Perm,
  ): void {
    this.iotlbMessage(asid, () => {
      const range = this.getIovaRange();
      const last = iova + size - 1;
      if (size <= 0 || iova < range.first || last > range.last || !Number.isSafeInteger(last)) {
        throw new VdpaError(
          "EINVAL",
          `iova 0x${iova.toString(16)} size 0x${size.toString(16)} outside the device's range`,
        );
      }
      const as = this.asFor(asid, true)!;
      if (as.iotlb.overlaps(iova, size)) throw new VdpaError("EEXIST", "range overlaps an existing mapping");
      as.iotlb.map(iova, size, region, offset, perm);
      const ops = this.dev.ops;
      if (ops.dmaMap) ops.dmaMap(asid, iova, size, region, offset, perm);
      else if (ops.setMap) {
        if (!this.inBatch) ops.setMap(asid, as.iotlb);
      } else this.platformIotlb().map(iova, size, region, offset, perm);
    });
  }

  /** VHOST_IOTLB_INVALIDATE: unmap [iova, iova + size); size 0 means everything (Linux's regression fix). */
  iotlbInvalidate(asid: number, iova: number, size: number): void {
    this.iotlbMessage(asid, () => {
      const as = this.asFor(asid, false);
      if (!as) throw new VdpaError("EINVAL", `no address space ${asid}`);
      if (size === 0) this.unmapRange(asid, as, 0, IOVA_LAST);
      else this.unmapRange(asid, as, iova, iova + size - 1);
    });
  }

  /** VHOST_IOTLB_BATCH_BEGIN: set_map devices get one table at batch end instead of one per message. */
  iotlbBatchBegin(asid: number): void {
    this.iotlbMessage(asid, () => {
      this.asFor(asid, true);
      this.inBatch = true;
      this.batchAsid = asid;
    });
  }

  /** VHOST_IOTLB_BATCH_END. */
  iotlbBatchEnd(asid: number): void {
    this.iotlbMessage(asid, () => {
      const as = this.asFor(asid, false);
      if (!as) throw new VdpaError("EINVAL", `no address space ${asid}`);
      if (this.inBatch && this.dev.ops.setMap) this.dev.ops.setMap(asid, as.iotlb);
      this.inBatch = false;
    });
  }

  /** The user's mappings of an ASID (for observability and tests). */
  mappings(asid: number): ReturnType<Iotlb["entries"]> {
    return this.spaces.get(asid)?.iotlb.entries() ?? [];
  }

  // ---- internals ----

  private iotlbMessage(asid: number, handle: () => void): void {
    try {
      this.checkOwner();
      if (this.inBatch && asid !== this.batchAsid) {
        throw new VdpaError("EINVAL", `batch open on ASID ${this.batchAsid}, message for ASID ${asid}`);
      }
      handle();
    } catch (err) {
      // vhost's write() answers every handler failure with EFAULT; keep the cause for whoever logs it.
      const cause = err instanceof Error ? err.message : String(err);
      throw new VdpaError("EFAULT", cause);
    }
  }

  private asFor(asid: number, create: boolean): AsState | undefined {
    let as = this.spaces.get(asid);
    if (!as && create) {
      if (!Number.isInteger(asid) || asid < 0 || asid >= this.dev.nas) {
        throw new VdpaError("EINVAL", `ASID ${asid} past the device's ${this.dev.nas} address spaces`);
      }
      as = { iotlb: new Iotlb(`vhost-vdpa:${this.dev.name}:as${asid}`) };
      this.spaces.set(asid, as);
    }
    return as;
  }

  /**
   * Linux vhost_vdpa_iotlb_unmap: every mapping that overlaps [iova, last] is removed WHOLE (vhost's
   * IOTLB never splits a user's mapping); dma_map devices hear of each, set_map devices get the new table
   * once (or at batch end), the platform domain is updated.
   */
  private unmapRange(asid: number, as: AsState, iova: number, last: number): void {
    const ops = this.dev.ops;
    for (const e of as.iotlb.entries()) {
      if (e.last < iova || e.first > last) continue;
      const first = e.first;
      const size = e.last - e.first + 1;
      as.iotlb.unmap(first, size);
      if (ops.dmaUnmap) ops.dmaUnmap(asid, first, size);
      else if (!ops.setMap) this.platformIotlb().unmap(first, size);
    }
    if (ops.setMap && !ops.dmaUnmap && !this.inBatch) ops.setMap(asid, as.iotlb);
  }

  /** Linux vhost_vdpa_remove_as: drop every mapping of the ASID and tell the device. */
  private removeAs(asid: number): void {
    const as = this.spaces.get(asid);
    if (!as) return;
    if (as.iotlb.size > 0) this.unmapRange(asid, as, 0, IOVA_LAST);
    this.dev.ops.resetMap?.(asid);
    this.spaces.delete(asid);
  }

  private platformIotlb(): Iotlb {
    const domain = this.dev.platformDomain;
    if (!domain) throw new VdpaError("EINVAL", "device has no platform IOMMU domain");
    return domain.iotlb;
  }

  /** Maps survive a reset when the parent has no translation of its own, has reset_map, or says so. */
  private persistentMaps(): boolean {
    const ops = this.dev.ops;
    if (!ops.setMap && !ops.dmaMap) return true;
    if (ops.resetMap) return true;
    return ((ops.getBackendFeatures?.() ?? 0n) & bit(VHOST_BACKEND_F_IOTLB_PERSIST)) !== 0n;
  }

  /** Linux vhost_vdpa_reset: CLEAN_MAP unless the user negotiated IOTLB_PERSIST. */
  private resetDevice(): void {
    const persist = (this.backendFeatures & bit(VHOST_BACKEND_F_IOTLB_PERSIST)) !== 0n;
    this.dev.reset(persist ? 0 : VDPA_RESET_F_CLEAN_MAP);
    this.suspended = false;
  }

  private checkOpen(): void {
    if (!this.opened) throw new VdpaError("EBADF", "vhost-vdpa device is not open");
  }

  private checkOwner(): void {
    this.checkOpen();
    if (this.owner === null) throw new VdpaError("EPERM");
  }

  private checkVring(idx: number): void {
    this.checkOwner();
    if (!Number.isInteger(idx) || idx < 0 || idx >= this.dev.nvqs) throw new VdpaError("ENOBUFS");
  }

  private checkStopped(): void {
    if (this.dev.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK && !this.suspended) throw new VdpaError("EINVAL");
  }

  private checkConfigAccess(offset: number, len: number): void {
    const size = this.dev.getConfigSize();
    if (len === 0 || offset > size || len > size - offset) throw new VdpaError("EINVAL");
  }
}

/** The vhost_vdpa bus driver: one VhostVdpa per bound device. */
export class VhostVdpaDriver implements VdpaDriver {
  readonly name = "vhost_vdpa";
  private readonly handles = new Map<VdpaDevice, VhostVdpa>();

  /**
   * Linux vhost_vdpa_probe: a device without its own translation can only use the single platform
   * domain, so more than one group or address space is refused (EOPNOTSUPP).
   */
  probe(dev: VdpaDevice): void {
    if (!dev.ownTranslation && (dev.ngroups > 1 || dev.nas > 1)) throw new VdpaError("EOPNOTSUPP");
    this.handles.set(dev, new VhostVdpa(dev));
  }

  /** The device leaves: its user (if any) is cut off, as closing the file would. */
  remove(dev: VdpaDevice): void {
    this.handles.get(dev)?.release();
    this.handles.delete(dev);
  }

  /** The vhost object of a bound device (Linux: /dev/vhost-vdpa-<index>). */
  get(dev: VdpaDevice): VhostVdpa | undefined {
    return this.handles.get(dev);
  }
}
