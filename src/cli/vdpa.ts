// The `vdpa` tool: iproute2 6.1's grammar, output and exit codes (vdpa/vdpa.c at tag v6.1.0), with the
// two later additions as newer iproute2 spells them (`device_features` on `dev add`, `dev set name NAME mac
// MAC`) and vdpa-ts's extensions (`dev bind`, `dev unbind`, `-d`, block `size`/`backing_file`). It sends
// the same commands with the same attributes Linux's tool sends over netlink, but to vdpad over the
// management protocol.
//
// runVdpa() is pure: words in, the bytes of stdout and stderr and the exit code out, with the daemon
// behind an `execute` function, so the golden tests run it in-process and byte for byte.

import type { Attr, Reply } from "../mgmt-protocol/codec.js";
import { ERRNO } from "../vdpa/errors.js";
import { matches, OPT, parseCommandArgs } from "./args.js";
import { scanOptions } from "./getopt.js";
import { Printer } from "./printer.js";
import {
  type DeviceDetails,
  detailsFromReply,
  printDev,
  printDevConfig,
  printMgmtdev,
  printVstats,
} from "./show.js";

/** A request as runVdpa hands it to the daemon (the protocol's id is the transport's business). */
export interface ToolRequest {
  cmd: string;
  dump: boolean;
  attrs: Attr[];
}

export type Execute = (req: ToolRequest) => Promise<Reply>;

export interface ToolResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Thrown by an Execute that cannot reach the daemon: runVdpa prints only `message` and exits 1. */
export class ToolUnreachable extends Error {
  override readonly name = "ToolUnreachable";
}

export const USAGE =
  "Usage: vdpa [ OPTIONS ] OBJECT { COMMAND | help }\n" +
  "where  OBJECT := { mgmtdev | dev }\n" +
  "       OPTIONS := { -V[ersion] | -n[o-nice-names] | -j[son] | -p[retty] }\n";

const MGMTDEV_USAGE = "Usage: vdpa mgmtdev show [ DEV ]\n";
const DEV_USAGE =
  "Usage: vdpa dev show [ DEV ]\n" +
  "       vdpa dev add name NAME mgmtdev MANAGEMENTDEV [ mac MACADDR ] [ mtu MTU ]\n" +
  "                                                    [ max_vqp MAX_VQ_PAIRS ]\n" +
  "       vdpa dev del DEV\n" +
  "Usage: vdpa dev config COMMAND [ OPTIONS ]\n" +
  "Usage: vdpa dev vstats COMMAND\n";
const DEV_CONFIG_USAGE = "Usage: vdpa dev config show [ DEV ]\n";
const DEV_VSTATS_USAGE = "Usage: vdpa dev vstats show DEV [qidx QUEUE_INDEX]\n";

/** getopt_long's tables of Linux's tool; `d`/`--details` is vdpa-ts's. `s` is accepted then refused, as there. */
const SHORT_OPTS = "Vjpshd";
const LONG_OPTS = [
  { name: "Version", short: "V" },
  { name: "json", short: "j" },
  { name: "pretty", short: "p" },
  { name: "help", short: "h" },
  { name: "details", short: "d" },
];

/** Failure of a command: iproute2 returns a negative errno; only "non-zero" reaches the exit status. */
const FAIL = 1;

class Tool {
  readonly err: string[] = [];
  readonly out: Printer;

  constructor(
    private readonly execute: Execute,
    json: boolean,
    pretty: boolean,
    private readonly details: boolean,
  ) {
    this.out = new Printer(json, pretty);
  }

  async run(argv: readonly string[]): Promise<number> {
    const [word, ...rest] = argv;
    if (word === undefined || matches(word, "help")) return this.help(USAGE);
    if (matches(word, "mgmtdev")) return this.mgmtdev(rest);
    if (matches(word, "dev")) return this.dev(rest);
    return this.fail(`Object "${word}" not found\n`);
  }

  private help(text: string, code = 0): number {
    this.err.push(text);
    return code;
  }

  private fail(text: string): number {
    this.err.push(text);
    return FAIL;
  }

