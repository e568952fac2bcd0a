// The management protocol's codec: values round-trip exactly, and every malformed message is refused
// with a typed error before anything acts on it.

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  decodeReply,
  decodeRequest,
  encodeReply,
  encodeRequest,
  LineSplitter,
  MAX_LINE,
  ProtocolError,
} from "../../src/mgmt-protocol/codec.js";

const refused = (code: string) => (err: unknown) => err instanceof ProtocolError && err.code === code;

test("requests and replies round-trip: strings, u32, u64 as hex, binary as hex", () => {
  const req = {
    id: 7,
    cmd: "DEV_NEW",
    dump: false,
    attrs: [
      { name: "DEV_NAME", value: "vdpa0" },
      { name: "DEV_NET_CFG_MTU", value: 1500 },
      { name: "DEV_FEATURES", value: 0xffff_ffff_ffff_ffffn },
      { name: "DEV_NET_CFG_MACADDR", value: Uint8Array.of(0, 0x11, 0x22, 0x33, 0x44, 0x55) },
    ],
  };
  const line = encodeRequest(req);
  assert.ok(line.endsWith("\n") && !line.slice(0, -1).includes("\n"));
  assert.match(line, /\{"u64":"0xffffffffffffffff"\}/);
  assert.match(line, /\{"bin":"001122334455"\}/);
  assert.deepEqual(decodeRequest(line.trimEnd()), req);
  const ok = { id: 7, ok: true as const, replies: [[{ name: "DEV_ID", value: 1 }]], warning: "w" };
  assert.deepEqual(decodeReply(encodeReply(ok).trimEnd()), ok);
  const err = { id: 8, ok: false as const, errno: "ENODEV", extack: "device not found" };
  assert.deepEqual(decodeReply(encodeReply(err).trimEnd()), err);
});

test("malformed requests are refused with a code", () => {
  assert.throws(() => decodeRequest("{nope"), refused("BAD_JSON"));
  assert.throws(() => decodeRequest("[1,2]"), refused("BAD_SHAPE"));
  assert.throws(() => decodeRequest('{"id":-1,"cmd":"DEV_GET"}'), refused("BAD_SHAPE"));
  assert.throws(() => decodeRequest('{"id":1,"cmd":"dev get"}'), refused("BAD_SHAPE"));
  assert.throws(() => decodeRequest('{"id":1,"cmd":"DEV_GET","dump":"yes"}'), refused("BAD_SHAPE"));
  assert.throws(() => decodeRequest('{"id":1,"cmd":"DEV_GET","attrs":[["DEV_NAME"]]}'), refused("BAD_SHAPE"));
  assert.throws(() => decodeRequest('{"id":1,"cmd":"DEV_GET","attrs":[["X",1.5]]}'), refused("BAD_VALUE"));
  assert.throws(
    () => decodeRequest('{"id":1,"cmd":"DEV_GET","attrs":[["X",4294967296]]}'),
    refused("BAD_VALUE"),
  );
  assert.throws(
    () => decodeRequest('{"id":1,"cmd":"DEV_GET","attrs":[["X",{"u64":"12"}]]}'),
    refused("BAD_VALUE"),
  );
  assert.throws(
    () => decodeRequest('{"id":1,"cmd":"DEV_GET","attrs":[["X",{"bin":"abc"}]]}'),
    refused("BAD_VALUE"),
  );
  assert.throws(() => decodeRequest('{"id":1,"cmd":"DEV_GET","attrs":[["X",null]]}'), refused("BAD_VALUE"));
  const many = JSON.stringify({ id: 1, cmd: "DEV_GET", attrs: Array.from({ length: 65 }, () => ["X", 1]) });
  assert.throws(() => decodeRequest(many), refused("BAD_SHAPE"));
  assert.throws(() => decodeRequest("x".repeat(MAX_LINE + 1)), refused("TOO_LONG"));
  assert.throws(() => decodeReply('{"id":1,"ok":"maybe"}'), refused("BAD_SHAPE"));
  assert.throws(() => decodeReply('{"id":1,"ok":false,"errno":"nope"}'), refused("BAD_SHAPE"));
});

test("lines split across chunks are joined; an oversized line is reported once and skipped", () => {
  const got: string[] = [];
  let tooLong = 0;
  const s = new LineSplitter(
    (l) => got.push(l),
    () => tooLong++,
  );
  s.push('{"a"');
  s.push(":1}\n\n{");
  assert.deepEqual(got, ['{"a":1}']);
  assert.equal(s.pending, 1);
  s.push('"b":2}\n');
  s.push("y".repeat(MAX_LINE + 10));
  s.push("more of the same line\nafter\n");
  assert.deepEqual(got, ['{"a":1}', '{"b":2}', "after"]);
  assert.equal(tooLong, 1);
});
