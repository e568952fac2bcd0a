import assert from "node:assert/strict";
import { test } from "node:test";
import { busTour } from "../../examples/bus-tour.js";

test("the README's bus tour runs and prints what it says", () => {
  const lines: string[] = [];
  busTour((l) => lines.push(l));
  assert.deepEqual(lines, [
    "bound vdpa0 to vhost_vdpa",
    "bound vdpa1 to vhost_vdpa",
    "vdpa0 features: MTU MAC STATUS CTRL_VQ CTRL_MAC_ADDR ANY_LAYOUT VERSION_1 ACCESS_PLATFORM",
    "vdpa0 status 0xb, 1 mapping in ASID 0",
    "devices: vdpa0",
  ]);
});
