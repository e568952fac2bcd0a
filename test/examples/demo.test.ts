// `npm start`'s vDPA demo runs end to end and shows what it promises: both devices rebound to
// virtio_vdpa, Linux's negotiated net features, every frame back, the block data verified.

import assert from "node:assert/strict";
import { test } from "node:test";
import { vdpaDemo } from "../../scripts/demo-vdpa.js";

test("the npm start vDPA demo: devices, features, counters", async () => {
  const lines: string[] = [];
  await vdpaDemo((l) => lines.push(l));
  const text = lines.join("\n");
  assert.match(text, /bound vdpa0 to virtio_vdpa/);
  assert.match(text, /bound vdpa1 to virtio_vdpa/);
  assert.match(text, /negotiated_features MTU MAC STATUS CTRL_VQ CTRL_MAC_ADDR VERSION_1 ACCESS_PLATFORM\n/);
  assert.match(text, /rx packets 100000 rx bytes 7600000 rx errors 0 rx overruns 0 rx drops 0/);
  assert.match(text, /blk: wrote and read back 1 MiB .* device id "vdpa_blk_sim"/);
});
