export * from "./config-ops.js";
export * from "./device.js";
export * from "./dma.js";
export * from "./errors.js";
export * from "./mgmt.js";
export * from "./mgmt-types.js";
export * from "./vdpa-bus.js";
