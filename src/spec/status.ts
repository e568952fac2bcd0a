// Virtio device status field (virtio 1.x, "Device Status Field"; Linux include/uapi/linux/virtio_config.h).
// The driver sets bits one by one while it brings a device up; writing 0 resets the device, and a driver may
// only clear bits by resetting.

/** The driver has noticed the device. */
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 0x01;
/** The driver knows how to drive the device. */
export const VIRTIO_CONFIG_S_DRIVER = 0x02;
/** The driver is set up and ready to drive the device. */
export const VIRTIO_CONFIG_S_DRIVER_OK = 0x04;
/** The driver has written its features and the device accepted them (re-read to confirm). */
export const VIRTIO_CONFIG_S_FEATURES_OK = 0x08;
/**
 * The device is asked to stop processing queues and keep its state. Not in virtio 1.3 nor in the Linux uapi
 * header: it comes from the virtio 1.4 SUSPEND/RESUME work (oasis-tcs/virtio-spec#229). The name follows the
 * kernel's VIRTIO_CONFIG_S_* pattern so it is easy to find.
 */
export const VIRTIO_CONFIG_S_SUSPEND = 0x10;
/** The device hit an error it cannot recover from without a reset. */
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
/** The driver gave up on the device. */
export const VIRTIO_CONFIG_S_FAILED = 0x80;

/** One status bit: `bit` is its index (0..7), `mask` the status value with only that bit set. */
export interface StatusBitInfo {
  readonly bit: number;
  readonly mask: number;
  /** Short name, the macro without its VIRTIO_CONFIG_S_ prefix. */
  readonly name: string;
  readonly linuxMacro: string;
  /** True for SUSPEND, which only the virtio 1.4 work defines. */
  readonly virtio14?: boolean;
}

/** Every defined status bit, lowest first. Bit 5 (0x20) is reserved by the spec. */
export const STATUS_BITS: readonly StatusBitInfo[] = [
  {
    bit: 0,
    mask: VIRTIO_CONFIG_S_ACKNOWLEDGE,
    name: "ACKNOWLEDGE",
    linuxMacro: "VIRTIO_CONFIG_S_ACKNOWLEDGE",
  },
  { bit: 1, mask: VIRTIO_CONFIG_S_DRIVER, name: "DRIVER", linuxMacro: "VIRTIO_CONFIG_S_DRIVER" },
  { bit: 2, mask: VIRTIO_CONFIG_S_DRIVER_OK, name: "DRIVER_OK", linuxMacro: "VIRTIO_CONFIG_S_DRIVER_OK" },
  {
    bit: 3,
    mask: VIRTIO_CONFIG_S_FEATURES_OK,
    name: "FEATURES_OK",
    linuxMacro: "VIRTIO_CONFIG_S_FEATURES_OK",
  },
  {
    bit: 4,
    mask: VIRTIO_CONFIG_S_SUSPEND,
    name: "SUSPEND",
    linuxMacro: "VIRTIO_CONFIG_S_SUSPEND",
    virtio14: true,
  },
  {
    bit: 6,
    mask: VIRTIO_CONFIG_S_NEEDS_RESET,
    name: "NEEDS_RESET",
    linuxMacro: "VIRTIO_CONFIG_S_NEEDS_RESET",
  },
  { bit: 7, mask: VIRTIO_CONFIG_S_FAILED, name: "FAILED", linuxMacro: "VIRTIO_CONFIG_S_FAILED" },
];

/**
 * Names of the bits set in `status`, lowest bit first. A set bit with no name (only bit 5, 0x20, within a
 * byte) is reported as `bit_N`, the same convention iproute2 uses for unnamed feature bits, so nothing set
 * is ever hidden. Only the low 8 bits are looked at: the status field is one byte. 0 (reset) gives [].
 */
export function statusNames(status: number): string[] {
  const names: string[] = [];
  for (let bit = 0; bit < 8; bit++) {
    if ((status & (1 << bit)) === 0) continue;
    const info = STATUS_BITS.find((s) => s.bit === bit);
    names.push(info ? info.name : `bit_${bit}`);
  }
  return names;
}
