// vdpasim_blk (Linux drivers/vdpa/vdpa_sim/vdpa_sim_blk.c): a virtio-blk device with one queue over a
// RAM disk of 128 MiB (0x40000 sectors), answering requests with Linux's checks.
//
// Our extensions, carried by management attributes Linux does not have: VDPATS_BLK_SIZE (disk size in
// bytes, a multiple of 512) and VDPATS_BLK_BACKING_FILE (a file instead of RAM, read and written with
// synchronous pread/pwrite inside the work function, FLUSH = fdatasync). The disk is the device's own
// memory: it is never mapped into any IOTLB, so a driver reaches it only through requests.
//
// What `vdpa mgmtdev show` prints stays Linux's: no supported features, no max vqs (the device itself has
// one queue and offers 0x308007646). RING_PACKED, EVENT_IDX and INDIRECT_DESC are offered only through
// createSimBlk options.

import {
  closeSync,
  fdatasyncSync,
  constants as fsConstants,
  fstatSync,
  ftruncateSync,
  openSync,
  readSync,
  writeSync,
} from "node:fs";
import { type SegmentList, SharedMemoryRegion } from "../../memory/index.js";
import { Chain } from "../../ring/index.js";
import { featureBit } from "../../spec/features.js";
import {
  VIRTIO_BLK_CONFIG,
  VIRTIO_BLK_CONFIG_SIZE,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_OUTHDR,
  VIRTIO_BLK_OUTHDR_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_RING_PACKED,
  VIRTIO_ID_BLOCK,
  VIRTIO_RING_F_EVENT_IDX,
} from "../../spec/index.js";
import { VdpaDevice } from "../../vdpa/device.js";
import type { DmaModel } from "../../vdpa/dma.js";
import { ERRNO, type ErrnoName, VdpaError } from "../../vdpa/errors.js";
import { attrBit, type DevSetConfig, type MgmtDev } from "../../vdpa/mgmt-types.js";
import {
  createVdpaSim,
  type SimMgmtDevOptions,
  VDPASIM_FEATURES,
  type VdpaSim,
  type VdpaSimDevAttr,
  writeSegmentByte,
} from "./core.js";

/** Feature bit n as a mask (control path: bigint). */
const bit = featureBit;

/** Linux VDPASIM_BLK_FEATURES: 0x308007646. */
export const VDPASIM_BLK_FEATURES =
  VDPASIM_FEATURES |
  bit(VIRTIO_BLK_F_FLUSH) |
  bit(VIRTIO_BLK_F_SIZE_MAX) |
  bit(VIRTIO_BLK_F_SEG_MAX) |
  bit(VIRTIO_BLK_F_BLK_SIZE) |
  bit(VIRTIO_BLK_F_TOPOLOGY) |
  bit(VIRTIO_BLK_F_MQ) |
  bit(VIRTIO_BLK_F_DISCARD) |
  bit(VIRTIO_BLK_F_WRITE_ZEROES);

/** Linux VDPASIM_BLK_CAPACITY, in 512-byte sectors (128 MiB). */
export const VDPASIM_BLK_CAPACITY = 0x40000;
export const VDPASIM_BLK_SIZE_MAX = 0x1000;
export const VDPASIM_BLK_SEG_MAX = 32;
/** Linux VDPASIM_BLK_DWZ_MAX_SECTORS: discard / write-zeroes limit per request. */
export const VDPASIM_BLK_DWZ_MAX_SECTORS = 0xffff_ffff;
export const VDPASIM_BLK_VQ_NUM = 1;
/** The GET_ID answer: "vdpa_blk_sim" NUL-padded to VIRTIO_BLK_ID_BYTES (20). */
export const VDPASIM_BLK_ID: Uint8Array = (() => {
  const id = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  id.set(new TextEncoder().encode("vdpa_blk_sim"));
  return id;
})();
/**
 * Linux's per-request limit for IN/OUT: it compares a sector count with SIZE_MAX * SEG_MAX, a product
 * of bytes (131072), so the real cap is 131072 sectors (64 MiB), not 128 KiB. Reproduced as is.
 */
export const VDPASIM_BLK_RW_MAX_SECTORS = VDPASIM_BLK_SIZE_MAX * VDPASIM_BLK_SEG_MAX;

const SECTOR = VIRTIO_BLK_SECTOR_SIZE;
const TWO_32 = 2 ** 32;
/** sizeof(struct virtio_blk_discard_write_zeroes). */
const DWZ_RANGE_SIZE = 16;

