// The shape shared by the device config space tables (net-config.ts, blk-config.ts).

/** One field of a device's config space: its place, and the feature bits that make it meaningful. */
export interface ConfigField {
  /** The member name in the Linux uapi struct; nested members as `geometry.cylinders`. */
  readonly name: string;
  /** Byte offset from the start of the device config space. */
  readonly offset: number;
  /** Size in bytes (1, 2, 4 or 8 for numbers, 6 for a MAC, n for padding). */
  readonly size: number;
  /**
   * Feature bits of which at least one must be offered for the field to be valid; empty means always valid.
   * The bytes are always there (the structs are fixed-size); the bits say whether the device fills them.
   */
  readonly requires: readonly number[];
  /** Padding the spec reserves: never read, devices return 0. */
  readonly reserved?: boolean;
}

/** True when `field` is valid for a device offering `features` (one of its `requires` bits is set). */
export function configFieldPresent(field: ConfigField, features: bigint): boolean {
  if (field.requires.length === 0) return true;
  return field.requires.some((bit) => ((features >> BigInt(bit)) & 1n) !== 0n);
}
