// Reading a shell transcript of Linux's `vdpa` tool (test/fixtures/linux-vdpa-cli.txt): its entries in
// order, a cursor that replays them strictly in that order (every entry is either replayed or skipped with
// a stated reason), and parsers for what iproute2 6.1's `vdpa` prints in text mode.
//
// Transcript format (see the fixture's header): "$ CMD", then stdout lines, then stderr lines prefixed
// "[stderr] ", then "[rc=N]". Section titles ("=== ... ===") and comment lines ("#") sit between entries.

import { readFileSync } from "node:fs";

/** One command of the transcript with what it printed. */
export interface TranscriptEntry {
  /** Position in the transcript (0 = first command). */
  readonly index: number;
  /** The section title the command appears under. */
  readonly section: string;
  /** The command line, without "$ ". */
  readonly cmd: string;
  readonly stdout: readonly string[];
  readonly stderr: readonly string[];
  readonly rc: number;
}

/**
 * Reads a file of test/fixtures. Compiled helpers live in dist/test/support/, so the repository root is
 * three levels up from this module (the same on a developer's tree and on a clean CI clone).
 */
export function readFixture(name: string): string {
  return readFileSync(new URL(`../../../test/fixtures/${name}`, import.meta.url), "utf8");
}

/** Splits a transcript into its entries; throws on anything that does not follow the format. */
export function parseTranscript(text: string): TranscriptEntry[] {
  const entries: TranscriptEntry[] = [];
  let section = "";
  let open: { cmd: string; stdout: string[]; stderr: string[] } | null = null;
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  for (const [n, line] of lines.entries()) {
    if (open) {
      const rc = /^\[rc=(\d+)\]$/.exec(line);
      if (rc) {
        entries.push({ index: entries.length, section, ...open, rc: Number(rc[1]) });
        open = null;
      } else if (line.startsWith("[stderr] ")) {
        open.stderr.push(line.slice("[stderr] ".length));
      } else {
        open.stdout.push(line);
      }
      continue;
    }
    if (line.startsWith("$ ")) {
      open = { cmd: line.slice(2), stdout: [], stderr: [] };
      continue;
    }
    const title = /^=+ (.*?) =+$/.exec(line);
    if (title) section = title[1];
    else if (line !== "" && !line.startsWith("#")) {
      throw new Error(`transcript line ${n + 1} is outside any command: ${JSON.stringify(line)}`);
    }
  }
  if (open) throw new Error(`transcript ends inside "${open.cmd}" (no [rc=N] line)`);
  return entries;
}

/** A reason to leave transcript entries out of a replay, for the commands `match` selects. */
export interface SkipRule {
  readonly match: RegExp;
  readonly reason: string;
}

/**
 * Walks a transcript in order. next(cmd) returns the next entry, which must be `cmd`; entries before it
 * that a skip rule covers are passed over (and recorded with their reason); any other entry in between
 * means the replay left a command out, which is an error. So a replay either covers a command or says why
 * not, and cannot reorder commands.
 */
export class TranscriptReplay {
  private cursor = 0;
  readonly replayed: TranscriptEntry[] = [];
  readonly skipped: { entry: TranscriptEntry; reason: string }[] = [];

  constructor(
    readonly entries: readonly TranscriptEntry[],
    readonly skipRules: readonly SkipRule[],
  ) {}

  next(cmd: string): TranscriptEntry {
    const passed: { entry: TranscriptEntry; reason: string }[] = [];
    for (let at = this.cursor; at < this.entries.length; at++) {
      const entry = this.entries[at];
      if (entry.cmd === cmd) {
        this.cursor = at + 1;
        this.skipped.push(...passed);
        this.replayed.push(entry);
        return entry;
      }
      const rule = this.skipRules.find((r) => r.match.test(entry.cmd));
      if (!rule) {
        throw new Error(
          `transcript entry ${entry.index} "${entry.cmd}" comes before "${cmd}" and is not replayed`,
        );
      }
      passed.push({ entry, reason: rule.reason });
    }
    // The cursor stays where it was, so the tests after this one still line up.
    throw new Error(`"${cmd}" is not in the rest of the transcript`);
  }

  /**
   * next() for each command in turn. Tests take all their entries first, so an assertion that fails later
   * in a test does not leave the cursor behind for the tests after it.
   */
  take(...cmds: string[]): TranscriptEntry[] {
    return cmds.map((cmd) => this.next(cmd));
  }

