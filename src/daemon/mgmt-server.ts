// vdpad's management socket: accepts connections on <runtime-dir>/mgmt.sock, decodes each request line,
// runs it as a command of Linux's "vdpa" netlink family (VdpaManagement.run) and writes the reply.
// Malformed, oversized or half-sent requests get an error reply or a closed connection; nothing a client
// sends can throw out of here.

import { existsSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { chmod, chown } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import {
  type Attr,
  decodeRequest,
  encodeReply,
  LineSplitter,
  ProtocolError,
  type Reply,
} from "../mgmt-protocol/codec.js";
import type { AttrValue as MgmtAttrValue, VdpaAttrName } from "../vdpa/index.js";
import { NetlinkPolicyError, VdpaError } from "../vdpa/index.js";
import { CHANGING_COMMANDS, type CommandRunner } from "./daemon-commands.js";

export interface MgmtServerOptions {
  socketPath: string;
  /** File mode of the socket (default 0o600: only the daemon's user may connect). */
  mode?: number;
  /** Group owning the socket (a gid), so members of that group may connect (with a mode such as 0660). */
  gid?: number;
  log?: (level: "info" | "warn" | "error", message: string) => void;
  /**
   * The uid of the process at the other end of a connection (SO_PEERCRED), or undefined when it cannot be
   * known. Commands that change state are refused (EPERM) to any uid but root and the daemon's own.
   */
  peerUid?: (sock: Socket) => number | undefined;
}

/** Why a server could not start. */
export class ServerStartError extends Error {
  override readonly name = "ServerStartError";
}

export class MgmtServer {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly log: NonNullable<MgmtServerOptions["log"]>;
  /** Requests answered, and protocol errors seen, for observability. */
  readonly counters = { requests: 0, errors: 0, protocolErrors: 0, connections: 0 };

  constructor(
    private readonly runner: CommandRunner,
    private readonly opts: MgmtServerOptions,
  ) {
    this.log = opts.log ?? (() => {});
  }

  /**
   * Listens. A socket file left by a daemon that died is detected (nobody answers on it) and replaced; a
   * live daemon on the same path makes start() fail, saying so.
   */
  async start(): Promise<void> {
    const path = this.opts.socketPath;
    mkdirSync(dirOf(path), { recursive: true, mode: 0o755 });
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) {
        throw new ServerStartError(`${path} exists and is not a socket; not touching it`);
      }
      if (await answers(path)) {
        throw new ServerStartError(`another vdpad is already serving ${path}`);
      }
      this.log("warn", `removing stale socket ${path} left by a daemon that did not exit cleanly`);
      unlinkSync(path);
    }
    const server = createServer((sock) => this.accept(sock));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        resolve();
      });
    });
    await chmod(path, this.opts.mode ?? 0o600);
    if (this.opts.gid !== undefined) await chown(path, -1, this.opts.gid);
    server.on("error", (err) => this.log("error", `management socket: ${err.message}`));
    this.server = server;
    this.log("info", `management socket listening at ${path}`);
  }

  /** Stops listening, closes every connection and removes the socket file. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    try {
      unlinkSync(this.opts.socketPath);
    } catch {}
  }

  private accept(sock: Socket): void {
    this.counters.connections++;
    this.sockets.add(sock);
    sock.setEncoding("utf8");
    const lines = new LineSplitter(
      (line) => this.handle(sock, line),
      () => {
        // A line this long is not a request: say so once, then hang up.
        this.counters.protocolErrors++;
        this.log("warn", "closing a management connection that sent an oversized line");
        sock.end(encodeReply({ id: 0, ok: false, errno: "E2BIG", extack: "request line too long" }));
      },
    );
    sock.on("data", (chunk: string) => lines.push(chunk));
    sock.on("error", () => {});
    sock.on("close", () => this.sockets.delete(sock));
  }

  private handle(sock: Socket, line: string): void {
    let reply: Reply;
    let id = 0;
    try {
      const req = decodeRequest(line);
      id = req.id;
      this.counters.requests++;
      if (CHANGING_COMMANDS.has(req.cmd)) this.checkMayChange(sock);
      const result = this.runner.run(
        req.cmd,
        req.attrs.map((a: Attr) => ({ name: a.name as VdpaAttrName, value: a.value as MgmtAttrValue })),
        { dump: req.dump },
      );
      reply = {
        id,
        ok: true,
        replies: result.replies,
        ...(result.warning !== undefined ? { warning: result.warning } : {}),
      };
    } catch (err) {
      reply = this.errorReply(id, err);
    }
    if (!sock.destroyed) sock.write(encodeReply(reply));
  }

  /** Root and the daemon's own user may change state; anyone who can connect may read it. */
  private checkMayChange(sock: Socket): void {
    const uid = this.opts.peerUid?.(sock);
    if (uid === undefined) return; // unknown: the socket's mode and group are the only gate
    if (uid === 0 || uid === process.getuid?.()) return;
    throw new VdpaError("EPERM", `uid ${uid} may only read; changes need root or the daemon's user`);
  }

  private errorReply(id: number, err: unknown): Reply {
    this.counters.errors++;
    if (err instanceof VdpaError) {
      const r: Reply = { id, ok: false, errno: err.code };
      if (err.extack !== undefined) r.extack = err.extack;
      if (err instanceof NetlinkPolicyError) r.policy = true;
      return r;
    }
    if (err instanceof ProtocolError) {
      this.counters.protocolErrors++;
      return { id, ok: false, errno: "EINVAL", extack: `malformed request: ${err.message}` };
    }
    // A bug, not a client's fault: log it, answer, keep serving.
    this.log("error", `management request failed: ${(err as Error)?.stack ?? String(err)}`);
    return { id, ok: false, errno: "EIO", extack: "internal error; see the daemon log" };
  }
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/** Whether something accepts connections on a Unix socket path. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}
