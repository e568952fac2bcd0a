// vdpasim_net (Linux drivers/vdpa/vdpa_sim/vdpa_sim_net.c): a virtio-net device whose TX queue is looped
// back to its RX queue through a MAC filter, with a control queue that can set the MAC.
//
// Topology as Linux: 3 queues (0 rx, 1 tx, 2 cvq), 2 groups (the cvq alone in group 1) and 2 address
// spaces, so a vhost user such as QEMU can give the cvq its own ASID (shadow cvq). The platform DMA model
// has 1 group and 1 address space.
//
// Feature offers: by default exactly Linux's 0x308830028, so `vdpa mgmtdev show` and `vdpa dev config
// show` print what Linux prints. RING_PACKED, EVENT_IDX and INDIRECT_DESC are offered only on request:
// createSimNet({ packed, eventIdx, indirect }), or provisioned `device_features` that include them (our
// extension: Linux's simulator answers EINVAL for bits outside its supported set).

import type { SegmentList } from "../../memory/index.js";
import { Chain } from "../../ring/index.js";
import { featureBit } from "../../spec/features.js";
import {
  ETH_ALEN,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_NET,
  VIRTIO_NET_CONFIG,
  VIRTIO_NET_CONFIG_SIZE,
  VIRTIO_NET_CTRL_HDR_SIZE,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_LEGACY_SIZE,
  VIRTIO_NET_HDR_V1_SIZE,
  VIRTIO_NET_OK,
  VIRTIO_NET_S_LINK_UP,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../spec/index.js";
import type { VendorStat } from "../../vdpa/config-ops.js";
import { VdpaDevice } from "../../vdpa/device.js";
import type { DmaModel } from "../../vdpa/dma.js";
import { VdpaError } from "../../vdpa/errors.js";
import { attrBit, type DevSetConfig, type MgmtDev } from "../../vdpa/mgmt-types.js";
import {
  createVdpaSim,
  provisionFeatures,
  type SimMgmtDevOptions,
  VDPASIM_FEATURES,
  VDPASIM_RING_OPTION_FEATURES,
  type VdpaSim,
  type VdpaSimDevAttr,
} from "./core.js";

/** Feature bit n as a mask (control path: bigint). */
const bit = featureBit;

/** Linux VDPASIM_NET_FEATURES: 0x308830028 (MTU MAC STATUS CTRL_VQ CTRL_MAC_ADDR + base bits). */
export const VDPASIM_NET_FEATURES =
  VDPASIM_FEATURES |
  bit(VIRTIO_NET_F_MAC) |
  bit(VIRTIO_NET_F_STATUS) |
  bit(VIRTIO_NET_F_MTU) |
  bit(VIRTIO_NET_F_CTRL_VQ) |
  bit(VIRTIO_NET_F_CTRL_MAC_ADDR);

export const VDPASIM_NET_VQ_NUM = 3;
export const VDPASIM_NET_GROUP_NUM = 2;
export const VDPASIM_NET_AS_NUM = 2;
export const VDPASIM_NET_RXQ = 0;
export const VDPASIM_NET_TXQ = 1;
export const VDPASIM_NET_CVQ = 2;
/** Linux copies at most one page of each frame (its bounce buffer's size), virtio-net header included. */
export const VDPASIM_NET_BUFFER_SIZE = 4096;
export const VDPASIM_NET_DEFAULT_MTU = 1500;

/** Linux's vdpasim_dataq_stats / vdpasim_cq_stats: plain counters, read by `vdpa dev vstats show`. */
export interface NetRxStats {
  pkts: number;
  bytes: number;
  errors: number;
  overruns: number;
  drops: number;
}
export interface NetTxStats {
  pkts: number;
  bytes: number;
  errors: number;
  /** Never incremented, as in Linux: a rejected frame counts as an rx drop. */
  drops: number;
}
export interface NetCvqStats {
  requests: number;
  successes: number;
  errors: number;
}

/** The device-type half of vdpasim_net: its config, statistics and work function. */
export class VdpasimNet implements VdpaSimDevAttr {
  readonly id = VIRTIO_ID_NET;
  readonly nvqs = VDPASIM_NET_VQ_NUM;
  readonly ngroups = VDPASIM_NET_GROUP_NUM;
  readonly nas = VDPASIM_NET_AS_NUM;
  readonly configSize = VIRTIO_NET_CONFIG_SIZE;
  readonly rx: NetRxStats = { pkts: 0, bytes: 0, errors: 0, overruns: 0, drops: 0 };
  readonly tx: NetTxStats = { pkts: 0, bytes: 0, errors: 0, drops: 0 };
  readonly cvq: NetCvqStats = { requests: 0, successes: 0, errors: 0 };

  /** The header and destination MAC of a frame whose first segment is shorter than both. */
  private readonly head = new Uint8Array(VIRTIO_NET_HDR_V1_SIZE + ETH_ALEN);
  private readonly txChain = new Chain();
  private readonly rxChain = new Chain();
  private readonly cvqChain = new Chain();
  private readonly cvqBytes = new Uint8Array(VIRTIO_NET_CTRL_HDR_SIZE + ETH_ALEN);
  private readonly ack = new Uint8Array(1);

  constructor(readonly supportedFeatures: bigint) {}

  /** Linux: the cvq is group 1, rx and tx group 0. */
  vqGroup(idx: number): number {
    return idx === VDPASIM_NET_CVQ ? 1 : 0;
  }

  /** Linux: status is forced to LINK_UP on every read; mac and mtu are what setup or writes left. */
  getConfig(_sim: VdpaSim, config: Uint8Array): void {
    writeLe16(config, VIRTIO_NET_CONFIG.status, VIRTIO_NET_S_LINK_UP);
  }

  /** Linux vdpasim_net_setup_config: mac from the attribute else zeros, mtu from it else 1500. */
  setupConfig(config: Uint8Array, mac: Uint8Array | undefined, mtu: number | undefined): void {
    if (mac) config.set(mac.subarray(0, ETH_ALEN), VIRTIO_NET_CONFIG.mac);
    writeLe16(config, VIRTIO_NET_CONFIG.mtu, mtu ?? VDPASIM_NET_DEFAULT_MTU);
  }

  /**
   * Linux vdpasim_net_work: the cvq first, then, when rx and tx are both ready, TX frames looped to RX
   * until TX is empty, RX runs out, or the batch is done.
   */
  work(sim: VdpaSim): boolean {
    const cvqMore = this.handleCvq(sim);
    if (!sim.queueUsable(VDPASIM_NET_TXQ) || !sim.queueUsable(VDPASIM_NET_RXQ)) return cvqMore;
    const hdrLen = sim.negotiated(VIRTIO_F_VERSION_1) ? VIRTIO_NET_HDR_V1_SIZE : VIRTIO_NET_HDR_LEGACY_SIZE;
    for (let n = 0; n < sim.workBatch; n++) {
      if (!this.loopOneFrame(sim, hdrLen)) return cvqMore;
    }
    return true;
  }

  /**
   * One TX frame to RX; false when the loop must stop (TX empty or faulted, no RX buffer). Linux pulls
   * at most a page of the frame into a bounce buffer and pushes that into the RX buffer; we copy TX
   * segments straight into RX segments (one pass over memory the driver's core wrote, not two), with
   * the same page limit, so every length and counter comes out as in Linux.
   */
  private loopOneFrame(sim: VdpaSim, hdrLen: number): boolean {
    const txc = this.txChain;
    const got = sim.getDesc(VDPASIM_NET_TXQ, txc);
    if (got <= 0) {
      if (got < 0) this.tx.errors++;
      return false;
    }
    this.tx.pkts++;
    const frame = txc.readable;
    const read = Math.min(frame.total, VDPASIM_NET_BUFFER_SIZE);
    this.tx.bytes += read;
    if (!this.receiveFilter(sim, frame, read, hdrLen)) {
      this.rx.drops++;
      sim.complete(VDPASIM_NET_TXQ, txc, 0);
      return true;
    }
    const rxc = this.rxChain;
    // Linux counts an RX error from vringh (a fault here) as an overrun too: both are "err <= 0".
    if (sim.getDesc(VDPASIM_NET_RXQ, rxc) <= 0) {
      this.rx.overruns++;
      sim.complete(VDPASIM_NET_TXQ, txc, 0);
      return false;
    }
    const write = frame.copyToSegments(rxc.writable, read);
    if (write <= 0) {
      // Linux stops here without returning either buffer; we return both, empty, so none leaks.
      this.rx.errors++;
      sim.complete(VDPASIM_NET_TXQ, txc, 0);
      sim.complete(VDPASIM_NET_RXQ, rxc, 0);
      return false;
    }
    this.rx.pkts++;
    this.rx.bytes += write;
    sim.complete(VDPASIM_NET_TXQ, txc, 0);
    sim.complete(VDPASIM_NET_RXQ, rxc, write);
    return true;
  }

  /**
   * Linux receive_filter on the first `len` bytes of the frame: long enough for a header and a
   * destination MAC, and that MAC is broadcast, multicast, or the config MAC. The header is 12 bytes
   * with VERSION_1, 10 without (legacy, no MRG_RXBUF). Read in place when the first segment holds them
   * (the driver may rewrite them before the copy; it only changes what its own RX queue receives).
   */
  private receiveFilter(sim: VdpaSim, frame: SegmentList, len: number, hdrLen: number): boolean {
    const need = hdrLen + ETH_ALEN;
    if (len < need) return false;
    let bytes: Uint8Array;
    let at: number;
    if (frame.lengths[0] >= need) {
      bytes = frame.regions[0].bytes;
      at = frame.offsets[0] + hdrLen;
    } else {
      frame.copyTo(this.head, 0, need);
      bytes = this.head;
      at = hdrLen;
    }
    // Multicast is the group bit of the first byte; broadcast (all ones) has it too.
    if (bytes[at] & 1) return true;
    return macMatchesLikeStrncmp(bytes, at, sim.config, VIRTIO_NET_CONFIG.mac);
  }

  /**
   * Linux vdpasim_handle_cvq: only when CTRL_VQ was negotiated and the cvq is ready. Every command gets
   * an ack byte; only MAC / ADDR_SET succeeds. Linux drains the cvq; we stop after a batch (true: more),
   * since a driver in another process can keep adding while we run.
   */
  private handleCvq(sim: VdpaSim): boolean {
    if (!sim.negotiated(VIRTIO_NET_F_CTRL_VQ) || !sim.queueUsable(VDPASIM_NET_CVQ)) return false;
    const chain = this.cvqChain;
    for (let n = 0; n < sim.workBatch; n++) {
      if (sim.getDesc(VDPASIM_NET_CVQ, chain) <= 0) return false;
      this.cvq.requests++;
      const read = chain.readable.copyTo(this.cvqBytes, 0, this.cvqBytes.length);
      if (read < VIRTIO_NET_CTRL_HDR_SIZE) {
        // Linux stops without returning the buffer; we return it (no ack) so the driver is not stuck.
        this.cvq.errors++;
        sim.complete(VDPASIM_NET_CVQ, chain, 0);
        return false;
      }
      const status = this.handleCtrl(sim, read);
      if (status === VIRTIO_NET_OK) this.cvq.successes++;
      else this.cvq.errors++;
      this.ack[0] = status;
      const written = chain.writable.copyFrom(this.ack, 0, 1);
      sim.complete(VDPASIM_NET_CVQ, chain, written);
    }
    return true;
  }

  /**
   * One control command in cvqBytes (`read` bytes of it). MAC ADDR_SET copies what follows the header
   * straight into the config MAC, as Linux pulls it into config->mac: a short command leaves the MAC
   * partly overwritten and answers ERR. (Linux's ack variable is not reset between commands, so there a
   * non-MAC command after a successful one is acked OK; we answer ERR, as the protocol means.)
   */
  private handleCtrl(sim: VdpaSim, read: number): number {
    const cls = this.cvqBytes[0];
    const cmd = this.cvqBytes[1];
    if (cls !== VIRTIO_NET_CTRL_MAC || cmd !== VIRTIO_NET_CTRL_MAC_ADDR_SET) return VIRTIO_NET_ERR;
    const macLen = read - VIRTIO_NET_CTRL_HDR_SIZE;
    sim.config.set(this.cvqBytes.subarray(VIRTIO_NET_CTRL_HDR_SIZE, read), VIRTIO_NET_CONFIG.mac);
    return macLen === ETH_ALEN ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
  }

  /** Linux vdpasim_net_get_stats: Linux's names, in Linux's order; another queue index is EINVAL. */
  vendorVqStats(_sim: VdpaSim, idx: number): VendorStat[] {
    const s = (name: string, value: number): VendorStat => ({ name, value: BigInt(value) });
    switch (idx) {
      case VDPASIM_NET_RXQ:
        return [
          s("rx packets", this.rx.pkts),
          s("rx bytes", this.rx.bytes),
          s("rx errors", this.rx.errors),
          s("rx overruns", this.rx.overruns),
          s("rx drops", this.rx.drops),
        ];
      case VDPASIM_NET_TXQ:
        return [
          s("tx packets", this.tx.pkts),
          s("tx bytes", this.tx.bytes),
          s("tx errors", this.tx.errors),
          s("tx drops", this.tx.drops),
        ];
      case VDPASIM_NET_CVQ:
        return [
          s("cvq requests", this.cvq.requests),
          s("cvq successes", this.cvq.successes),
          s("cvq errors", this.cvq.errors),
        ];
      default:
        throw new VdpaError("EINVAL");
    }
  }
}

/**
 * Linux compares the destination MAC with strncmp(dest, config->mac, ETH_ALEN), a string compare: it
 * stops at the first zero byte both share. So 00:11:... matches a config MAC 00:22:..., and with the
 * default all-zero MAC every destination starting with 00 matches. Reproduced on purpose.
 */
export function macMatchesLikeStrncmp(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  for (let i = 0; i < ETH_ALEN; i++) {
    const x = a[aOff + i];
    if (x !== b[bOff + i]) return false;
    if (x === 0) return true;
  }
  return true;
}

function writeLe16(buf: Uint8Array, off: number, value: number): void {
  buf[off] = value & 0xff;
  buf[off + 1] = (value >>> 8) & 0xff;
}

export interface SimNetOptions {
  /** Device name (the bus names it vdpa<N> when absent). */
  name?: string;
  /** Config MAC (6 bytes); zeros when absent, as Linux. */
  mac?: Uint8Array;
  /** Config MTU; 1500 when absent. */
  mtu?: number;
  /**
   * Provisioned device features (`vdpa dev add ... device_features`): offered instead of the default
   * set. Bits outside Linux's set plus RING_PACKED/EVENT_IDX/INDIRECT_DESC are EINVAL.
   */
  features?: bigint;
  /** DMA model; default "set_map" (Linux's default). */
  dmaModel?: DmaModel;
  /** Also offer VIRTIO_F_RING_PACKED (bit 34). */
  packed?: boolean;
  /** Also offer VIRTIO_F_EVENT_IDX (bit 29). */
  eventIdx?: boolean;
  /** Also offer VIRTIO_F_INDIRECT_DESC (bit 28). */
  indirect?: boolean;
  /** Frames per work run (default VDPASIM_WORK_BATCH). */
  workBatch?: number;
  /** Busy-poll time in microseconds after the last progress (default VDPASIM_POLL_MICROS; 0: never). */
  pollMicros?: number;
  /** The management device to record as the parent (devAdd passes its own). */
  mgmtdev?: MgmtDev;
}

export interface SimNet {
  /** The unregistered vDPA device: register it on a bus. */
  device: VdpaDevice;
  /** The simulator core (also device.ops). */
  sim: VdpaSim;
  /** The net half: statistics and work function. */
  net: VdpasimNet;
}

/** Builds a vdpasim_net device directly (devAdd builds through this too). */
export function createSimNet(opts: SimNetOptions = {}): SimNet {
  const features = offeredFeatures(opts);
  if (opts.mac && opts.mac.length !== ETH_ALEN) throw new VdpaError("EINVAL", "a MAC address has 6 bytes");
  if (opts.mtu !== undefined && (!Number.isInteger(opts.mtu) || opts.mtu < 0 || opts.mtu > 0xffff)) {
    throw new VdpaError("EINVAL", `bad MTU ${opts.mtu}`);
  }
  const net = new VdpasimNet(features);
  const sim = createVdpaSim(net, {
    name: opts.name,
    dmaModel: opts.dmaModel,
    workBatch: opts.workBatch,
    pollMicros: opts.pollMicros,
  });
  net.setupConfig(sim.config, opts.mac, opts.mtu);
  const device = new VdpaDevice({
    ops: sim,
    name: opts.name,
    nvqs: VDPASIM_NET_VQ_NUM,
    ngroups: sim.ngroups,
    nas: sim.nas,
    mgmtdev: opts.mgmtdev,
  });
  sim.setDevice(device);
  return { device, sim, net };
}

function offeredFeatures(opts: SimNetOptions): bigint {
  let extra = 0n;
  if (opts.packed) extra |= bit(VIRTIO_F_RING_PACKED);
  if (opts.eventIdx) extra |= bit(VIRTIO_RING_F_EVENT_IDX);
  if (opts.indirect) extra |= bit(VIRTIO_F_INDIRECT_DESC);
  const allowed = VDPASIM_NET_FEATURES | VDPASIM_RING_OPTION_FEATURES;
  return provisionFeatures(opts.features, VDPASIM_NET_FEATURES, allowed) | extra;
}

/**
 * The `vdpasim_net` management device (bus-less, like Linux's): MAC, MTU and device_features at add,
 * MAC at `dev set`.
 */
export function vdpasimNetMgmtDev(opts: SimMgmtDevOptions = {}): MgmtDev {
  const mgmtdev: MgmtDev = {
    name: "vdpasim_net",
    idTable: [VIRTIO_ID_NET],
    configAttrMask: attrBit("DEV_NET_CFG_MACADDR") | attrBit("DEV_NET_CFG_MTU") | attrBit("DEV_FEATURES"),
    supportedFeatures: VDPASIM_NET_FEATURES,
    maxSupportedVqs: VDPASIM_NET_VQ_NUM,
    ops: {
      devAdd(mdev, name, config) {
        return createSimNet({
          name,
          mac: has(config, "DEV_NET_CFG_MACADDR") ? config.net.mac : undefined,
          mtu: has(config, "DEV_NET_CFG_MTU") ? config.net.mtu : undefined,
          features: has(config, "DEV_FEATURES") ? config.deviceFeatures : undefined,
          dmaModel: opts.dmaModel,
          pollMicros: opts.pollMicros,
          mgmtdev: mdev,
        }).device;
      },
      devDel(_mdev, dev) {
        dev.ops.free?.();
      },
      devSetAttr(_mdev, dev, config) {
        setNetAttr(dev, config);
      },
    },
  };
  return mgmtdev;
}

function has(config: DevSetConfig, attr: Parameters<typeof attrBit>[0]): boolean {
  return (config.mask & attrBit(attr)) !== 0n;
}

/**
 * Linux vdpasim_net_set_attr: the MAC is written into config space (no config interrupt); without a MAC
 * in the request the answer is EOPNOTSUPP.
 */
function setNetAttr(dev: VdpaDevice, config: DevSetConfig): void {
  if (!has(config, "DEV_NET_CFG_MACADDR")) throw new VdpaError("EOPNOTSUPP");
  const sim = dev.ops as VdpaSim;
  const mac = config.net.mac;
  if (!(sim.attr instanceof VdpasimNet)) throw new VdpaError("EOPNOTSUPP");
  if (!mac || mac.length !== ETH_ALEN) throw new VdpaError("EINVAL", "a MAC address has 6 bytes");
  sim.config.set(mac, VIRTIO_NET_CONFIG.mac);
}
