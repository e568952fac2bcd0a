// Linux's vdpa_sim rebuilt: the core (core.ts) and one file per device type (net.ts, blk.ts).
export * from "./blk.js";
export * from "./core.js";
export * from "./net.js";
