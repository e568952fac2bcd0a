import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ConfigField } from "../../src/spec/index.js";
import {
  configFieldPresent,
  featureBit,
  SPLIT_DESC_SIZE,
  VIRTIO_BLK_CONFIG,
  VIRTIO_BLK_CONFIG_FIELDS,
  VIRTIO_BLK_CONFIG_SIZE,
  VIRTIO_BLK_DISCARD_SEGMENT,
  VIRTIO_BLK_DISCARD_SEGMENT_SIZE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_GEOMETRY,
  VIRTIO_BLK_F_ZONED,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_OUTHDR,
  VIRTIO_BLK_OUTHDR_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_SECTOR_SHIFT,
  VIRTIO_BLK_SECTOR_SIZE,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_GET_LIFETIME,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_SECURE_ERASE,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_NET_CONFIG,
  VIRTIO_NET_CONFIG_FIELDS,
  VIRTIO_NET_CONFIG_SIZE,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_RSS,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR,
  VIRTIO_NET_HDR_V1_SIZE,
  VIRTIO_NET_OK,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
  virtioNetCtrlQueue,
  virtioNetRxQueue,
  virtioNetTxQueue,
} from "../../src/spec/index.js";

function field(fields: readonly ConfigField[], name: string): ConfigField {
  const f = fields.find((x) => x.name === name);
  assert.ok(f, `no field ${name}`);
  return f;
}

/** Fields sorted by offset must not overlap; returns the end of the last one. */
function assertNoOverlap(fields: readonly ConfigField[]): number {
  const sorted = [...fields].sort((a, b) => a.offset - b.offset);
  let end = 0;
  for (const f of sorted) {
    assert.ok(f.offset >= end, `${f.name} at ${f.offset} overlaps the previous field ending at ${end}`);
    assert.ok(f.size > 0, f.name);
    end = f.offset + f.size;
  }
  return end;
}

/** Numbers of 2, 4 or 8 bytes sit at multiples of their size in both structs. */
function assertNaturalAlignment(fields: readonly ConfigField[]): void {
  for (const f of fields) {
    if (!f.reserved && [2, 4, 8].includes(f.size)) assert.equal(f.offset % f.size, 0, f.name);
  }
}

