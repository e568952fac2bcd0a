// vhost-user over a real Unix socket: the test front-end (test/support/vhost-user-frontend.ts) drives both
// simulators as QEMU does, both ring formats, through start, traffic, stop, a second start, and
// disconnects; then hostile front-ends: wrong sizes, unknown ids, stray fds, bad memory tables, ring
// addresses outside memory, bad ring sizes, kicks before memory, a memory file smaller than claimed, random
// bytes. Each ends that connection or fails that request with a log line, the other device keeps working,
// and no fd or mapping is left behind.

import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { createSimBlk } from "../../src/devices/sim/blk.js";
import { createSimNet } from "../../src/devices/sim/net.js";
import {
  closeFd,
  connectUnix,
  eventfdCreate,
  eventfdRead,
  ftruncate,
  memfdCreate,
  poller,
  sendMsg,
} from "../../src/os/index.js";
import { BufferList, type RingFormat } from "../../src/ring/index.js";
import type { VdpaDevice } from "../../src/vdpa/device.js";
import { VdpaBus } from "../../src/vdpa/vdpa-bus.js";
import { VhostUserServer } from "../../src/vhost/user-server.js";
import { VhostVdpaDriver } from "../../src/vhost/vhost-vdpa.js";
import {
  addrPayload,
  encodeMessage,
  memTablePayload,
  REQ,
  statePayload,
  u64Payload,
  vringFdPayload,
} from "../../src/vhost-user/index.js";
import { GUEST_BASE, HVA_BASE, TestFrontEnd, until } from "../support/vhost-user-frontend.js";

const DRIVER_OK = 4;
const NET_HDR = 12;
const fdCount = () => readdirSync("/proc/self/fd").length;
/** Mappings of memfd files in this process (retired mappings become anonymous and drop out). */
const memfdMaps = () =>
  readFileSync("/proc/self/maps", "utf8")
    .split("\n")
    .filter((l) => l.includes("/memfd:")).length;

let dir: string;
const logs: string[] = [];
let net: { device: VdpaDevice; server: VhostUserServer };
let blk: { device: VdpaDevice; server: VhostUserServer };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "vdpa-vu-"));
  const bus = new VdpaBus();
  const driver = new VhostVdpaDriver();
  bus.registerDriver(driver);
  const make = async (device: VdpaDevice) => {
    bus.registerDevice(device);
    const server = new VhostUserServer(driver.get(device)!, {
      socketPath: join(dir, "vhost-user", `${device.name}.sock`),
      log: (l, m) => {
        logs.push(`${l} ${m}`);
        if (process.env.VU_DEBUG) console.error(l, m);
      },
    });
    await server.start();
    return { device, server };
  };
  net = await make(createSimNet({ name: "net0", packed: true, eventIdx: true }).device);
  blk = await make(createSimBlk({ name: "blk0", packed: true, eventIdx: true }).device);
});

after(() => {
  net.server.stop();
  blk.server.stop();
  rmSync(dir, { recursive: true, force: true });
});

// A test that fails half-way must not leave its front-end attached for the next one.
afterEach(async () => {
  for (const fe of TestFrontEnd.open) fe.close();
  await until(() => !net.server.attached && !blk.server.attached, 2000, "servers free");
});

async function detached(server: VhostUserServer): Promise<void> {
  await until(() => !server.attached, 2000, "the server to drop the front-end");
}

function frame(seq: number): Uint8Array {
  const f = new Uint8Array(NET_HDR + 60);
  f.fill(0xff, NET_HDR, NET_HDR + 6);
  f[NET_HDR + 12] = 0x08;
  f[NET_HDR + 14] = seq;
  return f;
}

/** Loops `count` frames through vdpasim_net over the socket; returns the sequence numbers received. */
async function netTraffic(fe: TestFrontEnd, count: number): Promise<number[]> {
  const rx = fe.rings.get(0)!;
  const tx = fe.rings.get(1)!;
  const list = new BufferList(1);
  const bufs = new Map<number, Buffer>();
  for (let i = 0; i < count; i++) {
    const b = fe.pool.alloc(2048);
    bufs.set(i, b.bytes);
    assert.ok(rx.add(list.clear().in(b.iova, b.size), i));
  }
  rx.publishAvail();
  fe.kick(0);
  for (let i = 0; i < count; i++) {
    const f = frame(i);
    const b = fe.pool.alloc(f.length);
    b.bytes.set(f);
    assert.ok(tx.add(list.clear().out(b.iova, f.length), 1000 + i));
  }
  tx.publishAvail();
  fe.kick(1);
  const got: number[] = [];
  await until(
    () => {
      for (let t = rx.getUsed(); t !== undefined; t = rx.getUsed()) got.push(bufs.get(t)![NET_HDR + 14]);
      while (tx.getUsed() !== undefined);
      return got.length === count;
    },
    3000,
    "frames looped back",
  );
  return got;
}

