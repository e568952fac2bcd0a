// A new vDPA device type in one small file (inside the package; users import the same names from
// "vdpa-ts/devices", "vdpa-ts/memory", "vdpa-ts/ring" and "vdpa-ts/vdpa"): virtio-rng (device id 4). One queue; the driver posts
// writable buffers and the device fills them with random bytes. The simulator core does everything else:
// the ops table, feature negotiation, DMA models, rings in both formats, scheduling, faults, reset.

import { randomFillSync } from "node:crypto";
import {
  createVdpaSim,
  VDPASIM_FEATURES,
  VDPASIM_RING_OPTION_FEATURES,
  type VdpaSim,
  type VdpaSimDevAttr,
} from "../src/devices/sim/index.js";
import type { SegmentList } from "../src/memory/index.js";
import { Chain } from "../src/ring/index.js";
import { type DmaModel, VdpaDevice } from "../src/vdpa/index.js";

export class VdpasimRng implements VdpaSimDevAttr {
  readonly id = 4; // VIRTIO_ID_RNG
  // VERSION_1, ACCESS_PLATFORM, ANY_LAYOUT, plus packed rings, event index and indirect descriptors.
  readonly supportedFeatures = VDPASIM_FEATURES | VDPASIM_RING_OPTION_FEATURES;
  readonly nvqs = 1;
  readonly ngroups = 1;
  readonly nas = 1;
  readonly configSize = 0; // virtio-rng has no config space
  bytesServed = 0;
  private readonly chain = new Chain();

  /** Called on the event loop after a kick: serve up to sim.workBatch requests. */
  work(sim: VdpaSim): boolean {
    for (let n = 0; n < sim.workBatch; n++) {
      if (sim.getDesc(0, this.chain) !== 1) return false; // empty, or the queue faulted
      const len = fillRandom(this.chain.writable);
      this.bytesServed += len;
      sim.complete(0, this.chain, len);
    }
    return true; // more may be waiting: run again
  }
}

function fillRandom(segs: SegmentList): number {
  for (let i = 0; i < segs.count; i++)
    randomFillSync(segs.regions[i].bytes, segs.offsets[i], segs.lengths[i]);
  return segs.total;
}

/** A ready-to-register device: `bus.registerDevice(createSimRng().device)`. */
export function createSimRng(name?: string, dmaModel: DmaModel = "set_map") {
  const rng = new VdpasimRng();
  const sim = createVdpaSim(rng, { name, dmaModel });
  const device = new VdpaDevice({ ops: sim, name, nvqs: rng.nvqs, ngroups: sim.ngroups, nas: sim.nas });
  sim.setDevice(device);
  return { device, sim, rng };
}