describe("virtio_net_config", () => {
  test("fields do not overlap, fill exactly 24 bytes, and are naturally aligned", () => {
    assert.equal(VIRTIO_NET_CONFIG_SIZE, 24);
    assert.equal(assertNoOverlap(VIRTIO_NET_CONFIG_FIELDS), VIRTIO_NET_CONFIG_SIZE);
    const total = VIRTIO_NET_CONFIG_FIELDS.reduce((sum, f) => sum + f.size, 0);
    assert.equal(total, VIRTIO_NET_CONFIG_SIZE, "no gaps");
    assertNaturalAlignment(VIRTIO_NET_CONFIG_FIELDS);
  });

  test("offsets and sizes match the reference layout and the offset object", () => {
    const expected: [string, number, number][] = [
      ["mac", 0, 6],
      ["status", 6, 2],
      ["max_virtqueue_pairs", 8, 2],
      ["mtu", 10, 2],
      ["speed", 12, 4],
      ["duplex", 16, 1],
      ["rss_max_key_size", 17, 1],
      ["rss_max_indirection_table_length", 18, 2],
      ["supported_hash_types", 20, 4],
    ];
    assert.deepEqual(
      VIRTIO_NET_CONFIG_FIELDS.map((f) => [f.name, f.offset, f.size]),
      expected,
    );
    for (const [name, offset] of expected) {
      assert.equal(VIRTIO_NET_CONFIG[name as keyof typeof VIRTIO_NET_CONFIG], offset, name);
    }
  });

  test("each field is gated by its feature bits", () => {
    const mac = field(VIRTIO_NET_CONFIG_FIELDS, "mac");
    assert.equal(configFieldPresent(mac, featureBit(VIRTIO_NET_F_MAC)), true);
    assert.equal(configFieldPresent(mac, featureBit(VIRTIO_NET_F_STATUS)), false);
    const vqp = field(VIRTIO_NET_CONFIG_FIELDS, "max_virtqueue_pairs");
    assert.equal(configFieldPresent(vqp, featureBit(VIRTIO_NET_F_MQ)), true);
    assert.equal(configFieldPresent(vqp, featureBit(VIRTIO_NET_F_RSS)), true);
    assert.equal(configFieldPresent(vqp, 0n), false);
    const ind = field(VIRTIO_NET_CONFIG_FIELDS, "rss_max_indirection_table_length");
    assert.equal(configFieldPresent(ind, featureBit(VIRTIO_NET_F_HASH_REPORT)), false);
    const key = field(VIRTIO_NET_CONFIG_FIELDS, "rss_max_key_size");
    assert.equal(configFieldPresent(key, featureBit(VIRTIO_NET_F_HASH_REPORT)), true);
    for (const f of VIRTIO_NET_CONFIG_FIELDS) assert.ok(f.requires.length > 0, `${f.name} is conditional`);
  });

  test("status bits, control queue constants, header and queue numbering", () => {
    assert.equal(VIRTIO_NET_S_LINK_UP, 1);
    assert.equal(VIRTIO_NET_S_ANNOUNCE, 2);
    assert.equal(VIRTIO_NET_OK, 0);
    assert.equal(VIRTIO_NET_ERR, 1);
    assert.equal(VIRTIO_NET_CTRL_RX, 0);
    assert.equal(VIRTIO_NET_CTRL_MAC, 1);
    assert.equal(VIRTIO_NET_CTRL_MAC_ADDR_SET, 1);
    assert.equal(VIRTIO_NET_CTRL_MQ, 4);
    assert.equal(VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX, 0x8000);
    assert.equal(VIRTIO_NET_HDR_V1_SIZE, 12);
    assert.equal(VIRTIO_NET_HDR.num_buffers + 2, VIRTIO_NET_HDR_V1_SIZE);
    assert.deepEqual(
      [virtioNetRxQueue(0), virtioNetTxQueue(0), virtioNetRxQueue(3), virtioNetTxQueue(3)],
      [0, 1, 6, 7],
    );
    // vdpa_sim_net: one pair, so the control queue is 2 (3 queues: "max_vqs 3").
    assert.equal(virtioNetCtrlQueue(1), 2);
  });
});