for (const format of ["split", "packed"] as RingFormat[]) {
  describe(`a front-end drives vdpasim_net over vhost-user, ${format} rings`, () => {
    test("init, start, traffic with call fds signalled, stop, a second start, disconnect", async () => {
      const fds0 = fdCount();
      const maps0 = memfdMaps();
      const watches0 = poller().size;
      const fe = new TestFrontEnd(net.server.socketPath);
      const info = await fe.init();
      assert.equal(info.queues, 1n, "one queue pair");
      assert.ok(info.slots >= 8n);
      await fe.start({ format });
      assert.ok(net.device.getStatus() & DRIVER_OK);
      assert.deepEqual(
        await netTraffic(fe, 16),
        Array.from({ length: 16 }, (_, i) => i),
      );
      assert.ok(fe.drain(fe.callFds, 0) > 0n, "rx call eventfd signalled");
      const bases = await fe.stop();
      const expect = format === "packed" ? (0x8000 | 16 | ((0x8000 | 16) << 16)) >>> 0 : 16;
      assert.equal(bases.get(1), expect, "tx base after 16 frames");
      assert.equal(net.device.getStatus(), 0, "every ring stopped: device reset");
      // QEMU starts a device twice per boot
      await fe.start({ format });
      assert.deepEqual((await netTraffic(fe, 4)).length, 4);
      fe.close();
      await detached(net.server);
      assert.equal(net.device.getStatus(), 0);
      assert.equal(fdCount(), fds0, "no fd left open on either side");
      assert.equal(memfdMaps(), maps0, "no guest memory left mapped");
      assert.equal(poller().size, watches0, "no fd left watched");
    });

    test("without STATUS or memory slots: status synthesised, SET_MEM_TABLE, DRIVER_OK from the rings", async () => {
      const fe = new TestFrontEnd(net.server.socketPath);
      // MQ | REPLY_ACK, as an older QEMU or DPDK's virtio_user would
      await fe.init({ protocol: (1n << 0n) | (1n << 3n) });
      await fe.start({ format });
      assert.equal(net.device.getStatus(), 0x0f, "ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK");
      assert.equal((await netTraffic(fe, 8)).length, 8);
      await fe.stop();
      assert.equal(net.device.getStatus(), 0);
      fe.close();
      await detached(net.server);
    });

    test("a broken ring sets NEEDS_RESET and signals the front-end's error eventfd", async () => {
      const fe = new TestFrontEnd(net.server.socketPath);
      await fe.init();
      await fe.start({ format });
      const tx = fe.rings.get(1)!;
      assert.ok(tx.add(new BufferList(1).out(0x10, 64), 1), "a buffer outside guest memory");
      tx.publishAvail();
      fe.kick(1);
      await until(() => (net.device.getStatus() & 0x40) !== 0, 2000, "NEEDS_RESET");
      await until(() => (eventfdRead(fe.errFds.get(1)!) ?? 0n) > 0n, 2000, "the err eventfd");
      fe.close();
      await detached(net.server);
    });
  });

  describe(`a front-end drives vdpasim_blk over vhost-user, ${format} rings`, () => {
    test("config read, a write then a read of the same sectors", async () => {
      const fe = new TestFrontEnd(blk.server.socketPath);
      await fe.init();
      const config = await fe.getConfig(0, 8);
      const capacity = new DataView(config.buffer).getBigUint64(0, true);
      assert.ok(capacity > 0n, "capacity in sectors");
      await fe.start({ format, queues: [0] });
      const q = fe.rings.get(0)!;
      const list = new BufferList(3);
      const io = async (type: number, data: Buffer) => {
        const hdr = fe.pool.alloc(16);
        hdr.bytes.writeUInt32LE(type, 0);
        hdr.bytes.writeBigUInt64LE(8n, 8); // sector 8
        const status = fe.pool.alloc(1);
        status.bytes[0] = 0xff;
        const buf = fe.pool.alloc(data.length);
        if (type === 1) buf.bytes.set(data);
        list.clear().out(hdr.iova, 16);
        if (type === 1) list.out(buf.iova, data.length);
        else list.in(buf.iova, data.length);
        list.in(status.iova, 1);
        assert.ok(q.add(list, type));
        q.publishAvail();
        fe.kick(0);
        await until(() => q.getUsed() !== undefined, 3000, "blk completion");
        assert.equal(status.bytes[0], 0, "VIRTIO_BLK_S_OK");
        return buf.bytes;
      };
      const data = Buffer.alloc(4096, 0x6b);
      await io(1, data);
      const back = await io(0, Buffer.alloc(4096));
      assert.deepEqual(Buffer.from(back), data);
      fe.close();
      await detached(blk.server);
    });
  });
}

