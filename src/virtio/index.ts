// The virtio layer: the transport interface drivers are written against, the virtio bus, and
// virtio_vdpa (any vDPA device as a virtio device).

export * from "./blk.js";
export * from "./net.js";
export type * from "./transport.js";
export * from "./virtio-bus.js";
export * from "./virtio-vdpa.js";
