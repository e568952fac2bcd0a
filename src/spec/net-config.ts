// virtio-net facts: the device config space, the per-packet header and the control queue commands.
// Sources: virtio 1.3 "Network Device"; Linux include/uapi/linux/virtio_net.h. All multi-byte fields are
// little-endian (a modern device; vDPA's netlink code reads the config as little-endian whatever was negotiated).

import type { ConfigField } from "./config-field.js";
import {
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_RSS,
  VIRTIO_NET_F_SPEED_DUPLEX,
  VIRTIO_NET_F_STATUS,
} from "./features.js";

/** Length of a MAC address (Linux ETH_ALEN). */
export const ETH_ALEN = 6;
/** Smallest MTU Linux accepts (ETH_MIN_MTU); the vdpa netlink policy rejects a smaller `mtu`. */
export const ETH_MIN_MTU = 68;

// ---- Config space (struct virtio_net_config, packed) ----

/** sizeof(struct virtio_net_config) in current Linux headers. */
export const VIRTIO_NET_CONFIG_SIZE = 24;

/** Byte offsets of the virtio_net_config members. */
export const VIRTIO_NET_CONFIG = {
  mac: 0,
  status: 6,
  max_virtqueue_pairs: 8,
  mtu: 10,
  speed: 12,
  duplex: 16,
  rss_max_key_size: 17,
  rss_max_indirection_table_length: 18,
  supported_hash_types: 20,
} as const;

/**
 * Every virtio_net_config field with the feature bits that make it valid (spec "Device configuration layout").
 * max_virtqueue_pairs is valid with MQ or RSS; rss_max_key_size and supported_hash_types with RSS or
 * HASH_REPORT; rss_max_indirection_table_length with RSS only.
 */
export const VIRTIO_NET_CONFIG_FIELDS: readonly ConfigField[] = [
  { name: "mac", offset: VIRTIO_NET_CONFIG.mac, size: ETH_ALEN, requires: [VIRTIO_NET_F_MAC] },
  { name: "status", offset: VIRTIO_NET_CONFIG.status, size: 2, requires: [VIRTIO_NET_F_STATUS] },
  {
    name: "max_virtqueue_pairs",
    offset: VIRTIO_NET_CONFIG.max_virtqueue_pairs,
    size: 2,
    requires: [VIRTIO_NET_F_MQ, VIRTIO_NET_F_RSS],
  },
  { name: "mtu", offset: VIRTIO_NET_CONFIG.mtu, size: 2, requires: [VIRTIO_NET_F_MTU] },
  { name: "speed", offset: VIRTIO_NET_CONFIG.speed, size: 4, requires: [VIRTIO_NET_F_SPEED_DUPLEX] },
  { name: "duplex", offset: VIRTIO_NET_CONFIG.duplex, size: 1, requires: [VIRTIO_NET_F_SPEED_DUPLEX] },
  {
    name: "rss_max_key_size",
    offset: VIRTIO_NET_CONFIG.rss_max_key_size,
    size: 1,
    requires: [VIRTIO_NET_F_RSS, VIRTIO_NET_F_HASH_REPORT],
  },
  {
    name: "rss_max_indirection_table_length",
    offset: VIRTIO_NET_CONFIG.rss_max_indirection_table_length,
    size: 2,
    requires: [VIRTIO_NET_F_RSS],
  },
  {
    name: "supported_hash_types",
    offset: VIRTIO_NET_CONFIG.supported_hash_types,
    size: 4,
    requires: [VIRTIO_NET_F_RSS, VIRTIO_NET_F_HASH_REPORT],
  },
];

/** Bits of virtio_net_config.status. */
export const VIRTIO_NET_S_LINK_UP = 1;
/** Set by the device when the driver should announce itself (gratuitous ARP); cleared by ANNOUNCE_ACK. */
export const VIRTIO_NET_S_ANNOUNCE = 2;

/** max_virtqueue_pairs bounds (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN/MAX). */
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000;

/**
 * virtio_net_config.duplex values; anything else means unknown. These names are ours: Linux uses ethtool's
 * DUPLEX_* and SPEED_UNKNOWN for the same numbers.
 */
export const VIRTIO_NET_DUPLEX_HALF = 0;
export const VIRTIO_NET_DUPLEX_FULL = 1;
/** What Linux devices report when they do not know (DUPLEX_UNKNOWN, SPEED_UNKNOWN as u32). */
export const VIRTIO_NET_DUPLEX_UNKNOWN = 0xff;
export const VIRTIO_NET_SPEED_UNKNOWN = 0xffff_ffff;

/** supported_hash_types / hash_types bits (VIRTIO_NET_RSS_HASH_TYPE_*). */
export const VIRTIO_NET_RSS_HASH_TYPE_IPv4 = 1 << 0;
export const VIRTIO_NET_RSS_HASH_TYPE_TCPv4 = 1 << 1;
export const VIRTIO_NET_RSS_HASH_TYPE_UDPv4 = 1 << 2;
export const VIRTIO_NET_RSS_HASH_TYPE_IPv6 = 1 << 3;
export const VIRTIO_NET_RSS_HASH_TYPE_TCPv6 = 1 << 4;
export const VIRTIO_NET_RSS_HASH_TYPE_UDPv6 = 1 << 5;
export const VIRTIO_NET_RSS_HASH_TYPE_IP_EX = 1 << 6;
export const VIRTIO_NET_RSS_HASH_TYPE_TCP_EX = 1 << 7;
export const VIRTIO_NET_RSS_HASH_TYPE_UDP_EX = 1 << 8;