describe("virtio_blk_config", () => {
  test("fields (with padding) tile exactly 96 bytes and are naturally aligned", () => {
    assert.equal(VIRTIO_BLK_CONFIG_SIZE, 96);
    assert.equal(assertNoOverlap(VIRTIO_BLK_CONFIG_FIELDS), VIRTIO_BLK_CONFIG_SIZE);
    const total = VIRTIO_BLK_CONFIG_FIELDS.reduce((sum, f) => sum + f.size, 0);
    assert.equal(total, VIRTIO_BLK_CONFIG_SIZE, "no gaps");
    assertNaturalAlignment(VIRTIO_BLK_CONFIG_FIELDS);
    assert.deepEqual(
      VIRTIO_BLK_CONFIG_FIELDS.filter((f) => f.reserved).map((f) => [f.offset, f.size]),
      [
        [33, 1],
        [57, 3],
        [93, 3],
      ],
    );
  });

  test("offsets and sizes match the reference layout", () => {
    const expected: [string, number, number][] = [
      ["capacity", 0, 8],
      ["size_max", 8, 4],
      ["seg_max", 12, 4],
      ["geometry.cylinders", 16, 2],
      ["geometry.heads", 18, 1],
      ["geometry.sectors", 19, 1],
      ["blk_size", 20, 4],
      ["physical_block_exp", 24, 1],
      ["alignment_offset", 25, 1],
      ["min_io_size", 26, 2],
      ["opt_io_size", 28, 4],
      ["wce", 32, 1],
      ["num_queues", 34, 2],
      ["max_discard_sectors", 36, 4],
      ["max_discard_seg", 40, 4],
      ["discard_sector_alignment", 44, 4],
      ["max_write_zeroes_sectors", 48, 4],
      ["max_write_zeroes_seg", 52, 4],
      ["write_zeroes_may_unmap", 56, 1],
      ["max_secure_erase_sectors", 60, 4],
      ["max_secure_erase_seg", 64, 4],
      ["secure_erase_sector_alignment", 68, 4],
      ["zoned.zone_sectors", 72, 4],
      ["zoned.max_open_zones", 76, 4],
      ["zoned.max_active_zones", 80, 4],
      ["zoned.max_append_sectors", 84, 4],
      ["zoned.write_granularity", 88, 4],
      ["zoned.model", 92, 1],
    ];
    assert.deepEqual(
      VIRTIO_BLK_CONFIG_FIELDS.filter((f) => !f.reserved).map((f) => [f.name, f.offset, f.size]),
      expected,
    );
    // The nested offset object agrees with the table.
    const offsetOf = (name: string): number => {
      const [outer, inner] = name.split(".");
      const v = (VIRTIO_BLK_CONFIG as unknown as Record<string, number | Record<string, number>>)[outer];
      return typeof v === "number" ? v : v[inner];
    };
    for (const [name, offset] of expected) assert.equal(offsetOf(name), offset, name);
  });

  test("capacity is always valid; the others need their feature", () => {
    assert.equal(configFieldPresent(field(VIRTIO_BLK_CONFIG_FIELDS, "capacity"), 0n), true);
    const cyl = field(VIRTIO_BLK_CONFIG_FIELDS, "geometry.cylinders");
    assert.deepEqual(cyl.requires, [VIRTIO_BLK_F_GEOMETRY]);
    assert.equal(configFieldPresent(cyl, 0n), false);
    assert.deepEqual(field(VIRTIO_BLK_CONFIG_FIELDS, "max_discard_seg").requires, [VIRTIO_BLK_F_DISCARD]);
    assert.deepEqual(field(VIRTIO_BLK_CONFIG_FIELDS, "zoned.model").requires, [VIRTIO_BLK_F_ZONED]);
    const unconditional = VIRTIO_BLK_CONFIG_FIELDS.filter((f) => !f.reserved && f.requires.length === 0);
    assert.deepEqual(
      unconditional.map((f) => f.name),
      ["capacity"],
    );
  });

  test("request header, types, status codes and segment layout", () => {
    assert.equal(VIRTIO_BLK_OUTHDR_SIZE, 16);
    assert.deepEqual(VIRTIO_BLK_OUTHDR, { type: 0, ioprio: 4, sector: 8 });
    assert.deepEqual(
      [
        VIRTIO_BLK_T_IN,
        VIRTIO_BLK_T_OUT,
        VIRTIO_BLK_T_FLUSH,
        VIRTIO_BLK_T_GET_ID,
        VIRTIO_BLK_T_GET_LIFETIME,
        VIRTIO_BLK_T_DISCARD,
        VIRTIO_BLK_T_WRITE_ZEROES,
        VIRTIO_BLK_T_SECURE_ERASE,
      ],
      [0, 1, 4, 8, 10, 11, 13, 14],
    );
    assert.deepEqual([VIRTIO_BLK_S_OK, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP], [0, 1, 2]);
    assert.equal(VIRTIO_BLK_ID_BYTES, 20);
    assert.equal(VIRTIO_BLK_SECTOR_SIZE, 512);
    assert.equal(1 << VIRTIO_BLK_SECTOR_SHIFT, VIRTIO_BLK_SECTOR_SIZE);
    assert.equal(VIRTIO_BLK_DISCARD_SEGMENT_SIZE, 16);
    assert.deepEqual(VIRTIO_BLK_DISCARD_SEGMENT, { sector: 0, num_sectors: 8, flags: 12 });
  });

  test("index also re-exports the ring layouts", () => {
    assert.equal(SPLIT_DESC_SIZE, 16);
  });
});
