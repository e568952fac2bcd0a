// virtio-blk facts: the device config space, request header, request types and status codes.
// Sources: virtio 1.3 "Block Device"; Linux include/uapi/linux/virtio_blk.h (the 96-byte config with the secure
// erase and zoned fields). All multi-byte fields are little-endian on a modern device.

import type { ConfigField } from "./config-field.js";
import {
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_GEOMETRY,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_SECURE_ERASE,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_SIZE_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_F_ZONED,
} from "./features.js";

/** Requests address the disk in 512-byte sectors, whatever blk_size says. */
export const VIRTIO_BLK_SECTOR_SIZE = 512;
export const VIRTIO_BLK_SECTOR_SHIFT = 9;

// ---- Config space (struct virtio_blk_config, packed) ----

/** sizeof(struct virtio_blk_config) in current Linux headers (through the zoned characteristics). */
export const VIRTIO_BLK_CONFIG_SIZE = 96;

/** Byte offsets of the virtio_blk_config members. */
export const VIRTIO_BLK_CONFIG = {
  capacity: 0,
  size_max: 8,
  seg_max: 12,
  geometry: { cylinders: 16, heads: 18, sectors: 19 },
  blk_size: 20,
  physical_block_exp: 24,
  alignment_offset: 25,
  min_io_size: 26,
  opt_io_size: 28,
  wce: 32,
  num_queues: 34,
  max_discard_sectors: 36,
  max_discard_seg: 40,
  discard_sector_alignment: 44,
  max_write_zeroes_sectors: 48,
  max_write_zeroes_seg: 52,
  write_zeroes_may_unmap: 56,
  max_secure_erase_sectors: 60,
  max_secure_erase_seg: 64,
  secure_erase_sector_alignment: 68,
  zoned: {
    zone_sectors: 72,
    max_open_zones: 76,
    max_active_zones: 80,
    max_append_sectors: 84,
    write_granularity: 88,
    model: 92,
  },
} as const;

const C = VIRTIO_BLK_CONFIG;

/**
 * Every virtio_blk_config field, padding included so the table covers all 96 bytes, with the feature bit that
 * makes it valid. capacity is always valid.
 */
export const VIRTIO_BLK_CONFIG_FIELDS: readonly ConfigField[] = [
  { name: "capacity", offset: C.capacity, size: 8, requires: [] },
  { name: "size_max", offset: C.size_max, size: 4, requires: [VIRTIO_BLK_F_SIZE_MAX] },
  { name: "seg_max", offset: C.seg_max, size: 4, requires: [VIRTIO_BLK_F_SEG_MAX] },
  { name: "geometry.cylinders", offset: C.geometry.cylinders, size: 2, requires: [VIRTIO_BLK_F_GEOMETRY] },
  { name: "geometry.heads", offset: C.geometry.heads, size: 1, requires: [VIRTIO_BLK_F_GEOMETRY] },
  { name: "geometry.sectors", offset: C.geometry.sectors, size: 1, requires: [VIRTIO_BLK_F_GEOMETRY] },
  { name: "blk_size", offset: C.blk_size, size: 4, requires: [VIRTIO_BLK_F_BLK_SIZE] },
  { name: "physical_block_exp", offset: C.physical_block_exp, size: 1, requires: [VIRTIO_BLK_F_TOPOLOGY] },
  { name: "alignment_offset", offset: C.alignment_offset, size: 1, requires: [VIRTIO_BLK_F_TOPOLOGY] },
  { name: "min_io_size", offset: C.min_io_size, size: 2, requires: [VIRTIO_BLK_F_TOPOLOGY] },
  { name: "opt_io_size", offset: C.opt_io_size, size: 4, requires: [VIRTIO_BLK_F_TOPOLOGY] },
  { name: "wce", offset: C.wce, size: 1, requires: [VIRTIO_BLK_F_CONFIG_WCE] },
  { name: "unused", offset: 33, size: 1, requires: [], reserved: true },
  { name: "num_queues", offset: C.num_queues, size: 2, requires: [VIRTIO_BLK_F_MQ] },
  { name: "max_discard_sectors", offset: C.max_discard_sectors, size: 4, requires: [VIRTIO_BLK_F_DISCARD] },
  { name: "max_discard_seg", offset: C.max_discard_seg, size: 4, requires: [VIRTIO_BLK_F_DISCARD] },
  {
    name: "discard_sector_alignment",
    offset: C.discard_sector_alignment,
    size: 4,
    requires: [VIRTIO_BLK_F_DISCARD],
  },
  {
    name: "max_write_zeroes_sectors",
    offset: C.max_write_zeroes_sectors,
    size: 4,
    requires: [VIRTIO_BLK_F_WRITE_ZEROES],
  },
  {
    name: "max_write_zeroes_seg",
    offset: C.max_write_zeroes_seg,
    size: 4,
    requires: [VIRTIO_BLK_F_WRITE_ZEROES],
  },
  {
    name: "write_zeroes_may_unmap",
    offset: C.write_zeroes_may_unmap,
    size: 1,
    requires: [VIRTIO_BLK_F_WRITE_ZEROES],
  },
  { name: "unused1", offset: 57, size: 3, requires: [], reserved: true },
  {
    name: "max_secure_erase_sectors",
    offset: C.max_secure_erase_sectors,
    size: 4,
    requires: [VIRTIO_BLK_F_SECURE_ERASE],
  },
  {
    name: "max_secure_erase_seg",
    offset: C.max_secure_erase_seg,
    size: 4,
    requires: [VIRTIO_BLK_F_SECURE_ERASE],
  },
  {
    name: "secure_erase_sector_alignment",
    offset: C.secure_erase_sector_alignment,
    size: 4,
    requires: [VIRTIO_BLK_F_SECURE_ERASE],
  },
  { name: "zoned.zone_sectors", offset: C.zoned.zone_sectors, size: 4, requires: [VIRTIO_BLK_F_ZONED] },
  { name: "zoned.max_open_zones", offset: C.zoned.max_open_zones, size: 4, requires: [VIRTIO_BLK_F_ZONED] },
  {
    name: "zoned.max_active_zones",
    offset: C.zoned.max_active_zones,
    size: 4,
    requires: [VIRTIO_BLK_F_ZONED],
  },
  {
    name: "zoned.max_append_sectors",
    offset: C.zoned.max_append_sectors,
    size: 4,
    requires: [VIRTIO_BLK_F_ZONED],
  },
  {
    name: "zoned.write_granularity",
    offset: C.zoned.write_granularity,
    size: 4,
    requires: [VIRTIO_BLK_F_ZONED],
  },
  { name: "zoned.model", offset: C.zoned.model, size: 1, requires: [VIRTIO_BLK_F_ZONED] },
  { name: "zoned.unused2", offset: 93, size: 3, requires: [], reserved: true },
];

