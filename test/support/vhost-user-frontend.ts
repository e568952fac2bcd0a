// A vhost-user front-end for tests, built on src/vhost-user and the ring engine's driver side: it drives a
// device over the socket in QEMU 7.2's message order (../shared/reference/qemu-guest.md), with guest RAM
// in a sealed memfd as QEMU's memory-backend-memfd has it, eventfds for kick, call and err, and every
// SET_* sent with NEED_REPLY (REPLY_ACK) so each step's success is known.

import assert from "node:assert/strict";
import { DmaPool, MappedMemoryRegion } from "../../src/memory/index.js";
import {
  addSeals,
  closeFd,
  connectUnix,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  mapShared,
  memfdCreate,
  SEAL,
  socketPair,
} from "../../src/os/index.js";
import { createDriverRing, type DriverRing, type RingFormat } from "../../src/ring/index.js";
import type { Message } from "../../src/vhost-user/framing.js";
import {
  addrPayload,
  configRequestPayload,
  type MemRegionDesc,
  memRegPayload,
  memTablePayload,
  PROTOCOL_F,
  REQ,
  statePayload,
  u64Payload,
  VhostUserConnection,
  vringFdPayload,
} from "../../src/vhost-user/index.js";

export const GUEST_BASE = 0x1_0000_0000;
/** Where "QEMU" has guest RAM in its own address space: ring addresses are sent in this space. */
export const HVA_BASE = 0x7f12_3400_0000;

const bit = (n: number): bigint => 1n << BigInt(n);
const ACKNOWLEDGE = 1;
const DRIVER = 2;
const DRIVER_OK = 4;
const FEATURES_OK = 8;

export interface StartOptions {
  format?: RingFormat;
  queues?: number[];
  features?: bigint;
  queueSize?: number;
}

export class TestFrontEnd {
  /** Front-ends not yet closed (tests close leftovers after a failure). */
  static readonly open = new Set<TestFrontEnd>();
  readonly conn: VhostUserConnection;
  readonly memfd: number;
  readonly pool: DmaPool;
  readonly region: MappedMemoryRegion;
  features = 0n;
  protocolFeatures = 0n;
  readonly rings = new Map<number, DriverRing<number>>();
  readonly kickFds = new Map<number, number>();
  readonly callFds = new Map<number, number>();
  readonly errFds = new Map<number, number>();
  private backendChannel: number[] = [];
  closedReason: string | null = null;
  private memoryAdded = false;
  readonly unsolicited: Message[] = [];

  constructor(socketPath: string, memSize = 4 << 20) {
    const fd = connectUnix(socketPath);
    this.conn = new VhostUserConnection(fd, {
      onMessage: (_c, msg) => {
        this.unsolicited.push({ ...msg, payload: Uint8Array.from(msg.payload) });
        for (const f of msg.fds) closeFd(f);
      },
      onClose: (_c, reason) => {
        this.closedReason = reason;
      },
    });
    this.memfd = memfdCreate("guest-ram", { sealing: true });
    ftruncate(this.memfd, memSize);
    addSeals(this.memfd, SEAL.SHRINK | SEAL.GROW);
    this.region = new MappedMemoryRegion(mapShared(this.memfd, 0, memSize), "guest-ram");
    this.pool = new DmaPool({ size: memSize, iovaBase: GUEST_BASE, region: this.region });
    TestFrontEnd.open.add(this);
  }

  get memRegion(): MemRegionDesc {
    return { guestPhysAddr: GUEST_BASE, memorySize: this.pool.size, userspaceAddr: HVA_BASE, mmapOffset: 0 };
  }

  hva(gpa: number): number {
    return HVA_BASE + (gpa - GUEST_BASE);
  }

  async u64(request: number): Promise<bigint> {
    const reply = await this.conn.request(request);
    assert.equal(reply.payload.byteLength, 8, `reply to ${request}`);
    return new DataView(reply.payload.buffer, reply.payload.byteOffset).getBigUint64(0, true);
  }

  /** A SET_* with NEED_REPLY: resolves with the ack value (0 = success). */
  async ack(request: number, payload?: Uint8Array, fds: number[] = []): Promise<bigint> {
    const reply = await this.conn.request(request, payload, fds, { needReply: true });
    assert.equal(reply.payload.byteLength, 8);
    return new DataView(reply.payload.buffer, reply.payload.byteOffset).getBigUint64(0, true);
  }

  async mustAck(request: number, payload?: Uint8Array, fds: number[] = []): Promise<void> {
    assert.equal(await this.ack(request, payload, fds), 0n, `ack of request ${request}`);
  }

  /** The connection-time exchange QEMU does once. */
  async init(
    opts: { protocol?: bigint } = {},
  ): Promise<{ features: bigint; protocol: bigint; queues: bigint; slots: bigint }> {
    const features = await this.u64(REQ.GET_FEATURES);
    assert.ok(features & bit(30), "PROTOCOL_FEATURES offered");
    const offered = await this.u64(REQ.GET_PROTOCOL_FEATURES);
    this.protocolFeatures = opts.protocol ?? offered;
    this.conn.notify(REQ.SET_PROTOCOL_FEATURES, u64Payload(this.protocolFeatures));
    const queues = await this.u64(REQ.GET_QUEUE_NUM);
    const slots = await this.u64(REQ.GET_MAX_MEM_SLOTS);
    if (this.protocolFeatures & bit(PROTOCOL_F.BACKEND_REQ)) {
      const [mine, theirs] = socketPair();
      this.backendChannel = [mine];
      await this.mustAck(REQ.SET_BACKEND_REQ_FD, undefined, [theirs]);
      closeFd(theirs);
    }
    await this.mustAck(REQ.SET_OWNER);
    return { features, protocol: offered, queues, slots };
  }

