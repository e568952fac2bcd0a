// vdpa-ts: the public API. Subpath exports (vdpa-ts/memory, vdpa-ts/ring, vdpa-ts/spec, vdpa-ts/vdpa,
// vdpa-ts/vhost) give the same things per layer.
export * from "./devices/sim/index.js";
export * from "./memory/index.js";
export * from "./ring/index.js";
export * as spec from "./spec/index.js";
export * from "./vdpa/index.js";
export * from "./vhost/index.js";
export * from "./virtio/index.js";
