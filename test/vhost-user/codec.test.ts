// The vhost-user library on its own: every payload codec round-trips, every rejection has its code, framing
// survives every split point, random bytes only ever raise VhostUserProtocolError, and a connection over a
// socket pair carries fds, matches replies and refuses replies nobody asked for.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { closeFd, eventfdCreate, eventfdRead, eventfdWrite, socketPair } from "../../src/os/index.js";
import {
  addrPayload,
  configPayload,
  decodeRequest,
  encodeMessage,
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FrameReader,
  memRegPayload,
  memTablePayload,
  REQ,
  requestName,
  statePayload,
  u64Payload,
  VhostUserConnection,
  VhostUserProtocolError,
  vringFdPayload,
} from "../../src/vhost-user/index.js";

const region = (i: number) => ({
  guestPhysAddr: 0x1_0000_0000 + i * 0x10_0000,
  memorySize: 0x10_0000,
  userspaceAddr: 0x7f00_0000_0000 + i * 0x10_0000,
  mmapOffset: i * 0x1000,
});

const rejects = (code: string, fn: () => unknown) =>
  assert.throws(fn, (err: unknown) => err instanceof VhostUserProtocolError && err.code === code, code);

describe("payload codecs round-trip", () => {
  test("u64, state, address, vring fd, memory table, single region, config", () => {
    assert.deepEqual(decodeRequest(REQ.SET_FEATURES, u64Payload(0x1_4000_0000n), []), {
      kind: "u64",
      value: 0x1_4000_0000n,
    });
    assert.deepEqual(decodeRequest(REQ.SET_VRING_BASE, statePayload(1, 0x8003_8003), []), {
      kind: "state",
      index: 1,
      num: 0x8003_8003,
    });
    const addr = {
      index: 2,
      flags: 1,
      desc: 0x7f00_0000_1000,
      used: 0x7f00_0000_3000,
      avail: 0x7f00_0000_2000,
      log: 0,
    };
    assert.deepEqual(decodeRequest(REQ.SET_VRING_ADDR, addrPayload(addr), []), { kind: "addr", ...addr });
    assert.deepEqual(decodeRequest(REQ.SET_VRING_KICK, vringFdPayload(3, true), [42]), {
      kind: "vringFd",
      index: 3,
      fd: 42,
    });
    assert.deepEqual(decodeRequest(REQ.SET_VRING_CALL, vringFdPayload(1, false), []), {
      kind: "vringFd",
      index: 1,
      fd: null,
    });
    const regions = [region(0), region(1), region(2)];
    assert.deepEqual(decodeRequest(REQ.SET_MEM_TABLE, memTablePayload(regions), [5, 6, 7]), {
      kind: "memTable",
      regions,
    });
    assert.deepEqual(decodeRequest(REQ.ADD_MEM_REG, memRegPayload(region(4)), [9]), {
      kind: "memReg",
      region: region(4),
    });
    const cfg = decodeRequest(REQ.SET_CONFIG, configPayload(8, Uint8Array.of(1, 2, 3)), []);
    assert.equal(cfg.kind, "config");
    assert.deepEqual(cfg.kind === "config" && [cfg.offset, cfg.size, cfg.flags, Array.from(cfg.data)], [
      8,
      3,
      0,
      [1, 2, 3],
    ]);
    assert.deepEqual(decodeRequest(REQ.GET_FEATURES, new Uint8Array(0), []), { kind: "none" });
  });
});

