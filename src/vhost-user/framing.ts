// Framing: a 12-byte header (request, flags, size) then `size` payload bytes, with any fds attached to the
// message's first byte (SCM_RIGHTS). The reader asks for exactly the bytes of the current part (header,
// then payload), so a recvmsg never reads into the next message and the fds it returns belong to the
// message being assembled. One buffer is reused for every message.

import { VhostUserProtocolError } from "./codec.js";
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION_MASK,
  HEADER_SIZE,
  MAX_PAYLOAD,
  requestName,
  VERSION,
} from "./messages.js";

export interface Message {
  request: number;
  flags: number;
  /** Valid until the next push(); copy what must outlive the handler. */
  payload: Uint8Array;
  fds: number[];
}

const KNOWN_FLAGS = FLAG_VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY;

export function encodeHeader(into: DataView, request: number, flags: number, size: number): void {
  into.setUint32(0, request, true);
  into.setUint32(4, flags, true);
  into.setUint32(8, size, true);
}

/** A whole message as bytes: header (version 1 added to `flags`) then payload. */
export function encodeMessage(
  request: number,
  flags: number,
  payload: Uint8Array = new Uint8Array(0),
): Buffer {
  const b = Buffer.alloc(HEADER_SIZE + payload.byteLength);
  encodeHeader(
    new DataView(b.buffer, b.byteOffset, HEADER_SIZE),
    request,
    (flags & ~FLAG_VERSION_MASK) | VERSION,
    payload.byteLength,
  );
  b.set(payload, HEADER_SIZE);
  return b;
}

export class FrameReader {
  private readonly buf = Buffer.alloc(HEADER_SIZE + MAX_PAYLOAD);
  private readonly view = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  private have = 0;
  /** Header + payload length of the message being read, once the header is in. */
  private total = HEADER_SIZE;
  private fds: number[] = [];

  /** How many bytes to read next (never past the current message). */
  want(): number {
    return this.total - this.have;
  }

  /** Whether a message is partly read (a close now loses it). */
  get midMessage(): boolean {
    return this.have > 0 || this.fds.length > 0;
  }

  /** The buffer area to receive into: exactly want() bytes. */
  target(): Uint8Array {
    return this.buf.subarray(this.have, this.total);
  }

  /**
   * Takes `n` bytes just received into target() and the fds that came with them; returns the message when
   * it is complete. Throws a fatal VhostUserProtocolError on a bad header; the fds taken so far are in
   * `pendingFds` for the caller to close.
   */
  received(n: number, fds: readonly number[]): Message | null {
    this.fds.push(...fds);
    this.have += n;
    if (this.have < HEADER_SIZE) return null;
    if (this.total === HEADER_SIZE && this.have === HEADER_SIZE) {
      const flags = this.view.getUint32(4, true);
      const size = this.view.getUint32(8, true);
      const request = this.view.getUint32(0, true);
      if ((flags & FLAG_VERSION_MASK) !== VERSION) {
        throw new VhostUserProtocolError(
          "BAD_HEADER",
          `${requestName(request)}: version ${flags & FLAG_VERSION_MASK}, expected 1`,
          true,
        );
      }
      if (flags & ~KNOWN_FLAGS) {
        throw new VhostUserProtocolError(
          "BAD_HEADER",
          `${requestName(request)}: reserved flag bits 0x${(flags & ~KNOWN_FLAGS).toString(16)}`,
          true,
        );
      }
      if (size > MAX_PAYLOAD) {
        throw new VhostUserProtocolError(
          "PAYLOAD_TOO_LARGE",
          `${requestName(request)}: payload of ${size} bytes (at most ${MAX_PAYLOAD})`,
          true,
        );
      }
      this.total = HEADER_SIZE + size;
    }
    if (this.have < this.total) return null;
    const msg: Message = {
      request: this.view.getUint32(0, true),
      flags: this.view.getUint32(4, true),
      payload: this.buf.subarray(HEADER_SIZE, this.total),
      fds: this.fds,
    };
    this.have = 0;
    this.total = HEADER_SIZE;
    this.fds = [];
    return msg;
  }

  /** Fds of a message not yet complete (to close when the connection dies). */
  takePendingFds(): number[] {
    const fds = this.fds;
    this.fds = [];
    return fds;
  }

  /** Feeds arbitrary chunks (tests, fuzzing): the messages completed, in order. */
  push(chunk: Uint8Array, fds: readonly number[] = []): Message[] {
    const out: Message[] = [];
    let at = 0;
    let pending: readonly number[] = fds;
    while (at < chunk.byteLength) {
      const n = Math.min(this.want(), chunk.byteLength - at);
      this.target().set(chunk.subarray(at, at + n));
      at += n;
      const msg = this.received(n, pending);
      pending = [];
      // copy: push() may complete several messages over one buffer
      if (msg) out.push({ ...msg, payload: Uint8Array.from(msg.payload) });
    }
    return out;
  }
}
