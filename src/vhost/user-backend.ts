// One vhost-user front-end's session with one vDPA device bound to vhost_vdpa: what each vhost-user request
// does to the device through the vhost-vdpa uAPI (VhostVdpa). The protocol (framing, payload decoding,
// replies) lives in src/vhost-user and the socket in src/vhost/user-server.ts; this file is the meaning.
//
// vhost-user is driven by ring messages while vDPA is driven by device status, so the mapping is a state
// machine, written once here (the table in docs/vhost-user.md, tested row by row in
// test/vhost/user-backend.test.ts):
//
//   ring bits            started: SET_VRING_KICK (fd or polling) ... GET_VRING_BASE
//                        enabled: SET_VRING_ENABLE, or at once when SET_FEATURES lacks PROTOCOL_FEATURES
//   ring ready           = started && enabled && num, address and memory set  ->  set_vq_ready(ready)
//   status (no STATUS)   SET_FEATURES: ACKNOWLEDGE|DRIVER, features, FEATURES_OK; the first ring to turn
//                        ready adds DRIVER_OK (every ring set up by then is ready first)
//   status (STATUS)      SET_STATUS passes through (ACKNOWLEDGE|DRIVER added to a non-zero status)
//   GET_VRING_BASE       suspend the device, read the ring's state, stop the ring, resume if another ring
//                        still runs; when none does: reset the device, keep the memory table
//   ring setup while running   done inside suspend/resume (vDPA refuses it while DRIVER_OK)
//   SET_OWNER again, RESET_OWNER, RESET_DEVICE   device reset, rings stopped, memory kept
//   detach (disconnect)  device reset, memory retired, every fd closed, the vhost handle released
//
// Ring addresses arrive as the front-end's virtual addresses and are turned into guest physical addresses
// (the IOVAs of our IOTLB) through the memory table. Split rings take the used index from guest memory
// when the address is set (QEMU's and rust-vmm's behaviour after a restart); packed rings carry both
// indexes and wrap counters in the vring base (avail in bits 0-15, used in bits 16-31).

import { type MemoryRegion, PERM_RW } from "../memory/index.js";
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_RING_PACKED,
  VIRTIO_ID_NET,
} from "../spec/index.js";
import { VdpaError } from "../vdpa/errors.js";
import { PROTOCOL_F } from "../vhost-user/messages.js";
import {
  VHOST_BACKEND_F_IOTLB_BATCH,
  VHOST_BACKEND_F_IOTLB_MSG_V2,
  VHOST_BACKEND_F_IOTLB_PERSIST,
  VHOST_BACKEND_F_RESUME,
  VHOST_BACKEND_F_SUSPEND,
  type VhostVdpa,
} from "./vhost-vdpa.js";

/** The feature bit that says the front-end speaks vhost-user's protocol features (bit 30). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
const PROTOCOL_FEATURES_BIT = 1n << 30n;
const ACCESS_PLATFORM_BIT = 1n << BigInt(VIRTIO_F_ACCESS_PLATFORM);

export { PROTOCOL_F };

/**
 * Protocol features this back-end implements: not INFLIGHT_SHMFD (until a restart test exists), not
 * LOG_SHMFD (no migration), not the in-band or host-notifier ones.
 */
export const SUPPORTED_PROTOCOL_FEATURES: bigint = [
  PROTOCOL_F.MQ,
  PROTOCOL_F.REPLY_ACK,
  PROTOCOL_F.BACKEND_REQ,
  PROTOCOL_F.CONFIG,
  PROTOCOL_F.RESET_DEVICE,
  PROTOCOL_F.CONFIGURE_MEM_SLOTS,
  PROTOCOL_F.STATUS,
].reduce((acc, bit) => acc | (1n << BigInt(bit)), 0n);

/** A memory region as the front-end describes it (VhostUserMemoryRegion). */
export interface UserMemRegion {
  guestPhysAddr: number;
  memorySize: number;
  userspaceAddr: number;
  mmapOffset: number;
}

