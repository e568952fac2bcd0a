// Virtio facts as data: status bits, feature bits, device ids, net/blk config layouts and ring layouts.
// This folder imports nothing outside itself, so every other layer can depend on it.

export * from "./blk-config.js";
export * from "./config-field.js";
export * from "./device-ids.js";
export * from "./features.js";
export * from "./net-config.js";
export * from "./ring-layout.js";
export * from "./status.js";
