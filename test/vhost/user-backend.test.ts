// The vhost-user session logic (src/vhost/user-backend.ts), row by row of its state table, against the real
// simulators through vhost_vdpa, with a fake operating system: guest memory is a DmaPool whose regions are
// "mapped" by fd number, eventfds are counters, and a kick is a call to the watched callback. The socket,
// the wire format and real fds are tested in test/vhost/user-server.test.ts.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createSimBlk } from "../../src/devices/sim/blk.js";
import { createSimNet } from "../../src/devices/sim/net.js";
import { DmaPool, type MemoryRegion } from "../../src/memory/index.js";
import { BufferList, createDriverRing, type DriverRing, type RingFormat } from "../../src/ring/index.js";
import type { VdpaDevice } from "../../src/vdpa/device.js";
import { VdpaBus } from "../../src/vdpa/vdpa-bus.js";
import {
  type MappedRegion,
  PROTOCOL_F,
  UserBackendError,
  type UserBackendPlatform,
  VhostUserBackend,
} from "../../src/vhost/user-backend.js";
import { VhostVdpaDriver } from "../../src/vhost/vhost-vdpa.js";

const bit = (n: number): bigint => 1n << BigInt(n);
const ACK = 1;
const DRIVER = 2;
const DRIVER_OK = 4;
const FEATURES_OK = 8;
const NEEDS_RESET = 0x40;
const F_PROTOCOL = bit(30);
const VERSION_1 = bit(32);
const ACCESS_PLATFORM = bit(33);
const RING_PACKED = bit(34);
const EVENT_IDX = bit(29);
const NET_HDR = 12;
const QUEUE = 16;
const GPA = 0x1_0000_0000;
/** The front-end's virtual address of guest physical address GPA (QEMU's mapping of guest RAM). */
const HVA = 0x7f00_0000_0000;

/** A fake OS: fds are numbers in a table; eventfds count signals; mapRegion hands out views of the pool. */
class FakeOs implements UserBackendPlatform {
  private nextFd = 100;
  readonly open = new Set<number>();
  readonly files = new Map<number, { region: MemoryRegion; size: number }>();
  readonly signals = new Map<number, number>();
  readonly kickers = new Map<number, () => void>();
  readonly logs: string[] = [];
  mapped = 0;

  fd(): number {
    const fd = this.nextFd++;
    this.open.add(fd);
    return fd;
  }

  memfd(region: MemoryRegion, size = region.size): number {
    const fd = this.fd();
    this.files.set(fd, { region, size });
    return fd;
  }

  mapRegion(fd: number, offset: number, size: number, name: string): MappedRegion {
    const file = this.files.get(fd);
    if (!file) throw new Error(`fd ${fd} is not a memory file`);
    if (offset + size > file.size)
      throw new Error(`file of ${file.size} bytes is smaller than ${offset}+${size}`);
    const base = file.region.bytes;
    const bytes = Buffer.from(base.buffer, base.byteOffset + offset, size);
    this.mapped++;
    let live = true;
    return {
      name,
      size,
      bytes,
      words: new Uint32Array(bytes.buffer, bytes.byteOffset, Math.floor(size / 4)),
      retire: () => {
        if (live) this.mapped--;
        live = false;
      },
    };
  }

  watchKick(fd: number, onKick: () => void): { stop(): void } {
    assert.ok(this.open.has(fd), `watching closed fd ${fd}`);
    this.kickers.set(fd, onKick);
    return { stop: () => this.kickers.delete(fd) };
  }

  signal(fd: number): void {
    assert.ok(this.open.has(fd), `signalling closed fd ${fd}`);
    this.signals.set(fd, (this.signals.get(fd) ?? 0) + 1);
  }

  closeFd(fd: number): void {
    assert.ok(this.open.delete(fd), `fd ${fd} closed twice or never opened`);
  }

  log(level: string, message: string): void {
    this.logs.push(`${level} ${message}`);
  }

  kick(fd: number): void {
    const k = this.kickers.get(fd);
    assert.ok(k, `no watch on kick fd ${fd}`);
    k();
  }
}

interface Session {
  os: FakeOs;
  backend: VhostUserBackend;
  device: VdpaDevice;
  pool: DmaPool;
}

