import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { BufferList, Chain, createLoopback, type RingFormat } from "../../src/ring/index.js";

for (const format of ["split", "packed"] as RingFormat[]) {
  describe(`${format} round trip`, () => {
    test("a written buffer comes back with its token, length and bytes", () => {
      const lb = createLoopback<string>({ format, num: 8, eventIdx: true });
      const out = lb.pool.alloc(16);
      const inn = lb.pool.alloc(64);
      out.bytes.write("hello device");
      const bufs = new BufferList().out(out.iova, 12).in(inn.iova, 64);
      assert.equal(lb.driver.add(bufs, "req-1"), true);
      assert.equal(lb.driver.publishAvail(), true);
      const chain = new Chain();
      assert.equal(lb.device.pop(chain), true);
      assert.equal(chain.readLen, 12);
      assert.equal(chain.writeLen, 64);
      assert.equal(Buffer.from(chain.readable.toBytes()).toString(), "hello device");
      const reply = Buffer.from("hello driver");
      assert.equal(chain.writable.copyFrom(reply, 0, reply.length), reply.length);
      lb.device.push(chain, reply.length);
      assert.equal(lb.device.publishUsed(), true);
      assert.equal(lb.device.pop(chain), false);
      assert.equal(lb.driver.getUsed(), "req-1");
      assert.equal(lb.driver.usedLen, 12);
      assert.equal(inn.bytes.subarray(0, 12).toString(), "hello driver");
      assert.equal(lb.driver.getUsed(), undefined);
      assert.equal(lb.driver.numFree, 8);
    });
  });
}
