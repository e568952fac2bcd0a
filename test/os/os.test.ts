// src/os against the real kernel: memfd mappings shared between views and through fd passing, size and
// seal checks, retirement that leaves stale views harmless, eventfds, Unix sockets with SCM_RIGHTS,
// SO_PEERCRED, the poller, and no fd or mapping left behind (counted in /proc/self).

import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import {
  acceptUnix,
  addSeals,
  closeFd,
  connectUnix,
  eventfdCreate,
  eventfdRead,
  eventfdWrite,
  ftruncate,
  getSeals,
  listenUnix,
  mapShared,
  memfdCreate,
  OsError,
  PAGE_SIZE,
  peerCred,
  poller,
  recvMsg,
  SEAL,
  sendMsg,
  socketPair,
  UNIX_PATH_MAX,
} from "../../src/os/index.js";

const fdCount = () => readdirSync("/proc/self/fd").length;
const mapCount = () => readFileSync("/proc/self/maps", "utf8").split("\n").length;

function memfdOf(size: number, sealing = false): number {
  const fd = memfdCreate("test", { sealing });
  ftruncate(fd, size);
  return fd;
}

describe("memfd and mappings", () => {
  test("two mappings of one memfd share bytes; offsets need not be page-aligned", () => {
    const fd = memfdOf(3 * PAGE_SIZE);
    try {
      const a = mapShared(fd, 100, 2 * PAGE_SIZE);
      const b = mapShared(fd, 0, 3 * PAGE_SIZE);
      new Uint8Array(a.buffer)[0] = 0x5a;
      assert.equal(new Uint8Array(b.buffer)[100], 0x5a);
      assert.equal(a.buffer.byteLength, 2 * PAGE_SIZE);
      a.retire();
      b.retire();
    } finally {
      closeFd(fd);
    }
  });

  test("a range past the end of the file is refused before mapping (it would fault on first touch)", () => {
    const fd = memfdOf(PAGE_SIZE);
    try {
      assert.throws(
        () => mapShared(fd, 100, PAGE_SIZE),
        (err: unknown) =>
          err instanceof OsError && err.code === "EOVERFLOW" && /holds 4096 bytes/.test(err.message),
      );
      assert.throws(
        () => mapShared(fd, 0, 0),
        (err: unknown) => err instanceof OsError && err.code === "EINVAL",
      );
      assert.throws(
        () => mapShared(fd, -1, 10),
        (err: unknown) => err instanceof OsError && err.code === "EINVAL",
      );
    } finally {
      closeFd(fd);
    }
  });

  test("seals: reported, and required when asked", () => {
    const fd = memfdOf(PAGE_SIZE, true);
    try {
      assert.equal(getSeals(fd) & SEAL.SHRINK, 0);
      assert.equal(mapShared(fd, 0, PAGE_SIZE).shrinkSealed, false);
      assert.throws(
        () => mapShared(fd, 0, PAGE_SIZE, { requireShrinkSeal: true }),
        (err: unknown) => err instanceof OsError && err.code === "EPERM",
      );
      addSeals(fd, SEAL.SHRINK | SEAL.GROW);
      assert.equal(getSeals(fd) & (SEAL.SHRINK | SEAL.GROW), SEAL.SHRINK | SEAL.GROW);
      const m = mapShared(fd, 0, PAGE_SIZE, { requireShrinkSeal: true });
      assert.equal(m.shrinkSealed, true);
      assert.throws(
        () => ftruncate(fd, 0),
        (err: unknown) => err instanceof OsError && err.code === "EPERM",
      );
      m.retire();
    } finally {
      closeFd(fd);
    }
  });

  test("a retired mapping's stale views read zeros and may be written, without touching the file", () => {
    const fd = memfdOf(PAGE_SIZE);
    try {
      const m = mapShared(fd, 0, PAGE_SIZE);
      const stale = new Uint32Array(m.buffer);
      stale[3] = 0xdeadbeef;
      m.retire();
      m.retire(); // idempotent
      assert.equal(m.isRetired, true);
      assert.equal(stale[3], 0);
      stale[3] = 7;
      const fresh = mapShared(fd, 0, PAGE_SIZE);
      assert.equal(new Uint32Array(fresh.buffer)[3], 0xdeadbeef, "the file kept what was written before");
      fresh.retire();
    } finally {
      closeFd(fd);
    }
  });
});