function session(kind: "net" | "blk"): Session {
  const bus = new VdpaBus();
  const driver = new VhostVdpaDriver();
  bus.registerDriver(driver);
  // ring options offered, so each test negotiates the format and event index it wants
  const ringOpts = { packed: true, eventIdx: true };
  const { device } =
    kind === "net"
      ? createSimNet({ name: "vdpa0", ...ringOpts })
      : createSimBlk({ name: "vdpa1", ...ringOpts });
  bus.registerDevice(device);
  const os = new FakeOs();
  const backend = new VhostUserBackend(driver.get(device)!, os);
  backend.attach();
  const pool = new DmaPool({ size: 1 << 20, iovaBase: GPA });
  return { os, backend, device, pool };
}

interface Started {
  rings: Map<number, DriverRing<number>>;
  kick: Map<number, number>;
  call: Map<number, number>;
  err: Map<number, number>;
}

/** QEMU's start: protocol features, owner, features, memory, then per ring NUM/BASE/ADDR/KICK/CALL/ERR. */
function start(
  s: Session,
  opts: {
    format?: RingFormat;
    protocol?: bigint;
    features?: bigint;
    queues?: number[];
    enable?: boolean;
  } = {},
): Started {
  const format = opts.format ?? "split";
  const { backend, os, pool } = s;
  const offered = backend.getFeatures();
  assert.ok(offered & F_PROTOCOL, "PROTOCOL_FEATURES is offered");
  backend.setProtocolFeatures(opts.protocol ?? backend.getProtocolFeatures() & ~bit(PROTOCOL_F.STATUS));
  backend.setOwner();
  let features = opts.features ?? F_PROTOCOL | VERSION_1 | EVENT_IDX;
  if (format === "packed") features |= RING_PACKED;
  backend.setFeatures(features);
  if (backend.snapshot().regions.length === 0) {
    backend.setMemTable(
      [{ guestPhysAddr: GPA, memorySize: pool.size, userspaceAddr: HVA, mmapOffset: 0 }],
      [os.memfd(pool.region)],
    );
  }
  const started: Started = { rings: new Map(), kick: new Map(), call: new Map(), err: new Map() };
  for (const q of opts.queues ?? [0, 1]) {
    const ring = createDriverRing<number>(format, { num: QUEUE, pool, eventIdx: true, indirect: false });
    started.rings.set(q, ring);
    backend.setVringNum(q, QUEUE);
    backend.setVringBase(q, format === "packed" ? (0x8000 | (0x8000 << 16)) >>> 0 : 0);
    const a = ring.addresses;
    const hva = (gpa: number) => HVA + (gpa - GPA);
    backend.setVringAddr(q, {
      flags: 0,
      desc: hva(a.desc),
      avail: hva(a.driver),
      used: hva(a.device),
      log: 0,
    });
    const kick = os.fd();
    const call = os.fd();
    const err = os.fd();
    backend.setVringKick(q, kick);
    backend.setVringCall(q, call);
    backend.setVringErr(q, err);
    started.kick.set(q, kick);
    started.call.set(q, call);
    started.err.set(q, err);
  }
  if (opts.enable ?? true) for (const q of opts.queues ?? [0, 1]) backend.setVringEnable(q, true);
  return started;
}

function frame(seq: number): Uint8Array {
  const f = new Uint8Array(NET_HDR + 64);
  f.fill(0xff, NET_HDR, NET_HDR + 6);
  f[NET_HDR + 12] = 0x08;
  f[NET_HDR + 16] = seq & 0xff;
  return f;
}

/** Loops `count` frames through vdpasim_net: rx buffers, tx frames, kicks through the kick fds. */
async function loop(s: Session, st: Started, count: number, first = 0): Promise<number[]> {
  const rx = st.rings.get(0)!;
  const tx = st.rings.get(1)!;
  const list = new BufferList(2);
  const rxBufs = new Map<number, Buffer>();
  for (let i = 0; i < count; i++) {
    const b = s.pool.alloc(2048);
    rxBufs.set(first + i, b.bytes);
    assert.ok(rx.add(list.clear().in(b.iova, b.size), first + i));
  }
  rx.publishAvail();
  s.os.kick(st.kick.get(0)!);
  for (let i = 0; i < count; i++) {
    const f = frame(first + i);
    const b = s.pool.alloc(f.length);
    b.bytes.set(f);
    assert.ok(tx.add(list.clear().out(b.iova, f.length), first + i));
  }
  tx.publishAvail();
  s.os.kick(st.kick.get(1)!);
  // the simulator works on a later turn of the event loop
  for (let spin = 0; spin < 50 && rxBufs.size > 0; spin++) {
    await new Promise((r) => setImmediate(r));
    while (tx.getUsed() !== undefined);
    for (let t = rx.getUsed(); t !== undefined; t = rx.getUsed()) rxBufs.delete(t);
  }
  return [...rxBufs.keys()];
}