describe("every rejection has its code", () => {
  test("sizes", () => {
    rejects("BAD_SIZE", () => decodeRequest(REQ.SET_FEATURES, new Uint8Array(4), []));
    rejects("BAD_SIZE", () => decodeRequest(REQ.GET_FEATURES, new Uint8Array(8), []));
    rejects("BAD_SIZE", () => decodeRequest(REQ.SET_VRING_ADDR, new Uint8Array(32), []));
    rejects("BAD_SIZE", () =>
      decodeRequest(REQ.SET_MEM_TABLE, memTablePayload([region(0)]).subarray(0, 39), [1]),
    );
    rejects("BAD_SIZE", () => decodeRequest(REQ.SET_MEM_TABLE, new Uint8Array(4), []));
    const cfg = configPayload(0, new Uint8Array(8));
    rejects("BAD_SIZE", () => decodeRequest(REQ.SET_CONFIG, cfg.subarray(0, 15), []));
  });

  test("reserved bits and padding", () => {
    rejects("RESERVED_BITS", () =>
      decodeRequest(REQ.SET_VRING_ADDR, addrPayload({ index: 0, flags: 2, desc: 0, used: 0, avail: 0 }), []),
    );
    rejects("RESERVED_BITS", () => decodeRequest(REQ.SET_VRING_KICK, u64Payload(0x200), []));
    const table = memTablePayload([region(0)]);
    table[4] = 1;
    rejects("RESERVED_BITS", () => decodeRequest(REQ.SET_MEM_TABLE, table, [3]));
    const reg = memRegPayload(region(0));
    reg[0] = 1;
    rejects("RESERVED_BITS", () => decodeRequest(REQ.ADD_MEM_REG, reg, [3]));
  });

  test("values: zero-sized regions, overflowing ranges, addresses past 2^53, config ranges and flags", () => {
    rejects("BAD_VALUE", () =>
      decodeRequest(REQ.SET_MEM_TABLE, memTablePayload([{ ...region(0), memorySize: 0 }]), [3]),
    );
    rejects("BAD_VALUE", () =>
      decodeRequest(
        REQ.SET_MEM_TABLE,
        memTablePayload([{ ...region(0), userspaceAddr: Number.MAX_SAFE_INTEGER - 10 }]),
        [3],
      ),
    );
    const huge = addrPayload({ index: 0, desc: 0, used: 0, avail: 0 });
    new DataView(huge.buffer).setBigUint64(8, 1n << 60n, true);
    rejects("BAD_VALUE", () => decodeRequest(REQ.SET_VRING_ADDR, huge, []));
    rejects("BAD_VALUE", () => decodeRequest(REQ.SET_CONFIG, configPayload(250, new Uint8Array(10)), []));
    rejects("BAD_VALUE", () => decodeRequest(REQ.SET_CONFIG, configPayload(0, new Uint8Array(1), 2), []));
  });

  test("fds: stray, missing, and counts that must match the regions", () => {
    rejects("UNEXPECTED_FD", () => decodeRequest(REQ.SET_VRING_NUM, statePayload(0, 64), [3]));
    rejects("UNEXPECTED_FD", () => decodeRequest(REQ.SET_VRING_KICK, vringFdPayload(0, false), [3]));
    rejects("MISSING_FD", () => decodeRequest(REQ.SET_VRING_KICK, vringFdPayload(0, true), []));
    rejects("MISSING_FD", () =>
      decodeRequest(REQ.SET_MEM_TABLE, memTablePayload([region(0), region(1)]), [3]),
    );
    rejects("UNEXPECTED_FD", () => decodeRequest(REQ.SET_MEM_TABLE, memTablePayload([region(0)]), [3, 4]));
    rejects("MISSING_FD", () => decodeRequest(REQ.ADD_MEM_REG, memRegPayload(region(0)), []));
    rejects("MISSING_FD", () => decodeRequest(REQ.SET_BACKEND_REQ_FD, new Uint8Array(0), []));
  });

  test("regions: more than eight, overlapping guest or user ranges", () => {
    const nine = Array.from({ length: 9 }, (_, i) => region(i));
    rejects("TOO_MANY_REGIONS", () => decodeRequest(REQ.SET_MEM_TABLE, memTablePayload(nine), []));
    rejects("OVERLAPPING_REGIONS", () =>
      decodeRequest(
        REQ.SET_MEM_TABLE,
        memTablePayload([region(0), { ...region(1), guestPhysAddr: region(0).guestPhysAddr + 8 }]),
        [3, 4],
      ),
    );
    rejects("OVERLAPPING_REGIONS", () =>
      decodeRequest(
        REQ.SET_MEM_TABLE,
        memTablePayload([region(0), { ...region(1), userspaceAddr: region(0).userspaceAddr }]),
        [3, 4],
      ),
    );
  });

  test("unknown requests, by name in the message", () => {
    rejects("UNKNOWN_REQUEST", () => decodeRequest(4242, new Uint8Array(0), []));
    assert.equal(requestName(REQ.SET_VRING_ADDR), "SET_VRING_ADDR");
    assert.equal(requestName(4242), "request 4242");
  });
});

