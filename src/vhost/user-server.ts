// The vhost-user back-end of one vDPA device bound to vhost_vdpa: a listening socket at
// <runtime-dir>/vhost-user/<device>.sock, one front-end at a time, each request decoded and validated
// (src/vhost-user) then given meaning by VhostUserBackend (src/vhost/user-backend.ts).
//
// Failure policy: broken framing closes the connection; a well-framed request that fails (bad payload,
// unknown id, refused by the device) is logged and, when the front-end asked for an ack (REPLY_ACK +
// NEED_REPLY), answered with a non-zero ack; a failed request that has a reply of its own gets an empty
// GET_CONFIG reply (the spec's error form) or, for the others, the connection is closed so the front-end
// never waits for an answer that cannot come. The daemon and every other device keep running.

import { existsSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { chmod, chown } from "node:fs/promises";
import { dirname } from "node:path";
import { MappedMemoryRegion } from "../memory/mapped-region.js";
import { eventfdRead, eventfdWrite } from "../os/eventfd.js";
import { closeFd, OsError } from "../os/libc.js";
import { mapShared } from "../os/mmap.js";
import { EPOLLERR, EPOLLHUP, type Poller, poller as sharedPoller, type Watch } from "../os/poller.js";
import { acceptUnix, connectUnix, listenUnix } from "../os/unix-socket.js";
import { VdpaError } from "../vdpa/errors.js";
import {
  configPayload,
  decodeRequest,
  type Payload,
  statePayload,
  u64Payload,
  VhostUserProtocolError,
} from "../vhost-user/codec.js";
import { VhostUserConnection } from "../vhost-user/connection.js";
import type { Message } from "../vhost-user/framing.js";
import { FLAG_NEED_REPLY, PROTOCOL_F, REQ, REQUEST_SPECS, requestName } from "../vhost-user/messages.js";
import {
  type MappedRegion,
  UserBackendError,
  type UserBackendPlatform,
  VhostUserBackend,
} from "./user-backend.js";
import type { VhostVdpa } from "./vhost-vdpa.js";

export type Log = (level: "info" | "warn" | "error", message: string) => void;

export interface UserServerOptions {
  socketPath: string;
  /** Socket file mode (default 0600) and group, so a QEMU running as another user can connect. */
  mode?: number;
  gid?: number;
  log?: Log;
  poller?: Poller;
  /** Memory slots offered (GET_MAX_MEM_SLOTS). */
  maxMemSlots?: number;
}

/** Counters of one server, for `vdpa -d`, logs and tests. */
export interface UserServerCounters {
  connections: number;
  refused: number;
  requests: number;
  failed: number;
  protocolErrors: number;
}

export class VhostUserServer {
  private listenFd = -1;
  private listenWatch: Watch | null = null;
  private conn: VhostUserConnection | null = null;
  private backend: VhostUserBackend | null = null;
  private readonly log: Log;
  private readonly poller: Poller;
  readonly counters: UserServerCounters = {
    connections: 0,
    refused: 0,
    requests: 0,
    failed: 0,
    protocolErrors: 0,
  };

  constructor(
    readonly vhost: VhostVdpa,
    private readonly opts: UserServerOptions,
  ) {
    this.log = opts.log ?? (() => {});
    this.poller = opts.poller ?? sharedPoller();
  }

  get socketPath(): string {
    return this.opts.socketPath;
  }

  /** Whether a front-end is connected now. */
  get attached(): boolean {
    return this.conn !== null;
  }

  /** The session of the connected front-end (observability, tests). */
  get session(): VhostUserBackend | null {
    return this.backend;
  }

  private get name(): string {
    return this.vhost.dev.name;
  }

  /** Listens. A stale socket file (nobody answering) is replaced; a live one or a non-socket refuses. */
  async start(): Promise<void> {
    const path = this.opts.socketPath;
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket())
        throw new OsError("EEXIST", "bind", `${path} exists and is not a socket`);
      let live = false;
      try {
        closeFd(connectUnix(path));
        live = true;
      } catch {}
      if (live) throw new OsError("EADDRINUSE", "bind", `something already serves ${path}`);
      unlinkSync(path);
    }
    this.listenFd = listenUnix(path);
    await chmod(path, this.opts.mode ?? 0o600);
    if (this.opts.gid !== undefined) await chown(path, -1, this.opts.gid);
    this.listenWatch = this.poller.watch(this.listenFd, "in", () => this.acceptAll());
    this.log("info", `${this.name}: vhost-user socket listening at ${path}`);
  }

  /** Drops the front-end (device reset, memory retired), stops listening, removes the socket file. */
  stop(): void {
    this.conn?.close("server stopped");
    this.listenWatch?.stop();
    this.listenWatch = null;
    if (this.listenFd >= 0) {
      try {
        closeFd(this.listenFd);
      } catch {}
      this.listenFd = -1;
      try {
        unlinkSync(this.opts.socketPath);
      } catch {}
    }
  }

  private acceptAll(): void {
    for (;;) {
      let fd: number | null;
      try {
        fd = acceptUnix(this.listenFd);
      } catch (err) {
        this.log("error", `${this.name}: accept: ${(err as Error).message}`);
        return;
      }
      if (fd === null) return;
      if (this.conn) {
        // One front-end drives a device; a second one would fight it for the rings.
        this.counters.refused++;
        this.log("warn", `${this.name}: refusing a second front-end on ${this.socketPath} (one is attached)`);
        closeFd(fd);
        continue;
      }
      this.attach(fd);
    }
  }

  private attach(fd: number): void {
    const backend = new VhostUserBackend(this.vhost, this.platform(), this.opts.maxMemSlots);
    try {
      backend.attach();
    } catch (err) {
      this.log("warn", `${this.name}: cannot attach a front-end: ${(err as Error).message}`);
      closeFd(fd);
      return;
    }
    this.counters.connections++;
    this.backend = backend;
    this.conn = new VhostUserConnection(
      fd,
      {
        onMessage: (conn, msg) => this.handle(conn, msg),
        onClose: (_conn, reason) => {
          this.log("info", `${this.name}: front-end gone (${reason}); device reset, memory released`);
          backend.detach();
          this.conn = null;
          this.backend = null;
        },
      },
      { poller: this.poller },
    );
    this.log("info", `${this.name}: front-end connected on ${this.socketPath}`);
  }

  private handle(conn: VhostUserConnection, msg: Message): void {
    const backend = this.backend!;
    this.counters.requests++;
    const spec = REQUEST_SPECS.get(msg.request);
    let payload: Payload;
    try {
      payload = decodeRequest(msg.request, msg.payload, msg.fds);
    } catch (err) {
      for (const fd of msg.fds) tryClose(fd);
      this.counters.protocolErrors++;
      this.fail(conn, msg, err as Error, spec?.reply ?? false);
      return;
    }
    try {
      const reply = this.execute(backend, msg.request, payload, msg.fds);
      if (reply) conn.reply(msg, reply);
      else if (msg.flags & FLAG_NEED_REPLY && backend.hasProtocol(PROTOCOL_F.REPLY_ACK))
        conn.reply(msg, u64Payload(0));
    } catch (err) {
      if (!(err instanceof UserBackendError || err instanceof VdpaError || err instanceof OsError)) throw err;
      this.fail(conn, msg, err, spec?.reply ?? false);
    }
  }

  private fail(conn: VhostUserConnection, msg: Message, err: Error, hasReply: boolean): void {
    this.counters.failed++;
    this.log("warn", `${this.name}: ${requestName(msg.request)} failed: ${err.message}`);
    if (msg.request === REQ.GET_CONFIG && hasReply) {
      conn.reply(msg, configPayload(0, new Uint8Array(0)));
    } else if (hasReply) {
      conn.close(`${requestName(msg.request)} failed and has no error reply`);
    } else if (msg.flags & FLAG_NEED_REPLY && this.backend?.hasProtocol(PROTOCOL_F.REPLY_ACK)) {
      conn.reply(msg, u64Payload(1));
    }
    if (err instanceof VhostUserProtocolError && err.fatal) conn.close(err.message);
  }

  /** Runs one decoded request; returns the reply payload of requests that have one. */
  private execute(b: VhostUserBackend, request: number, p: Payload, fds: number[]): Uint8Array | undefined {
    switch (request) {
      case REQ.GET_FEATURES:
        return u64Payload(b.getFeatures());
      case REQ.SET_FEATURES:
        b.setFeatures((p as { value: bigint }).value);
        return;
      case REQ.GET_PROTOCOL_FEATURES:
        return u64Payload(b.getProtocolFeatures());
      case REQ.SET_PROTOCOL_FEATURES:
        b.setProtocolFeatures((p as { value: bigint }).value);
        return;
      case REQ.SET_OWNER:
        b.setOwner();
        return;
      case REQ.RESET_OWNER:
      case REQ.RESET_DEVICE:
        b.resetDevice();
        return;
      case REQ.GET_QUEUE_NUM:
        return u64Payload(b.getQueueNum());
      case REQ.GET_MAX_MEM_SLOTS:
        return u64Payload(b.getMaxMemSlots());
      case REQ.SET_MEM_TABLE:
        b.setMemTable((p as Extract<Payload, { kind: "memTable" }>).regions, fds);
        return;
      case REQ.ADD_MEM_REG:
        b.addMemReg((p as Extract<Payload, { kind: "memReg" }>).region, fds[0]);
        return;
      case REQ.REM_MEM_REG:
        for (const fd of fds) tryClose(fd);
        b.remMemReg((p as Extract<Payload, { kind: "memReg" }>).region);
        return;
      case REQ.SET_VRING_NUM: {
        const s = p as Extract<Payload, { kind: "state" }>;
        b.setVringNum(s.index, s.num);
        return;
      }
      case REQ.SET_VRING_BASE: {
        const s = p as Extract<Payload, { kind: "state" }>;
        b.setVringBase(s.index, s.num);
        return;
      }
      case REQ.GET_VRING_BASE: {
        const s = p as Extract<Payload, { kind: "state" }>;
        return statePayload(s.index, b.getVringBase(s.index));
      }
      case REQ.SET_VRING_ADDR: {
        const a = p as Extract<Payload, { kind: "addr" }>;
        b.setVringAddr(a.index, a);
        return;
      }
      case REQ.SET_VRING_KICK:
      case REQ.SET_VRING_CALL:
      case REQ.SET_VRING_ERR: {
        const v = p as Extract<Payload, { kind: "vringFd" }>;
        if (request === REQ.SET_VRING_KICK) b.setVringKick(v.index, v.fd);
        else if (request === REQ.SET_VRING_CALL) b.setVringCall(v.index, v.fd);
        else b.setVringErr(v.index, v.fd);
        return;
      }
      case REQ.SET_VRING_ENABLE: {
        const s = p as Extract<Payload, { kind: "state" }>;
        if (s.num > 1) throw new UserBackendError("DEVICE_REFUSED", `ring ${s.index}: enable value ${s.num}`);
        b.setVringEnable(s.index, s.num === 1);
        return;
      }
      case REQ.GET_CONFIG: {
        const c = p as Extract<Payload, { kind: "config" }>;
        return configPayload(c.offset, b.getConfig(c.offset, c.size), c.flags);
      }
      case REQ.SET_CONFIG: {
        const c = p as Extract<Payload, { kind: "config" }>;
        b.setConfig(c.offset, Uint8Array.from(c.data));
        return;
      }
      case REQ.GET_STATUS:
        return u64Payload(b.getStatus());
      case REQ.SET_STATUS:
        b.setStatus(Number((p as { value: bigint }).value & 0xffn));
        return;
      case REQ.SET_BACKEND_REQ_FD:
        b.setBackendReqFd(fds[0]);
        return;
      default:
        // Known to the codec but not implemented here (logging, inflight, RARP, MTU, endianness, in-band kicks).
        for (const fd of fds) tryClose(fd);
        throw new UserBackendError("NOT_SUPPORTED", "not implemented by vdpa-ts's back-end");
    }
  }

  /** The operating system as the session sees it. */
  private platform(): UserBackendPlatform {
    const log = this.log;
    const name = this.name;
    return {
      mapRegion: (fd, offset, size, regionName): MappedRegion => {
        const mapping = mapShared(fd, offset, size);
        if (!mapping.shrinkSealed) {
          log(
            "info",
            `${name}: memory file of ${regionName} is not sealed against shrinking (see docs/vhost-user.md)`,
          );
        }
        return new MappedMemoryRegion(mapping, regionName);
      },
      watchKick: (fd, onKick) => {
        let watch: Watch | null = null;
        watch = this.poller.watch(fd, "in", (events) => {
          if (events & (EPOLLERR | EPOLLHUP)) {
            log("warn", `${name}: a kick fd hung up; no more kicks from it`);
            watch?.stop();
            return;
          }
          try {
            eventfdRead(fd);
          } catch (err) {
            log("warn", `${name}: reading a kick fd: ${(err as Error).message}`);
            watch?.stop();
            return;
          }
          onKick();
        });
        return { stop: () => watch?.stop() };
      },
      signal: (fd) => {
        try {
          eventfdWrite(fd);
        } catch (err) {
          log("warn", `${name}: signalling fd ${fd}: ${(err as Error).message}`);
        }
      },
      closeFd: tryClose,
      log,
    };
  }
}

function tryClose(fd: number): void {
  try {
    closeFd(fd);
  } catch {}
}
