// DMA translation on the vDPA bus. A device with no translation of its own (neither setMap nor dmaMap) is
// given a platform IOMMU domain by the bus, as Linux's vhost_vdpa programs the system IOMMU for such
// parents. Devices that translate themselves keep one IOTLB per address space (ASID) and bind each
// virtqueue group to one of them; every group starts on ASID 0 and moves with setGroupAsid.

import { AddressSpace, Iotlb } from "../memory/index.js";
import { VdpaError } from "./errors.js";

/** How a device's DMA is translated. */
export type DmaModel =
  /** The bus's platform IOMMU domain (the device implements neither setMap nor dmaMap). */
  | "platform"
  /** The device's own IOTLBs, replaced whole per ASID by setMap. */
  | "set_map"
  /** The device's own IOTLBs, updated entry by entry by dmaMap/dmaUnmap. */
  | "dma_map";

/** The IOMMU domain the bus attaches to a platform-translated device: one IOTLB, nothing mapped at first. */
export class PlatformDomain {
  readonly iotlb: Iotlb;
  constructor(readonly deviceName: string) {
    this.iotlb = new Iotlb(`platform:${deviceName}`);
  }
}

/**
 * A device's address spaces and the binding of its virtqueue groups to them. Each group gets one
 * AddressSpace object that follows its binding, so queues keep one reference across setGroupAsid.
 */
export class GroupAddressSpaces {
  /** One IOTLB per ASID. */
  readonly iotlbs: Iotlb[];
  /** One AddressSpace per group, attached to iotlbs[groupAsid[group]]. */
  readonly groupSpaces: AddressSpace[];
  private readonly groupAsid: number[];

  /**
   * `iotlbs` gives the IOTLB of each ASID: the device's own, or (platform model, nas 1) the bus domain's.
   */
  constructor(
    readonly ngroups: number,
    iotlbs: Iotlb[],
  ) {
    if (ngroups < 1 || iotlbs.length < 1)
      throw new VdpaError("EINVAL", "a device needs at least one group and one address space");
    this.iotlbs = iotlbs;
    this.groupAsid = new Array<number>(ngroups).fill(0);
    this.groupSpaces = Array.from({ length: ngroups }, (_, g) => new AddressSpace(iotlbs[0], `group${g}`));
  }

  get nas(): number {
    return this.iotlbs.length;
  }

  asidOf(group: number): number {
    return this.groupAsid[group];
  }

  /**
   * Binds `group` to `asid`. Linux's simulator checks `group > ngroups`, so group == ngroups is accepted
   * and changes nothing; we keep that answer (a success) and the no-op.
   */
  setGroupAsid(group: number, asid: number): void {
    if (!Number.isInteger(group) || group < 0 || group > this.ngroups) throw new VdpaError("EINVAL");
    if (!Number.isInteger(asid) || asid < 0 || asid >= this.nas) throw new VdpaError("EINVAL");
    if (group === this.ngroups) return;
    this.groupAsid[group] = asid;
    this.groupSpaces[group].attach(this.iotlbs[asid]);
  }

  /** Every group back on ASID 0 (device reset). */
  resetBindings(): void {
    for (let g = 0; g < this.ngroups; g++) {
      this.groupAsid[g] = 0;
      this.groupSpaces[g].attach(this.iotlbs[0]);
    }
  }

  iotlb(asid: number): Iotlb {
    if (!Number.isInteger(asid) || asid < 0 || asid >= this.nas) throw new VdpaError("EINVAL");
    return this.iotlbs[asid];
  }
}
