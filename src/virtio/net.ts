// virtio-net driver: the part of Linux's drivers/net/virtio_net.c a vDPA net device needs. One queue pair
// (receive queue 0, transmit queue 1) and, when negotiated, the control queue; a virtio_net_hdr_v1 in front
// of every frame (zero on transmit, stripped on receive); MAC, MTU and link state from config space; the
// MAC set through the control queue.
//
// Two layers:
// - The hot path works on request slots allocated once at start: every rx buffer, tx buffer, BufferList and
//   per-slot table exists before the first frame, and ring tokens are slot indices. send() copies a frame
//   into a free tx slot, flush() publishes a batch and kicks once, onReceive() hands each frame out as a
//   view of its rx slot, which is re-posted as soon as the callback returns. Nothing is allocated per frame.
// - sendAsync() and frames() are a small convenience layer on top (they allocate).
//
// The driver sees its device only through VirtioTransport, as Linux's virtio-net does not know it runs on
// vDPA.

import { randomBytes } from "node:crypto";
import type { DmaBuffer } from "../memory/index.js";
import { BufferList, isDatapathFault } from "../ring/index.js";
import { featureBit } from "../spec/features.js";
import {
  ETH_ALEN,
  ETH_MIN_MTU,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_ACCESS_PLATFORM,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_NET,
  VIRTIO_NET_CONFIG,
  VIRTIO_NET_CTRL_HDR_SIZE,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_V1_SIZE,
  VIRTIO_NET_OK,
  VIRTIO_NET_S_LINK_UP,
  VIRTIO_RING_F_EVENT_IDX,
} from "../spec/index.js";
import {
  driverFailed,
  driverOk,
  negotiateFeatures,
  PerDeviceDriver,
  readConfig,
  readConfigUint,
} from "./bring-up.js";
import type { TransportQueue, VirtioTransport, VirtqueueInfo } from "./transport.js";

/** Feature bit n as a mask (control path: bigint). */
const bit = featureBit;

/**
 * Every feature this driver can use. From vdpasim_net's offer (MTU MAC STATUS CTRL_VQ CTRL_MAC_ADDR
 * ANY_LAYOUT VERSION_1 ACCESS_PLATFORM) it keeps what Linux's virtio_net keeps: all but ANY_LAYOUT, which
 * Linux lists only for legacy devices (VERSION_1 implies it). Ring features are taken when offered.
 */
export const VIRTIO_NET_DRIVER_FEATURES: bigint =
  bit(VIRTIO_NET_F_MTU) |
  bit(VIRTIO_NET_F_MAC) |
  bit(VIRTIO_NET_F_STATUS) |
  bit(VIRTIO_NET_F_CTRL_VQ) |
  bit(VIRTIO_NET_F_CTRL_MAC_ADDR) |
  bit(VIRTIO_F_VERSION_1) |
  bit(VIRTIO_F_ACCESS_PLATFORM) |
  bit(VIRTIO_F_RING_PACKED) |
  bit(VIRTIO_RING_F_EVENT_IDX) |
  bit(VIRTIO_F_INDIRECT_DESC);

/** Ethernet header, VLAN tag and default payload (Linux ETH_HLEN, VLAN_HLEN, ETH_DATA_LEN). */
const ETH_HLEN = 14;
const VLAN_HLEN = 4;
const ETH_DATA_LEN = 1500;
const HDR = VIRTIO_NET_HDR_V1_SIZE;
/** Control buffer layout: class and command at 0, command data at 8, ack byte at 63. */
const CTRL_DATA_OFFSET = 8;
const CTRL_ACK_OFFSET = 63;
/** Longest control command payload this driver sends. */
export const VIRTIO_NET_CTRL_DATA_MAX = CTRL_ACK_OFFSET - CTRL_DATA_OFFSET;
/** Written into the ack byte before a command, so a device that never answers reads as an error. */
const ACK_UNSET = 0xff;

export type VirtioNetErrorCode =
  /** The device answered a control command with VIRTIO_NET_ERR. */
  | "CTRL_ERR"
  /** The operation needs a feature that was not negotiated. */
  | "UNSUPPORTED"
  /** The device was reset (NEEDS_RESET or a ring fault) while the request was in flight. */
  | "RESET"
  /** The driver was removed. */
  | "REMOVED"
  /** Bring-up failed: the device refused the features or could not be set up again after a reset. */
  | "FAILED";

