export * from "./eventfd.js";
export { closeFd, OsError } from "./libc.js";
export * from "./memfd.js";
export * from "./mmap.js";
export * from "./poller.js";
export * from "./unix-socket.js";
