export * from "./address-space.js";
export * from "./copy.js";
export * from "./dma-pool.js";
export * from "./errors.js";
export * from "./iotlb.js";
export * from "./mapped-region.js";
export * from "./region.js";
