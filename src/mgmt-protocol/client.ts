// The client side of the management protocol: one request, one reply, over the daemon's Unix socket.

import { createConnection } from "node:net";
import { decodeReply, encodeRequest, LineSplitter, type Reply, type Request } from "./codec.js";

export class DaemonUnreachable extends Error {
  override readonly name = "DaemonUnreachable";
  constructor(
    readonly socketPath: string,
    readonly reason: Error,
  ) {
    super(`cannot reach vdpad at ${socketPath}: ${reason.message}`, { cause: reason });
  }
}

/** Sends `req` and resolves with the daemon's reply; rejects with DaemonUnreachable when nobody listens. */
export function request(socketPath: string, req: Request, timeoutMs = 10_000): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    let settled = false;
    const done = (err: Error | null, reply?: Reply): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(
      () => done(new Error(`vdpad at ${socketPath} did not answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    const lines = new LineSplitter(
      (line) => {
        try {
          done(null, decodeReply(line));
        } catch (err) {
          done(err as Error);
        }
      },
      () => done(new Error("reply line too long")),
    );
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => lines.push(chunk));
    sock.on("connect", () => sock.write(encodeRequest(req)));
    sock.on("error", (err) => done(settled ? err : new DaemonUnreachable(socketPath, err)));
    sock.on("close", () => done(new Error(`vdpad at ${socketPath} closed the connection without a reply`)));
  });
}
