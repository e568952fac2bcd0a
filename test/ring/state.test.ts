// Notification suppression and ring state, both formats: kick and interrupt decisions with and without
// EVENT_IDX, get/set state and moving a queue to a new device ring mid-stream, index wrap-around (split's
// 16-bit indices, packed's wrap counters), detaching on reset, indirect requests.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type DmaBuffer, PERM_RW, SharedMemoryRegion } from "../../src/memory/index.js";
import {
  BufferList,
  Chain,
  createDeviceRing,
  createLoopback,
  type DeviceRing,
  type Loopback,
  type PackedDeviceRing,
  RingError,
  type RingFormat,
  type RingState,
  type SplitDeviceRing,
} from "../../src/ring/index.js";
import {
  PACKED_DESC,
  PACKED_EVENT,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  SPLIT_AVAIL,
  SPLIT_DESC,
  SPLIT_USED,
  splitRingSizes,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from "../../src/spec/ring-layout.js";
import { prng } from "../support/prng.js";

const FORMATS: RingFormat[] = ["split", "packed"];

/** One single-buffer writable request per call, all pointing at one scratch buffer. */
function adder(lb: Loopback<number>): (token: number) => boolean {
  const buf = lb.pool.alloc(64);
  const list = new BufferList().in(buf.iova, 16);
  return (token) => lb.driver.add(list, token);
}

/** Pops, pushes (len = 3) and returns the chain, or fails the test when nothing is available. */
function serveOne(device: DeviceRing, chain = new Chain()): Chain {
  assert.equal(device.pop(chain), true, "a buffer is available");
  device.push(chain, 3);
  return chain;
}

function newDevice<T>(lb: Loopback<T>, eventIdx: boolean): DeviceRing {
  return createDeviceRing(lb.driver.format, {
    num: lb.driver.num,
    addresses: lb.driver.addresses,
    ringSpace: lb.space,
    eventIdx,
  });
}

describe("vringNeedEvent", () => {
  // The other side asked to hear when entry `eventIdx` is written, i.e. when the index moves past it: the
  // answer is true exactly when eventIdx lies in [old, new), modulo 2^16.
  test("true exactly when the event index lies in [old, new), modulo 2^16", () => {
    assert.equal(vringNeedEvent(0, 1, 0), true);
    assert.equal(vringNeedEvent(1, 1, 0), false, "event not reached yet");
    assert.equal(vringNeedEvent(0, 5, 1), false, "event already passed before old");
    assert.equal(vringNeedEvent(4, 5, 1), true);
    assert.equal(vringNeedEvent(1, 5, 1), true, "old itself is in the window");
    assert.equal(vringNeedEvent(5, 5, 1), false, "new is not");
    assert.equal(vringNeedEvent(5, 5, 5), false, "an empty window never notifies");
    assert.equal(vringNeedEvent(0xffff, 0, 0xfffe), true, "across the 16-bit wrap");
    assert.equal(vringNeedEvent(0xfffe, 1, 0xfffe), true);
    assert.equal(vringNeedEvent(0xfffd, 1, 0xfffe), false);
    assert.equal(vringNeedEvent(1, 1, 0xfffe), false);
    assert.equal(vringNeedEvent(0, 2, 0xfffe), true);
    assert.equal(vringNeedEvent(-1, 1, -1), true, "negative positions (packed, previous lap) mask too");
  });
});

describe("available-buffer notifications (driver kicks)", () => {
  for (const format of FORMATS) {
    for (const eventIdx of [false, true]) {
      if (format === "split" && eventIdx) continue; // below, with its own semantics
      test(`${format}${eventIdx ? " + EVENT_IDX" : ""}: disableNotify stops kicks, enableNotify restarts them`, () => {
        const lb = createLoopback<number>({ format, num: 8, eventIdx });
        const add = adder(lb);
        const chain = new Chain();
        assert.equal(lb.driver.publishAvail(), false, "nothing added: no kick");
        add(1);
        assert.equal(lb.driver.publishAvail(), true, "notifications start enabled");
        assert.equal(lb.device.hasAvailable(), true);
        serveOne(lb.device, chain);
        lb.device.disableNotify();
        add(2);
        assert.equal(lb.driver.publishAvail(), false, "the device is polling");
        add(3);
        add(4);
        assert.equal(lb.driver.publishAvail(), false);
        assert.equal(lb.device.enableNotify(), true, "buffers arrived meanwhile: keep polling");
        for (let i = 0; i < 3; i++) serveOne(lb.device, chain);
        assert.equal(lb.device.hasAvailable(), false);
        assert.equal(lb.device.enableNotify(), false, "nothing pending: the device may sleep");
        add(5);
        assert.equal(lb.driver.publishAvail(), true, "enabled again: kick");
        assert.equal(lb.driver.publishAvail(), false, "nothing new since the last decision");
        if (format === "packed") {
          const ev = lb.pool.bytesAt(lb.driver.addresses.device, 4);
          assert.equal(
            ev.readUInt16LE(PACKED_EVENT.flags),
            eventIdx ? RING_EVENT_FLAGS_DESC : RING_EVENT_FLAGS_ENABLE,
          );
          lb.device.disableNotify();
          assert.equal(ev.readUInt16LE(PACKED_EVENT.flags), RING_EVENT_FLAGS_DISABLE);
        } else {
          const used = lb.pool.bytesAt(lb.driver.addresses.device, 4);
          assert.equal(used.readUInt16LE(SPLIT_USED.flags), 0);
          lb.device.disableNotify();
          assert.equal(used.readUInt16LE(SPLIT_USED.flags), VRING_USED_F_NO_NOTIFY);
        }
      });
    }
  }

  test("split + EVENT_IDX: kicks follow avail_event; disableNotify moves it behind the driver", () => {
    const num = 16;
    const lb = createLoopback<number>({ format: "split", num, eventIdx: true });
    const add = adder(lb);
    const used = lb.pool.bytesAt(lb.driver.addresses.device, splitRingSizes(num).used);
    const availEvent = () => used.readUInt16LE(SPLIT_USED.availEvent(num));
    assert.equal(availEvent(), 0);
    add(1);
    assert.equal(lb.driver.publishAvail(), true, "0 -> 1 crosses avail_event 0");
    add(2);
    assert.equal(lb.driver.publishAvail(), false, "1 -> 2 does not");
    add(3);
    add(4);
    assert.equal(lb.driver.publishAvail(), false, "2 -> 4 does not");
    const chain = new Chain();
    for (let i = 0; i < 4; i++) serveOne(lb.device, chain);
    assert.equal(lb.device.enableNotify(), false);
    assert.equal(availEvent(), 4, "kick me when slot 4 becomes available");
    add(5);
    assert.equal(lb.driver.publishAvail(), true, "4 -> 5 crosses 4");
    add(6);
    assert.equal(lb.driver.publishAvail(), false, "avail_event was not moved: no kick");
    // enableNotify while buffers wait: it says so, and the event stays behind the driver.
    assert.equal(lb.device.enableNotify(), true);
    assert.equal(availEvent(), 4);
    add(7);
    assert.equal(lb.driver.publishAvail(), false, "6 -> 7 does not cross 4: the device is polling");
    for (let i = 0; i < 3; i++) serveOne(lb.device, chain);
    assert.equal(lb.device.enableNotify(), false);
    assert.equal(availEvent(), 7);
    // disableNotify puts the event one behind the next slot: no batch of the driver's crosses it.
    lb.device.disableNotify();
    assert.equal(used.readUInt16LE(SPLIT_USED.flags), 0, "flags stay 0 with EVENT_IDX (spec 2.7.10)");
    assert.equal(availEvent(), 6);
    add(8);
    add(9);
    assert.equal(lb.driver.publishAvail(), false, "7 -> 9 does not cross 6: the device is polling");
    assert.equal(lb.device.enableNotify(), true);
    for (let i = 0; i < 2; i++) serveOne(lb.device, chain);
    assert.equal(lb.device.enableNotify(), false);
    add(10);
    add(11);
    assert.equal(lb.driver.publishAvail(), true, "a batch 9 -> 11 crosses 9");
  });

  test("packed + EVENT_IDX: a kick only when the batch crosses the descriptor the device named", () => {
    const num = 5;
    const lb = createLoopback<number>({ format: "packed", num, eventIdx: true });
    const add = adder(lb);
    const chain = new Chain();
    const ev = lb.pool.bytesAt(lb.driver.addresses.device, 4);
    assert.equal(lb.device.enableNotify(), false);
    assert.equal(ev.readUInt16LE(PACKED_EVENT.flags), RING_EVENT_FLAGS_DESC);
    assert.equal(ev.readUInt16LE(PACKED_EVENT.offWrap), 0 | (1 << 15));
    add(1);
    assert.equal(lb.driver.publishAvail(), true, "slot 0 made available");
    add(2);
    assert.equal(lb.driver.publishAvail(), false, "slot 1 is past the event");
    serveOne(lb.device, chain);
    serveOne(lb.device, chain);
    lb.device.publishUsed();
    assert.equal(lb.device.enableNotify(), false);
    // Next event at slot 2; a batch of three (slots 2, 3, 4) crosses it.
    add(3);
    add(4);
    add(5);
    assert.equal(lb.driver.publishAvail(), true);
    for (let i = 0; i < 3; i++) serveOne(lb.device, chain);
    lb.device.publishUsed();
    for (let t = 1; t <= 5; t++) assert.equal(lb.driver.getUsed(), t);
    // The device is at slot 0 of the second lap (wrap counter 0).
    assert.deepEqual(lb.device.getState(), { availIdx: 0, availWrap: 0, usedIdx: 0, usedWrap: 0 });
    assert.equal(lb.device.enableNotify(), false);
    assert.equal(ev.readUInt16LE(PACKED_EVENT.offWrap), 0);
    add(6);
    assert.equal(lb.driver.publishAvail(), true, "the event in the new lap");
    // Event named in the previous lap (wrap counter differs): shifted down by the ring size.
    ev.writeUInt16LE(4 | (1 << 15), PACKED_EVENT.offWrap);
    add(7);
    assert.equal(lb.driver.publishAvail(), false, "slot 4 of the old lap was passed long ago");
  });
});

describe("used-buffer notifications (device interrupts)", () => {
  for (const format of FORMATS) {
    for (const eventIdx of [false, true]) {
      test(`${format}${eventIdx ? " + EVENT_IDX" : ""}: disableCallbacks stops notifications after the first publish`, () => {
        const lb = createLoopback<number>({ format, num: 8, eventIdx });
        const add = adder(lb);
        for (let t = 1; t <= 4; t++) add(t);
        lb.driver.publishAvail();
        lb.driver.disableCallbacks();
        const chain = new Chain();
        serveOne(lb.device, chain);
        assert.equal(lb.device.publishUsed(), true, "the first publish after creation always notifies");
        serveOne(lb.device, chain);
        assert.equal(lb.device.publishUsed(), false, "callbacks are off");
        assert.equal(lb.device.publishUsed(), false, "nothing new");
        // Reaping with callbacks off does not ask for a notification either.
        assert.equal(lb.driver.getUsed(), 1);
        assert.equal(lb.driver.getUsed(), 2);
        serveOne(lb.device, chain);
        assert.equal(lb.device.publishUsed(), false);
        assert.equal(lb.driver.enableCallbacks(), true, "a used buffer is pending: keep polling");
        assert.equal(lb.driver.getUsed(), 3);
        assert.equal(lb.driver.usedLen, 3);
        assert.equal(lb.driver.enableCallbacks(), false, "nothing pending: the driver may sleep");
        serveOne(lb.device, chain);
        assert.equal(lb.device.publishUsed(), true, "callbacks on: notify");
        assert.equal(lb.driver.getUsed(), 4);
        assert.equal(lb.driver.getUsed(), undefined);
        if (format === "split" && !eventIdx) {
          const avail = lb.pool.bytesAt(lb.driver.addresses.driver, 4);
          lb.driver.disableCallbacks();
          assert.equal(avail.readUInt16LE(SPLIT_AVAIL.flags), VRING_AVAIL_F_NO_INTERRUPT);
          lb.driver.enableCallbacks();
          assert.equal(avail.readUInt16LE(SPLIT_AVAIL.flags), 0);
        }
        if (format === "split" && eventIdx) {
          const avail = lb.pool.bytesAt(lb.driver.addresses.driver, 6 + 2 * 8);
          lb.driver.disableCallbacks();
          assert.equal(avail.readUInt16LE(SPLIT_AVAIL.flags), 0, "flags stay 0 with EVENT_IDX");
          assert.equal(avail.readUInt16LE(SPLIT_AVAIL.usedEvent(8)), 4, "used_event behind the driver");
        }
      });

      test(`${format}${eventIdx ? " + EVENT_IDX" : ""}: after setState the first publish notifies even with nothing new`, () => {
        const lb = createLoopback<number>({ format, num: 8, eventIdx });
        lb.driver.disableCallbacks();
        assert.equal(lb.device.publishUsed(), true, "first publish after creation");
        assert.equal(lb.device.publishUsed(), false);
        lb.device.setState(lb.device.getState());
        assert.equal(lb.device.publishUsed(), true, "first publish after setState");
        assert.equal(lb.device.publishUsed(), false);
      });
    }
  }

  test("split + EVENT_IDX: the device notifies when used idx crosses used_event", () => {
    const num = 8;
    const lb = createLoopback<number>({ format: "split", num, eventIdx: true });
    const add = adder(lb);
    const avail = lb.pool.bytesAt(lb.driver.addresses.driver, 6 + 2 * num);
    for (let t = 1; t <= 6; t++) add(t);
    lb.driver.publishAvail();
    const chain = new Chain();
    serveOne(lb.device, chain);
    assert.equal(lb.device.publishUsed(), true);
    assert.equal(lb.driver.getUsed(), 1);
    assert.equal(avail.readUInt16LE(SPLIT_AVAIL.usedEvent(num)), 1, "getUsed moves used_event");
    // Pretend the driver wants a notification only at used idx 3.
    avail.writeUInt16LE(3, SPLIT_AVAIL.usedEvent(num));
    serveOne(lb.device, chain);
    assert.equal(lb.device.publishUsed(), false, "1 -> 2 does not cross 3");
    serveOne(lb.device, chain);
    serveOne(lb.device, chain);
    assert.equal(lb.device.publishUsed(), true, "2 -> 4 crosses 3");
  });

  test("packed + EVENT_IDX: the device notifies when its used position crosses the driver's event", () => {
    const num = 4;
    const lb = createLoopback<number>({ format: "packed", num, eventIdx: true });
    const add = adder(lb);
    const ev = lb.pool.bytesAt(lb.driver.addresses.driver, 4);
    assert.equal(lb.driver.enableCallbacks(), false);
    assert.equal(ev.readUInt16LE(PACKED_EVENT.flags), RING_EVENT_FLAGS_DESC);
    for (let t = 1; t <= 4; t++) add(t);
    lb.driver.publishAvail();
    const chain = new Chain();
    serveOne(lb.device, chain);
    assert.equal(lb.device.publishUsed(), true, "first");
    // The driver has not reaped: its event stays at slot 0, behind the device.
    serveOne(lb.device, chain);
    assert.equal(lb.device.publishUsed(), false, "slot 1 does not cross slot 0");
    for (let t = 1; t <= 2; t++) assert.equal(lb.driver.getUsed(), t);
    assert.equal(ev.readUInt16LE(PACKED_EVENT.offWrap), 2 | (1 << 15), "getUsed moves the event");
    // A batch that wraps: slots 2 and 3, the device's wrap counter flips; the event (slot 2, old lap) is
    // crossed.
    serveOne(lb.device, chain);
    serveOne(lb.device, chain);
    assert.equal(lb.device.publishUsed(), true);
    assert.equal(lb.device.getState().usedWrap, 0);
    for (let t = 3; t <= 4; t++) assert.equal(lb.driver.getUsed(), t);
    assert.equal(ev.readUInt16LE(PACKED_EVENT.offWrap), 0, "slot 0 of the lap with wrap counter 0");
    // A device without EVENT_IDX ignores a DESC event and always notifies.
    const plain = newDevice(lb, false);
    plain.setState(lb.device.getState());
    add(5);
    lb.driver.publishAvail();
    plain.publishUsed();
    assert.equal(plain.pop(chain), true);
    plain.push(chain, 1);
    assert.equal(plain.publishUsed(), true);
  });
});

describe("ring state", () => {
  test("split: getState/setState round trip; indices are 16-bit", () => {
    const lb = createLoopback<number>({ format: "split", num: 8 });
    const add = adder(lb);
    for (let t = 0; t < 5; t++) add(t);
    lb.driver.publishAvail();
    const chain = new Chain();
    for (let i = 0; i < 5; i++) assert.equal(lb.device.pop(chain), true);
    for (let i = 0; i < 3; i++) lb.device.push(chain, 0);
    assert.deepEqual(lb.device.getState(), { availIdx: 5, usedIdx: 3 });
    lb.device.setState({ availIdx: 0x1_2345, usedIdx: 0xf_fffe });
    assert.deepEqual(lb.device.getState(), { availIdx: 0x2345, usedIdx: 0xfffe });
  });

  test("packed: getState/setState round trip with wrap counters; bad positions refused", () => {
    const lb = createLoopback<number>({ format: "packed", num: 5 });
    const add = adder(lb);
    const chain = new Chain();
    for (let t = 0; t < 7; t++) {
      add(t);
      lb.driver.publishAvail();
      serveOne(lb.device, chain);
      lb.device.publishUsed();
      assert.equal(lb.driver.getUsed(), t);
    }
    assert.deepEqual(lb.device.getState(), { availIdx: 2, availWrap: 0, usedIdx: 2, usedWrap: 0 });
    const states: RingState[] = [
      { availIdx: 4, availWrap: 0, usedIdx: 1, usedWrap: 1 },
      { availIdx: 0, availWrap: 1, usedIdx: 0, usedWrap: 0 },
    ];
    for (const s of states) {
      lb.device.setState(s);
      assert.deepEqual(lb.device.getState(), s);
    }
    lb.device.setState({ availIdx: 1, usedIdx: 3 });
    assert.deepEqual(
      lb.device.getState(),
      { availIdx: 1, availWrap: 1, usedIdx: 3, usedWrap: 1 },
      "wraps default to 1",
    );
    lb.device.setState({ availIdx: 1, availWrap: 7, usedIdx: 3, usedWrap: 0 });
    assert.equal(lb.device.getState().availWrap, 1, "any non-zero wrap is 1");
    const before = lb.device.getState();
    for (const bad of [
      { availIdx: 5, usedIdx: 0 },
      { availIdx: 0, usedIdx: 5 },
      { availIdx: 0x8000, usedIdx: 0 },
    ]) {
      assert.throws(
        () => lb.device.setState(bad),
        (e: unknown) => e instanceof RingError && e.code === "DESC_OUT_OF_RANGE",
      );
      assert.deepEqual(lb.device.getState(), before, "a refused state changes nothing");
    }
  });

  test("split: usedIdxFromRing reads used.idx from memory, not the ring's own counter", () => {
    const lb = createLoopback<number>({ format: "split", num: 8 });
    const device = lb.device as SplitDeviceRing;
    assert.equal(device.usedIdxFromRing(), 0);
    const add = adder(lb);
    for (let t = 0; t < 3; t++) add(t);
    lb.driver.publishAvail();
    const chain = new Chain();
    for (let i = 0; i < 3; i++) serveOne(device, chain);
    assert.equal(device.usedIdxFromRing(), 0, "pushed, not yet published");
    device.publishUsed();
    assert.equal(device.usedIdxFromRing(), 3);
    device.setState({ availIdx: 3, usedIdx: 10 });
    assert.equal(device.usedIdxFromRing(), 3);
    lb.pool.bytesAt(lb.driver.addresses.device, 4).writeUInt16LE(0xabcd, SPLIT_USED.idx);
    assert.equal(device.usedIdxFromRing(), 0xabcd);
    // After a remap of the IOTLB the ring is re-resolved before reading.
    lb.iotlb.map(0x7000_0000, 4096, new SharedMemoryRegion(4096), 0, PERM_RW);
    assert.equal(device.usedIdxFromRing(), 0xabcd);
  });

  for (const format of FORMATS) {
    for (const eventIdx of [false, true]) {
      test(`${format}${eventIdx ? " + EVENT_IDX" : ""}: the queue moves to a new device ring mid-stream, nothing lost or doubled`, () => {
        moveMidStream(format, eventIdx, format === "split" ? 0x51 : 0x9a + (eventIdx ? 1 : 0));
      });
    }

    test(`${format}: a popped, unpushed chain survives the move`, () => {
      const lb = createLoopback<number>({ format, num: 8 });
      const add = adder(lb);
      add(1);
      add(2);
      lb.driver.publishAvail();
      const held = new Chain();
      assert.equal(lb.device.pop(held), true);
      lb.device.publishUsed();
      const moved = newDevice(lb, false);
      moved.setState(lb.device.getState());
      const chain = new Chain();
      assert.equal(moved.pop(chain), true, "request 2");
      assert.equal(moved.pop(chain), false, "request 1 is not popped twice");
      moved.push(chain, 2);
      moved.push(held, 1);
      moved.publishUsed();
      assert.equal(lb.driver.getUsed(), 2);
      assert.equal(lb.driver.getUsed(), 1);
      assert.equal(lb.driver.getUsed(), undefined);
      assert.equal(lb.driver.numFree, 8);
    });
  }

  for (const format of FORMATS) {
    test(`${format}: getState() in the middle of a batch does not swallow the batch's notification`, () => {
      const lb = createLoopback<number>({ format, num: 8 });
      const add = adder(lb);
      add(1);
      add(2);
      lb.driver.publishAvail();
      const chain = new Chain();
      serveOne(lb.device, chain);
      assert.equal(lb.device.publishUsed(), true);
      assert.equal(lb.driver.getUsed(), 1);
      serveOne(lb.device, chain);
      lb.device.getState(); // diagnostics, say: the ring keeps running
      assert.equal(lb.device.publishUsed(), true, "the driver has callbacks on and was not told yet");
      assert.equal(lb.driver.getUsed(), 2);
    });
  }

  test("split: pushed but unpublished used elements survive a move (the new ring publishes them)", () => {
    const lb = createLoopback<number>({ format: "split", num: 8 });
    const add = adder(lb);
    add(1);
    add(2);
    lb.driver.publishAvail();
    const chain = new Chain();
    serveOne(lb.device, chain);
    serveOne(lb.device, chain);
    const moved = newDevice(lb, false);
    moved.setState(lb.device.getState());
    assert.equal(moved.publishUsed(), true);
    assert.equal(lb.driver.getUsed(), 1);
    assert.equal(lb.driver.getUsed(), 2);
  });

  test("packed: pushed but unpublished used elements survive a move (the new ring publishes them)", () => {
    const lb = createLoopback<number>({ format: "packed", num: 8 });
    const add = adder(lb);
    add(1);
    add(2);
    lb.driver.publishAvail();
    const chain = new Chain();
    serveOne(lb.device, chain);
    serveOne(lb.device, chain);
    const moved = newDevice(lb, false);
    moved.setState(lb.device.getState());
    moved.publishUsed();
    assert.equal(lb.driver.getUsed(), 1);
    assert.equal(lb.driver.getUsed(), 2);
  });
});

/**
 * Random traffic where the device side is replaced by a fresh ring object (getState -> setState) at random
 * points. Each request carries its token in its readable buffer; the device answers with bytes derived
 * from what it read, into every writable buffer. Every token must come back exactly once, with its length
 * and its bytes.
 */
function moveMidStream(format: RingFormat, eventIdx: boolean, seed: number): void {
  const num = format === "split" ? 8 : 6;
  const lb = createLoopback<number>({ format, num, eventIdx, iotlbEntries: 4 });
  const rand = prng(seed);
  let device = lb.device;
  interface Req {
    out: DmaBuffer;
    ins: DmaBuffer[];
    writeLen: number;
  }
  const pending = new Map<number, Req>();
  const done = new Set<number>();
  let held: Chain[] = [];
  let nextToken = 1;
  let moves = 0;

  const reap = () => {
    for (;;) {
      const t = lb.driver.getUsed();
      if (t === undefined) return;
      assert.ok(!done.has(t), `token ${t} returned twice`);
      const r = pending.get(t);
      assert.ok(r, `token ${t} never added`);
      assert.equal(lb.driver.usedLen, r.writeLen);
      for (const b of r.ins)
        assert.ok(
          b.bytes.every((x) => x === (t & 0xff)),
          `bytes of ${t}`,
        );
      lb.pool.release(r.out);
      for (const b of r.ins) lb.pool.release(b);
      pending.delete(t);
      done.add(t);
    }
  };

  const pushHeld = (k: number) => {
    const chain = held[k];
    held = held.filter((_, i) => i !== k);
    const token = Buffer.from(chain.readable.toBytes()).readUInt32LE(0);
    const reply = Buffer.alloc(chain.writeLen, token & 0xff);
    assert.equal(chain.writable.copyFrom(reply, 0, reply.length), chain.writeLen);
    device.push(chain, chain.writeLen);
  };

  for (let step = 0; step < 4000; step++) {
    const r = rand(20);
    if (r < 7 && nextToken < 1500) {
      const n = 1 + rand(3);
      const out = lb.pool.alloc(8);
      out.bytes.writeUInt32LE(nextToken, 0);
      const ins: DmaBuffer[] = [];
      const list = new BufferList().out(out.iova, 4);
      let writeLen = 0;
      for (let k = 1; k < n; k++) {
        const len = 1 + rand(40);
        const b = lb.pool.alloc(len, 4);
        ins.push(b);
        list.in(b.iova, len);
        writeLen += len;
      }
      if (lb.driver.add(list, nextToken)) {
        pending.set(nextToken, { out, ins, writeLen });
        nextToken++;
      } else {
        lb.pool.release(out);
        for (const b of ins) lb.pool.release(b);
      }
      if (rand(2)) lb.driver.publishAvail();
    } else if (r < 12) {
      if (held.length < 3) {
        const chain = new Chain(8);
        if (device.pop(chain)) {
          assert.equal(chain.readLen, 4);
          held.push(chain);
        }
      }
    } else if (r < 16) {
      if (held.length > 0) pushHeld(rand(held.length));
    } else if (r < 18) {
      device.publishUsed();
      reap();
    } else {
      // Move only after publishing: a state is saved once the pushed elements are visible.
      device.publishUsed();
      const state = device.getState();
      device = newDevice(lb, eventIdx);
      device.setState(state);
      assert.deepEqual(device.getState(), state);
      moves++;
    }
  }
  // Drain.
  lb.driver.publishAvail();
  while (held.length > 0) pushHeld(0);
  for (;;) {
    const chain = new Chain(8);
    if (!device.pop(chain)) break;
    held.push(chain);
    pushHeld(0);
  }
  device.publishUsed();
  reap();
  assert.ok(moves > 50, `moved ${moves} times`);
  assert.ok(done.size > 300, `${done.size} requests`);
  assert.equal(pending.size, 0, `lost: ${[...pending.keys()].join(",")}`);
  assert.equal(done.size, nextToken - 1);
  assert.equal(lb.driver.numFree, num);
  assert.equal(lb.driver.inFlight, 0);
}

describe("index wrap-around", () => {
  for (const eventIdx of [false, true]) {
    test(`split${eventIdx ? " + EVENT_IDX" : ""}: more than 65536 requests through a queue of 4`, () => {
      const num = 4;
      const lb = createLoopback<number>({ format: "split", num, eventIdx });
      const buf = lb.pool.alloc(64);
      const list = new BufferList().in(buf.iova, 16);
      const chain = new Chain(4);
      const device = lb.device as SplitDeviceRing;
      let token = 0;
      let expect = 0;
      let kicks = 0;
      let interrupts = 0;
      let rounds = 0;
      while (token < 70000) {
        const batch = 1 + (rounds++ % num);
        for (let k = 0; k < batch; k++) assert.equal(lb.driver.add(list, token++), true);
        if (lb.driver.publishAvail()) kicks++;
        for (let k = 0; k < batch; k++) {
          assert.equal(device.pop(chain), true);
          device.push(chain, k);
        }
        assert.equal(device.pop(chain), false);
        assert.equal(device.enableNotify(), false);
        if (device.publishUsed()) interrupts++;
        for (let k = 0; k < batch; k++) {
          assert.equal(lb.driver.getUsed(), expect++);
          assert.equal(lb.driver.usedLen, k);
        }
        assert.equal(lb.driver.getUsed(), undefined);
      }
      // Every batch was kicked and signalled: the event indices stayed right across the wrap.
      assert.equal(kicks, rounds);
      assert.equal(interrupts, rounds);
      assert.deepEqual(device.getState(), { availIdx: token & 0xffff, usedIdx: token & 0xffff });
      assert.equal(device.usedIdxFromRing(), token & 0xffff);
      assert.equal(
        lb.pool.bytesAt(lb.driver.addresses.driver, 4).readUInt16LE(SPLIT_AVAIL.idx),
        token & 0xffff,
      );
      assert.equal(lb.driver.numFree, num);
    });
  }

  for (const eventIdx of [false, true]) {
    test(`packed${eventIdx ? " + EVENT_IDX" : ""}: many laps of a queue of 5 with chains of 1 to 3 descriptors`, () => {
      const num = 5;
      const lb = createLoopback<number>({ format: "packed", num, eventIdx });
      const rand = prng(eventIdx ? 77 : 78);
      const bufs = Array.from({ length: 3 }, () => lb.pool.alloc(64));
      const chains = Array.from({ length: num }, () => new Chain(4));
      let slots = 0;
      let token = 0;
      let expect = 0;
      let kicks = 0;
      let interrupts = 0;
      let rounds = 0;
      const sizes = new Map<number, number>();
      while (token < 3000) {
        rounds++;
        // A batch of requests as long as they fit.
        let added = 0;
        for (;;) {
          const n = 1 + rand(3);
          const list = new BufferList().out(bufs[0].iova, 4);
          for (let k = 1; k < n; k++) list.in(bufs[k].iova, 8);
          if (!lb.driver.add(list, token)) break;
          sizes.set(token, n);
          slots += n;
          token++;
          if (++added === 1 + rand(num)) break;
        }
        if (lb.driver.publishAvail()) kicks++;
        for (let k = 0; k < added; k++) {
          const c = chains[k];
          assert.equal(lb.device.pop(c), true);
          assert.equal(c.descCount, sizes.get(expect + k));
          lb.device.push(c, c.writeLen);
        }
        assert.equal(lb.device.enableNotify(), false);
        if (lb.device.publishUsed()) interrupts++;
        for (let k = 0; k < added; k++) {
          const t = lb.driver.getUsed();
          assert.equal(t, expect);
          assert.equal(lb.driver.usedLen, 8 * ((sizes.get(expect) ?? 0) - 1));
          expect++;
        }
        assert.equal(lb.driver.getUsed(), undefined);
        assert.equal(lb.driver.numFree, num);
      }
      const lap = Math.floor(slots / num);
      assert.ok(lap > 500, `${lap} laps`);
      const wrap = (lap & 1) === 0 ? 1 : 0;
      assert.deepEqual(lb.device.getState(), {
        availIdx: slots % num,
        availWrap: wrap,
        usedIdx: slots % num,
        usedWrap: wrap,
      });
      assert.equal(kicks, rounds, "every batch kicked");
      assert.equal(interrupts, rounds, "every batch signalled");
    });
  }
});

describe("reset: detachUnused", () => {
  for (const format of FORMATS) {
    for (const eventIdx of [false, true]) {
      test(`${format}${eventIdx ? " + EVENT_IDX" : ""}: returns exactly the tokens in flight; the ring works again with a new device ring`, () => {
        const num = format === "split" ? 8 : 7;
        const lb = createLoopback<string>({ format, num, eventIdx });
        const buf = lb.pool.alloc(64);
        const one = new BufferList().in(buf.iova, 8);
        const two = new BufferList().out(buf.iova, 4).in(buf.iova, 8);
        for (const t of ["a", "b", "c"]) assert.equal(lb.driver.add(one, t), true);
        assert.equal(lb.driver.add(two, "d"), true);
        assert.equal(lb.driver.add(one, "e"), true);
        lb.driver.publishAvail();
        const chain = new Chain();
        for (let i = 0; i < 3; i++) assert.equal(lb.device.pop(chain), true);
        lb.device.push(chain, 1); // c
        lb.device.publishUsed();
        assert.equal(lb.driver.getUsed(), "c");
        lb.driver.disableCallbacks();
        assert.equal(lb.driver.numFree, num - 5);
        // Device reset: everything not reaped comes back, whatever state it was in.
        const tokens = lb.driver.detachUnused();
        assert.deepEqual([...tokens].sort(), ["a", "b", "d", "e"]);
        assert.equal(lb.driver.numFree, num);
        assert.equal(lb.driver.inFlight, 0);
        assert.equal(lb.driver.getUsed(), undefined);
        assert.deepEqual(lb.driver.detachUnused(), [], "nothing twice");
        // The rings are back to their initial, zeroed state.
        const a = lb.driver.addresses;
        assert.ok(lb.pool.bytesAt(a.desc, 16 * num).every((x) => x === 0));
        assert.ok(lb.pool.bytesAt(a.driver, 4).every((x) => x === 0));
        assert.ok(lb.pool.bytesAt(a.device, 4).every((x) => x === 0));
        // A new device ring (the device was reset) and the same driver ring: traffic flows again,
        // with callbacks re-enabled by the reset.
        const device = newDevice(lb, eventIdx);
        assert.equal(device.pop(chain), false);
        for (let round = 0; round < 3 * num; round++) {
          assert.equal(lb.driver.add(two, `r${round}`), true);
          assert.equal(lb.driver.publishAvail(), true);
          assert.equal(device.pop(chain), true);
          assert.equal(chain.readLen, 4);
          device.push(chain, round);
          assert.equal(device.publishUsed(), true);
          assert.equal(lb.driver.getUsed(), `r${round}`);
          assert.equal(lb.driver.usedLen, round);
          assert.equal(device.enableNotify(), false);
        }
        assert.equal(lb.driver.numFree, num);
      });
    }
  }

  test("inFlight counts requests the same way in both formats", () => {
    for (const format of FORMATS) {
      const lb = createLoopback<number>({ format, num: 8 });
      const b = lb.pool.alloc(64).iova;
      lb.driver.add(new BufferList().out(b, 4).in(b, 4).in(b, 4), 1);
      assert.equal(lb.driver.inFlight, 1, format);
    }
  });
});

describe("indirect requests", () => {
  for (const format of FORMATS) {
    test(`${format}: multi-buffer requests take one slot; the device sees every buffer`, () => {
      const num = 4;
      const lb = createLoopback<number>({ format, num, indirect: true, maxIndirect: 4 });
      const o1 = lb.pool.alloc(16);
      const o2 = lb.pool.alloc(16);
      const i1 = lb.pool.alloc(16);
      o1.bytes.write("head");
      o2.bytes.write("body");
      const three = new BufferList().out(o1.iova, 4).out(o2.iova, 4).in(i1.iova, 10);
      assert.equal(lb.driver.add(three, 1), true);
      assert.equal(lb.driver.numFree, num - 1);
      // The ring holds one INDIRECT descriptor with a 48-byte table.
      const d = lb.pool.bytesAt(lb.driver.addresses.desc, 16);
      const flagsAt = format === "split" ? SPLIT_DESC.flags : PACKED_DESC.flags;
      assert.equal(d.readUInt32LE(SPLIT_DESC.len), 48);
      // Packed: the head's flags are written at publishAvail().
      if (format === "split") assert.ok(d.readUInt16LE(flagsAt) & VRING_DESC_F_INDIRECT);
      lb.driver.publishAvail();
      assert.ok(d.readUInt16LE(flagsAt) & VRING_DESC_F_INDIRECT);
      // One buffer: no table needed. Indirect refused by the caller: direct.
      assert.equal(lb.driver.add(new BufferList().in(i1.iova, 2), 2), true);
      assert.equal(lb.driver.numFree, num - 2);
      assert.equal(lb.driver.add(new BufferList().out(o1.iova, 4).in(i1.iova, 2), 3, false), true);
      assert.equal(lb.driver.numFree, 0);
      lb.driver.publishAvail();
      const chain = new Chain();
      assert.equal(lb.device.pop(chain), true);
      assert.deepEqual([chain.readLen, chain.writeLen, chain.descCount], [8, 10, 1]);
      assert.equal(Buffer.from(chain.readable.toBytes()).toString(), "headbody");
      chain.writable.copyFrom(Buffer.from("0123456789"), 0, 10);
      lb.device.push(chain, 10);
      assert.equal(lb.device.pop(chain), true);
      assert.deepEqual([chain.readLen, chain.writeLen, chain.descCount], [0, 2, 1]);
      lb.device.push(chain, 2);
      assert.equal(lb.device.pop(chain), true);
      assert.deepEqual([chain.readLen, chain.writeLen], [4, 2]);
      assert.equal(chain.descCount, format === "packed" ? 2 : 1);
      lb.device.push(chain, 2);
      lb.device.publishUsed();
      assert.equal(lb.driver.getUsed(), 1);
      assert.equal(lb.driver.usedLen, 10);
      assert.equal(i1.bytes.subarray(0, 10).toString(), "0123456789");
      assert.equal(lb.driver.getUsed(), 2);
      assert.equal(lb.driver.getUsed(), 3);
      assert.equal(lb.driver.numFree, num);
    });

    test(`${format}: indirect and direct requests mixed over many laps of a ring of 3`, () => {
      const num = format === "split" ? 4 : 3;
      const lb = createLoopback<number>({ format, num, indirect: true, maxIndirect: 3, eventIdx: true });
      const rand = prng(5);
      const b = lb.pool.alloc(64);
      b.bytes.fill(0x42);
      const chains = Array.from({ length: num }, () => new Chain(8));
      let token = 0;
      let expect = 0;
      for (let round = 0; round < 400; round++) {
        const lens: number[] = [];
        for (;;) {
          const n = 1 + rand(3);
          const list = new BufferList().out(b.iova, 1);
          for (let k = 1; k < n; k++) list.in(b.iova + 8 * k, 8);
          if (!lb.driver.add(list, token, rand(4) !== 0)) break;
          lens.push(8 * (n - 1));
          token++;
        }
        lb.driver.publishAvail();
        for (let k = 0; k < lens.length; k++) {
          assert.equal(lb.device.pop(chains[k]), true);
          assert.equal(chains[k].readLen, 1);
          assert.equal(chains[k].writeLen, lens[k]);
          lb.device.push(chains[k], lens[k]);
        }
        assert.equal(lb.device.pop(chains[0]), false);
        lb.device.publishUsed();
        for (const len of lens) {
          assert.equal(lb.driver.getUsed(), expect++);
          assert.equal(lb.driver.usedLen, len);
        }
        assert.equal(lb.driver.numFree, num);
      }
      assert.ok(token > 400);
    });

    test(`${format}: a request longer than an indirect table goes direct`, () => {
      const lb = createLoopback<number>({ format, num: 8, indirect: true, maxIndirect: 4 });
      const b = lb.pool.alloc(64).iova;
      const five = new BufferList().out(b, 1).out(b, 1).in(b, 1).in(b, 1).in(b, 1);
      assert.equal(lb.driver.add(five, 5), true);
      assert.equal(lb.driver.numFree, 3);
      lb.driver.publishAvail();
      const chain = new Chain();
      assert.equal(lb.device.pop(chain), true);
      assert.equal(chain.readLen + chain.writeLen, 5);
      lb.device.push(chain, 3);
      lb.device.publishUsed();
      assert.equal(lb.driver.getUsed(), 5);
      assert.equal(lb.driver.numFree, 8);
    });

    test(`${format}: indirect tables the device cannot read in place are copied (split across regions, unaligned)`, () => {
      for (const layout of ["split", "unaligned"] as const) {
        const lb = createLoopback<number>({ format, num: 4, indirect: true, maxIndirect: 4 });
        const o = lb.pool.alloc(16);
        const i = lb.pool.alloc(16);
        o.bytes.write("abcd");
        lb.driver.add(
          new BufferList()
            .out(o.iova, 4)
            .in(i.iova, 8)
            .in(i.iova + 8, 8),
          9,
        );
        lb.driver.publishAvail();
        const d = lb.pool.bytesAt(lb.driver.addresses.desc, 16);
        const table = d.readUInt32LE(0) + d.readUInt32LE(4) * 2 ** 32;
        const bytes = Buffer.from(lb.pool.bytesAt(table, 48));
        const other = new SharedMemoryRegion(4096, "other");
        if (layout === "split") {
          // Entry 1 comes from another region: the table is three segments.
          other.bytes.set(bytes.subarray(16, 32), 0);
          lb.iotlb.map(table + 16, 16, other, 0, PERM_RW);
        } else {
          // The whole table, at a host offset that is not a multiple of 4.
          other.bytes.set(bytes, 2);
          lb.iotlb.map(table, 48, other, 2, PERM_RW);
        }
        // The pool's bytes under the remapped range are no longer what the device sees.
        if (layout === "split") lb.pool.bytesAt(table + 16, 16).fill(0xee);
        else lb.pool.bytesAt(table, 48).fill(0xee);
        const chain = new Chain();
        assert.equal(lb.device.pop(chain), true, layout);
        assert.deepEqual([chain.readLen, chain.writeLen, chain.descCount], [4, 16, 1]);
        assert.equal(Buffer.from(chain.readable.toBytes()).toString(), "abcd");
        assert.equal(chain.writable.count, 1, "the two writable halves of one buffer merge");
        lb.device.push(chain, 16);
        lb.device.publishUsed();
        assert.equal(lb.driver.getUsed(), 9);
      }
    });
  }
});

describe("remapping ring memory under a running queue", () => {
  test("split: a remapped ring is re-resolved before the next pop", () => {
    const lb = createLoopback<number>({ format: "split", num: 4 });
    const add = adder(lb);
    add(1);
    lb.driver.publishAvail();
    // Move the avail ring's IOVA to a copy in another region, with a different head.
    const availIova = lb.driver.addresses.driver;
    const copy = new SharedMemoryRegion(4096, "copy");
    copy.bytes.set(lb.pool.bytesAt(availIova, 64), 0);
    copy.bytes.writeUInt16LE(7, SPLIT_AVAIL.ring); // head 7 is past the table: only the copy says so
    lb.iotlb.map(availIova, 64, copy, 0, PERM_RW);
    assert.throws(
      () => lb.device.pop(new Chain()),
      (e: unknown) => e instanceof RingError && e.code === "DESC_OUT_OF_RANGE",
    );
  });

  for (const format of FORMATS) {
    test(`${format}: push() after the used ring was remapped writes where it is mapped now`, () => {
      const lb = createLoopback<number>({ format, num: 4 });
      const add = adder(lb);
      add(1);
      lb.driver.publishAvail();
      const chain = new Chain();
      assert.equal(lb.device.pop(chain), true);
      // The used ring (split) / descriptor ring (packed) moves to another region.
      const iova = format === "split" ? lb.driver.addresses.device : lb.driver.addresses.desc;
      const len = format === "split" ? splitRingSizes(4).used : 64;
      const moved = new SharedMemoryRegion(4096, "moved");
      moved.bytes.set(lb.pool.bytesAt(iova, len), 0);
      const oldBytes = Buffer.from(lb.pool.bytesAt(iova, len));
      lb.iotlb.map(iova, len, moved, 0, PERM_RW);
      lb.device.push(chain, 5);
      lb.device.publishUsed();
      assert.ok(lb.pool.bytesAt(iova, len).equals(oldBytes), "no write to memory that is no longer mapped");
      if (format === "split") {
        assert.equal(moved.bytes.readUInt16LE(SPLIT_USED.idx), 1);
        assert.equal(moved.bytes.readUInt32LE(SPLIT_USED.ring), chain.id);
        assert.equal(moved.bytes.readUInt32LE(SPLIT_USED.ring + 4), 5);
      } else {
        assert.equal(moved.bytes.readUInt16LE(PACKED_DESC.id), chain.id);
        assert.equal(moved.bytes.readUInt32LE(PACKED_DESC.len), 5);
      }
    });
  }

  for (const format of FORMATS) {
    test(`${format}: publishUsed() after the ring was remapped publishes where it is mapped now`, () => {
      const lb = createLoopback<number>({ format, num: 4 });
      const add = adder(lb);
      add(1);
      lb.driver.publishAvail();
      const chain = new Chain();
      assert.equal(lb.device.pop(chain), true);
      lb.device.push(chain, 6);
      // Between push and publish the used ring (split) / descriptor ring (packed) moves, contents and all.
      const iova = format === "split" ? lb.driver.addresses.device : lb.driver.addresses.desc;
      const len = format === "split" ? splitRingSizes(4).used : 64;
      const moved = new SharedMemoryRegion(4096, "moved");
      moved.bytes.set(lb.pool.bytesAt(iova, len), 0);
      const oldBytes = Buffer.from(lb.pool.bytesAt(iova, len));
      lb.iotlb.map(iova, len, moved, 0, PERM_RW);
      assert.equal(lb.device.publishUsed(), true);
      assert.ok(lb.pool.bytesAt(iova, len).equals(oldBytes), "the old location is not written");
      if (format === "split") {
        assert.equal(moved.bytes.readUInt16LE(SPLIT_USED.idx), 1);
        assert.equal(moved.bytes.readUInt32LE(SPLIT_USED.ring + 4), 6);
      } else {
        const flags = moved.bytes.readUInt16LE(PACKED_DESC.flags);
        assert.equal(flags & 0x8080, 0x8080, "AVAIL and USED set for wrap counter 1");
        assert.equal(moved.bytes.readUInt32LE(PACKED_DESC.len), 6);
      }
    });
  }

  test("split: disableNotify() after the used ring was remapped writes where it is mapped now", () => {
    const lb = createLoopback<number>({ format: "split", num: 4 });
    const iova = lb.driver.addresses.device;
    const len = splitRingSizes(4).used;
    const moved = new SharedMemoryRegion(4096, "moved");
    lb.iotlb.map(iova, len, moved, 0, PERM_RW);
    lb.device.disableNotify();
    assert.equal(lb.pool.bytesAt(iova, 2).readUInt16LE(0), 0, "old location untouched");
    assert.equal(moved.bytes.readUInt16LE(SPLIT_USED.flags), VRING_USED_F_NO_NOTIFY);
  });

  test("packed: hasAvailable and enableNotify re-resolve a remapped ring", () => {
    const lb = createLoopback<number>({ format: "packed", num: 4 });
    const device = lb.device as PackedDeviceRing;
    assert.equal(device.hasAvailable(), false);
    const add = adder(lb);
    add(1);
    lb.driver.publishAvail();
    // The descriptor ring's IOVA now shows an empty copy.
    const empty = new SharedMemoryRegion(4096, "empty");
    lb.iotlb.map(lb.driver.addresses.desc, 64, empty, 0, PERM_RW);
    assert.equal(device.hasAvailable(), false);
    assert.equal(device.enableNotify(), false);
    lb.pool.mapInto(lb.iotlb); // the pool again, over the whole range
    assert.equal(device.hasAvailable(), true);
    assert.equal(device.enableNotify(), true);
  });
});