/** zoned.model values. */
export const VIRTIO_BLK_Z_NONE = 0;
export const VIRTIO_BLK_Z_HM = 1;
export const VIRTIO_BLK_Z_HA = 2;

// ---- Requests ----
// A request is: out header (16 bytes), data buffers (read or written by the device), in status byte.

/** sizeof(struct virtio_blk_outhdr). */
export const VIRTIO_BLK_OUTHDR_SIZE = 16;
/** Byte offsets in virtio_blk_outhdr. The spec calls the u32 at 4 "reserved"; Linux puts the I/O priority there. */
export const VIRTIO_BLK_OUTHDR = { type: 0, ioprio: 4, sector: 8 } as const;
/** The status the device writes into the last byte of the request. */
export const VIRTIO_BLK_STATUS_SIZE = 1;

/** Request types (outhdr.type). */
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
/** Legacy only (VIRTIO_BLK_F_SCSI). */
export const VIRTIO_BLK_T_SCSI_CMD = 2;
export const VIRTIO_BLK_T_FLUSH = 4;
/** The device writes a VIRTIO_BLK_ID_BYTES serial string (NUL-padded, not always NUL-terminated). */
export const VIRTIO_BLK_T_GET_ID = 8;
/** Spec only (VIRTIO_BLK_F_LIFETIME); mainline Linux does not define it. */
export const VIRTIO_BLK_T_GET_LIFETIME = 10;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_T_SECURE_ERASE = 14;
export const VIRTIO_BLK_T_ZONE_APPEND = 15;
export const VIRTIO_BLK_T_ZONE_REPORT = 16;
export const VIRTIO_BLK_T_ZONE_OPEN = 18;
export const VIRTIO_BLK_T_ZONE_CLOSE = 20;
export const VIRTIO_BLK_T_ZONE_FINISH = 22;
export const VIRTIO_BLK_T_ZONE_RESET = 24;
export const VIRTIO_BLK_T_ZONE_RESET_ALL = 26;
/** Legacy only: a flag or-ed onto the type (VIRTIO_BLK_F_BARRIER). */
export const VIRTIO_BLK_T_BARRIER = 0x8000_0000;

/** Length of the GET_ID answer. */
export const VIRTIO_BLK_ID_BYTES = 20;
/** Length of the GET_LIFETIME answer: three le16 (pre_eol_info, lifetime estimates A and B). Spec only. */
export const VIRTIO_BLK_LIFETIME_SIZE = 6;

/** Status codes (the request's last byte). */
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
export const VIRTIO_BLK_S_ZONE_INVALID_CMD = 3;
export const VIRTIO_BLK_S_ZONE_UNALIGNED_WP = 4;
export const VIRTIO_BLK_S_ZONE_OPEN_RESOURCE = 5;
export const VIRTIO_BLK_S_ZONE_ACTIVE_RESOURCE = 6;

/** One DISCARD / WRITE_ZEROES / SECURE_ERASE segment (struct virtio_blk_discard_write_zeroes). */
export const VIRTIO_BLK_DISCARD_SEGMENT_SIZE = 16;
export const VIRTIO_BLK_DISCARD_SEGMENT = { sector: 0, num_sectors: 8, flags: 12 } as const;
/** WRITE_ZEROES segment flag: the device may deallocate instead of writing zeroes. */
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

/** Zoned devices: a ZONE_REPORT answer is a 64-byte header (le64 nr_zones + padding) then 64-byte descriptors. */
export const VIRTIO_BLK_ZONE_REPORT_HEADER_SIZE = 64;
export const VIRTIO_BLK_ZONE_DESCRIPTOR_SIZE = 64;