/** A ring address message (vhost_vring_addr): front-end virtual addresses. */
export interface UserVringAddr {
  flags: number;
  desc: number;
  used: number;
  avail: number;
  log: number;
}

/** A region of the front-end's memory mapped here; retire() unmaps it (a stale view then reads zeros). */
export interface MappedRegion extends MemoryRegion {
  retire(): void;
}

/** What the session needs from the operating system; src/os provides it, tests fake it. */
export interface UserBackendPlatform {
  /** Maps `size` bytes of `fd` from `offset`, checking the file is that large. Throws on failure. */
  mapRegion(fd: number, offset: number, size: number, name: string): MappedRegion;
  /** Calls `onKick` each time the eventfd is signalled (the count drained first). */
  watchKick(fd: number, onKick: () => void): { stop(): void };
  /** Signals an eventfd (call, err). */
  signal(fd: number): void;
  closeFd(fd: number): void;
  log(level: "info" | "warn" | "error", message: string): void;
}

/** Why a request failed; the server answers it (REPLY_ACK) or logs it, and keeps the connection. */
export type UserBackendErrorCode =
  | "BAD_RING_INDEX"
  | "RING_ADDR_UNMAPPED"
  | "NO_MEMORY"
  | "TOO_MANY_REGIONS"
  | "REGION_OVERLAP"
  | "REGION_UNKNOWN"
  | "REGION_MAP_FAILED"
  | "DEVICE_REFUSED"
  | "FEATURES_REFUSED"
  | "NOT_SUPPORTED";

