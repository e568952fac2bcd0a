// A vhost-user connection over a Unix stream socket: messages in and out with their fds, for either role.
// A back-end gets each request through onMessage and answers with reply(); a front-end sends requests with
// request() and awaits the reply (vhost-user answers strictly in order). Readiness comes from the process's
// poller; nothing blocks. A broken stream (bad header, fds lost, a reply nobody asked for) closes the
// connection; every fd received and not handed over is closed.

import { closeFd as osCloseFd } from "../os/libc.js";
import { type Poller, poller as sharedPoller, type Watch } from "../os/poller.js";
import { MAX_FDS_PER_MESSAGE, recvMsg, sendMsg } from "../os/unix-socket.js";
import { VhostUserProtocolError } from "./codec.js";
import { encodeMessage, FrameReader, type Message } from "./framing.js";
import { FLAG_NEED_REPLY, FLAG_REPLY, MAX_MEM_TABLE_REGIONS, requestName } from "./messages.js";

export interface ConnectionHandlers {
  /** A message that is not a reply (requests, for a back-end). Throwing closes the connection. */
  onMessage(conn: VhostUserConnection, msg: Message): void;
  /** Called once, when the connection is gone (peer closed, error, or close()). */
  onClose?(conn: VhostUserConnection, reason: string): void;
}

export interface ConnectionOptions {
  poller?: Poller;
  /** Most fds accepted with one message (more: the stream is broken). Default 8. */
  maxFds?: number;
  /** Bytes queued for a peer that does not read before the connection is dropped. */
  maxQueued?: number;
}

/** Messages handled per readiness callback, so one flooding peer cannot starve the others. */
const MESSAGES_PER_TURN = 64;

interface PendingReply {
  request: number;
  resolve(msg: Message): void;
  reject(err: Error): void;
}

export class VhostUserConnection {
  private readonly reader = new FrameReader();
  private readonly watch: Watch;
  private readonly maxFds: number;
  private readonly maxQueued: number;
  private out: { bytes: Buffer; fds: number[] }[] = [];
  private queued = 0;
  private readonly pending: PendingReply[] = [];
  private closed = false;
  /** Messages received and sent, for observability. */
  readonly counters = { received: 0, sent: 0 };

  constructor(
    readonly fd: number,
    private readonly handlers: ConnectionHandlers,
    opts: ConnectionOptions = {},
  ) {
    this.maxFds = Math.min(opts.maxFds ?? MAX_MEM_TABLE_REGIONS, MAX_FDS_PER_MESSAGE);
    this.maxQueued = opts.maxQueued ?? 1 << 20;
    this.watch = (opts.poller ?? sharedPoller()).watch(fd, "in", (events) => this.onReady(events));
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends a message (version 1 is added to `flags`). The fds stay the caller's: the kernel dups them. */
  send(request: number, flags: number, payload?: Uint8Array, fds: readonly number[] = []): void {
    if (this.closed) return;
    this.counters.sent++;
    this.enqueue(encodeMessage(request, flags, payload), [...fds]);
  }

  /** Answers `to` (same request id, REPLY set). */
  reply(to: Message, payload?: Uint8Array, fds: readonly number[] = []): void {
    this.send(to.request, FLAG_REPLY, payload, fds);
  }

  /** Front-end role: sends a request and resolves with its reply. */
  request(
    request: number,
    payload?: Uint8Array,
    fds: readonly number[] = [],
    opts: { needReply?: boolean } = {},
  ): Promise<Message> {
    return new Promise((resolve, reject) => {
      if (this.closed) {
        reject(new Error(`connection closed before ${requestName(request)}`));
        return;
      }
      this.pending.push({ request, resolve, reject });
      this.send(request, opts.needReply ? FLAG_NEED_REPLY : 0, payload, fds);
    });
  }

  /** Front-end role: sends a request that has no reply. */
  notify(request: number, payload?: Uint8Array, fds: readonly number[] = []): void {
    this.send(request, 0, payload, fds);
  }

  close(reason = "closed"): void {
    if (this.closed) return;
    this.closed = true;
    this.watch.stop();
    for (const fd of this.reader.takePendingFds()) tryClose(fd);
    tryClose(this.fd);
    const err = new Error(`vhost-user connection closed: ${reason}`);
    for (const p of this.pending.splice(0)) p.reject(err);
    this.out = [];
    this.handlers.onClose?.(this, reason);
  }

  private enqueue(bytes: Buffer, fds: number[]): void {
    this.out.push({ bytes, fds });
    this.queued += bytes.length;
    if (this.queued > this.maxQueued) {
      this.close(`peer does not read (${this.queued} bytes queued)`);
      return;
    }
    this.flush();
  }

  private flush(): void {
    while (this.out.length > 0 && !this.closed) {
      const head = this.out[0];
      let sent: number | null;
      try {
        sent = sendMsg(this.fd, head.bytes, head.fds);
      } catch (err) {
        this.close(`send failed: ${(err as Error).message}`);
        return;
      }
      if (sent === null) break;
      this.queued -= sent;
      if (sent < head.bytes.length) {
        // the fds went with the first byte
        this.out[0] = { bytes: head.bytes.subarray(sent), fds: [] };
        break;
      }
      this.out.shift();
    }
    if (!this.closed) this.watch.modify(this.out.length > 0 ? "inout" : "in");
  }

  private onReady(events: number): void {
    if (events & 0x4) this.flush(); // EPOLLOUT
    for (let handled = 0; handled < MESSAGES_PER_TURN && !this.closed; ) {
      let got: ReturnType<typeof recvMsg>;
      try {
        got = recvMsg(this.fd, this.reader.target(), this.maxFds);
      } catch (err) {
        this.close(`receive failed: ${(err as Error).message}`);
        return;
      }
      if (got === null) return;
      if (got.bytes === 0) {
        for (const fd of got.fds) tryClose(fd);
        this.close(this.reader.midMessage ? "peer closed in the middle of a message" : "peer closed");
        return;
      }
      if (got.truncatedFds) {
        for (const fd of got.fds) tryClose(fd);
        this.close(`a message came with more than ${this.maxFds} fds`);
        return;
      }
      let msg: Message | null;
      try {
        msg = this.reader.received(got.bytes, got.fds);
      } catch (err) {
        this.close((err as Error).message);
        return;
      }
      if (!msg) continue;
      handled++;
      this.counters.received++;
      try {
        this.dispatch(msg);
      } catch (err) {
        for (const fd of msg.fds) tryClose(fd);
        this.close((err as Error).message);
        return;
      }
    }
  }

  private dispatch(msg: Message): void {
    if (msg.flags & FLAG_REPLY) {
      const head = this.pending[0];
      if (!head || head.request !== msg.request) {
        throw new VhostUserProtocolError(
          "UNEXPECTED_REPLY",
          `a reply to ${requestName(msg.request)} while ${head ? `${requestName(head.request)} was asked` : "nothing was asked"}`,
          true,
        );
      }
      this.pending.shift();
      head.resolve({ ...msg, payload: Uint8Array.from(msg.payload) });
      return;
    }
    this.handlers.onMessage(this, msg);
  }
}

function tryClose(fd: number): void {
  try {
    osCloseFd(fd);
  } catch {}
}
