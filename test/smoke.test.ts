import assert from "node:assert/strict";
import { test } from "node:test";

test("runner finds compiled tests", () => {
  assert.equal(1 + 1, 2);
});