  // ---- mgmtdev ----

  private async mgmtdev(argv: readonly string[]): Promise<number> {
    const [word, ...rest] = argv;
    if (word === undefined || matches(word, "help")) return this.help(MGMTDEV_USAGE);
    if (matches(word, "show") || matches(word, "list")) {
      return this.show("MGMTDEV_GET", "mgmtdev", rest, OPT.MGMTDEV_HANDLE, (a) => printMgmtdev(this.out, a));
    }
    return this.fail(`Command "${word}" not found\n`);
  }

  // ---- dev ----

  private async dev(argv: readonly string[]): Promise<number> {
    const [word, ...rest] = argv;
    if (word === undefined) return this.devShow(rest);
    if (matches(word, "help")) return this.help(DEV_USAGE);
    if (matches(word, "show") || matches(word, "list")) return this.devShow(rest);
    if (matches(word, "add")) {
      return this.change(
        "DEV_NEW",
        rest,
        OPT.VDEV_MGMTDEV_HANDLE | OPT.VDEV_NAME,
        OPT.VDEV_MAC | OPT.VDEV_MTU | OPT.MAX_VQP | OPT.VDEV_FEATURES | OPT.BLK_SIZE | OPT.BLK_BACKING_FILE,
      );
    }
    if (matches(word, "del")) return this.change("DEV_DEL", rest, OPT.VDEV_HANDLE, 0);
    if (matches(word, "config")) return this.devConfig(rest);
    if (word === "vstats") return this.devVstats(rest);
    if (word === "set") return this.change("DEV_ATTR_SET", rest, OPT.VDEV_NAME, OPT.VDEV_MAC);
    if (word === "bind") return this.change("VDPATS_DEV_BIND", rest, OPT.VDEV_HANDLE | OPT.DRIVER, 0);
    if (word === "unbind") return this.change("VDPATS_DEV_UNBIND", rest, OPT.VDEV_HANDLE, 0);
    return this.fail(`Command "${word}" not found\n`);
  }

  private async devShow(argv: readonly string[]): Promise<number> {
    let details: Map<string, DeviceDetails> | undefined;
    if (this.details) {
      details = new Map();
      const map = details;
      const parsed = argv.length > 0 ? parseCommandArgs(argv, OPT.VDEV_HANDLE, 0) : { attrs: [] };
      if ("error" in parsed) return this.fail(parsed.error);
      const reply = await this.execute({
        cmd: "VDPATS_DEV_DETAILS_GET",
        dump: argv.length === 0,
        attrs: parsed.attrs,
      });
      if (reply.ok) {
        for (const r of reply.replies) {
          const [name, d] = detailsFromReply(r);
          map.set(name, d);
        }
      }
    }
    return this.show("DEV_GET", "dev", argv, OPT.VDEV_HANDLE, (a) => {
      const name = a.find((x) => x.name === "DEV_NAME")?.value;
      printDev(this.out, a, typeof name === "string" ? details?.get(name) : undefined);
    });
  }

  private async devConfig(argv: readonly string[]): Promise<number> {
    const [word, ...rest] = argv;
    const show = (args: readonly string[]): Promise<number> =>
      this.show("DEV_CONFIG_GET", "config", args, OPT.VDEV_HANDLE, (a) => printDevConfig(this.out, a));
    if (word === undefined) return show([]);
    if (matches(word, "help")) return this.help(DEV_CONFIG_USAGE);
    if (matches(word, "show")) return show(rest);
    return this.fail(`Command "${word}" not found\n`);
  }