/** A failed net operation; `code` says why. */
export class VirtioNetError extends Error {
  override readonly name = "VirtioNetError";
  constructor(
    readonly code: VirtioNetErrorCode,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/** Plain counters, read at any time. */
export interface VirtioNetStats {
  /** Frames the device took back from the tx queue, and their bytes (header excluded). */
  txPackets: number;
  txBytes: number;
  /** send() calls refused because every tx slot was in flight. */
  txBusy: number;
  /** Frames that never went out: failed by a reset or by remove(). */
  txErrors: number;
  /** Frames handed to onReceive() or frames(), and their bytes (header excluded). */
  rxPackets: number;
  rxBytes: number;
  /** Frames dropped because nobody was receiving (or the frames() backlog was full). */
  rxDropped: number;
  /** Receive buffers the device returned too short or too long to hold a frame. */
  rxErrors: number;
  /** Control commands acknowledged OK / answered ERR (or not answered). */
  ctrlOk: number;
  ctrlErr: number;
  /** Device resets done to recover (NEEDS_RESET, ring faults). */
  resets: number;
}

export interface VirtioNetOptions {
  /** Cap on the entries of each ring (a power of two for split rings); default: the device's maximum. */
  queueSize?: number;
  /** Frames each frames() iterator holds before newer ones are dropped (default 1024). */
  iteratorBacklog?: number;
}

/** "running" from construction; "failed" when a reset could not bring the device back; then "removed". */
export type VirtioNetState = "running" | "failed" | "removed";

interface TxWaiter {
  frame: Uint8Array;
  resolve: () => void;
  reject: (err: Error) => void;
}

interface CtrlCommand {
  cls: number;
  cmd: number;
  data: Uint8Array;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * A virtio-net device driven through a transport. Construction runs the whole bring-up (reset, ACKNOWLEDGE,
 * DRIVER, features, FEATURES_OK, queues, DRIVER_OK) and fills the receive queue; it throws a
 * VirtioNetError("FAILED") when the device refuses. Call remove() to let the device go.
 */
export class VirtioNet {
  /** Features in effect. */
  features = 0n;
  /** MTU: from config with the MTU feature, else 1500. */
  mtu = ETH_DATA_LEN;
  /** Link state: from config with the STATUS feature, else always up. */
  linkUp = true;
  readonly stats: VirtioNetStats = {
    txPackets: 0,
    txBytes: 0,
    txBusy: 0,
    txErrors: 0,
    rxPackets: 0,
    rxBytes: 0,
    rxDropped: 0,
    rxErrors: 0,
    ctrlOk: 0,
    ctrlErr: 0,
    resets: 0,
  };
  private stateNow: VirtioNetState = "running";
  private readonly macBytes = new Uint8Array(ETH_ALEN);
  /** A MAC the user set through the control queue; set again after a device reset. */
  private macOverride: Uint8Array | null = null;

  private rxq: TransportQueue | null = null;
  private txq: TransportQueue | null = null;
  private cvq: TransportQueue | null = null;

  // Receive slots: one buffer each (header + frame), posted once and re-posted after every frame.
  private rxSlotCount = 0;
  private rxDma: DmaBuffer | null = null;
  private rxBufs: BufferList[] = [];
  private rxFrames: Uint8Array[] = [];

  // Transmit slots: a free stack of slot indices; per slot its BufferList, frame length, and an optional
  // sendAsync waiter.
  private maxFrame = 0;
  private txSlotCount = 0;
  private txDma: DmaBuffer | null = null;
  private txWords: Uint32Array = new Uint32Array(0);
  private txStride = 0;
  private txBufs: BufferList[] = [];
  private txLens = new Uint32Array(0);
  private txFree = new Uint16Array(0);
  private txFreeTop = 0;
  private txPending: (TxWaiter | null)[] = [];
  /** A send() failed for want of a slot: call onTxReady when one frees up (Linux netif_wake_queue). */
  private txStopped = false;
  private readonly txWaiters: TxWaiter[] = [];
  private flushScheduled = false;

  // Control queue: one command in flight, the rest queued.
  private ctrlDma: DmaBuffer | null = null;
  private readonly ctrlBufs = new BufferList(3);
  private ctrlCurrent: CtrlCommand | null = null;
  private readonly ctrlQueue: CtrlCommand[] = [];

  private receiveCb: ((frame: Uint8Array, len: number) => void) | null = null;
  private linkCb: ((up: boolean) => void) | null = null;
  private txReadyCb: (() => void) | null = null;
  private resetCb: ((err: Error | null) => void) | null = null;
  private readonly subscribers: FrameQueue[] = [];

  constructor(
    readonly transport: VirtioTransport,
    private readonly opts: VirtioNetOptions = {},
  ) {
    try {
      this.start();
    } catch (err) {
      this.stopQueues(null);
      this.releaseDma();
      this.stateNow = "removed";
      driverFailed(transport);
      throw err;
    }
  }

  get state(): VirtioNetState {
    return this.stateNow;
  }

  /** The MAC address (a copy): from config with the MAC feature, else a random local one. */
  get mac(): Uint8Array {
    return this.macBytes.slice();
  }

  /** The MAC as "xx:xx:xx:xx:xx:xx". */
  get macString(): string {
    return Array.from(this.macBytes, (b) => b.toString(16).padStart(2, "0")).join(":");
  }

  /** Largest frame send() accepts and rx buffers hold: Ethernet header, a VLAN tag and the MTU. */
  get maxFrameSize(): number {
    return this.maxFrame;
  }

  /** Receive buffers (the rx ring size at start). */
  get rxSlots(): number {
    return this.rxSlotCount;
  }

  /** Transmit slots (the tx ring size at start). */
  get txSlots(): number {
    return this.txSlotCount;
  }

  /** Transmit slots free right now. */
  get txFreeSlots(): number {
    return this.txFreeTop;
  }

  // ---- Hot path ----

  /**
   * Copies `frame` (an Ethernet frame, no virtio header) into a free transmit slot behind a zero
   * virtio_net_hdr_v1 and adds it to the tx ring. Nothing reaches the device before flush(). Returns false
   * when every slot is in flight (counted in stats.txBusy; onTxReady fires when one frees up). Throws a
   * RangeError for a frame longer than maxFrameSize, a VirtioNetError when the driver is not running.
   */
  send(frame: Uint8Array): boolean {
    if (this.stateNow !== "running") throw this.notRunning();
    if (frame.length > this.maxFrame) {
      throw new RangeError(`frame of ${frame.length} bytes exceeds ${this.maxFrame}`);
    }
    if (this.addTx(frame) >= 0) return true;
    this.stats.txBusy++;
    this.txStopped = true;
    return false;
  }

  /** Makes the frames added by send() visible to the device and kicks it once if it wants a kick. */
  flush(): void {
    const q = this.txq;
    if (q?.ring.publishAvail()) q.notify();
  }

  /**
   * Sets the receive callback (null removes it). `frame` is the rx slot's buffer: bytes [0, len) are the
   * frame, without the virtio header. It is valid only until the callback returns, when the buffer goes
   * back to the device: copy what you keep. With no callback and no frames() iterator, frames are dropped
   * (stats.rxDropped).
   */
  onReceive(cb: ((frame: Uint8Array, len: number) => void) | null): void {
    this.receiveCb = cb;
  }

  /** Called after send() returned false, once completions freed a transmit slot. */
  onTxReady(cb: (() => void) | null): void {
    this.txReadyCb = cb;
  }

  /** Called when the link state changes (config change with the STATUS feature). */
  onLinkChange(cb: ((up: boolean) => void) | null): void {
    this.linkCb = cb;
  }

  /**
   * Called after a recovery reset (NEEDS_RESET or a ring fault): with null once the device is running
   * again, with the error when it could not be brought back (the driver is then "failed").
   */
  onReset(cb: ((err: Error | null) => void) | null): void {
    this.resetCb = cb;
  }

  // ---- Promise layer ----

  /**
   * Sends one frame and resolves when the device has taken it (its tx buffer came back). Waits for a free
   * slot when all are busy, and flushes on its own (once per microtask turn, so concurrent calls share a
   * kick). Rejects with VirtioNetError RESET or REMOVED when the frame was lost to a reset or remove().
   */
  sendAsync(frame: Uint8Array): Promise<void> {
    if (this.stateNow !== "running") return Promise.reject(this.notRunning());
    if (frame.length > this.maxFrame) {
      return Promise.reject(new RangeError(`frame of ${frame.length} bytes exceeds ${this.maxFrame}`));
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: TxWaiter = { frame, resolve, reject };
      if (!this.sendWaiter(waiter)) {
        // The caller may reuse its array once we return: keep our own copy while waiting.
        waiter.frame = new Uint8Array(frame);
        this.txWaiters.push(waiter);
      }
    });
  }

  /**
   * Received frames as an async iterator of copies. Frames arriving while nobody awaits are kept, up to
   * `iteratorBacklog`; beyond that they are dropped. Ends when the driver is removed or fails; breaking out
   * of the loop detaches it.
   */
  frames(): AsyncIterableIterator<Uint8Array> {
    const sub = new FrameQueue(this.opts.iteratorBacklog ?? 1024, (q) => {
      const i = this.subscribers.indexOf(q);
      if (i >= 0) this.subscribers.splice(i, 1);
    });
    if (this.stateNow === "running") this.subscribers.push(sub);
    else sub.end();
    return sub;
  }

  /**
   * Sends one control command (class, command, data) and resolves when the device acknowledged it OK.
   * Rejects with CTRL_ERR when it answered ERR, UNSUPPORTED without a control queue.
   */
  ctrlCommand(cls: number, cmd: number, data: Uint8Array = new Uint8Array(0)): Promise<void> {
    if (this.stateNow !== "running") return Promise.reject(this.notRunning());
    if ((this.features & bit(VIRTIO_NET_F_CTRL_VQ)) === 0n) {
      return Promise.reject(new VirtioNetError("UNSUPPORTED", "no control queue (CTRL_VQ not negotiated)"));
    }
    if (data.length > VIRTIO_NET_CTRL_DATA_MAX) {
      return Promise.reject(new RangeError(`control data of ${data.length} bytes is too long`));
    }
    return new Promise<void>((resolve, reject) => {
      this.ctrlQueue.push({ cls, cmd, data: new Uint8Array(data), resolve, reject });
      this.sendNextCtrl();
    });
  }

  /**
   * Sets the MAC address through the control queue (class MAC, command ADDR_SET), as Linux does when
   * CTRL_MAC_ADDR is negotiated; without it, rejects with UNSUPPORTED. The address is set again after a
   * recovery reset.
   */
  async setMac(mac: Uint8Array): Promise<void> {
    if (mac.length !== ETH_ALEN) throw new RangeError("a MAC address has 6 bytes");
    if (this.stateNow === "running" && (this.features & bit(VIRTIO_NET_F_CTRL_MAC_ADDR)) === 0n) {
      throw new VirtioNetError("UNSUPPORTED", "CTRL_MAC_ADDR not negotiated");
    }
    const copy = new Uint8Array(mac);
    await this.ctrlCommand(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, copy);
    this.macBytes.set(copy);
    this.macOverride = copy;
  }

  // ---- Lifecycle ----

  /**
   * Lets the device go (Linux virtnet_remove): reset, queues deleted, every frame in flight and every
   * pending promise failed with REMOVED, iterators ended, DMA memory returned. Idempotent.
   */
  remove(): void {
    if (this.stateNow === "removed") return;
    const err = new VirtioNetError("REMOVED", `${this.transport.name}: driver removed`);
    this.transport.onConfigChange(null);
    this.stopQueues(err);
    this.stateNow = "removed";
    this.endWaiters(err);
    this.releaseDma();
  }

  /** Bring-up: features, config, queues, DRIVER_OK, receive buffers. Slots are allocated the first time. */
  private start(): void {
    const t = this.transport;
    this.features = negotiateFeatures(
      t,
      (offered) => this.chooseFeatures(offered),
      (message) => new VirtioNetError("FAILED", message),
    );
    this.readDeviceConfig();
    const infos: VirtqueueInfo[] = [
      { name: "input.0", callback: this.rxInterrupt },
      { name: "output.0", callback: this.txInterrupt },
    ];
    const hasCvq = (this.features & bit(VIRTIO_NET_F_CTRL_VQ)) !== 0n;
    if (hasCvq) infos.push({ name: "control", callback: this.ctrlInterrupt });
    // Once slots exist the rings must not outgrow them (tokens are slot indices).
    const size = this.rxSlotCount > 0 ? Math.min(this.rxSlotCount, this.txSlotCount) : this.opts.queueSize;
    const queues = t.findVqs(infos, size === undefined ? undefined : { size });
    this.rxq = queues[0];
    this.txq = queues[1];
    this.cvq = hasCvq ? queues[2] : null;
    if (!this.rxq || !this.txq || (hasCvq && !this.cvq)) throw new VirtioNetError("FAILED", "missing queue");
    if (this.rxSlotCount === 0) this.allocSlots(this.rxq.size, this.txq.size);
    t.onConfigChange(this.configChanged);
    driverOk(t);
    this.stateNow = "running";
    this.fillRx();
    if (this.macOverride && hasCvq && this.features & bit(VIRTIO_NET_F_CTRL_MAC_ADDR)) {
      // Put the user's MAC back on the new device; a failure shows in stats.ctrlErr.
      this.ctrlCommand(VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET, this.macOverride).then(
        () => this.macOverride && this.macBytes.set(this.macOverride),
        () => {},
      );
    }
  }

  /** Linux virtnet_validate and virtnet_validate_features, for the bits this driver takes. */
  private chooseFeatures(offered: bigint): bigint {
    let f = offered & VIRTIO_NET_DRIVER_FEATURES;
    if ((f & bit(VIRTIO_F_VERSION_1)) === 0n) {
      throw new VirtioNetError("FAILED", `${this.transport.name}: legacy device (no VERSION_1)`);
    }
    // Spec 5.1.3.1: CTRL_MAC_ADDR needs CTRL_VQ.
    if ((f & bit(VIRTIO_NET_F_CTRL_VQ)) === 0n) f &= ~bit(VIRTIO_NET_F_CTRL_MAC_ADDR);
    // Linux clears MTU when the device's value is below the Ethernet minimum rather than fail.
    if (f & bit(VIRTIO_NET_F_MTU) && readConfigUint(this.transport, VIRTIO_NET_CONFIG.mtu, 2) < ETH_MIN_MTU) {
      f &= ~bit(VIRTIO_NET_F_MTU);
    }
    return f;
  }

  private readDeviceConfig(): void {
    const t = this.transport;
    const f = this.features;
    if (f & bit(VIRTIO_NET_F_MAC)) this.macBytes.set(readConfig(t, VIRTIO_NET_CONFIG.mac, ETH_ALEN));
    else if (this.macBytes.every((b) => b === 0)) {
      // Linux eth_hw_addr_random: locally administered, unicast.
      this.macBytes.set(randomBytes(ETH_ALEN));
      this.macBytes[0] = (this.macBytes[0] & 0xfe) | 0x02;
    }
    if (this.macOverride) this.macBytes.set(this.macOverride);
    if (f & bit(VIRTIO_NET_F_MTU)) this.mtu = readConfigUint(t, VIRTIO_NET_CONFIG.mtu, 2);
    this.linkUp = this.readLink();
  }

  private readLink(): boolean {
    if ((this.features & bit(VIRTIO_NET_F_STATUS)) === 0n) return true;
    return (readConfigUint(this.transport, VIRTIO_NET_CONFIG.status, 2) & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /** Allocates every slot the driver will ever use: done once, at the first start. */
  private allocSlots(rxCount: number, txCount: number): void {
    const t = this.transport;
    this.maxFrame = ETH_HLEN + VLAN_HLEN + Math.max(this.mtu, ETH_DATA_LEN);
    const stride = align64(HDR + this.maxFrame);

    this.rxDma = t.allocDma(rxCount * stride, 64);
    this.rxSlotCount = rxCount;
    for (let i = 0; i < rxCount; i++) {
      const off = i * stride;
      this.rxBufs.push(new BufferList(1).in(this.rxDma.iova + off, HDR + this.maxFrame));
      this.rxFrames.push(this.rxDma.bytes.subarray(off + HDR, off + HDR + this.maxFrame));
    }

    this.txDma = t.allocDma(txCount * stride, 64);
    const txBytes = this.txDma.bytes;
    this.txWords = new Uint32Array(txBytes.buffer, txBytes.byteOffset, (txCount * stride) >>> 2);
    this.txStride = stride;
    this.txSlotCount = txCount;
    this.txLens = new Uint32Array(txCount);
    this.txFree = new Uint16Array(txCount);
    this.txPending = new Array<TxWaiter | null>(txCount).fill(null);
    for (let i = 0; i < txCount; i++) {
      this.txBufs.push(new BufferList(1));
      // Low slots on top of the stack.
      this.txFree[i] = txCount - 1 - i;
    }
    this.txFreeTop = txCount;

    this.ctrlDma = t.allocDma(CTRL_ACK_OFFSET + 1, 64);
  }

  private releaseDma(): void {
    const t = this.transport;
    for (const dma of [this.rxDma, this.txDma, this.ctrlDma]) if (dma) t.freeDma(dma);
    this.rxDma = this.txDma = this.ctrlDma = null;
  }

  /** Posts every receive slot (at start: the ring is empty), then kicks once. */
  private fillRx(): void {
    const q = this.rxq!;
    const ring = q.ring;
    for (let i = 0; i < this.rxSlotCount; i++) if (!ring.add(this.rxBufs[i], i, false)) break;
    if (ring.publishAvail()) q.notify();
  }

  /** Puts a frame in a free tx slot and on the ring; the slot, or -1 when none is free. */
  private addTx(frame: Uint8Array): number {
    if (this.txFreeTop === 0) return -1;
    const slot = this.txFree[--this.txFreeTop];
    const off = slot * this.txStride;
    // A zero virtio_net_hdr_v1: no offloads, num_buffers 0 (the device ignores it on transmit).
    const w = off >>> 2;
    this.txWords[w] = 0;
    this.txWords[w + 1] = 0;
    this.txWords[w + 2] = 0;
    this.txDma!.bytes.set(frame, off + HDR);
    const bufs = this.txBufs[slot].clear().out(this.txDma!.iova + off, HDR + frame.length);
    if (!this.txq!.ring.add(bufs, slot, false)) {
      this.txFree[this.txFreeTop++] = slot;
      return -1;
    }
    this.txLens[slot] = frame.length;
    return slot;
  }

  private sendWaiter(waiter: TxWaiter): boolean {
    const slot = this.addTx(waiter.frame);
    if (slot < 0) return false;
    this.txPending[slot] = waiter;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.scheduledFlush);
    }
    return true;
  }

  private readonly scheduledFlush = (): void => {
    this.flushScheduled = false;
    if (this.stateNow === "running") this.flush();
  };

  /** A tx slot is done: back on the free stack, its sendAsync (if any) settled. */
  private releaseTx(slot: number, err: Error | null): void {
    const waiter = this.txPending[slot];
    this.txPending[slot] = null;
    this.txFree[this.txFreeTop++] = slot;
    if (err) {
      this.stats.txErrors++;
      waiter?.reject(err);
    } else {
      this.stats.txPackets++;
      this.stats.txBytes += this.txLens[slot];
      waiter?.resolve();
    }
  }

  /** After slots were freed: waiting sendAsync calls first, then the hot path's wake-up. */
  private txSlotsFreed(): void {
    while (this.stateNow === "running" && this.txWaiters.length > 0 && this.sendWaiter(this.txWaiters[0])) {
      this.txWaiters.shift();
    }
    if (this.txStopped && this.txFreeTop > 0 && this.stateNow === "running") {
      this.txStopped = false;
      const cb = this.txReadyCb;
      if (cb) callUser(cb);
    }
  }

  // ---- Interrupts: reclaim a batch, re-enable callbacks, and poll again if buffers arrived meanwhile ----

  private readonly rxInterrupt = (): void => {
    const q = this.rxq;
    if (q === null || this.stateNow !== "running") return;
    const ring = q.ring;
    try {
      do {
        ring.disableCallbacks();
        for (let slot = ring.getUsed(); slot !== undefined; slot = ring.getUsed()) {
          this.deliver(slot, ring.usedLen);
          // The callback may have removed the driver (or a reset replaced the queue).
          if (this.rxq !== q) return;
          ring.add(this.rxBufs[slot], slot, false);
        }
        if (ring.publishAvail()) q.notify();
      } while (ring.enableCallbacks());
    } catch (err) {
      this.ringFault(err);
    }
  };

  /** Hands one received buffer out (Linux receive_buf + the good_packet_len checks). */
  private deliver(slot: number, usedLen: number): void {
    const len = usedLen - HDR;
    if (len < ETH_HLEN || len > this.maxFrame) {
      this.stats.rxErrors++;
      return;
    }
    const cb = this.receiveCb;
    const subs = this.subscribers;
    if (cb === null && subs.length === 0) {
      this.stats.rxDropped++;
      return;
    }
    const frame = this.rxFrames[slot];
    let taken = cb !== null;
    if (cb !== null) {
      try {
        cb(frame, len);
      } catch (err) {
        rethrowLater(err);
      }
    }
    for (let i = 0; i < subs.length; i++)
      if (subs[i].push(new Uint8Array(frame.subarray(0, len)))) taken = true;
    if (taken) {
      this.stats.rxPackets++;
      this.stats.rxBytes += len;
    } else {
      this.stats.rxDropped++;
    }
  }

  private readonly txInterrupt = (): void => {
    const q = this.txq;
    if (q === null || this.stateNow !== "running") return;
    const ring = q.ring;
    try {
      do {
        ring.disableCallbacks();
        for (let slot = ring.getUsed(); slot !== undefined; slot = ring.getUsed()) this.releaseTx(slot, null);
      } while (ring.enableCallbacks());
    } catch (err) {
      this.ringFault(err);
      return;
    }
    this.txSlotsFreed();
  };

  private readonly ctrlInterrupt = (): void => {
    const q = this.cvq;
    if (q === null || this.stateNow !== "running") return;
    const ring = q.ring;
    try {
      do {
        ring.disableCallbacks();
        while (ring.getUsed() !== undefined) this.finishCtrl(ring.usedLen);
      } while (ring.enableCallbacks());
    } catch (err) {
      this.ringFault(err);
      return;
    }
    this.sendNextCtrl();
  };

  private sendNextCtrl(): void {
    const q = this.cvq;
    if (this.ctrlCurrent !== null || q === null || this.stateNow !== "running") return;
    const c = this.ctrlQueue.shift();
    if (!c) return;
    this.ctrlCurrent = c;
    const dma = this.ctrlDma!;
    dma.bytes[0] = c.cls;
    dma.bytes[1] = c.cmd;
    dma.bytes.set(c.data, CTRL_DATA_OFFSET);
    dma.bytes[CTRL_ACK_OFFSET] = ACK_UNSET;
    const bufs = this.ctrlBufs.clear().out(dma.iova, VIRTIO_NET_CTRL_HDR_SIZE);
    if (c.data.length > 0) bufs.out(dma.iova + CTRL_DATA_OFFSET, c.data.length);
    bufs.in(dma.iova + CTRL_ACK_OFFSET, 1);
    q.ring.add(bufs, 0);
    if (q.ring.publishAvail()) q.notify();
  }

  private finishCtrl(usedLen: number): void {
    const c = this.ctrlCurrent;
    this.ctrlCurrent = null;
    if (!c) return;
    const ack = this.ctrlDma!.bytes[CTRL_ACK_OFFSET];
    if (usedLen >= 1 && ack === VIRTIO_NET_OK) {
      this.stats.ctrlOk++;
      c.resolve();
    } else {
      this.stats.ctrlErr++;
      c.reject(new VirtioNetError("CTRL_ERR", `class ${c.cls} command ${c.cmd}: device answered ${ack}`));
    }
  }

  // ---- Config changes, resets, failure ----

  private readonly configChanged = (): void => {
    if (this.stateNow !== "running") return;
    if (this.transport.getStatus() & VIRTIO_CONFIG_S_NEEDS_RESET) {
      this.recover();
      return;
    }
    const up = this.readLink();
    if (up === this.linkUp) return;
    this.linkUp = up;
    const cb = this.linkCb;
    if (cb) callUser(cb, up);
  };

  /** A driver-side ring check failed (the device returned garbage): recover as from NEEDS_RESET. */
  private ringFault(err: unknown): void {
    if (!isDatapathFault(err)) throw err;
    this.recover();
  }

  /**
   * Resets the device and brings it up again: frames in flight fail with RESET, the receive queue is
   * filled again, waiting sendAsync calls go to the new queues, a MAC set by the user is set again.
   */
  private recover(): void {
    this.stats.resets++;
    this.stopQueues(new VirtioNetError("RESET", `${this.transport.name}: device reset while in flight`));
    let error: Error | null = null;
    try {
      this.start();
    } catch (err) {
      error = err as Error;
      this.stopQueues(null);
      this.stateNow = "failed";
      driverFailed(this.transport);
      this.endWaiters(
        new VirtioNetError("FAILED", `${this.transport.name}: reset failed: ${(err as Error).message}`),
      );
    }
    if (error === null) this.txSlotsFreed();
    const cb = this.resetCb;
    if (cb) callUser(cb, error);
  }

  /**
   * Reset first, so the device stops touching the rings, then take back what it held and delete the
   * queues (Linux: virtio_reset_device, then del_vqs). `err` fails what was in flight; null drops it.
   */
  private stopQueues(err: Error | null): void {
    const t = this.transport;
    t.reset();
    const { rxq, txq, cvq } = this;
    this.rxq = this.txq = this.cvq = null;
    rxq?.ring.detachUnused();
    if (txq) {
      for (const slot of txq.ring.detachUnused()) {
        if (err) this.releaseTx(slot, err);
        else this.txFree[this.txFreeTop++] = slot;
      }
    }
    cvq?.ring.detachUnused();
    const ctrl = this.ctrlQueue.splice(0);
    if (this.ctrlCurrent) ctrl.unshift(this.ctrlCurrent);
    this.ctrlCurrent = null;
    const ctrlErr = err ?? new VirtioNetError("RESET", "device reset");
    for (const c of ctrl) c.reject(ctrlErr);
    if (rxq || txq || cvq) t.delVqs();
  }

  private endWaiters(err: Error): void {
    for (const w of this.txWaiters.splice(0)) w.reject(err);
    for (const c of this.ctrlQueue.splice(0)) c.reject(err);
    for (const s of this.subscribers.splice(0)) s.end();
  }

  private notRunning(): VirtioNetError {
    return this.stateNow === "removed"
      ? new VirtioNetError("REMOVED", `${this.transport.name}: driver removed`)
      : new VirtioNetError("FAILED", `${this.transport.name}: device failed`);
  }
}

/** Received frames waiting for an async iterator. */
class FrameQueue implements AsyncIterableIterator<Uint8Array> {
  private readonly queue: Uint8Array[] = [];
  private waiter: ((r: IteratorResult<Uint8Array, undefined>) => void) | null = null;
  private ended = false;

  constructor(
    private readonly backlog: number,
    private readonly detach: (q: FrameQueue) => void,
  ) {}

  /** False when the backlog is full (the frame is dropped). */
  push(frame: Uint8Array): boolean {
    if (this.ended) return false;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w({ value: frame, done: false });
      return true;
    }
    if (this.queue.length >= this.backlog) return false;
    this.queue.push(frame);
    return true;
  }

  end(): void {
    this.ended = true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<Uint8Array, undefined>> {
    const frame = this.queue.shift();
    if (frame) return Promise.resolve({ value: frame, done: false });
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  return(): Promise<IteratorResult<Uint8Array, undefined>> {
    this.end();
    this.detach(this);
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this;
  }
}

/**
 * The virtio-net driver for a virtio bus: probe() brings a device up as a VirtioNet, remove() lets it go.
 * `devices` holds the bound ones; `onProbe` hears of each new one.
 */
export class VirtioNetDriver extends PerDeviceDriver<VirtioNet> {
  readonly name = "virtio_net";
  readonly deviceIds: readonly number[] = [VIRTIO_ID_NET];

  constructor(private readonly opts: VirtioNetOptions & { onProbe?: (net: VirtioNet) => void } = {}) {
    super(opts.onProbe);
  }

  protected create(transport: VirtioTransport): VirtioNet {
    return new VirtioNet(transport, this.opts);
  }
}

function align64(n: number): number {
  return (n + 63) & ~63;
}

/**
 * Calls a user callback so that a throw cannot leave the driver half-way through a batch: the error is
 * rethrown from a fresh microtask (an uncaught exception, as an EventEmitter listener's would be).
 */
function callUser<A extends unknown[]>(cb: (...args: A) => void, ...args: A): void {
  try {
    cb(...args);
  } catch (err) {
    rethrowLater(err);
  }
}

function rethrowLater(err: unknown): void {
  queueMicrotask(() => {
    throw err;
  });
}
