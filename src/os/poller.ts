// One epoll instance for the whole process, never one blocked call per fd (which would exhaust libuv's
// worker pool with a few dozen fds). The epoll fd is itself pollable: libuv watches it in Node's own loop
// (koffi.node.poll) and, when it is readable, a non-blocking epoll_wait collects the ready fds and their
// callbacks run, on the main thread. No worker thread sits in between: a wake-up costs about 3 us here,
// against 8-75 us for an epoll_wait parked on a libuv worker (koffi's async call), which this replaced
// when the vhost-user benchmark showed wake-ups dominating. The libuv handle is unref'd while nothing is
// watched, so an idle poller never keeps Node alive. Watches are level-triggered: a callback must consume
// what made its fd ready (read an eventfd to EAGAIN, drain a socket) or it is called again at once.

import koffi from "koffi";
import { c, check, EINTR, OsError } from "./libc.js";

const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;
export const EPOLLIN = 0x1;
export const EPOLLOUT = 0x4;
export const EPOLLERR = 0x8;
export const EPOLLHUP = 0x10;
export const EPOLLRDHUP = 0x2000;

/** struct epoll_event is packed on x86-64: u32 events, u64 data. */
const EVENT_SIZE = 12;
const MAX_EVENTS = 64;

export type WatchEvents = "in" | "out" | "inout";

export interface Watch {
  readonly fd: number;
  /** Changes what the watch waits for. */
  modify(events: WatchEvents): void;
  /** Stops watching; call before closing the fd. */
  stop(): void;
}

type Callback = (events: number) => void;

function mask(events: WatchEvents): number {
  return (events === "out" ? 0 : EPOLLIN | EPOLLRDHUP) | (events === "in" ? 0 : EPOLLOUT);
}

export class Poller {
  private readonly epfd: number;
  private readonly callbacks = new Map<number, Callback>();
  private readonly ctl = Buffer.alloc(EVENT_SIZE);
  private readonly eventsPtr: bigint;
  private readonly events: DataView;
  private readonly uv: { ref(): void; unref(): void };
  /** Wake-ups (epoll_wait returns) so far, for observability. */
  wakeups = 0;
  /** Where a callback's exception goes (default: stderr); the poller keeps running. */
  onError: (err: unknown, fd: number) => void = (err, fd) => {
    process.stderr.write(`vdpa-ts poller: callback of fd ${fd} threw: ${(err as Error)?.stack ?? err}\n`);
  };

  constructor() {
    this.epfd = check(c.epoll_create1(EPOLL_CLOEXEC) as number, "epoll_create1");
    this.eventsPtr = koffi.alloc("uint8_t", EVENT_SIZE * MAX_EVENTS) as bigint;
    this.events = new DataView(koffi.view(this.eventsPtr, EVENT_SIZE * MAX_EVENTS) as ArrayBuffer);
    this.uv = koffi.node.poll(this.epfd, { readable: true, writable: false, disconnect: false }, () =>
      this.drain(),
    );
    this.uv.unref();
  }

  /** Fds watched now (the private wake-up eventfd not counted). */
  get size(): number {
    return this.callbacks.size;
  }

  /** Calls `callback(events)` on the main thread whenever `fd` is ready for `events`. */
  watch(fd: number, events: WatchEvents, callback: Callback): Watch {
    if (!Number.isInteger(fd) || fd < 0) throw new OsError("EBADF", "epoll_ctl", `fd ${fd}`);
    if (this.callbacks.has(fd)) throw new OsError("EEXIST", "epoll_ctl", `fd ${fd} is already watched`);
    this.control(EPOLL_CTL_ADD, fd, mask(events));
    this.callbacks.set(fd, callback);
    if (this.callbacks.size === 1) this.uv.ref();
    let live = true;
    return {
      fd,
      modify: (e) => {
        if (live) this.control(EPOLL_CTL_MOD, fd, mask(e));
      },
      stop: () => {
        if (!live) return;
        live = false;
        this.callbacks.delete(fd);
        // EBADF/ENOENT: the fd was closed first, which already removed it from the set
        c.epoll_ctl(this.epfd, EPOLL_CTL_DEL, fd, null);
        if (this.callbacks.size === 0) this.uv.unref();
      },
    };
  }

  private control(op: number, fd: number, events: number): void {
    this.ctl.writeUInt32LE(events, 0);
    this.ctl.writeBigUInt64LE(BigInt(fd), 4);
    check(c.epoll_ctl(this.epfd, op, fd, this.ctl) as number, "epoll_ctl", `fd ${fd}`);
  }

  /** The epoll fd is readable: collect what is ready without blocking, and dispatch it. */
  private drain(): void {
    const n = c.epoll_wait(this.epfd, this.eventsPtr, MAX_EVENTS, 0) as number;
    this.wakeups++;
    if (n < 0) {
      if (koffi.errno() !== EINTR)
        this.onError(new Error(`epoll_wait failed, errno ${koffi.errno()}`), this.epfd);
      return;
    }
    this.dispatch(n);
  }

  private dispatch(n: number): void {
    for (let i = 0; i < n; i++) {
      const at = i * EVENT_SIZE;
      const events = this.events.getUint32(at, true);
      const fd = Number(this.events.getBigUint64(at + 4, true));
      // A callback earlier in this batch may have stopped this watch (and closed the fd).
      const cb = this.callbacks.get(fd);
      if (!cb) continue;
      try {
        cb(events);
      } catch (err) {
        this.onError(err, fd);
      }
    }
  }
}

let shared: Poller | null = null;

/** The process's poller (created on first use). */
export function poller(): Poller {
  shared ??= new Poller();
  return shared;
}