export class UserBackendError extends Error {
  override readonly name = "UserBackendError";
  constructor(
    readonly code: UserBackendErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

interface RingState {
  num: number;
  addr: UserVringAddr | null;
  base: number | null;
  kickFd: number | null;
  kickWatch: { stop(): void } | null;
  callFd: number | null;
  errFd: number | null;
  started: boolean;
  enabled: boolean;
  /** What the device was last told through set_vq_ready. */
  ready: boolean;
  kicks: number;
  droppedKicks: number;
}

interface MemSlot {
  desc: UserMemRegion;
  region: MappedRegion;
}

/** Observable session state, for `vdpa -d`, logs and tests. */
export interface UserBackendSnapshot {
  features: bigint;
  protocolFeatures: bigint;
  status: number;
  regions: { guestPhysAddr: number; size: number; userspaceAddr: number }[];
  rings: { idx: number; num: number; started: boolean; enabled: boolean; ready: boolean; kicks: number }[];
}

function newRing(): RingState {
  return {
    num: 0,
    addr: null,
    base: null,
    kickFd: null,
    kickWatch: null,
    callFd: null,
    errFd: null,
    started: false,
    enabled: false,
    ready: false,
    kicks: 0,
    droppedKicks: 0,
  };
}

const STATUS_BASE = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER;

export class VhostUserBackend {
  private rings: RingState[];
  private slots: MemSlot[] = [];
  private features = 0n;
  private protocolFeatures = 0n;
  private owned = false;
  private backendReqFd: number | null = null;
  private persistMaps = false;
  /** SET_FEATURES succeeded since the last reset: FEATURES_OK may be set. */
  private featuresAccepted = false;
  /** SET_STATUS(0) arrived while rings still run: reset once the last one is stopped. */
  private resetPending = false;
  private attached = false;

  constructor(
    readonly vhost: VhostVdpa,
    private readonly platform: UserBackendPlatform,
    readonly maxMemSlots = 64,
  ) {
    this.rings = Array.from({ length: vhost.getVqsCount() }, (_, i) => this.freshRing(i));
  }

  /**
   * A ring as a new session sees it. vhost-user-net "historically automatically enabled the first queue
   * pair" (vhost-user.rst, multiqueue), and front-ends written against that still exist, so rings 0 and 1
   * of a net device start enabled; every other ring waits for SET_VRING_ENABLE. QEMU and DPDK's
   * virtio_user send SET_VRING_ENABLE anyway, which overrides this.
   */
  private freshRing(idx: number): RingState {
    const ring = newRing();
    ring.enabled = idx < 2 && this.vhost.getDeviceId() === VIRTIO_ID_NET;
    return ring;
  }

  get deviceName(): string {
    return this.vhost.dev.name;
  }

  /** Opens the vhost handle (EBUSY when another user has it) and negotiates the backend features. */
  attach(): void {
    this.vhost.open();
    this.attached = true;
    const wanted =
      (1n << BigInt(VHOST_BACKEND_F_IOTLB_MSG_V2)) |
      (1n << BigInt(VHOST_BACKEND_F_IOTLB_BATCH)) |
      (1n << BigInt(VHOST_BACKEND_F_SUSPEND)) |
      (1n << BigInt(VHOST_BACKEND_F_RESUME)) |
      (1n << BigInt(VHOST_BACKEND_F_IOTLB_PERSIST));
    const offered = this.vhost.getBackendFeatures() & wanted;
    this.vhost.setBackendFeatures(offered);
    this.persistMaps = (offered & (1n << BigInt(VHOST_BACKEND_F_IOTLB_PERSIST))) !== 0n;
  }

  /** The front-end went away: reset the device, retire its memory, close every fd, release the handle. */
  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    for (const ring of this.rings) this.dropRingFds(ring);
    this.rings = this.rings.map((_, i) => this.freshRing(i));
    for (const slot of this.slots) slot.region.retire();
    this.slots = [];
    if (this.backendReqFd !== null) this.platform.closeFd(this.backendReqFd);
    this.backendReqFd = null;
    // release() resets the device and drops every mapping before the memory is gone for good.
    this.vhost.release();
    this.owned = false;
  }

  // ---- features and ownership ----

  /**
   * GET_FEATURES: the device's features with PROTOCOL_FEATURES added and ACCESS_PLATFORM hidden. Over
   * vhost-user the front-end's addresses are guest-physical and this back-end turns them into the device's
   * IOVAs itself (the memory table is the IOTLB), which is what ACCESS_PLATFORM means to a vDPA device;
   * a front-end negotiating it would instead mean a vIOMMU and IOTLB messages, which are not supported.
   */
  getFeatures(): bigint {
    return (this.vhost.getFeatures() & ~ACCESS_PLATFORM_BIT) | PROTOCOL_FEATURES_BIT;
  }

  /**
   * SET_FEATURES. ACCESS_PLATFORM goes to the device whenever it offers it (QEMU's vhost-vdpa forces it the
   * same way, vhost_force_iommu): Linux's vdpa_sim refuses features without it.
   */
  setFeatures(features: bigint): void {
    let deviceFeatures = features & ~PROTOCOL_FEATURES_BIT;
    deviceFeatures |= this.vhost.getFeatures() & ACCESS_PLATFORM_BIT;
    const offered = this.getFeatures();
    if (features & ~offered) {
      throw new UserBackendError(
        "FEATURES_REFUSED",
        `features 0x${features.toString(16)} include bits not offered (0x${offered.toString(16)})`,
      );
    }
    if (this.resetPending) this.resetKeepingMemory();
    const status = this.vhost.getStatus();
    if (status & VIRTIO_CONFIG_S_FEATURES_OK) {
      // QEMU repeats SET_FEATURES while running (to toggle dirty logging); the device features are fixed.
      if ((features & ~PROTOCOL_FEATURES_BIT) !== (this.features & ~PROTOCOL_FEATURES_BIT)) {
        throw new UserBackendError("FEATURES_REFUSED", "features cannot change while the device runs");
      }
      this.features = features;
      return;
    }
    this.features = features;
    this.device(() => {
      if (!this.hasProtocol(PROTOCOL_F.STATUS)) this.vhost.setStatus(status | STATUS_BASE);
      try {
        this.vhost.setFeatures(deviceFeatures);
      } catch (err) {
        throw new UserBackendError(
          "FEATURES_REFUSED",
          `the device refused features 0x${deviceFeatures.toString(16)} (offered 0x${this.vhost.getFeatures().toString(16)}): ${(err as Error).message}`,
        );
      }
      if (!this.hasProtocol(PROTOCOL_F.STATUS)) {
        this.vhost.setStatus(this.vhost.getStatus() | VIRTIO_CONFIG_S_FEATURES_OK);
        if (!(this.vhost.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK)) {
          throw new UserBackendError("FEATURES_REFUSED", "the device did not accept FEATURES_OK");
        }
      }
    });
    this.featuresAccepted = true;
    // Without PROTOCOL_FEATURES there is no SET_VRING_ENABLE: rings are enabled from the start.
    if (!(features & PROTOCOL_FEATURES_BIT)) {
      for (let i = 0; i < this.rings.length; i++) {
        this.rings[i].enabled = true;
        this.updateReady(i);
      }
    }
  }

  /** QEMU keeps a vhost-user net device's config itself and warns when CONFIG is offered for one. */
  getProtocolFeatures(): bigint {
    if (this.vhost.getDeviceId() === VIRTIO_ID_NET)
      return SUPPORTED_PROTOCOL_FEATURES & ~(1n << BigInt(PROTOCOL_F.CONFIG));
    return SUPPORTED_PROTOCOL_FEATURES;
  }

  setProtocolFeatures(features: bigint): void {
    if (features & ~this.getProtocolFeatures()) {
      throw new UserBackendError(
        "FEATURES_REFUSED",
        `protocol features 0x${features.toString(16)} include bits not offered`,
      );
    }
    this.protocolFeatures = features;
  }

  /** Whether a protocol feature was negotiated. */
  hasProtocol(bit: number): boolean {
    return (this.protocolFeatures & (1n << BigInt(bit))) !== 0n;
  }

  /** SET_OWNER: the first one takes ownership; a repeated one (a front-end restarting) resets the device. */
  setOwner(): void {
    if (!this.owned) {
      this.device(() => this.vhost.setOwner(this));
      this.owned = true;
      return;
    }
    this.resetDevice();
  }

  /** RESET_OWNER / RESET_DEVICE: back to a fresh device; the memory table stays. */
  resetDevice(): void {
    for (let i = 0; i < this.rings.length; i++) {
      const ring = this.rings[i];
      this.dropRingFds(ring);
      this.rings[i] = this.freshRing(i);
    }
    this.features = 0n;
    this.resetKeepingMemory();
  }

  getQueueNum(): number {
    // vhost-user-net counts queue pairs, other devices count queues.
    const n = this.rings.length;
    return this.vhost.getDeviceId() === VIRTIO_ID_NET ? Math.max(1, Math.floor(n / 2)) : n;
  }

  getMaxMemSlots(): number {
    return this.maxMemSlots;
  }

  // ---- memory ----

  /** SET_MEM_TABLE: replaces the whole table; fds[i] belongs to regions[i] and is closed here. */
  setMemTable(regions: readonly UserMemRegion[], fds: readonly number[]): void {
    try {
      if (regions.length > this.maxMemSlots) {
        throw new UserBackendError(
          "TOO_MANY_REGIONS",
          `${regions.length} regions, at most ${this.maxMemSlots}`,
        );
      }
      checkNoOverlap(regions);
      const mapped = regions.map((r, i) => this.mapSlot(r, fds[i], i));
      this.dropAllSlots();
      for (const slot of mapped) this.installSlot(slot);
    } finally {
      for (const fd of fds) this.platform.closeFd(fd);
    }
  }

  /** ADD_MEM_REG (CONFIGURE_MEM_SLOTS). */
  addMemReg(region: UserMemRegion, fd: number): void {
    try {
      if (this.slots.length >= this.maxMemSlots) {
        throw new UserBackendError("TOO_MANY_REGIONS", `all ${this.maxMemSlots} memory slots are in use`);
      }
      checkNoOverlap([...this.slots.map((s) => s.desc), region]);
      this.installSlot(this.mapSlot(region, fd, this.slots.length));
    } finally {
      this.platform.closeFd(fd);
    }
  }

  /** REM_MEM_REG: the region with this guest address, size and user address. */
  remMemReg(region: UserMemRegion): void {
    const at = this.slots.findIndex(
      (s) =>
        s.desc.guestPhysAddr === region.guestPhysAddr &&
        s.desc.memorySize === region.memorySize &&
        s.desc.userspaceAddr === region.userspaceAddr,
    );
    if (at < 0) {
      throw new UserBackendError(
        "REGION_UNKNOWN",
        `no region at guest address 0x${region.guestPhysAddr.toString(16)}`,
      );
    }
    const [slot] = this.slots.splice(at, 1);
    this.device(() => this.vhost.iotlbInvalidate(0, slot.desc.guestPhysAddr, slot.desc.memorySize));
    slot.region.retire();
  }

  private mapSlot(desc: UserMemRegion, fd: number | undefined, i: number): MemSlot {
    if (fd === undefined)
      throw new UserBackendError("REGION_MAP_FAILED", `region ${i} came without a file descriptor`);
    try {
      const region = this.platform.mapRegion(
        fd,
        desc.mmapOffset,
        desc.memorySize,
        `${this.deviceName}:gpa-0x${desc.guestPhysAddr.toString(16)}`,
      );
      return { desc, region };
    } catch (err) {
      throw new UserBackendError("REGION_MAP_FAILED", `region ${i}: ${(err as Error).message}`);
    }
  }

  private installSlot(slot: MemSlot): void {
    try {
      this.device(() =>
        this.vhost.iotlbUpdate(0, slot.desc.guestPhysAddr, slot.desc.memorySize, slot.region, 0, PERM_RW),
      );
    } catch (err) {
      slot.region.retire();
      throw err;
    }
    this.slots.push(slot);
  }

  private dropAllSlots(): void {
    for (const slot of this.slots) {
      try {
        this.vhost.iotlbInvalidate(0, slot.desc.guestPhysAddr, slot.desc.memorySize);
      } catch {}
      slot.region.retire();
    }
    this.slots = [];
  }

  /** A front-end virtual address to a guest physical address, for `len` bytes within one region. */
  private userToGuest(addr: number, len: number, what: string): number {
    for (const { desc } of this.slots) {
      if (addr >= desc.userspaceAddr && addr + len <= desc.userspaceAddr + desc.memorySize) {
        return desc.guestPhysAddr + (addr - desc.userspaceAddr);
      }
    }
    throw new UserBackendError(
      "RING_ADDR_UNMAPPED",
      `${what} at user address 0x${addr.toString(16)} (+${len}) is outside every memory region`,
    );
  }

  // ---- rings ----

  private ring(idx: number): RingState {
    const ring = this.rings[idx];
    if (!Number.isInteger(idx) || ring === undefined) {
      throw new UserBackendError(
        "BAD_RING_INDEX",
        `ring ${idx} does not exist (the device has ${this.rings.length})`,
      );
    }
    return ring;
  }

  /** ring(), closing the fd handed over with the request when the ring does not exist. */
  private ringTaking(idx: number, fd: number | null): RingState {
    try {
      return this.ring(idx);
    } catch (err) {
      if (fd !== null) this.platform.closeFd(fd);
      throw err;
    }
  }

  setVringNum(idx: number, num: number): void {
    const ring = this.ring(idx);
    const max = this.vhost.getVringNum();
    if (num > max)
      throw new UserBackendError("DEVICE_REFUSED", `ring ${idx}: size ${num} above the maximum ${max}`);
    this.whileStopped(() => this.vhost.setVringNum(idx, num));
    ring.num = num;
  }

  setVringAddr(idx: number, addr: UserVringAddr): void {
    const ring = this.ring(idx);
    if (this.slots.length === 0)
      throw new UserBackendError("NO_MEMORY", `ring ${idx}: address set before any memory table`);
    const packed = this.isPacked();
    const num = ring.num || this.vhost.getVringNum();
    // Sizes of the three areas (virtio 1.x 2.7 / 2.8); the event-index words are included.
    const descLen = 16 * num;
    const availLen = packed ? 4 : 6 + 2 * num;
    const usedLen = packed ? 4 : 6 + 8 * num;
    const desc = this.userToGuest(addr.desc, descLen, `ring ${idx} descriptor table`);
    const avail = this.userToGuest(
      addr.avail,
      availLen,
      `ring ${idx} ${packed ? "driver area" : "available ring"}`,
    );
    const used = this.userToGuest(addr.used, usedLen, `ring ${idx} ${packed ? "device area" : "used ring"}`);
    this.whileStopped(() =>
      this.vhost.setVringAddr(idx, { desc, avail, used, flags: addr.flags & 1, log: 0 }),
    );
    ring.addr = addr;
    if (!packed) {
      // After a restart the front-end's base is its last avail index; the device resumes from the used
      // index the guest can see, so no completion is reported twice.
      const usedIdx = this.readGuestU16(used + 2);
      if (usedIdx !== null && ring.base !== null && usedIdx !== ring.base) {
        this.platform.log(
          "warn",
          `${this.deviceName}: ring ${idx} resumes at used index ${usedIdx}, not the base ${ring.base} the front-end sent`,
        );
        this.whileStopped(() => this.vhost.setVringBase(idx, usedIdx));
        ring.base = usedIdx;
      }
    }
    this.updateReady(idx);
  }

  setVringBase(idx: number, base: number): void {
    const ring = this.ring(idx);
    this.whileStopped(() => this.vhost.setVringBase(idx, base));
    ring.base = base;
  }

  /** GET_VRING_BASE: stops the ring; the last one stopped resets the device (memory kept). */
  getVringBase(idx: number): number {
    const ring = this.ring(idx);
    const running = (this.vhost.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
    const canSuspend = running && this.vhost.dev.ops.suspend !== undefined && !this.vhost.isSuspended;
    if (canSuspend) this.vhost.suspend();
    let base: number;
    try {
      base = this.device(() => this.vhost.getVringBase(idx));
    } finally {
      ring.started = false;
      if (ring.kickWatch) ring.kickWatch.stop();
      if (ring.kickFd !== null) this.platform.closeFd(ring.kickFd);
      ring.kickWatch = null;
      ring.kickFd = null;
      this.setReady(idx, false);
      if (canSuspend && this.rings.some((r) => r.started) && this.vhost.dev.ops.resume) this.vhost.resume();
    }
    if (!this.rings.some((r) => r.started)) this.resetKeepingMemory();
    return base;
  }

  /** SET_VRING_KICK: `fd` null is the polling flag (not supported: refused). Starts the ring. */
  setVringKick(idx: number, fd: number | null): void {
    const ring = this.ringTaking(idx, fd);
    if (fd === null) throw new UserBackendError("NOT_SUPPORTED", `ring ${idx}: polling mode (no kick fd)`);
    if (ring.kickWatch) ring.kickWatch.stop();
    if (ring.kickFd !== null) this.platform.closeFd(ring.kickFd);
    ring.kickFd = fd;
    ring.kickWatch = this.platform.watchKick(fd, () => this.onKick(idx));
    ring.started = true;
    this.updateReady(idx);
  }

  /** SET_VRING_CALL: the device's used-buffer notifications go to `fd` (null: none). */
  setVringCall(idx: number, fd: number | null): void {
    const ring = this.ringTaking(idx, fd);
    if (ring.callFd !== null) this.platform.closeFd(ring.callFd);
    ring.callFd = fd;
    this.device(() => this.vhost.setVringCall(idx, fd === null ? null : () => this.platform.signal(fd)));
  }

  /** SET_VRING_ERR: where a broken ring is reported. */
  setVringErr(idx: number, fd: number | null): void {
    const ring = this.ringTaking(idx, fd);
    if (ring.errFd !== null) this.platform.closeFd(ring.errFd);
    ring.errFd = fd;
    this.device(() => this.vhost.setVringErr(idx, fd === null ? null : () => this.platform.signal(fd)));
    this.device(() => this.vhost.setConfigCall(() => this.onConfigChange()));
  }

  setVringEnable(idx: number, enable: boolean): void {
    const ring = this.ring(idx);
    ring.enabled = enable;
    this.updateReady(idx);
  }

  // ---- config and status ----

  getConfig(offset: number, size: number): Uint8Array {
    return this.device(() => this.vhost.getConfig(offset, size));
  }

  setConfig(offset: number, data: Uint8Array): void {
    this.device(() => this.vhost.setConfig(offset, data));
  }

  getStatus(): number {
    return this.vhost.getStatus();
  }

  /**
   * SET_STATUS (STATUS protocol feature): passed through. 0 is how QEMU begins a stop, BEFORE it reads the
   * vring bases: a running device is suspended and the reset waits until every ring is stopped, so
   * GET_VRING_BASE still reads the rings' positions. Memory is kept.
   */
  setStatus(status: number): void {
    if ((status & 0xff) === 0) {
      const running = (this.vhost.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
      if (running && this.rings.some((r) => r.started) && this.vhost.dev.ops.suspend) {
        if (!this.vhost.isSuspended) this.vhost.suspend();
        this.resetPending = true;
      } else {
        this.resetKeepingMemory();
      }
      return;
    }
    if (this.resetPending) this.resetKeepingMemory();
    if (status & VIRTIO_CONFIG_S_FEATURES_OK && !this.featuresAccepted) {
      // A front-end that ignored a failed SET_FEATURES must not run the device on features it never set.
      throw new UserBackendError("FEATURES_REFUSED", "FEATURES_OK without features the device accepted");
    }
    this.device(() => this.vhost.setStatus((status & 0xff) | STATUS_BASE | this.vhost.getStatus()));
  }

  setBackendReqFd(fd: number): void {
    if (this.backendReqFd !== null) this.platform.closeFd(this.backendReqFd);
    this.backendReqFd = fd;
  }

  snapshot(): UserBackendSnapshot {
    return {
      features: this.features,
      protocolFeatures: this.protocolFeatures,
      status: this.vhost.getStatus(),
      regions: this.slots.map((s) => ({
        guestPhysAddr: s.desc.guestPhysAddr,
        size: s.desc.memorySize,
        userspaceAddr: s.desc.userspaceAddr,
      })),
      rings: this.rings.map((r, idx) => ({
        idx,
        num: r.num,
        started: r.started,
        enabled: r.enabled,
        ready: r.ready,
        kicks: r.kicks,
      })),
    };
  }

  // ---- internals ----

  private isPacked(): boolean {
    return (this.features & (1n << BigInt(VIRTIO_F_RING_PACKED))) !== 0n;
  }

  private onKick(idx: number): void {
    const ring = this.rings[idx];
    if (!ring.ready) {
      ring.droppedKicks++;
      return;
    }
    ring.kicks++;
    try {
      this.vhost.kick(idx);
    } catch (err) {
      this.platform.log("warn", `${this.deviceName}: kick of ring ${idx}: ${(err as Error).message}`);
    }
  }

  /** The device's config callback: NEEDS_RESET goes to every ring's error eventfd. */
  private onConfigChange(): void {
    if (!(this.vhost.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET)) return;
    this.platform.log(
      "warn",
      `${this.deviceName}: device needs a reset (a ring broke); signalling the front-end`,
    );
    for (const ring of this.rings) if (ring.errFd !== null) this.platform.signal(ring.errFd);
  }

  /** ready = started && enabled && set up; the first ready ring brings the device to DRIVER_OK. */
  private updateReady(idx: number): void {
    const ring = this.rings[idx];
    const setUp = ring.num > 0 && ring.addr !== null && this.slots.length > 0;
    const ready = ring.started && ring.enabled && setUp;
    if (ready === ring.ready) return;
    this.setReady(idx, ready);
    if (!ready || this.hasProtocol(PROTOCOL_F.STATUS)) return;
    const status = this.vhost.getStatus();
    if (!(status & VIRTIO_CONFIG_S_DRIVER_OK) && status & VIRTIO_CONFIG_S_FEATURES_OK) {
      this.device(() => this.vhost.setStatus(status | VIRTIO_CONFIG_S_DRIVER_OK));
    }
  }

  private setReady(idx: number, ready: boolean): void {
    const ring = this.rings[idx];
    if (ring.ready === ready) return;
    ring.ready = ready;
    this.device(() => this.vhost.setVringEnable(idx, ready));
  }

  /** Ring setup the device refuses while running is done suspended (or is refused when it cannot be). */
  private whileStopped<T>(fn: () => T): T {
    const running = (this.vhost.getStatus() & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 && !this.vhost.isSuspended;
    if (!running || !this.vhost.dev.ops.suspend || !this.vhost.dev.ops.resume) return this.device(fn);
    this.vhost.suspend();
    try {
      return this.device(fn);
    } finally {
      this.vhost.resume();
    }
  }

  /** Device reset that keeps the memory table (re-installed when the device drops its maps). */
  private resetKeepingMemory(): void {
    this.resetPending = false;
    this.featuresAccepted = false;
    for (let i = 0; i < this.rings.length; i++) {
      const ring = this.rings[i];
      ring.started = false;
      ring.ready = false;
      if (ring.kickWatch) ring.kickWatch.stop();
      if (ring.kickFd !== null) this.platform.closeFd(ring.kickFd);
      ring.kickWatch = null;
      ring.kickFd = null;
    }
    this.device(() => this.vhost.setStatus(0));
    if (!this.persistMaps) {
      for (const slot of this.slots) {
        this.device(() => {
          this.vhost.iotlbInvalidate(0, slot.desc.guestPhysAddr, slot.desc.memorySize);
          this.vhost.iotlbUpdate(0, slot.desc.guestPhysAddr, slot.desc.memorySize, slot.region, 0, PERM_RW);
        });
      }
    }
  }

  private dropRingFds(ring: RingState): void {
    if (ring.kickWatch) ring.kickWatch.stop();
    for (const fd of [ring.kickFd, ring.callFd, ring.errFd]) if (fd !== null) this.platform.closeFd(fd);
    ring.kickWatch = null;
    ring.kickFd = ring.callFd = ring.errFd = null;
  }

  /** A u16 of guest memory at a guest physical address, or null when no region covers it. */
  private readGuestU16(gpa: number): number | null {
    for (const { desc, region } of this.slots) {
      if (gpa >= desc.guestPhysAddr && gpa + 2 <= desc.guestPhysAddr + desc.memorySize) {
        return region.bytes.readUInt16LE(gpa - desc.guestPhysAddr);
      }
    }
    return null;
  }

  /** Runs a vhost call; a VdpaError becomes DEVICE_REFUSED with Linux's errno in the message. */
  private device<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof VdpaError) throw new UserBackendError("DEVICE_REFUSED", err.message);
      throw err;
    }
  }
}

/** Guest ranges and user ranges must not overlap (each would make translation ambiguous). */
function checkNoOverlap(regions: readonly UserMemRegion[]): void {
  const byGuest = [...regions].sort((a, b) => a.guestPhysAddr - b.guestPhysAddr);
  for (let i = 1; i < byGuest.length; i++) {
    const prev = byGuest[i - 1];
    if (prev.guestPhysAddr + prev.memorySize > byGuest[i].guestPhysAddr) {
      throw new UserBackendError(
        "REGION_OVERLAP",
        `guest ranges at 0x${prev.guestPhysAddr.toString(16)} and 0x${byGuest[i].guestPhysAddr.toString(16)} overlap`,
      );
    }
  }
  const byUser = [...regions].sort((a, b) => a.userspaceAddr - b.userspaceAddr);
  for (let i = 1; i < byUser.length; i++) {
    const prev = byUser[i - 1];
    if (prev.userspaceAddr + prev.memorySize > byUser[i].userspaceAddr) {
      throw new UserBackendError(
        "REGION_OVERLAP",
        `user ranges at 0x${prev.userspaceAddr.toString(16)} and 0x${byUser[i].userspaceAddr.toString(16)} overlap`,
      );
    }
  }
}
