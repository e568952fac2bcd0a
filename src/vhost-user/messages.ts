// vhost-user's numbers (QEMU docs/interop/vhost-user.rst): request ids in both directions, header flags,
// protocol feature bits, and per front-end request what its payload is, how many fds it carries and
// whether it has a reply of its own. One table, read by the codec and the server alike.

/** Header: request u32, flags u32, size u32. */
export const HEADER_SIZE = 12;
export const VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** The largest payload accepted (rust-vmm's MAX_MSG_SIZE); the longest real one is ~270 bytes. */
export const MAX_PAYLOAD = 4096;
/** Regions in one SET_MEM_TABLE, and so fds in one message (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEM_TABLE_REGIONS = 8;
/** Config space bytes one GET/SET_CONFIG may move (VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_SIZE = 256;
/** Virtio feature bit 30: the front-end speaks protocol features. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** The SET_VRING_KICK/CALL/ERR payload: bits 0-7 ring index, bit 8 "no fd" (polling). */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 0x100;

/** Front-end to back-end requests. */
export const REQ = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
  GET_SHARED_OBJECT: 41,
  SET_DEVICE_STATE_FD: 42,
  CHECK_DEVICE_STATE: 43,
} as const;

export type RequestName = keyof typeof REQ;

/** Back-end to front-end requests (over the SET_BACKEND_REQ_FD channel). */
export const BACKEND_REQ = {
  IOTLB_MSG: 1,
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
  VRING_CALL: 4,
  VRING_ERR: 5,
  SHARED_OBJECT_ADD: 6,
  SHARED_OBJECT_REMOVE: 7,
  SHARED_OBJECT_LOOKUP: 8,
} as const;

/** Protocol feature bits (bits 0-19 are settled in the spec). */
export const PROTOCOL_F = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
  XEN_MMAP: 17,
  SHARED_OBJECT: 18,
  DEVICE_STATE: 19,
} as const;

const REQ_NAMES = new Map<number, string>(Object.entries(REQ).map(([k, v]) => [v, k]));

/** "SET_VRING_ADDR", or "request 99" for an id the spec does not define. */
export function requestName(id: number): string {
  return REQ_NAMES.get(id) ?? `request ${id}`;
}

/** The payload layouts (vhost-user.rst "Message types" payloads). */
export type PayloadKind =
  | "none"
  | "u64"
  | "state"
  | "addr"
  | "vringFd"
  | "memTable"
  | "memReg"
  | "config"
  | "log"
  | "inflight";

export interface RequestSpec {
  payload: PayloadKind;
  /** fds the request may carry: exact count, or [min, max]. vringFd and memTable decide by content. */
  fds: number | readonly [number, number];
  /** The request has a reply of its own (GET_*): REPLY_ACK's ack is not sent for it. */
  reply: boolean;
}

const spec = (payload: PayloadKind, fds: RequestSpec["fds"] = 0, reply = false): RequestSpec => ({
  payload,
  fds,
  reply,
});

/** What each front-end request carries. Requests absent here are well-framed but unknown. */
export const REQUEST_SPECS: ReadonlyMap<number, RequestSpec> = new Map<number, RequestSpec>([
  [REQ.GET_FEATURES, spec("none", 0, true)],
  [REQ.SET_FEATURES, spec("u64")],
  [REQ.SET_OWNER, spec("none")],
  [REQ.RESET_OWNER, spec("none")],
  [REQ.SET_MEM_TABLE, spec("memTable", [0, MAX_MEM_TABLE_REGIONS])],
  [REQ.SET_LOG_BASE, spec("log", 1, true)],
  [REQ.SET_LOG_FD, spec("none", 1)],
  [REQ.SET_VRING_NUM, spec("state")],
  [REQ.SET_VRING_ADDR, spec("addr")],
  [REQ.SET_VRING_BASE, spec("state")],
  [REQ.GET_VRING_BASE, spec("state", 0, true)],
  [REQ.SET_VRING_KICK, spec("vringFd", [0, 1])],
  [REQ.SET_VRING_CALL, spec("vringFd", [0, 1])],
  [REQ.SET_VRING_ERR, spec("vringFd", [0, 1])],
  [REQ.GET_PROTOCOL_FEATURES, spec("none", 0, true)],
  [REQ.SET_PROTOCOL_FEATURES, spec("u64")],
  [REQ.GET_QUEUE_NUM, spec("none", 0, true)],
  [REQ.SET_VRING_ENABLE, spec("state")],
  [REQ.SEND_RARP, spec("u64")],
  [REQ.NET_SET_MTU, spec("u64")],
  [REQ.SET_BACKEND_REQ_FD, spec("none", 1)],
  [REQ.SET_VRING_ENDIAN, spec("state")],
  [REQ.GET_CONFIG, spec("config", 0, true)],
  [REQ.SET_CONFIG, spec("config")],
  [REQ.GET_INFLIGHT_FD, spec("inflight", 0, true)],
  [REQ.SET_INFLIGHT_FD, spec("inflight", 1)],
  [REQ.RESET_DEVICE, spec("none")],
  [REQ.VRING_KICK, spec("state")],
  [REQ.GET_MAX_MEM_SLOTS, spec("none", 0, true)],
  [REQ.ADD_MEM_REG, spec("memReg", 1)],
  // the spec lets a front-end send the region's fd here too; it is accepted and closed
  [REQ.REM_MEM_REG, spec("memReg", [0, 1])],
  [REQ.SET_STATUS, spec("u64")],
  [REQ.GET_STATUS, spec("none", 0, true)],
]);
