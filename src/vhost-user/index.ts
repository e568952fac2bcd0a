export * from "./codec.js";
export * from "./connection.js";
export * from "./framing.js";
export * from "./messages.js";