/** Where the disk's bytes live. The device owns it; no IOTLB ever maps it. */
export interface BlkStorage {
  readonly sizeBytes: number;
  /** Copies `len` bytes at disk offset `pos` into `segs` from their start; returns the count. */
  readInto(pos: number, segs: SegmentList, len: number): number;
  /** Copies `len` bytes of `segs`, starting `skip` bytes in, to disk offset `pos`; returns the count. */
  writeFrom(pos: number, segs: SegmentList, skip: number, len: number): number;
  zero(pos: number, len: number): void;
  flush(): void;
  close(): void;
}

/**
 * A RAM disk: one SharedArrayBuffer, whose pages the OS zero-fills on first touch, so an untouched
 * 128 MiB disk costs address space, not memory.
 */
export class RamBlkStorage implements BlkStorage {
  readonly region: SharedMemoryRegion;

  constructor(readonly sizeBytes: number) {
    try {
      this.region = new SharedMemoryRegion(sizeBytes, "vdpasim_blk disk");
    } catch (err) {
      throw new VdpaError("ENOMEM", `cannot allocate a ${sizeBytes}-byte disk: ${(err as Error).message}`);
    }
  }

  readInto(pos: number, segs: SegmentList, len: number): number {
    return segs.copyFromRegion(this.region, pos, len);
  }

  writeFrom(pos: number, segs: SegmentList, skip: number, len: number): number {
    return segs.copyToRegion(this.region, pos, len, skip);
  }

  zero(pos: number, len: number): void {
    this.region.bytes.fill(0, pos, pos + len);
  }

  flush(): void {}

  close(): void {}
}

/** A disk in a file, through one descriptor; I/O errors surface as exceptions (the request gets IOERR). */
export class FileBlkStorage implements BlkStorage {
  private static readonly zeros = new Uint8Array(64 * 1024);
  private fd: number;

  constructor(
    readonly path: string,
    fd: number,
    readonly sizeBytes: number,
  ) {
    this.fd = fd;
  }

  /**
   * Opens `path` read-write. With `sizeBytes` the file is created when missing and extended (sparse)
   * when shorter; without, the disk is the file's size rounded down to whole sectors.
   */
  static open(path: string, sizeBytes?: number): FileBlkStorage {
    let fd = -1;
    try {
      const flags = fsConstants.O_RDWR | (sizeBytes !== undefined ? fsConstants.O_CREAT : 0);
      fd = openSync(path, flags, 0o600);
      const fileSize = fstatSync(fd).size;
      let size = sizeBytes;
      if (size === undefined) size = fileSize - (fileSize % SECTOR);
      else if (fileSize < size) ftruncateSync(fd, size);
      if (size < SECTOR) throw new VdpaError("EINVAL", `backing file ${path} is smaller than one sector`);
      return new FileBlkStorage(path, fd, size);
    } catch (err) {
      if (fd >= 0) closeSync(fd);
      throw fsError(err, path);
    }
  }

  readInto(pos: number, segs: SegmentList, len: number): number {
    let done = 0;
    for (let i = 0; i < segs.count && done < len; i++) {
      const n = Math.min(segs.lengths[i], len - done);
      this.readFully(segs.regions[i].bytes, segs.offsets[i], n, pos + done);
      done += n;
    }
    return done;
  }

  /** pread until n bytes; past the end of the file a disk reads zeros. */
  private readFully(buf: Uint8Array, off: number, n: number, pos: number): void {
    let got = 0;
    while (got < n) {
      const r = readSync(this.fd, buf, off + got, n - got, pos + got);
      if (r === 0) {
        buf.fill(0, off + got, off + n);
        return;
      }
      got += r;
    }
  }

  writeFrom(pos: number, segs: SegmentList, skip: number, len: number): number {
    let done = 0;
    for (let i = 0; i < segs.count && done < len; i++) {
      const segLen = segs.lengths[i];
      if (skip >= segLen) {
        skip -= segLen;
        continue;
      }
      const n = Math.min(segLen - skip, len - done);
      this.writeFully(segs.regions[i].bytes, segs.offsets[i] + skip, n, pos + done);
      done += n;
      skip = 0;
    }
    return done;
  }

  private writeFully(buf: Uint8Array, off: number, n: number, pos: number): void {
    let put = 0;
    while (put < n) put += writeSync(this.fd, buf, off + put, n - put, pos + put);
  }

  zero(pos: number, len: number): void {
    const z = FileBlkStorage.zeros;
    for (let done = 0; done < len; ) {
      const n = Math.min(z.length, len - done);
      this.writeFully(z, 0, n, pos + done);
      done += n;
    }
  }