describe("the server's lifecycle", () => {
  test("a second front-end is refused while one is attached; the socket listens again after it leaves", async () => {
    const a = new TestFrontEnd(net.server.socketPath);
    await a.init();
    const b = new TestFrontEnd(net.server.socketPath);
    await until(() => b.closedReason !== null, 2000, "the second front-end to be refused");
    assert.ok(net.server.counters.refused >= 1);
    b.close();
    a.close();
    await detached(net.server);
    const c = new TestFrontEnd(net.server.socketPath);
    await c.init();
    c.close();
    await detached(net.server);
  });

  test("a socket path too long is a clear error", async () => {
    const bus = new VdpaBus();
    const driver = new VhostVdpaDriver();
    bus.registerDriver(driver);
    const { device } = createSimNet({ name: "long0" });
    bus.registerDevice(device);
    const server = new VhostUserServer(driver.get(device)!, {
      socketPath: join(dir, "x".repeat(120), "long0.sock"),
    });
    await assert.rejects(server.start(), /ENAMETOOLONG.*at most 107/);
  });
});

describe("hostile front-ends", () => {
  /** Sends raw messages on a fresh connection; returns whether the server kept the connection. */
  async function hostile(
    send: (fe: TestFrontEnd) => Promise<void> | void,
  ): Promise<{ fe: TestFrontEnd; closed: boolean }> {
    const fe = new TestFrontEnd(net.server.socketPath);
    await fe.init();
    await send(fe);
    // a round trip proves the server is still answering (or the connection is gone)
    let closed = false;
    try {
      await fe.u64(REQ.GET_FEATURES);
    } catch {
      closed = true;
    }
    return { fe, closed };
  }

  const failsRequest = (ack: bigint) => assert.notEqual(ack, 0n, "the request failed");

  test("wrong payload sizes and unknown ids fail the request; the connection goes on", async () => {
    const logs0 = logs.length;
    const { fe, closed } = await hostile(async (fe) => {
      failsRequest(await fe.ack(REQ.SET_VRING_NUM, new Uint8Array(4)));
      failsRequest(await fe.ack(REQ.SET_FEATURES, new Uint8Array(9)));
      failsRequest(await fe.ack(999, new Uint8Array(8)));
      failsRequest(
        await fe.ack(REQ.SET_VRING_ADDR, addrPayload({ index: 0, flags: 2, desc: 0, used: 0, avail: 0 })),
      );
    });
    assert.equal(closed, false);
    assert.ok(
      logs.slice(logs0).some((l) => /SET_VRING_NUM failed: BAD_SIZE/.test(l)),
      logs.slice(logs0).join("\n"),
    );
    assert.ok(logs.slice(logs0).some((l) => /request 999 failed: UNKNOWN_REQUEST/.test(l)));
    fe.close();
    await detached(net.server);
  });

  test("fds on messages that carry none are refused and closed", async () => {
    const fds0 = fdCount();
    const { fe, closed } = await hostile(async (fe) => {
      const stray = eventfdCreate();
      failsRequest(await fe.ack(REQ.SET_VRING_NUM, statePayload(0, 64), [stray]));
      failsRequest(await fe.ack(REQ.SET_VRING_KICK, vringFdPayload(0, false), [stray]));
      closeFd(stray);
    });
    assert.equal(closed, false);
    fe.close();
    await detached(net.server);
    assert.equal(fdCount(), fds0);
  });

  test("memory tables: too many regions, overlaps, a file smaller than claimed, missing fds", async () => {
    const fds0 = fdCount();
    const { fe, closed } = await hostile(async (fe) => {
      const region = (i: number, size = 0x10000) => ({
        guestPhysAddr: i * 0x100000,
        memorySize: size,
        userspaceAddr: HVA_BASE + i * 0x100000,
        mmapOffset: 0,
      });
      const nine = Array.from({ length: 9 }, (_, i) => region(i));
      failsRequest(await fe.ack(REQ.SET_MEM_TABLE, memTablePayload(nine), []));
      const a = fe.memfd;
      failsRequest(
        await fe.ack(
          REQ.SET_MEM_TABLE,
          memTablePayload([region(0), { ...region(0), userspaceAddr: HVA_BASE + 0x900000 }]),
          [a, a],
        ),
      );
      const small = memfdCreate("small");
      ftruncate(small, 4096);
      failsRequest(await fe.ack(REQ.SET_MEM_TABLE, memTablePayload([region(0)]), [small]));
      closeFd(small);
      failsRequest(await fe.ack(REQ.SET_MEM_TABLE, memTablePayload([region(0)]), []));
    });
    assert.equal(closed, false);
    fe.close();
    await detached(net.server);
    assert.equal(fdCount(), fds0);
  });

  test("ring addresses outside every region, bad ring sizes, a kick before memory", async () => {
    const { fe, closed } = await hostile(async (fe) => {
      await fe.mustAck(REQ.SET_FEATURES, u64Payload((1n << 30n) | (1n << 32n)));
      const kick = eventfdCreate();
      await fe.mustAck(REQ.SET_VRING_NUM, statePayload(0, 64));
      await fe.mustAck(REQ.SET_VRING_KICK, vringFdPayload(0, true), [kick]);
      fe.kickFds.set(0, kick);
      fe.kick(0); // no memory yet: dropped
      failsRequest(
        await fe.ack(
          REQ.SET_VRING_ADDR,
          addrPayload({ index: 0, desc: HVA_BASE, used: HVA_BASE, avail: HVA_BASE }),
        ),
      );
      await fe.mustAck(REQ.SET_MEM_TABLE, memTablePayload([fe.memRegion]), [fe.memfd]);
      failsRequest(
        await fe.ack(
          REQ.SET_VRING_ADDR,
          addrPayload({ index: 0, desc: 0x1000, used: 0x2000, avail: 0x3000 }),
        ),
      );
      failsRequest(await fe.ack(REQ.SET_VRING_NUM, statePayload(0, 100)));
      failsRequest(await fe.ack(REQ.SET_VRING_NUM, statePayload(0, 1 << 16)));
      failsRequest(await fe.ack(REQ.SET_VRING_NUM, statePayload(7, 64)));
    });
    assert.equal(closed, false);
    assert.equal(GUEST_BASE > 0, true);
    fe.close();
    await detached(net.server);
  });

  test("broken framing (bad version, oversized payload, random bytes) closes that connection only", async () => {
    const fds0 = fdCount();
    for (const bytes of [
      encodeMessage(REQ.GET_FEATURES, 0).fill(0x7, 4, 5), // version 3
      (() => {
        const m = encodeMessage(REQ.SET_FEATURES, 0, new Uint8Array(8));
        m.writeUInt32LE(1 << 20, 8);
        return m;
      })(),
      Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 97 + 13) & 0xff)),
    ]) {
      const fd = connectUnix(net.server.socketPath);
      await until(() => net.server.attached, 2000, "attach");
      sendMsg(fd, bytes);
      await detached(net.server);
      closeFd(fd);
    }
    // the other device never noticed; this one serves the next front-end
    const fe = new TestFrontEnd(blk.server.socketPath);
    await fe.init();
    fe.close();
    await detached(blk.server);
    const again = new TestFrontEnd(net.server.socketPath);
    await again.init();
    again.close();
    await detached(net.server);
    assert.equal(fdCount(), fds0);
  });

  test("a front-end that vanishes mid-message leaves nothing behind", async () => {
    const fds0 = fdCount();
    const fd = connectUnix(net.server.socketPath);
    await until(() => net.server.attached, 2000, "attach");
    const e = eventfdCreate();
    sendMsg(fd, encodeMessage(REQ.SET_VRING_CALL, 0, vringFdPayload(0, true)).subarray(0, 10), [e]);
    closeFd(fd);
    closeFd(e);
    await detached(net.server);
    assert.equal(fdCount(), fds0);
  });
});
