// The QEMU command line that attaches vdpad's vhost-user devices to a VM: guest RAM shared through a memfd
// (vhost-user back-ends map it), then a chardev and a device per vDPA device. Net devices get the vDPA
// device's MAC, so the simulator's MAC filter lets the guest's unicast frames through.

export interface QemuDevice {
  name: string;
  kind: "net" | "blk";
  socket: string;
  mac?: string;
  /** Queue pairs (net) or queues (blk). */
  queues?: number;
}

/** One argument group per line, to print with " \\" continuations. */
export function qemuArgs(devices: readonly QemuDevice[], memory = "1G"): string[] {
  const lines = [
    "qemu-system-x86_64 -machine q35,accel=kvm:tcg -cpu max",
    `-m ${memory} -object memory-backend-memfd,id=mem,size=${memory},share=on -numa node,memdev=mem`,
  ];
  for (const d of devices) {
    lines.push(`-chardev socket,id=${d.name},path=${d.socket}`);
    if (d.kind === "net") {
      // vectors=0: QEMU 7.2 under TCG crashes starting a vhost-user net device with MSI-X
      const mac = d.mac ? `,mac=${d.mac}` : "";
      lines.push(
        `-netdev vhost-user,id=${d.name}-net,chardev=${d.name} -device virtio-net-pci,netdev=${d.name}-net${mac},vectors=0`,
      );
    } else {
      lines.push(`-device vhost-user-blk-pci,chardev=${d.name},num-queues=${d.queues ?? 1}`);
    }
  }
  return lines;
}

export function qemuCommandLine(devices: readonly QemuDevice[], memory = "1G"): string {
  return qemuArgs(devices, memory).join(" \\\n    ");
}
