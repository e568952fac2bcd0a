// A vDPA device for tests of the layers above the ops table: it keeps status, features, config and queue
// state like a real one, records every op call as a line of text, and takes optional ops (setMap, dmaMap,
// suspend, ...) through `extra`.

import type { VdpaConfigOps, VqState } from "../../src/vdpa/config-ops.js";

export interface FakeDevice extends VdpaConfigOps {
  /** Every op call, in order, as "name arg arg". */
  calls: string[];
  config: Uint8Array;
  status: number;
  features: bigint;
  ready: boolean[];
  state: VqState[];
}

export function fakeDevice(
  extra: Partial<VdpaConfigOps> = {},
  opts: { nvqs?: number; offered?: bigint } = {},
): FakeDevice {
  const nvqs = opts.nvqs ?? 2;
  const dev: FakeDevice = {
    calls: [],
    config: Uint8Array.from({ length: 24 }, (_, i) => i),
    status: 0,
    features: 0n,
    ready: new Array<boolean>(nvqs).fill(false),
    state: Array.from({ length: nvqs }, () => ({ split: { availIndex: 0 } })),
    setVqAddress(idx, desc, driver, device) {
      dev.calls.push(`setVqAddress ${idx} ${desc} ${driver} ${device}`);
    },
    setVqNum(idx, num) {
      dev.calls.push(`setVqNum ${idx} ${num}`);
    },
    kickVq(idx) {
      dev.calls.push(`kickVq ${idx}`);
    },
    setVqCb(idx, cb) {
      dev.calls.push(`setVqCb ${idx} ${cb ? "set" : "null"}`);
    },
    setVqReady(idx, ready) {
      dev.calls.push(`setVqReady ${idx} ${ready}`);
      dev.ready[idx] = ready;
    },
    getVqReady: (idx) => dev.ready[idx],
    setVqState(idx, state) {
      dev.calls.push(`setVqState ${idx} ${JSON.stringify(state)}`);
      dev.state[idx] = state;
    },
    getVqState: (idx) => dev.state[idx],
    getVqAlign: () => 4096,
    getDeviceFeatures: () => opts.offered ?? (1n << 32n) | (1n << 33n),
    setDriverFeatures(f) {
      dev.calls.push(`setDriverFeatures 0x${f.toString(16)}`);
      dev.features = f;
    },
    getDriverFeatures: () => dev.features,
    setConfigCb(cb) {
      dev.calls.push(`setConfigCb ${cb ? "set" : "null"}`);
    },
    getVqNumMax: () => 256,
    getDeviceId: () => 1,
    getVendorId: () => 0,
    getStatus: () => dev.status,
    setStatus(s) {
      dev.calls.push(`setStatus ${s}`);
      dev.status = s;
    },
    reset() {
      dev.calls.push("reset");
      dev.status = 0;
      dev.features = 0n;
    },
    getConfigSize: () => dev.config.length,
    getConfig(off, buf, len) {
      buf.set(dev.config.subarray(off, off + len));
    },
    setConfig(off, buf, len) {
      dev.config.set(buf.subarray(0, len), off);
    },
    ...extra,
  };
  return dev;
}