  private async devVstats(argv: readonly string[]): Promise<number> {
    const [word, ...rest] = argv;
    if (word === undefined) return this.help(DEV_VSTATS_USAGE, FAIL);
    if (word === "help") return this.help(DEV_VSTATS_USAGE);
    if (word !== "show") return this.fail(`Command "${word}" not found\n`);
    if (rest.length !== 1 && rest.length !== 3) return this.help(DEV_VSTATS_USAGE, FAIL);
    const parsed = parseCommandArgs(rest, OPT.VDEV_HANDLE, OPT.QUEUE_INDEX);
    if ("error" in parsed) return this.fail(parsed.error);
    this.out.sectionStart("vstats");
    await this.exchange({ cmd: "DEV_VSTATS_GET", dump: false, attrs: parsed.attrs }, (a) =>
      printVstats(this.out, a),
    );
    this.out.sectionEnd();
    // 6.1 returns 0 here whatever the kernel answered (fixed in 6.2): the error is printed, the status is 0.
    return 0;
  }

  // ---- the two shapes of command: show (dump or one object) and change (ack) ----

  private async show(
    cmd: string,
    section: string,
    argv: readonly string[],
    handle: number,
    print: (attrs: Attr[]) => void,
  ): Promise<number> {
    let attrs: Attr[] = [];
    if (argv.length > 0) {
      const parsed = parseCommandArgs(argv, handle, 0);
      if ("error" in parsed) return this.fail(parsed.error);
      attrs = parsed.attrs;
    }
    this.out.sectionStart(section);
    const ok = await this.exchange({ cmd, dump: argv.length === 0, attrs }, print);
    this.out.sectionEnd();
    return ok ? 0 : FAIL;
  }

  private async change(
    cmd: string,
    argv: readonly string[],
    required: number,
    optional: number,
  ): Promise<number> {
    const parsed = parseCommandArgs(argv, required, optional);
    if ("error" in parsed) return this.fail(parsed.error);
    return (await this.exchange({ cmd, dump: false, attrs: parsed.attrs })) ? 0 : FAIL;
  }

  /**
   * mnlu_gen_socket_sndrcv: each reply message to `print`; an extack on success as "Warning: ..."; an
   * error as "Error: <extack>." (when there is one) then "kernel answers: <strerror>".
   */
  private async exchange(req: ToolRequest, print?: (attrs: Attr[]) => void): Promise<boolean> {
    const reply = await this.execute(req);
    if (reply.ok) {
      if (reply.warning) this.err.push(extackLine("Warning", `vdpa: ${reply.warning}`));
      if (print) for (const r of reply.replies) print(r);
      return true;
    }
    if (reply.extack) this.err.push(extackLine("Error", `${reply.policy ? "" : "vdpa: "}${reply.extack}`));
    const known = ERRNO[reply.errno as keyof typeof ERRNO];
    this.err.push(`kernel answers: ${known ? known.text : reply.errno}\n`);
    return false;
  }
}

/** print_ext_ack_msg: the message gets a final "." unless it has one. */
function extackLine(kind: "Error" | "Warning", msg: string): string {
  return `${kind}: ${msg}${msg.endsWith(".") ? "" : "."}\n`;
}

/** Runs one `vdpa` command line (argv without the program name). */
export async function runVdpa(
  argv: readonly string[],
  execute: Execute,
  version: string,
): Promise<ToolResult> {
  let json = false;
  let pretty = false;
  let details = false;
  const scan = scanOptions(argv, SHORT_OPTS, LONG_OPTS);
  for (const ev of scan.events) {
    if (ev.kind === "error") return { stdout: "", stderr: `${ev.message}Unknown option.\n${USAGE}`, code: 1 };
    switch (ev.short) {
      case "V":
        return { stdout: `vdpa utility, vdpa-ts-${version}\n`, stderr: "", code: 0 };
      case "h":
        return { stdout: "", stderr: USAGE, code: 0 };
      case "j":
        json = true;
        break;
      case "p":
        pretty = true;
        break;
      case "d":
        details = true;
        break;
      default:
        return { stdout: "", stderr: `Unknown option.\n${USAGE}`, code: 1 };
    }
  }
  const tool = new Tool(execute, json, pretty, details);
  try {
    const code = await tool.run(scan.operands);
    return { stdout: tool.out.finish(), stderr: tool.err.join(""), code };
  } catch (err) {
    if (err instanceof ToolUnreachable) return { stdout: "", stderr: `${err.message}\n`, code: 1 };
    throw err;
  }
}
