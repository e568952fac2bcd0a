// The management protocol between vdpad and the vdpa tool: newline-delimited JSON over a Unix socket.
// A request names a command of Linux's "vdpa" netlink family and carries an ordered attribute list; a
// reply carries ordered attribute lists (one per object), or Linux's errno name and message. Every
// message is validated on decode, before anything acts on it. docs/management-protocol.md is the spec.

/** Longest line either side accepts, newline excluded. */
export const MAX_LINE = 64 * 1024;
/** Most attributes in one request. */
export const MAX_ATTRS = 64;

/**
 * An attribute value on the wire. Strings and numbers (u8/u16/u32) are JSON as they are; 64-bit values
 * travel as `{ "u64": "0x..." }` (hex, so no JSON number loses precision); binary as `{ "bin": "hex" }`.
 */
export type WireValue = string | number | { u64: string } | { bin: string };
/** A value as programs use it. */
export type AttrValue = string | number | bigint | Uint8Array;
export interface Attr {
  name: string;
  value: AttrValue;
}

export interface Request {
  /** Echoed in the reply, so a client may pipeline. */
  id: number;
  cmd: string;
  dump: boolean;
  attrs: Attr[];
}

export type Reply =
  | { id: number; ok: true; replies: Attr[][]; warning?: string }
  | { id: number; ok: false; errno: string; extack?: string; policy?: boolean };

export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  constructor(
    /** BAD_JSON, BAD_SHAPE, TOO_LONG, BAD_VALUE: what was wrong with the message. */
    readonly code: "BAD_JSON" | "BAD_SHAPE" | "TOO_LONG" | "BAD_VALUE",
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

function fail(code: ProtocolError["code"], message: string): never {
  throw new ProtocolError(code, message);
}

export function encodeValue(v: AttrValue): WireValue {
  if (typeof v === "bigint") return { u64: `0x${v.toString(16)}` };
  if (v instanceof Uint8Array)
    return { bin: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("hex") };
  return v;
}

export function decodeValue(w: unknown): AttrValue {
  if (typeof w === "string") return w;
  if (typeof w === "number") {
    if (!Number.isInteger(w) || w < 0 || w > 0xffffffff) fail("BAD_VALUE", `number ${w} is not a u32`);
    return w;
  }
  if (w && typeof w === "object" && !Array.isArray(w)) {
    const keys = Object.keys(w);
    if (keys.length === 1 && keys[0] === "u64") {
      const s = (w as { u64: unknown }).u64;
      if (typeof s !== "string" || !/^0x[0-9a-f]{1,16}$/.test(s))
        fail("BAD_VALUE", "u64 must be 0x and 1-16 hex digits");
      return BigInt(s);
    }
    if (keys.length === 1 && keys[0] === "bin") {
      const s = (w as { bin: unknown }).bin;
      if (typeof s !== "string" || s.length % 2 !== 0 || !/^[0-9a-f]*$/.test(s) || s.length > 512) {
        fail("BAD_VALUE", "bin must be an even number of lowercase hex digits, at most 256 bytes");
      }
      return Uint8Array.from(Buffer.from(s, "hex"));
    }
  }
  return fail("BAD_VALUE", "a value is a string, a u32, {u64} or {bin}");
}

function encodeAttrs(attrs: readonly Attr[]): [string, WireValue][] {
  return attrs.map((a) => [a.name, encodeValue(a.value)]);
}

function decodeAttrs(raw: unknown, max: number): Attr[] {
  if (!Array.isArray(raw)) fail("BAD_SHAPE", "attrs must be an array");
  if (raw.length > max) fail("BAD_SHAPE", `more than ${max} attributes`);
  return raw.map((pair) => {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" || pair[0].length > 64) {
      fail("BAD_SHAPE", "an attribute is [name, value]");
    }
    return { name: pair[0], value: decodeValue(pair[1]) };
  });
}

function parseLine(line: string): Record<string, unknown> {
  if (line.length > MAX_LINE) fail("TOO_LONG", `line of ${line.length} bytes (max ${MAX_LINE})`);
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch {
    return fail("BAD_JSON", "not JSON");
  }
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) fail("BAD_SHAPE", "a message is a JSON object");
  return obj as Record<string, unknown>;
}

function checkId(id: unknown): number {
  if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0)
    fail("BAD_SHAPE", "id must be a non-negative integer");
  return id;
}

export function encodeRequest(req: Request): string {
  return `${JSON.stringify({ id: req.id, cmd: req.cmd, dump: req.dump, attrs: encodeAttrs(req.attrs) })}\n`;
}

export function decodeRequest(line: string): Request {
  const o = parseLine(line);
  const id = checkId(o.id);
  if (typeof o.cmd !== "string" || !/^[A-Z_]{1,32}$/.test(o.cmd))
    fail("BAD_SHAPE", "cmd must be a command name");
  if (o.dump !== undefined && typeof o.dump !== "boolean") fail("BAD_SHAPE", "dump must be a boolean");
  return { id, cmd: o.cmd, dump: o.dump === true, attrs: decodeAttrs(o.attrs ?? [], MAX_ATTRS) };
}

export function encodeReply(r: Reply): string {
  if (r.ok) {
    const body: Record<string, unknown> = { id: r.id, ok: true, replies: r.replies.map(encodeAttrs) };
    if (r.warning !== undefined) body.warning = r.warning;
    return `${JSON.stringify(body)}\n`;
  }
  return `${JSON.stringify(r)}\n`;
}

export function decodeReply(line: string): Reply {
  const o = parseLine(line);
  const id = checkId(o.id);
  if (o.ok === true) {
    if (!Array.isArray(o.replies)) fail("BAD_SHAPE", "replies must be an array");
    const replies = o.replies.map((r) => decodeAttrs(r, 4096));
    if (o.warning !== undefined && typeof o.warning !== "string")
      fail("BAD_SHAPE", "warning must be a string");
    return o.warning === undefined
      ? { id, ok: true, replies }
      : { id, ok: true, replies, warning: o.warning };
  }
  if (o.ok === false) {
    if (typeof o.errno !== "string" || !/^E[A-Z0-9]{1,15}$/.test(o.errno))
      fail("BAD_SHAPE", "errno must be an errno name");
    if (o.extack !== undefined && typeof o.extack !== "string") fail("BAD_SHAPE", "extack must be a string");
    const r: Reply = { id, ok: false, errno: o.errno };
    if (typeof o.extack === "string") r.extack = o.extack;
    if (o.policy === true) r.policy = true;
    return r;
  }
  return fail("BAD_SHAPE", "ok must be true or false");
}

/**
 * Splits a byte stream into lines without losing a line split across chunks. A line longer than
 * MAX_LINE is reported once and the rest of it discarded up to its newline, so one bad client message
 * cannot grow memory without bound.
 */
export class LineSplitter {
  private partial = "";
  private discarding = false;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly onTooLong: () => void,
  ) {}

  push(chunk: string): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf("\n", start);
      if (nl < 0) break;
      const piece = chunk.slice(start, nl);
      start = nl + 1;
      if (this.discarding) {
        this.discarding = false;
        this.partial = "";
        continue;
      }
      const line = this.partial + piece;
      this.partial = "";
      if (line.length > MAX_LINE) this.onTooLong();
      else if (line.length > 0) this.onLine(line);
    }
    if (this.discarding) return;
    this.partial += chunk.slice(start);
    if (this.partial.length > MAX_LINE) {
      this.partial = "";
      this.discarding = true;
      this.onTooLong();
    }
  }

  /** Bytes of an unfinished line (a client that went away mid-request). */
  get pending(): number {
    return this.partial.length;
  }
}
