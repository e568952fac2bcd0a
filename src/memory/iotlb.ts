// An IOTLB: the map from IO virtual addresses to (region, offset, permission) that a device translates
// through. One instance per address space id (ASID) of a device, or one per platform IOMMU domain.
//
// Addresses are plain numbers: every iova and length handled here is an integer below 2^53 (checked at
// map time and at translation), so number arithmetic is exact and the hot path stays off BigInt. Linux
// advertises a 64-bit IOVA range; ours is [0, 2^53 - 1], and the vDPA layer reports that as its iova range.
//
// Layout: entries live in parallel arrays sorted by first address, rebuilt on every commit. Lookups do
// a binary search over `firsts` (O(log n)); updates are O(n) and happen on the control path only.
// There is no identity or passthrough map: an empty IOTLB faults on every access.

import { MemoryError, PERM_RO, PERM_RW, type Perm } from "./errors.js";
import type { MemoryRegion } from "./region.js";

/** Highest IOVA this implementation translates. */
export const IOVA_LAST = Number.MAX_SAFE_INTEGER;

/** One mapping: [first, last] (inclusive, as Linux's vhost_iotlb_map) -> region at offset, with perm. */
export interface IotlbEntry {
  readonly first: number;
  readonly last: number;
  readonly region: MemoryRegion;
  readonly offset: number;
  readonly perm: Perm;
}

/** An interval map with atomic batches. */
export class Iotlb {
  /** Sorted by first; never mutated in place once published (readers may hold it across a batch). */
  private published: IotlbEntry[] = [];
  /** Entries being built by an open batch; null when no batch is open. */
  private pending: IotlbEntry[] | null = null;

  // The published entries as parallel arrays for the translation hot path (see AddressSpace).
  firsts: number[] = [];
  lasts: number[] = [];
  offsets: number[] = [];
  perms: number[] = [];
  regions: MemoryRegion[] = [];
  /**
   * Changes on every commit, so cached translations (ring area views) know to refresh. Values come from one
   * counter shared by all IOTLBs, so a space re-attached to another IOTLB can never see an equal number by
   * chance and keep using views of the old one.
   */
  generation = nextGeneration();

  constructor(readonly name = "iotlb") {}

  /** Number of published entries. */
  get size(): number {
    return this.published.length;
  }

  /** A copy of the published entries, in address order. */
  entries(): IotlbEntry[] {
    return this.published.slice();
  }

  /** True while a batch is open. */
  get batching(): boolean {
    return this.pending !== null;
  }

  /**
   * Opens a batch: the updates that follow become visible together at commit(). Translations keep seeing
   * the old map until then (vhost's VHOST_IOTLB_BATCH_BEGIN / BATCH_END).
   */
  begin(): void {
    if (this.pending) throw new MemoryError("IOTLB_BATCH", `${this.name}: batch already open`);
    this.pending = this.published.slice();
  }

  /** Publishes the open batch. */
  commit(): void {
    if (!this.pending) throw new MemoryError("IOTLB_BATCH", `${this.name}: commit without begin`);
    this.publish(this.pending);
    this.pending = null;
  }

  /** Drops the open batch; the published map is unchanged. */
  abort(): void {
    this.pending = null;
  }

  /**
   * Maps [iova, iova + size) to `region` at `offset` with `perm`. Whatever part of existing entries the
   * range overlaps is replaced (those entries are split). Callers that must refuse overlaps, as vhost-vdpa
   * does with EEXIST, ask overlaps() first.
   */
  map(iova: number, size: number, region: MemoryRegion, offset: number, perm: Perm): void {
    const last = checkRange(this.name, iova, size);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + size > region.size) {
      throw new MemoryError(
        "IOTLB_INVALID",
        `${this.name}: offset 0x${offset.toString(16)} + size 0x${size.toString(16)} outside region ${region.name} of 0x${region.size.toString(16)} bytes`,
      );
    }
    if (perm < PERM_RO || perm > PERM_RW || !Number.isInteger(perm)) {
      throw new MemoryError("IOTLB_INVALID", `${this.name}: bad permission ${perm}`);
    }
    this.update((entries) => {
      const kept = cut(entries, iova, last);
      kept.push({ first: iova, last, region, offset, perm });
      kept.sort((a, b) => a.first - b.first);
      return kept;
    });
  }

  /** Removes every mapping inside [iova, iova + size), splitting entries that straddle the edges. */
  unmap(iova: number, size: number): void {
    const last = checkRange(this.name, iova, size);
    this.update((entries) => cut(entries, iova, last));
  }

  /** Removes everything. */
  clear(): void {
    this.update(() => []);
  }

  /** Whether any entry (in the open batch if there is one) intersects [iova, iova + size). */
  overlaps(iova: number, size: number): boolean {
    const last = checkRange(this.name, iova, size);
    const entries = this.pending ?? this.published;
    return entries.some((e) => e.first <= last && e.last >= iova);
  }

  /**
   * Index of the published entry containing iova, or -1. Binary search for the last entry whose first
   * address is <= iova.
   */
  find(iova: number): number {
    const firsts = this.firsts;
    let lo = 0;
    let hi = firsts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (firsts[mid] <= iova) lo = mid + 1;
      else hi = mid - 1;
    }
    return hi >= 0 && this.lasts[hi] >= iova ? hi : -1;
  }

  /** The entry containing iova, or undefined. */
  lookup(iova: number): IotlbEntry | undefined {
    const i = this.find(iova);
    return i < 0 ? undefined : this.published[i];
  }

  private update(change: (entries: IotlbEntry[]) => IotlbEntry[]): void {
    if (this.pending) this.pending = change(this.pending);
    else this.publish(change(this.published.slice()));
  }

  private publish(entries: IotlbEntry[]): void {
    this.published = entries;
    this.firsts = entries.map((e) => e.first);
    this.lasts = entries.map((e) => e.last);
    this.offsets = entries.map((e) => e.offset);
    this.perms = entries.map((e) => e.perm);
    this.regions = entries.map((e) => e.region);
    this.generation = nextGeneration();
  }
}

let generations = 0;
function nextGeneration(): number {
  return ++generations;
}

function checkRange(name: string, iova: number, size: number): number {
  // iova <= IOVA_LAST - (size - 1), by subtraction: iova + size may round in a double past 2^53.
  if (
    !Number.isSafeInteger(iova) ||
    !Number.isSafeInteger(size) ||
    iova < 0 ||
    size <= 0 ||
    iova > IOVA_LAST - (size - 1)
  ) {
    throw new MemoryError("IOTLB_INVALID", `${name}: bad range iova ${iova} size ${size}`);
  }
  return iova + size - 1;
}

/** Entries with [first, last] carved out; entries crossing the edges keep their outside parts. */
function cut(entries: IotlbEntry[], first: number, last: number): IotlbEntry[] {
  const out: IotlbEntry[] = [];
  for (const e of entries) {
    if (e.last < first || e.first > last) {
      out.push(e);
      continue;
    }
    if (e.first < first) out.push({ ...e, last: first - 1 });
    if (e.last > last) out.push({ ...e, first: last + 1, offset: e.offset + (last + 1 - e.first) });
  }
  return out;
}