// ---- Queues ----

/** Receive queue of pair `k` is 2k, transmit queue 2k+1 (spec "Virtqueues"). */
export function virtioNetRxQueue(pair: number): number {
  return 2 * pair;
}
export function virtioNetTxQueue(pair: number): number {
  return 2 * pair + 1;
}
/**
 * Index of the control queue: right after the data queues, 2 * max_virtqueue_pairs, where the pair count is
 * 1 when the device has neither MQ nor RSS.
 */
export function virtioNetCtrlQueue(maxVirtqueuePairs: number): number {
  return 2 * maxVirtqueuePairs;
}

// ---- Per-packet header (struct virtio_net_hdr_v1) ----

/** Header every packet starts with on a VERSION_1 device (num_buffers always present). */
export const VIRTIO_NET_HDR_V1_SIZE = 12;
/** Legacy struct virtio_net_hdr, without num_buffers (legacy device, no MRG_RXBUF). */
export const VIRTIO_NET_HDR_LEGACY_SIZE = 10;
/** Legacy struct virtio_net_hdr_mrg_rxbuf: the legacy header plus num_buffers. */
export const VIRTIO_NET_HDR_MRG_RXBUF_SIZE = 12;
/** struct virtio_net_hdr_v1_hash: v1 header + hash_value (4) + hash_report (2) + padding (2); with HASH_REPORT. */
export const VIRTIO_NET_HDR_V1_HASH_SIZE = 20;

/** Byte offsets in virtio_net_hdr_v1. */
export const VIRTIO_NET_HDR = {
  flags: 0,
  gso_type: 1,
  hdr_len: 2,
  gso_size: 4,
  csum_start: 6,
  csum_offset: 8,
  num_buffers: 10,
} as const;

/** virtio_net_hdr flags. */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;

/** virtio_net_hdr gso_type values; ECN is a flag or-ed onto TCP types. */
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_UDP_L4 = 5;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

// ---- Control queue ----
// A command is: out buffer {class u8, cmd u8}, out command data, in buffer of one ack byte.

/** sizeof(struct virtio_net_ctrl_hdr). */
export const VIRTIO_NET_CTRL_HDR_SIZE = 2;
/** sizeof(virtio_net_ctrl_ack). */
export const VIRTIO_NET_CTRL_ACK_SIZE = 1;
export const VIRTIO_NET_OK = 0;
export const VIRTIO_NET_ERR = 1;

/** Receive mode (CTRL_RX; commands 2..5 need CTRL_RX_EXTRA). Data: one byte, 0 off, else on. */
export const VIRTIO_NET_CTRL_RX = 0;
export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
export const VIRTIO_NET_CTRL_RX_ALLUNI = 2;
export const VIRTIO_NET_CTRL_RX_NOMULTI = 3;
export const VIRTIO_NET_CTRL_RX_NOUNI = 4;
export const VIRTIO_NET_CTRL_RX_NOBCAST = 5;

/** MAC filtering: TABLE_SET takes two {le32 entries, macs} tables (unicast, multicast); ADDR_SET one MAC. */
export const VIRTIO_NET_CTRL_MAC = 1;
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;

/** VLAN filtering (CTRL_VLAN). Data: le16 VLAN id. */
export const VIRTIO_NET_CTRL_VLAN = 2;
export const VIRTIO_NET_CTRL_VLAN_ADD = 0;
export const VIRTIO_NET_CTRL_VLAN_DEL = 1;

/** The driver acknowledges VIRTIO_NET_S_ANNOUNCE (GUEST_ANNOUNCE). */
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;

/** Multiqueue: VQ_PAIRS_SET takes le16 pairs; RSS_CONFIG (RSS) and HASH_CONFIG (HASH_REPORT) their structs. */
export const VIRTIO_NET_CTRL_MQ = 4;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
export const VIRTIO_NET_CTRL_MQ_RSS_CONFIG = 1;
export const VIRTIO_NET_CTRL_MQ_HASH_CONFIG = 2;

/** Offload reconfiguration (CTRL_GUEST_OFFLOADS). Data: le64 of GUEST_* feature bits. */
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET = 0;

/** Notification coalescing (NOTF_COAL, VQ_NOTF_COAL). */
export const VIRTIO_NET_CTRL_NOTF_COAL = 6;
export const VIRTIO_NET_CTRL_NOTF_COAL_TX_SET = 0;
export const VIRTIO_NET_CTRL_NOTF_COAL_RX_SET = 1;
export const VIRTIO_NET_CTRL_NOTF_COAL_VQ_SET = 2;
export const VIRTIO_NET_CTRL_NOTF_COAL_VQ_GET = 3;

/** Device statistics (DEVICE_STATS). */
export const VIRTIO_NET_CTRL_STATS = 8;
export const VIRTIO_NET_CTRL_STATS_QUERY = 0;
export const VIRTIO_NET_CTRL_STATS_GET = 1;