  flush(): void {
    fdatasyncSync(this.fd);
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}

function fsError(err: unknown, path: string): VdpaError {
  if (err instanceof VdpaError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? "EIO";
  const name: ErrnoName = code in ERRNO ? (code as ErrnoName) : code === "EACCES" ? "EPERM" : "EIO";
  return new VdpaError(name, `backing file ${path}: ${(err as Error).message}`);
}

/** Plain counters of the blk device (Linux keeps none and has no vendor stats for it). */
export interface BlkStats {
  requests: number;
  ioErrors: number;
  unsupported: number;
  bytesRead: number;
  bytesWritten: number;
}

/** Linux vdpasim_blk_check_range, made memory-safe (see the comment inside). */
function checkRange(startSector: number, numSectors: number, maxSectors: number, capacity: number): boolean {
  if (numSectors > maxSectors) return false;
  // Linux only logs a start past the capacity, and its next test (num > capacity - start, in u64) then
  // wraps and passes, reading past its buffer. We refuse the request instead.
  if (startSector > capacity) return false;
  return numSectors <= capacity - startSector;
}

/** The device-type half of vdpasim_blk: config, storage, request handling. */
export class VdpasimBlk implements VdpaSimDevAttr {
  readonly id = VIRTIO_ID_BLOCK;
  readonly nvqs = VDPASIM_BLK_VQ_NUM;
  readonly ngroups = 1;
  readonly nas = 1;
  readonly configSize = VIRTIO_BLK_CONFIG_SIZE;
  readonly stats: BlkStats = { requests: 0, ioErrors: 0, unsupported: 0, bytesRead: 0, bytesWritten: 0 };
  /** Capacity in 512-byte sectors. */
  readonly capacity: number;

  private readonly chain = new Chain();
  /** Out header plus, for DISCARD / WRITE_ZEROES, the one range that follows it. */
  private readonly head = new Uint8Array(VIRTIO_BLK_OUTHDR_SIZE + DWZ_RANGE_SIZE);
  private readonly headView = new DataView(this.head.buffer);
  /** Bytes the current request wrote before its status byte (Linux's `pushed`). */
  private pushed = 0;

  constructor(
    readonly supportedFeatures: bigint,
    readonly storage: BlkStorage,
  ) {
    this.capacity = Math.floor(storage.sizeBytes / SECTOR);
  }

  /** Linux vdpasim_blk_get_config: the struct is zeroed and refilled on every read. */
  getConfig(_sim: VdpaSim, config: Uint8Array): void {
    const C = VIRTIO_BLK_CONFIG;
    config.fill(0);
    const v = new DataView(config.buffer, config.byteOffset, config.byteLength);
    v.setUint32(C.capacity, this.capacity % TWO_32, true);
    v.setUint32(C.capacity + 4, Math.floor(this.capacity / TWO_32), true);
    v.setUint32(C.size_max, VDPASIM_BLK_SIZE_MAX, true);
    v.setUint32(C.seg_max, VDPASIM_BLK_SEG_MAX, true);
    v.setUint16(C.num_queues, VDPASIM_BLK_VQ_NUM, true);
    v.setUint16(C.min_io_size, 1, true);
    v.setUint32(C.opt_io_size, 1, true);
    v.setUint32(C.blk_size, SECTOR, true);
    // Linux writes SECTOR_SIZE into a field counted in sectors: an alignment of 512 sectors. Kept.
    v.setUint32(C.discard_sector_alignment, SECTOR, true);
    v.setUint32(C.max_discard_sectors, VDPASIM_BLK_DWZ_MAX_SECTORS, true);
    v.setUint32(C.max_discard_seg, 1, true);
    v.setUint32(C.max_write_zeroes_sectors, VDPASIM_BLK_DWZ_MAX_SECTORS, true);
    v.setUint32(C.max_write_zeroes_seg, 1, true);
  }

  /** Linux vdpasim_blk_work: requests until the queue is empty or a request cannot be answered. */
  work(sim: VdpaSim): boolean {
    if (!sim.queueUsable(0)) return false;
    for (let n = 0; n < sim.workBatch; n++) {
      if (!this.handleReq(sim)) return false;
    }
    return true;
  }

  /**
   * Linux vdpasim_blk_handle_req. True when a request was answered (status byte written last in the
   * writable part). A request without an out header or a status byte is returned with nothing written
   * and ends this run (Linux's `goto err` returns false); later requests wait for the next kick.
   */
  private handleReq(sim: VdpaSim): boolean {
    const chain = this.chain;
    if (sim.getDesc(0, chain) <= 0) return false;
    this.stats.requests++;
    const toPush = chain.writeLen - 1;
    const headLen = chain.readable.copyTo(this.head, 0, this.head.length);
    if (toPush < 0 || headLen < VIRTIO_BLK_OUTHDR_SIZE) {
      sim.complete(0, chain, 0);
      return false;
    }
    this.pushed = 0;
    let status: number;
    try {
      status = this.execute(chain, toPush, chain.readLen - VIRTIO_BLK_OUTHDR_SIZE);
    } catch {
      // A backing file I/O error.
      status = VIRTIO_BLK_S_IOERR;
      this.pushed = 0;
    }
    if (status === VIRTIO_BLK_S_IOERR) this.stats.ioErrors++;
    if (status === VIRTIO_BLK_S_UNSUPP) this.stats.unsupported++;
    // Whatever was pushed, the status goes in the last writable byte.
    writeSegmentByte(chain.writable, toPush, status);
    sim.complete(0, chain, this.pushed + 1);
    return true;
  }

  /** Runs one request and returns its status; bytes written before the status byte go in this.pushed. */
  private execute(chain: Chain, toPush: number, toPull: number): number {
    const h = this.headView;
    const type = h.getUint32(VIRTIO_BLK_OUTHDR.type, true);
    const sector =
      h.getUint32(VIRTIO_BLK_OUTHDR.sector, true) + h.getUint32(VIRTIO_BLK_OUTHDR.sector + 4, true) * TWO_32;
    // Linux: only IN and OUT carry a sector; any other type with one is an I/O error.
    if (type !== VIRTIO_BLK_T_IN && type !== VIRTIO_BLK_T_OUT && sector !== 0) return VIRTIO_BLK_S_IOERR;
    switch (type) {
      case VIRTIO_BLK_T_IN:
        if (!this.rwRangeOk(sector, toPush)) return VIRTIO_BLK_S_IOERR;
        this.pushed = this.storage.readInto(sector * SECTOR, chain.writable, toPush);
        this.stats.bytesRead += this.pushed;
        return VIRTIO_BLK_S_OK;
      case VIRTIO_BLK_T_OUT:
        if (!this.rwRangeOk(sector, toPull)) return VIRTIO_BLK_S_IOERR;
        this.stats.bytesWritten += this.storage.writeFrom(
          sector * SECTOR,
          chain.readable,
          VIRTIO_BLK_OUTHDR_SIZE,
          toPull,
        );
        return VIRTIO_BLK_S_OK;
      case VIRTIO_BLK_T_GET_ID:
        // Linux pushes the 20 bytes into whatever room there is; we never let them cover the status byte.
        this.pushed = chain.writable.copyFrom(VDPASIM_BLK_ID, 0, Math.min(VIRTIO_BLK_ID_BYTES, toPush));
        return VIRTIO_BLK_S_OK;
      case VIRTIO_BLK_T_FLUSH:
        // Linux: nothing to do for RAM. A backing file is synced.
        this.storage.flush();
        return VIRTIO_BLK_S_OK;
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.discardOrWriteZeroes(type, toPull);
      default:
        // Linux answers IOERR, not UNSUPP, for a type it does not know.
        return VIRTIO_BLK_S_IOERR;
    }
  }

  /**
   * IN/OUT range check: Linux checks whole sectors (len >> 9) against RW_MAX and the capacity; a partial
   * last sector is also checked here in bytes, so no request reaches past the disk.
   */
  private rwRangeOk(sector: number, len: number): boolean {
    if (!checkRange(sector, Math.floor(len / SECTOR), VDPASIM_BLK_RW_MAX_SECTORS, this.capacity))
      return false;
    return sector * SECTOR + len <= this.capacity * SECTOR;
  }

  /** Exactly one 16-byte range; Linux's flag rules; write-zeroes zeroes, discard does nothing. */
  private discardOrWriteZeroes(type: number, toPull: number): number {
    if (toPull !== DWZ_RANGE_SIZE) return VIRTIO_BLK_S_IOERR;
    const h = this.headView;
    const at = VIRTIO_BLK_OUTHDR_SIZE;
    const sector = h.getUint32(at, true) + h.getUint32(at + 4, true) * TWO_32;
    const numSectors = h.getUint32(at + 8, true);
    const flags = h.getUint32(at + 12, true);
    if (type === VIRTIO_BLK_T_DISCARD && flags !== 0) return VIRTIO_BLK_S_UNSUPP;
    if (type === VIRTIO_BLK_T_WRITE_ZEROES && flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) {
      return VIRTIO_BLK_S_UNSUPP;
    }
    if (!checkRange(sector, numSectors, VDPASIM_BLK_DWZ_MAX_SECTORS, this.capacity))
      return VIRTIO_BLK_S_IOERR;
    if (type === VIRTIO_BLK_T_WRITE_ZEROES) this.storage.zero(sector * SECTOR, numSectors * SECTOR);
    return VIRTIO_BLK_S_OK;
  }

  free(): void {
    this.storage.close();
  }
}

export interface SimBlkOptions {
  /** Device name (the bus names it vdpa<N> when absent). */
  name?: string;
  /** Disk size in bytes, a multiple of 512; default 128 MiB (or the backing file's size). */
  sizeBytes?: number;
  /** A file to hold the disk instead of RAM. */
  backingFile?: string;
  /** DMA model; default "set_map" (Linux's default). */
  dmaModel?: DmaModel;
  /** Also offer VIRTIO_F_RING_PACKED (bit 34). */
  packed?: boolean;
  /** Also offer VIRTIO_F_EVENT_IDX (bit 29). */
  eventIdx?: boolean;
  /** Also offer VIRTIO_F_INDIRECT_DESC (bit 28). */
  indirect?: boolean;
  /** Requests per work run (default VDPASIM_WORK_BATCH). */
  workBatch?: number;
  /** Busy-poll time in microseconds after the last progress (default VDPASIM_POLL_MICROS; 0: never). */
  pollMicros?: number;
  /** The management device to record as the parent (devAdd passes its own). */
  mgmtdev?: MgmtDev;
}

export interface SimBlk {
  /** The unregistered vDPA device: register it on a bus. */
  device: VdpaDevice;
  /** The simulator core (also device.ops). */
  sim: VdpaSim;
  /** The blk half: storage, statistics, request handling. */
  blk: VdpasimBlk;
}

/** Builds a vdpasim_blk device directly (devAdd builds through this too). */
export function createSimBlk(opts: SimBlkOptions = {}): SimBlk {
  const size = opts.sizeBytes;
  if (size !== undefined && (!Number.isSafeInteger(size) || size < SECTOR || size % SECTOR !== 0)) {
    throw new VdpaError("EINVAL", `disk size ${size} must be a positive multiple of ${SECTOR} bytes`);
  }
  const storage: BlkStorage = opts.backingFile
    ? FileBlkStorage.open(opts.backingFile, size)
    : new RamBlkStorage(size ?? VDPASIM_BLK_CAPACITY * SECTOR);
  try {
    let features = VDPASIM_BLK_FEATURES;
    if (opts.packed) features |= bit(VIRTIO_F_RING_PACKED);
    if (opts.eventIdx) features |= bit(VIRTIO_RING_F_EVENT_IDX);
    if (opts.indirect) features |= bit(VIRTIO_F_INDIRECT_DESC);
    const blk = new VdpasimBlk(features, storage);
    const sim = createVdpaSim(blk, {
      name: opts.name,
      dmaModel: opts.dmaModel,
      workBatch: opts.workBatch,
      pollMicros: opts.pollMicros,
    });
    const device = new VdpaDevice({
      ops: sim,
      name: opts.name,
      nvqs: VDPASIM_BLK_VQ_NUM,
      mgmtdev: opts.mgmtdev,
    });
    sim.setDevice(device);
    return { device, sim, blk };
  } catch (err) {
    storage.close();
    throw err;
  }
}

/**
 * The `vdpasim_blk` management device. Linux's has no config attributes, supported features or max vqs
 * (so every Linux attribute is EOPNOTSUPP at the management layer); ours accepts its two extensions.
 */
export function vdpasimBlkMgmtDev(opts: SimMgmtDevOptions = {}): MgmtDev {
  return {
    name: "vdpasim_blk",
    idTable: [VIRTIO_ID_BLOCK],
    configAttrMask: attrBit("VDPATS_BLK_SIZE") | attrBit("VDPATS_BLK_BACKING_FILE"),
    supportedFeatures: 0n,
    maxSupportedVqs: 0,
    ops: {
      devAdd(mdev, name, config: DevSetConfig) {
        const sizeGiven = (config.mask & attrBit("VDPATS_BLK_SIZE")) !== 0n;
        const fileGiven = (config.mask & attrBit("VDPATS_BLK_BACKING_FILE")) !== 0n;
        return createSimBlk({
          name,
          sizeBytes: sizeGiven ? config.blk.sizeBytes : undefined,
          backingFile: fileGiven ? config.blk.backingFile : undefined,
          dmaModel: opts.dmaModel,
          pollMicros: opts.pollMicros,
          mgmtdev: mdev,
        }).device;
      },
      devDel(_mdev, dev) {
        dev.ops.free?.();
      },
    },
  };
}