describe("vhost-user session: the state table", () => {
  test("SET_FEATURES without STATUS: ACKNOWLEDGE|DRIVER|FEATURES_OK; rings started but disabled are not ready", () => {
    const s = session("blk");
    start(s, { enable: false, queues: [0] });
    assert.equal(s.device.getStatus(), ACK | DRIVER | FEATURES_OK);
    assert.deepEqual(
      s.backend.snapshot().rings.map((r) => [r.started, r.enabled, r.ready]),
      [[true, false, false]],
    );
  });

  test("net: the first queue pair starts enabled (the spec's historical rule), the control queue not", () => {
    const s = session("net");
    start(s, { enable: false });
    assert.equal(s.device.getStatus(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert.deepEqual(
      s.backend.snapshot().rings.map((r) => [r.started, r.enabled, r.ready]),
      [
        [true, true, true],
        [true, true, true],
        [false, false, false],
      ],
    );
  });

  test("the first ring to turn ready brings DRIVER_OK; traffic flows through kick and call fds", async () => {
    const s = session("net");
    const st = start(s);
    assert.equal(s.device.getStatus(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    assert.deepEqual(await loop(s, st, 8), [], "every frame came back");
    assert.ok((s.os.signals.get(st.call.get(0)!) ?? 0) > 0, "rx call fd signalled");
    assert.equal(s.backend.snapshot().rings[1].kicks, 1);
  });

  test("without PROTOCOL_FEATURES every ring is enabled at SET_FEATURES (no SET_VRING_ENABLE)", async () => {
    const s = session("net");
    const st = start(s, { features: VERSION_1 | EVENT_IDX, enable: false });
    assert.ok(s.device.getStatus() & DRIVER_OK);
    assert.deepEqual(await loop(s, st, 4), []);
  });

  test("SET_VRING_ENABLE 0 on a running ring stops it being processed; 1 resumes it", async () => {
    const s = session("net");
    const st = start(s);
    s.backend.setVringEnable(1, false);
    assert.equal(s.backend.snapshot().rings[1].ready, false);
    const lost = await loop(s, st, 2);
    assert.equal(lost.length, 2, "nothing transmitted while tx is disabled");
    s.backend.setVringEnable(1, true);
    s.os.kick(st.kick.get(1)!);
    assert.deepEqual(await loop(s, st, 2, 10), [], "later frames flow again");
  });

  test("GET_VRING_BASE suspends, stops one ring; the last one stopped resets the device and keeps memory", async () => {
    const s = session("net");
    const st = start(s);
    await loop(s, st, 5);
    const base1 = s.backend.getVringBase(1);
    assert.equal(base1, 5, "tx consumed five frames");
    assert.equal(s.device.getStatus() & DRIVER_OK, DRIVER_OK, "ring 0 still runs");
    assert.equal(s.os.open.has(st.kick.get(1)!), false, "the stopped ring's kick fd is closed");
    const base0 = s.backend.getVringBase(0);
    assert.equal(base0, 5);
    assert.equal(s.device.getStatus(), 0, "every ring stopped: the device is reset");
    assert.equal(s.backend.snapshot().regions.length, 1, "the memory table stays");
    assert.equal(s.os.mapped, 1);
  });

  test("QEMU's stop order: SET_VRING_ENABLE 0 on every ring, then GET_VRING_BASE, positions intact", async () => {
    const s = session("net");
    const st = start(s);
    await loop(s, st, 7);
    s.backend.setVringEnable(0, false);
    s.backend.setVringEnable(1, false);
    assert.equal(s.backend.getVringBase(0), 7);
    assert.equal(s.backend.getVringBase(1), 7);
    assert.equal(s.device.getStatus(), 0);
  });

  test("with STATUS, QEMU stops with SET_STATUS 0 first: the reset waits for the last GET_VRING_BASE", async () => {
    const s = session("net");
    const st = start(s, { protocol: bit(PROTOCOL_F.STATUS), enable: false });
    s.backend.setStatus(FEATURES_OK);
    for (const q of [0, 1]) s.backend.setVringEnable(q, true);
    s.backend.setStatus(FEATURES_OK | DRIVER_OK);
    assert.deepEqual(await loop(s, st, 4), []);
    s.backend.setStatus(0);
    assert.ok(s.device.getStatus() & DRIVER_OK, "suspended, not reset, while rings still run");
    for (const q of [0, 1]) s.backend.setVringEnable(q, false);
    assert.equal(s.backend.getVringBase(0), 4);
    assert.ok(s.device.getStatus() & DRIVER_OK, "one ring still started");
    assert.equal(s.backend.getVringBase(1), 4);
    assert.equal(s.device.getStatus(), 0, "reset once the last ring stopped");
    // and it starts again
    const again = start(s, { protocol: bit(PROTOCOL_F.STATUS), enable: false });
    s.backend.setStatus(FEATURES_OK);
    for (const q of [0, 1]) s.backend.setVringEnable(q, true);
    s.backend.setStatus(FEATURES_OK | DRIVER_OK);
    assert.deepEqual(await loop(s, again, 2, 50), []);
  });

  test("a second start on the same session (QEMU starts twice per boot) runs traffic again", async () => {
    const s = session("net");
    let st = start(s);
    await loop(s, st, 3);
    s.backend.getVringBase(0);
    s.backend.getVringBase(1);
    st = start(s);
    assert.ok(s.device.getStatus() & DRIVER_OK);
    assert.deepEqual(await loop(s, st, 6, 100), []);
  });

  test("with STATUS the front-end's status passes through; 0 then the rings stopped resets, memory kept", () => {
    const s = session("blk");
    start(s, { protocol: bit(PROTOCOL_F.STATUS) | bit(PROTOCOL_F.CONFIG), queues: [0], enable: false });
    assert.equal(s.device.getStatus() & FEATURES_OK, 0, "FEATURES_OK is the front-end's to set");
    s.backend.setStatus(FEATURES_OK);
    assert.equal(s.device.getStatus(), ACK | DRIVER | FEATURES_OK);
    s.backend.setVringEnable(0, true);
    assert.equal(s.device.getStatus() & DRIVER_OK, 0, "no DRIVER_OK is synthesised with STATUS");
    s.backend.setStatus(FEATURES_OK | DRIVER_OK);
    assert.ok(s.device.getStatus() & DRIVER_OK);
    s.backend.setStatus(0);
    s.backend.getVringBase(0);
    assert.equal(s.device.getStatus(), 0);
    assert.equal(s.backend.snapshot().regions.length, 1);
    s.backend.setStatus(0);
    assert.equal(s.device.getStatus(), 0, "0 with no ring started resets at once");
  });

  test("packed rings: the vring base carries both indexes and wrap counters", async () => {
    const s = session("net");
    const st = start(s, { format: "packed" });
    assert.deepEqual(await loop(s, st, 3), []);
    const base = s.backend.getVringBase(1);
    assert.equal(base & 0xffff, 0x8000 | 3, "avail index 3, wrap counter 1");
    assert.equal(base >>> 16, 0x8000 | 3, "used index 3, wrap counter 1");
  });

  test("a repeated SET_OWNER resets the device and keeps memory; config reads work", () => {
    const s = session("blk");
    start(s, { queues: [0] });
    assert.ok(s.device.getStatus() & DRIVER_OK);
    const capacity = s.backend.getConfig(0, 8);
    assert.equal(capacity.length, 8);
    s.backend.setOwner();
    assert.equal(s.device.getStatus(), 0);
    assert.equal(s.backend.snapshot().regions.length, 1);
  });

  test("a broken ring: NEEDS_RESET, the error eventfd is signalled, the session lives on", async () => {
    const s = session("net");
    const st = start(s);
    // a descriptor pointing outside every mapping
    const tx = st.rings.get(1)!;
    assert.ok(tx.add(new BufferList(1).out(0x10, 64), 1));
    tx.publishAvail();
    s.os.kick(st.kick.get(1)!);
    for (let i = 0; i < 10 && !(s.device.getStatus() & NEEDS_RESET); i++)
      await new Promise((r) => setImmediate(r));
    assert.ok(s.device.getStatus() & NEEDS_RESET);
    assert.ok((s.os.signals.get(st.err.get(1)!) ?? 0) > 0, "err fd signalled");
    s.backend.setOwner(); // the front-end resets
    assert.equal(s.device.getStatus(), 0);
  });

  test("detach: device reset, memory retired, every fd closed, the handle free for the next front-end", () => {
    const s = session("net");
    start(s);
    s.backend.setBackendReqFd(s.os.fd());
    s.backend.detach();
    assert.equal(s.os.open.size, 0, "no fd left open");
    assert.equal(s.os.mapped, 0, "no mapping left");
    assert.equal(s.device.getStatus(), 0);
    assert.equal(s.backend.vhost.isOpen, false);
    s.backend.attach();
    start(s);
    assert.ok(s.device.getStatus() & DRIVER_OK);
  });
});

describe("vhost-user session: refusals", () => {
  const code = (c: string) => (err: unknown) => err instanceof UserBackendError && err.code === c;

  test("ring indexes, sizes, and addresses outside memory", () => {
    const s = session("net");
    start(s, { queues: [0], enable: false });
    assert.throws(() => s.backend.setVringNum(3, 16), code("BAD_RING_INDEX"));
    assert.throws(() => s.backend.setVringNum(-1, 16), code("BAD_RING_INDEX"));
    assert.throws(() => s.backend.setVringNum(0, 4096), code("DEVICE_REFUSED"), "above the maximum");
    assert.throws(() => s.backend.setVringNum(0, 24), code("DEVICE_REFUSED"), "split: not a power of two");
    assert.throws(
      () => s.backend.setVringAddr(0, { flags: 0, desc: 0x1000, avail: 0x2000, used: 0x3000, log: 0 }),
      code("RING_ADDR_UNMAPPED"),
    );
    assert.throws(
      () =>
        s.backend.setVringAddr(0, { flags: 0, desc: HVA + s.pool.size - 8, avail: HVA, used: HVA, log: 0 }),
      code("RING_ADDR_UNMAPPED"),
      "a table running past the end of the region",
    );
  });

  test("a ring address before any memory; kicks before memory are dropped, not fatal", () => {
    const s = session("net");
    s.backend.setOwner();
    s.backend.setFeatures(F_PROTOCOL | VERSION_1);
    assert.throws(
      () => s.backend.setVringAddr(0, { flags: 0, desc: HVA, avail: HVA, used: HVA, log: 0 }),
      code("NO_MEMORY"),
    );
    const kick = s.os.fd();
    s.backend.setVringKick(0, kick);
    s.backend.setVringEnable(0, true);
    s.os.kick(kick);
    assert.equal(s.backend.snapshot().rings[0].ready, false);
  });

  test("memory tables: overlaps, too many regions, a file smaller than the region; fds are closed", () => {
    const s = session("net");
    s.backend.setOwner();
    const r = (gpa: number, size: number, hva: number) => ({
      guestPhysAddr: gpa,
      memorySize: size,
      userspaceAddr: hva,
      mmapOffset: 0,
    });
    const before = s.os.open.size;
    const f1 = s.os.memfd(s.pool.region);
    const f2 = s.os.memfd(s.pool.region);
    assert.throws(
      () => s.backend.setMemTable([r(0, 0x10000, HVA), r(0x8000, 0x10000, HVA + 0x100000)], [f1, f2]),
      code("REGION_OVERLAP"),
    );
    const f3 = s.os.memfd(s.pool.region);
    const f4 = s.os.memfd(s.pool.region);
    assert.throws(
      () => s.backend.setMemTable([r(0, 0x10000, HVA), r(0x100000, 0x10000, HVA + 0x8000)], [f3, f4]),
      code("REGION_OVERLAP"),
    );
    const small = s.os.memfd(s.pool.region, 4096);
    assert.throws(() => s.backend.setMemTable([r(0, 0x10000, HVA)], [small]), code("REGION_MAP_FAILED"));
    const many = Array.from({ length: 65 }, (_, i) => r(i * 0x10000, 0x1000, HVA + i * 0x10000));
    const fds = many.map(() => s.os.memfd(s.pool.region));
    assert.throws(() => s.backend.setMemTable(many, fds), code("TOO_MANY_REGIONS"));
    assert.equal(s.os.open.size, before, "every fd handed over was closed");
    assert.equal(s.os.mapped, 0);
  });

  test("ADD_MEM_REG and REM_MEM_REG, one slot at a time", () => {
    const s = session("net");
    s.backend.setOwner();
    const region = { guestPhysAddr: GPA, memorySize: s.pool.size, userspaceAddr: HVA, mmapOffset: 0 };
    s.backend.addMemReg(region, s.os.memfd(s.pool.region));
    assert.equal(s.os.mapped, 1);
    assert.throws(() => s.backend.addMemReg(region, s.os.memfd(s.pool.region)), code("REGION_OVERLAP"));
    assert.throws(() => s.backend.remMemReg({ ...region, guestPhysAddr: 0 }), code("REGION_UNKNOWN"));
    s.backend.remMemReg(region);
    assert.equal(s.os.mapped, 0);
    assert.equal(s.os.open.size, 0);
  });

  test("features not offered, and changing features while running", () => {
    const s = session("net");
    s.backend.setOwner();
    assert.throws(() => s.backend.setFeatures(bit(63)), code("FEATURES_REFUSED"));
    assert.throws(
      () => s.backend.setProtocolFeatures(bit(12)),
      code("FEATURES_REFUSED"),
      "INFLIGHT_SHMFD is not offered",
    );
    start(s);
    assert.throws(() => s.backend.setFeatures(F_PROTOCOL | VERSION_1), code("FEATURES_REFUSED"));
    s.backend.setFeatures(F_PROTOCOL | VERSION_1 | EVENT_IDX); // the same again is fine
  });

  test("ACCESS_PLATFORM: hidden from the front-end, given to the device (the memory table is its IOTLB)", () => {
    const s = session("net");
    s.backend.setOwner();
    assert.equal(s.backend.getFeatures() & ACCESS_PLATFORM, 0n);
    assert.throws(
      () => s.backend.setFeatures(F_PROTOCOL | VERSION_1 | ACCESS_PLATFORM),
      code("FEATURES_REFUSED"),
    );
    s.backend.setFeatures(F_PROTOCOL | VERSION_1);
    assert.equal(s.device.ops.getDriverFeatures() & ACCESS_PLATFORM, ACCESS_PLATFORM);
  });

  test("with STATUS, FEATURES_OK after a SET_FEATURES the device refused is refused too", () => {
    const s = session("net");
    s.backend.setProtocolFeatures(bit(PROTOCOL_F.STATUS));
    s.backend.setOwner();
    assert.throws(() => s.backend.setStatus(FEATURES_OK), code("FEATURES_REFUSED"));
    assert.equal(s.device.getStatus() & FEATURES_OK, 0);
  });

  test("polling mode (no kick fd) is refused", () => {
    const s = session("net");
    s.backend.setOwner();
    assert.throws(() => s.backend.setVringKick(0, null), code("NOT_SUPPORTED"));
  });

  test("CONFIG is offered to blk front-ends, not to net ones (QEMU keeps a net device's config)", () => {
    assert.equal(session("net").backend.getProtocolFeatures() & bit(PROTOCOL_F.CONFIG), 0n);
    assert.equal(
      session("blk").backend.getProtocolFeatures() & bit(PROTOCOL_F.CONFIG),
      bit(PROTOCOL_F.CONFIG),
    );
    assert.throws(
      () => session("net").backend.setProtocolFeatures(bit(PROTOCOL_F.CONFIG)),
      code("FEATURES_REFUSED"),
    );
  });

  test("GET_QUEUE_NUM counts queue pairs for net, queues for blk", () => {
    assert.equal(session("net").backend.getQueueNum(), 1);
    assert.equal(session("blk").backend.getQueueNum(), 1);
  });
});
