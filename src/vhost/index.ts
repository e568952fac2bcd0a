export * from "./vhost-vdpa.js";