  async getConfig(offset: number, size: number): Promise<Uint8Array> {
    const reply = await this.conn.request(REQ.GET_CONFIG, configRequestPayload(offset, size));
    const v = new DataView(reply.payload.buffer, reply.payload.byteOffset);
    const got = v.getUint32(4, true);
    return reply.payload.slice(12, 12 + got);
  }

  /** QEMU's start: features, memory, then per ring NUM, BASE, ADDR, KICK, CALL, ERR, then ENABLE. */
  async start(opts: StartOptions = {}): Promise<void> {
    const format = opts.format ?? "split";
    const num = opts.queueSize ?? 64;
    let features = opts.features ?? bit(30) | bit(32);
    if (format === "packed") features |= bit(34);
    this.features = features;
    await this.mustAck(REQ.SET_FEATURES, u64Payload(features));
    // QEMU 7.2 with STATUS: vhost_user_add_status(FEATURES_OK) right after the features
    if (this.hasStatus) await this.addStatus(FEATURES_OK);
    if (this.protocolFeatures & bit(PROTOCOL_F.CONFIGURE_MEM_SLOTS)) {
      // QEMU adds only the regions the back-end does not have yet (it keeps a shadow table)
      if (!this.memoryAdded) await this.mustAck(REQ.ADD_MEM_REG, memRegPayload(this.memRegion), [this.memfd]);
      this.memoryAdded = true;
    } else {
      await this.mustAck(REQ.SET_MEM_TABLE, memTablePayload([this.memRegion]), [this.memfd]);
    }
    for (const q of opts.queues ?? [0, 1]) {
      const old = this.rings.get(q);
      const ring = createDriverRing<number>(format, {
        num,
        pool: this.pool,
        eventIdx: false,
        indirect: false,
      });
      if (old) this.releaseRing(old);
      this.rings.set(q, ring);
      await this.mustAck(REQ.SET_VRING_NUM, statePayload(q, num));
      await this.mustAck(
        REQ.SET_VRING_BASE,
        statePayload(q, format === "packed" ? (0x8000 | (0x8000 << 16)) >>> 0 : 0),
      );
      const a = ring.addresses;
      await this.mustAck(
        REQ.SET_VRING_ADDR,
        addrPayload({
          index: q,
          desc: this.hva(a.desc),
          used: this.hva(a.device),
          avail: this.hva(a.driver),
        }),
      );
      for (const [req, fds] of [
        [REQ.SET_VRING_KICK, this.kickFds],
        [REQ.SET_VRING_CALL, this.callFds],
        [REQ.SET_VRING_ERR, this.errFds],
      ] as const) {
        const old = fds.get(q);
        if (old !== undefined) closeFd(old);
        const fd = eventfdCreate();
        fds.set(q, fd);
        await this.mustAck(req, vringFdPayload(q, true), [fd]);
      }
    }
    for (const q of opts.queues ?? [0, 1]) await this.mustAck(REQ.SET_VRING_ENABLE, statePayload(q, 1));
    // ... and ACKNOWLEDGE|DRIVER|DRIVER_OK once the rings are set up (vhost_user_dev_start)
    if (this.hasStatus) await this.addStatus(ACKNOWLEDGE | DRIVER | DRIVER_OK);
  }

  get hasStatus(): boolean {
    return (this.protocolFeatures & bit(PROTOCOL_F.STATUS)) !== 0n;
  }

  private async addStatus(bits: number): Promise<void> {
    const now = Number(await this.u64(REQ.GET_STATUS));
    await this.mustAck(REQ.SET_STATUS, u64Payload(now | bits));
  }

  /** QEMU's stop: GET_VRING_BASE of every ring; the bases. */
  async stop(): Promise<Map<number, number>> {
    // QEMU 7.2: status 0 first (vhost_user_dev_start(false)), then each ring disabled and stopped
    if (this.hasStatus) await this.mustAck(REQ.SET_STATUS, u64Payload(0));
    for (const q of this.rings.keys()) await this.mustAck(REQ.SET_VRING_ENABLE, statePayload(q, 0));
    const bases = new Map<number, number>();
    for (const q of this.rings.keys()) {
      const reply = await this.conn.request(REQ.GET_VRING_BASE, statePayload(q, 0));
      bases.set(q, new DataView(reply.payload.buffer, reply.payload.byteOffset).getUint32(4, true));
    }
    return bases;
  }

  kick(q: number): void {
    eventfdWrite(this.kickFds.get(q)!);
  }

  /** Signals on an eventfd so far (reads and resets it). */
  drain(fds: Map<number, number>, q: number): bigint {
    return eventfdRead(fds.get(q)!) ?? 0n;
  }

  private releaseRing(ring: DriverRing<number>): void {
    for (const b of (ring as unknown as { dmaBuffers?: { iova: number }[] }).dmaBuffers ?? [])
      this.pool.release(b.iova);
  }

  close(): void {
    if (!TestFrontEnd.open.delete(this)) return;
    this.conn.close("front-end done");
    for (const fds of [this.kickFds, this.callFds, this.errFds]) {
      for (const fd of fds.values()) closeFd(fd);
      fds.clear();
    }
    for (const fd of this.backendChannel) closeFd(fd);
    this.backendChannel = [];
    closeFd(this.memfd);
    this.region.retire();
  }
}

/** Resolves when `cond()` holds, checking every millisecond; rejects after `ms`. */
export async function until(cond: () => boolean, ms = 2000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}
