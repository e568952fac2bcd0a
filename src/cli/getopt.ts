// The option scan of iproute2's `vdpa` main(): glibc getopt_long, which permutes (options may follow the
// command words: `vdpa dev show -j` is `vdpa -j dev show`), accepts clusters (`-jp`), unique prefixes of
// long options (`--js`), and stops at `--`. Its diagnostics are glibc's, printed before the tool's own
// "Unknown option." line; they are compatibility facts, reproduced as glibc 2.36 prints them.

export interface LongOption {
  readonly name: string;
  /** The short option this long one stands for. */
  readonly short: string;
}

export type OptionEvent =
  | { kind: "option"; short: string }
  /** getopt's '?': `message` is what glibc printed to stderr. */
  | { kind: "error"; message: string };

export interface ScanResult {
  /** Options in the order getopt returns them. */
  events: OptionEvent[];
  /** The words that are not options, in order. */
  operands: string[];
}

/**
 * Scans argv (without the program name) as getopt_long(argc, argv, shortOpts, longOpts) would, none of
 * the options taking an argument. The caller acts on events in order and may stop at any of them.
 */
export function scanOptions(
  argv: readonly string[],
  shortOpts: string,
  longOpts: readonly LongOption[],
  prog = "vdpa",
): ScanResult {
  const events: OptionEvent[] = [];
  const operands: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--") {
      operands.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      events.push(longOption(arg.slice(2), longOpts, prog));
      continue;
    }
    if (arg.length < 2 || arg[0] !== "-") {
      operands.push(arg);
      continue;
    }
    for (const c of arg.slice(1)) {
      events.push(
        shortOpts.includes(c) && c !== ":"
          ? { kind: "option", short: c }
          : { kind: "error", message: `${prog}: invalid option -- '${c}'\n` },
      );
    }
  }
  return { events, operands };
}

function longOption(body: string, longOpts: readonly LongOption[], prog: string): OptionEvent {
  const eq = body.indexOf("=");
  const name = eq < 0 ? body : body.slice(0, eq);
  const exact = longOpts.find((o) => o.name === name);
  const candidates = exact ? [exact] : longOpts.filter((o) => o.name.startsWith(name));
  if (candidates.length === 0) {
    return { kind: "error", message: `${prog}: unrecognized option '--${body}'\n` };
  }
  if (candidates.length > 1) {
    const list = candidates.map((o) => ` '--${o.name}'`).join("");
    return { kind: "error", message: `${prog}: option '--${name}' is ambiguous; possibilities:${list}\n` };
  }
  const opt = candidates[0];
  if (eq >= 0) {
    return { kind: "error", message: `${prog}: option '--${opt.name}' doesn't allow an argument\n` };
  }
  return { kind: "option", short: opt.short };
}