describe("eventfd", () => {
  test("counts writes; reading resets; empty reads are null", () => {
    const fd = eventfdCreate();
    try {
      assert.equal(eventfdRead(fd), null);
      eventfdWrite(fd);
      eventfdWrite(fd, 4n);
      assert.equal(eventfdRead(fd), 5n);
      assert.equal(eventfdRead(fd), null);
    } finally {
      closeFd(fd);
    }
    assert.throws(
      () => eventfdWrite(fd),
      (err: unknown) => err instanceof OsError && err.code === "EBADF",
    );
  });
});

describe("Unix sockets", () => {
  test("bytes with 0, 1 and 3 fds; a passed memfd maps to the same memory on the other side", () => {
    const [a, b] = socketPair();
    const into = Buffer.alloc(64);
    try {
      assert.equal(sendMsg(a, Buffer.from("none")), 4);
      assert.deepEqual(recvMsg(b, into), { bytes: 4, fds: [], truncatedFds: false });
      const mem = memfdOf(PAGE_SIZE);
      const mine = mapShared(mem, 0, PAGE_SIZE);
      new Uint8Array(mine.buffer)[9] = 99;
      assert.equal(sendMsg(a, Buffer.from("one"), [mem]), 3);
      const one = recvMsg(b, into)!;
      assert.equal(one.fds.length, 1);
      assert.notEqual(one.fds[0], mem);
      const theirs = mapShared(one.fds[0], 0, PAGE_SIZE);
      assert.equal(new Uint8Array(theirs.buffer)[9], 99);
      const e = [eventfdCreate(), eventfdCreate(), eventfdCreate()];
      assert.equal(sendMsg(a, Buffer.from("three").subarray(1), e), 4);
      const three = recvMsg(b, into)!;
      assert.equal(into.subarray(0, three.bytes).toString(), "hree", "a subarray sends from its own offset");
      assert.equal(three.fds.length, 3);
      eventfdWrite(e[1], 2n);
      assert.equal(eventfdRead(three.fds[1]), 2n, "the received fd is the same eventfd");
      for (const fd of [mem, one.fds[0], ...e, ...three.fds]) closeFd(fd);
      mine.retire();
      theirs.retire();
    } finally {
      closeFd(a);
      closeFd(b);
    }
  });

  test("more fds than the receiver takes: the extra ones are closed and the message says so", () => {
    const [a, b] = socketPair();
    const before = fdCount();
    const fds = [eventfdCreate(), eventfdCreate(), eventfdCreate()];
    try {
      sendMsg(a, Buffer.from("x"), fds);
      const got = recvMsg(b, Buffer.alloc(8), 1)!;
      assert.equal(got.fds.length, 1);
      assert.equal(got.truncatedFds, true);
      closeFd(got.fds[0]);
      for (const fd of fds) closeFd(fd);
      assert.equal(fdCount(), before);
    } finally {
      closeFd(a);
      closeFd(b);
    }
  });

  test("listen, connect, accept over a path; peer credentials; EOF reads 0 bytes", () => {
    const dir = mkdtempSync(join(tmpdir(), "vdpa-os-"));
    const path = join(dir, "s.sock");
    const l = listenUnix(path);
    try {
      assert.equal(acceptUnix(l), null, "nobody waiting");
      const client = connectUnix(path);
      const server = acceptUnix(l)!;
      assert.deepEqual(peerCred(server), {
        pid: process.pid,
        uid: process.getuid!(),
        gid: process.getgid!(),
      });
      closeFd(client);
      assert.equal(recvMsg(server, Buffer.alloc(8))!.bytes, 0);
      closeFd(server);
      assert.throws(
        () => connectUnix(join(dir, "nope.sock")),
        (err: unknown) => err instanceof OsError && err.code === "ENOENT",
      );
    } finally {
      closeFd(l);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a socket path too long for sun_path is a clear error naming it", () => {
    const path = `/tmp/${"x".repeat(UNIX_PATH_MAX)}`;
    assert.throws(
      () => listenUnix(path),
      (err: unknown) => err instanceof OsError && err.code === "ENAMETOOLONG" && err.message.includes(path),
    );
  });
});

describe("poller", () => {
  test("a watched eventfd calls back on the main thread; stop ends it; the process is not held", async () => {
    const p = poller();
    const fd = eventfdCreate();
    const seen: bigint[] = [];
    await new Promise<void>((resolve) => {
      const w = p.watch(fd, "in", () => {
        seen.push(eventfdRead(fd)!);
        // the second signal only after the first was seen: two writes before one wake-up add up
        if (seen.length === 1) setTimeout(() => eventfdWrite(fd, 5n), 5);
        if (seen.length === 2) {
          w.stop();
          resolve();
        }
      });
      setTimeout(() => eventfdWrite(fd, 2n), 5);
    });
    assert.deepEqual(seen, [2n, 5n]);
    assert.equal(p.size, 0);
    closeFd(fd);
  });

  test("200 watches and stops; a callback that stops another watch of the same batch", async () => {
    const p = poller();
    const fds = Array.from({ length: 200 }, () => eventfdCreate());
    const watches = fds.map((fd) => p.watch(fd, "in", () => eventfdRead(fd)));
    assert.equal(p.size, 200);
    for (const w of watches) w.stop();
    assert.equal(p.size, 0);
    const [x, y] = [fds[0], fds[1]];
    let yCalls = 0;
    const wy = p.watch(y, "in", () => {
      yCalls++;
      eventfdRead(y);
    });
    await new Promise<void>((resolve) => {
      const wx = p.watch(x, "in", () => {
        eventfdRead(x);
        wy.stop();
        wx.stop();
        resolve();
      });
      eventfdWrite(y);
      eventfdWrite(x);
    });
    assert.ok(yCalls <= 1);
    for (const fd of fds) closeFd(fd);
    assert.throws(
      () => p.watch(-5, "in", () => {}),
      (err: unknown) => err instanceof OsError && err.code === "EBADF",
    );
  });
});

test("no fd or mapping leaks over 100 create / map / pass / retire / close cycles", () => {
  // warm up lazily created state (the poller's own fds, buffers)
  poller();
  const fds0 = fdCount();
  const maps0 = mapCount();
  for (let i = 0; i < 100; i++) {
    const mem = memfdOf(2 * PAGE_SIZE);
    const m = mapShared(mem, PAGE_SIZE, PAGE_SIZE);
    new Uint8Array(m.buffer)[0] = i;
    const [a, b] = socketPair();
    sendMsg(a, Buffer.from("m"), [mem]);
    const got = recvMsg(b, Buffer.alloc(4))!;
    const theirs = mapShared(got.fds[0], PAGE_SIZE, PAGE_SIZE);
    assert.equal(new Uint8Array(theirs.buffer)[0], i);
    m.retire();
    theirs.retire();
    for (const fd of [mem, a, b, ...got.fds]) closeFd(fd);
  }
  assert.equal(fdCount(), fds0, "fds");
  // Retired ranges stay reserved until their ArrayBuffers are collected; without a GC hook in tests we
  // bound the growth instead: the file pages are gone (zero overlays), one anonymous range per mapping.
  assert.ok(mapCount() - maps0 <= 200, `maps grew by ${mapCount() - maps0}`);
});