describe("framing", () => {
  const stream = Buffer.concat([
    encodeMessage(REQ.SET_VRING_NUM, FLAG_NEED_REPLY, statePayload(1, 256)),
    encodeMessage(REQ.GET_FEATURES, 0),
    encodeMessage(REQ.SET_MEM_TABLE, 0, memTablePayload([region(0)])),
  ]);

  test("three messages survive every single split point, fds attached to the chunk they came with", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const r = new FrameReader();
      const msgs = [...r.push(stream.subarray(0, cut)), ...r.push(stream.subarray(cut))];
      assert.deepEqual(
        msgs.map((m) => [m.request, m.flags, m.payload.length]),
        [
          [REQ.SET_VRING_NUM, FLAG_NEED_REPLY | 1, 8],
          [REQ.GET_FEATURES, 1, 0],
          [REQ.SET_MEM_TABLE, 1, 40],
        ],
        `cut at ${cut}`,
      );
      assert.equal(r.midMessage, false);
    }
  });

  test("a header with a bad version, reserved flags or an oversized payload is fatal", () => {
    const bad = (mutate: (b: Buffer) => void) => {
      const b = encodeMessage(REQ.SET_FEATURES, 0, u64Payload(1));
      mutate(b);
      return () => new FrameReader().push(b);
    };
    assert.throws(
      bad((b) => b.writeUInt32LE(2, 4)),
      (e: unknown) => e instanceof VhostUserProtocolError && e.code === "BAD_HEADER" && e.fatal,
    );
    assert.throws(
      bad((b) => b.writeUInt32LE(0x11, 4)),
      (e: unknown) => e instanceof VhostUserProtocolError && e.code === "BAD_HEADER",
    );
    assert.throws(
      bad((b) => b.writeUInt32LE(1 << 16, 8)),
      (e: unknown) => e instanceof VhostUserProtocolError && e.code === "PAYLOAD_TOO_LARGE",
    );
  });

  test("random bytes never raise anything but VhostUserProtocolError, framing or decoding", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.integer({ min: 0, max: 3 }), (bytes, nfds) => {
        const fds = Array.from({ length: nfds }, (_, i) => 100 + i);
        try {
          for (const m of new FrameReader().push(bytes, fds)) {
            try {
              decodeRequest(m.request, m.payload, m.fds);
            } catch (err) {
              if (!(err instanceof VhostUserProtocolError)) throw err;
            }
          }
        } catch (err) {
          if (!(err instanceof VhostUserProtocolError)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });

  test("random well-framed messages of known ids decode or fail with a code", () => {
    const ids = Object.values(REQ);
    fc.assert(
      fc.property(
        fc.constantFrom(...ids),
        fc.uint8Array({ maxLength: 300 }),
        fc.integer({ min: 0, max: 9 }),
        (id, payload, nfds) => {
          try {
            decodeRequest(
              id,
              payload,
              Array.from({ length: nfds }, (_, i) => i),
            );
          } catch (err) {
            assert.ok(err instanceof VhostUserProtocolError, String(err));
            assert.match(err.message, /^[A-Z_]+: /);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe("connection over a socket pair", () => {
  test("front-end requests get their replies in order; fds travel; a stray reply closes", async () => {
    const [a, b] = socketPair();
    const seen: number[] = [];
    let backClosed = "";
    const back = new VhostUserConnection(b, {
      onMessage: (conn, msg) => {
        seen.push(msg.request);
        if (msg.request === REQ.SET_VRING_CALL) {
          eventfdWrite(msg.fds[0], 7n);
          closeFd(msg.fds[0]);
          conn.reply(msg, u64Payload(0));
        } else conn.reply(msg, u64Payload(0x1234n));
      },
      onClose: (_c, reason) => {
        backClosed = reason;
      },
    });
    let frontClosed = "";
    const front = new VhostUserConnection(a, { onMessage: () => {}, onClose: (_c, r) => (frontClosed = r) });
    const r1 = front.request(REQ.GET_FEATURES);
    const efd = eventfdCreate();
    const r2 = front.request(REQ.SET_VRING_CALL, vringFdPayload(0, true), [efd], { needReply: true });
    const [m1, m2] = await Promise.all([r1, r2]);
    assert.equal(new DataView(m1.payload.buffer).getBigUint64(0, true), 0x1234n);
    assert.equal(m2.flags & FLAG_REPLY, FLAG_REPLY);
    assert.equal(eventfdRead(efd), 7n, "the back-end signalled the fd it received");
    closeFd(efd);
    assert.deepEqual(seen, [REQ.GET_FEATURES, REQ.SET_VRING_CALL]);
    // the back-end answers something nobody asked
    back.send(REQ.GET_STATUS, FLAG_REPLY, u64Payload(0));
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (frontClosed) {
          clearInterval(t);
          resolve();
        }
      }, 1);
    });
    assert.match(frontClosed, /UNEXPECTED_REPLY/);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(backClosed, "peer closed");
    await assert.rejects(front.request(REQ.GET_FEATURES), /closed before GET_FEATURES/);
  });
});