  /** Passes over the skippable entries left at the end; returns the entries neither replayed nor skipped. */
  finish(): TranscriptEntry[] {
    const left: TranscriptEntry[] = [];
    for (; this.cursor < this.entries.length; this.cursor++) {
      const entry = this.entries[this.cursor];
      const rule = this.skipRules.find((r) => r.match.test(entry.cmd));
      if (rule) this.skipped.push({ entry, reason: rule.reason });
      else left.push(entry);
    }
    return left;
  }

  /** The last entry running `cmd` before `entry` (to read a skipped command's output as an input). */
  lastBefore(entry: TranscriptEntry, cmd: string): TranscriptEntry {
    for (let i = entry.index - 1; i >= 0; i--) if (this.entries[i].cmd === cmd) return this.entries[i];
    throw new Error(`no "${cmd}" before transcript entry ${entry.index}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// iproute2 6.1 `vdpa` text output
// ---------------------------------------------------------------------------------------------------------

/**
 * A printed value as iproute2's JSON output holds it (a feature list holds a bare number for an unnamed bit,
 * where text mode prints "bit_N").
 */
export type PrintedValue = string | number | boolean | (string | number)[];
/** Printed fields of each object (device or management device), by handle, in print order. */
export type PrintedObjects = Record<string, Record<string, PrintedValue>>;

export interface TextParseOptions {
  /** Keys whose tokens form a list ("supported_classes net block", "dev_features" with none). */
  listKeys?: ReadonlySet<string>;
  /**
   * `vdpa dev vstats show`: after "queue_type TYPE" come counters whose names have spaces ("rx packets 0"):
   * a name runs up to the next number.
   */
  counters?: boolean;
}

function scalar(token: string): string | number | boolean {
  if (/^\d+$/.test(token)) return Number(token);
  if (token === "true" || token === "false") return token === "true";
  return token;
}

/**
 * Parses text-mode output into the shape of the `-j` output: a line "HANDLE: k v k v ..." starts an object
 * (pairs on the same line), an indented line "  key tok tok ..." adds one field to the current object.
 */
export function parseIproute2Text(lines: readonly string[], opts: TextParseOptions = {}): PrintedObjects {
  const out: PrintedObjects = {};
  let current: Record<string, PrintedValue> | null = null;
  for (const line of lines) {
    const head = /^(\S+?):(?:\s+(.*))?$/.exec(line);
    if (head) {
      current = {};
      out[head[1]] = current;
      const tokens = (head[2] ?? "").split(/\s+/).filter((t) => t !== "");
      if (opts.counters) parseCounters(tokens, current);
      else {
        if (tokens.length % 2 !== 0) throw new Error(`odd number of tokens in ${JSON.stringify(line)}`);
        for (let i = 0; i < tokens.length; i += 2) current[tokens[i]] = scalar(tokens[i + 1]);
      }
      continue;
    }
    const [key, ...tokens] = line.trim().split(/\s+/);
    if (!current || !key) throw new Error(`unexpected line ${JSON.stringify(line)}`);
    if (opts.listKeys?.has(key)) current[key] = tokens;
    else if (tokens.length === 1) current[key] = scalar(tokens[0]);
    else throw new Error(`field ${key} has ${tokens.length} values in ${JSON.stringify(line)}`);
  }
  return out;
}

function parseCounters(tokens: string[], into: Record<string, PrintedValue>): void {
  let i = 0;
  if (tokens[0] === "queue_type") {
    into.queue_type = tokens[1];
    i = 2;
  }
  let words: string[] = [];
  for (; i < tokens.length; i++) {
    if (/^\d+$/.test(tokens[i]) && words.length > 0) {
      into[words.join(" ")] = Number(tokens[i]);
      words = [];
    } else {
      words.push(tokens[i]);
    }
  }
  if (words.length > 0) throw new Error(`counter without a value: ${words.join(" ")}`);
}

/** The RX and TX rows of `ip -s link show` (bytes and packets). */
export function parseIpLinkStats(
  lines: readonly string[],
): Record<"rx" | "tx", { bytes: number; packets: number }> {
  const row = (label: string) => {
    const at = lines.findIndex((l) => l.trim().startsWith(`${label}:`));
    if (at < 0 || at + 1 >= lines.length) throw new Error(`no ${label} counters`);
    const [bytes, packets] = lines[at + 1].trim().split(/\s+/).map(Number);
    return { bytes, packets };
  };
  return { rx: row("RX"), tx: row("TX") };
}
