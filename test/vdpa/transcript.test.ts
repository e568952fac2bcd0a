// Linux's own answers, replayed: test/fixtures/linux-vdpa-cli.txt is a session of iproute2 6.1's `vdpa` tool
// against Linux 6.12 with vdpa_sim loaded (a copy of ../shared/reference/linux-vdpa-cli.txt). This file
// registers the real simulator management devices (vdpasim_net, vdpasim_blk) on a VdpaBus where
// vhost_vdpa is the first bus driver, as on Linux, then walks the transcript in order: every `vdpa`
// command becomes the netlink request iproute2 6.1 sends (VdpaManagement.run), and what the tool printed
// is rebuilt from our reply attributes and compared with the transcript, text and JSON alike. Error
// answers are compared as errno plus extack ("Error: vdpa: ...", "kernel answers: ..."). The sysfs steps
// (bind, unbind, driver links, driver_override) are replayed on the bus; what the guest did once a
// device was bound to virtio_vdpa is done by a stand-in guest driver (test/support/guest-virtio-vdpa.ts).
//
// Expected outputs are read from the transcript at run time, never copied into this file. What the
// transcript shows that does not come from the vDPA layer (the tool's help texts, VDUSE, the guest's
// network and block stacks) is listed in SKIPS with the reason; the replay refuses to pass over any other
// command, so a new command in the transcript must be replayed or explained.
//
// The rebuilt output follows iproute2 6.1 (vdpa/vdpa.c, tag v6.1.0): which attribute it prints under which
// key, in which order, and with which names (featureNamesIproute2, DEVICE_IDS' iproute2Class/iproute2Type).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  VDPASIM_NET_RXQ,
  VDPASIM_NET_TXQ,
  type VdpaSim,
  vdpasimBlkMgmtDev,
  vdpasimNetMgmtDev,
} from "../../src/devices/sim/index.js";
import {
  DEVICE_IDS,
  featureBits,
  featureNamesIproute2,
  featuresFromNames,
  featureTokensIproute2Json,
  hasFeature,
  mgmtdevFeatureDeviceId,
  VIRTIO_BLK_CONFIG,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_ID_BLOCK,
  VIRTIO_ID_NET,
  VIRTIO_NET_CONFIG,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_HDR_V1_SIZE,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
} from "../../src/spec/index.js";
import type { VdpaDevice } from "../../src/vdpa/device.js";
import { ERRNO, VdpaError } from "../../src/vdpa/errors.js";
import {
  type Attr,
  type AttrList,
  extackPrefix,
  getAttr,
  type RunResult,
  type VdpaCmdName,
  VdpaManagement,
} from "../../src/vdpa/mgmt.js";
import { VdpaBus } from "../../src/vdpa/vdpa-bus.js";
import { VhostVdpaDriver } from "../../src/vhost/vhost-vdpa.js";
import { GuestVirtioVdpaDriver } from "../support/guest-virtio-vdpa.js";
import {
  type PrintedObjects,
  type PrintedValue,
  parseIpLinkStats,
  parseIproute2Text,
  parseTranscript,
  readFixture,
  type SkipRule,
  type TextParseOptions,
  type TranscriptEntry,
  TranscriptReplay,
} from "../support/transcript.js";

const ENTRIES = parseTranscript(readFixture("linux-vdpa-cli.txt"));

/** What the transcript shows that does not reach the vDPA layer, and why it is not replayed. */
const SKIPS: SkipRule[] = [
  {
    match: /^vdpa (\S+ )*help$/,
    reason: "usage text the tool prints by itself (to stderr, rc 0): no netlink request",
  },
  {
    match: /^vdpa mgmtdev show vduse$/,
    reason: "vduse is the management device of Linux's VDUSE module, which vdpa-ts does not have",
  },
  { match: /^ls -l \/(dev|sys\/class)\/vduse$/, reason: "VDUSE's control device and class: not modelled" },
  {
    match: /^\/sbin\/ip /,
    reason: "the guest's network stack (netdev flags, qdisc, addresses, its own counters)",
  },
  { match: /^readlink -f \/sys\/class\/net\//, reason: "sysfs topology of the guest's netdev" },
  {
    match: /^ping6 /,
    reason: "IPv6 traffic made by the guest kernel; its totals are used in the vstats test below",
  },
  { match: /^ls \/sys\/block$/, reason: "the guest's block layer names the disk (vda)" },
  {
    match: /^dd /,
    reason: "guest block I/O through the page cache (vdpasim_blk reads: test/devices/sim/blk.test.ts)",
  },
];

// ---------------------------------------------------------------------------------------------------------
// From a `vdpa` command line to the netlink request iproute2 6.1 sends
// ---------------------------------------------------------------------------------------------------------

/** The top-level key of each object kind in `vdpa -j` output. */
type Kind = "mgmtdev" | "dev" | "config" | "vstats";

interface VdpaRequest {
  cmd: VdpaCmdName;
  req: Attr[];
  dump: boolean;
  json: boolean;
  /** What the reply prints as; null for commands answered by a bare ack (dev add, dev del). */
  kind: Kind | null;
}

const attr = (name: Attr["name"], value: Attr["value"]): Attr => ({ name, value });

function parseMac(text: string): Uint8Array {
  const bytes = text.split(":").map((h) => Number.parseInt(h, 16));
  assert.equal(bytes.length, 6, `MAC ${text}`);
  return Uint8Array.from(bytes);
}

/** Management device handle "[BUS/]NAME" as vdpa_opts_put sends it. */
function mgmtdevHandle(handle: string): Attr[] {
  const slash = handle.indexOf("/");
  if (slash < 0) return [attr("MGMTDEV_DEV_NAME", handle)];
  return [
    attr("MGMTDEV_BUS_NAME", handle.slice(0, slash)),
    attr("MGMTDEV_DEV_NAME", handle.slice(slash + 1)),
  ];
}

/**
 * iproute2 6.1's request for a `vdpa` command: `show` without a name is a dump; attributes go in
 * vdpa_opts_put's order (management device, device name, mac, mtu, max_vqp, queue index).
 */
function toRequest(cmdline: string): VdpaRequest {
  const argv = cmdline.split(" ");
  assert.equal(argv.shift(), "vdpa", cmdline);
  let json = false;
  while (argv[0]?.startsWith("-")) {
    const opt = argv.shift()!;
    assert.match(opt, /^-[jp]+$/, `option ${opt} of ${cmdline}`);
    if (opt.includes("j")) json = true;
  }
  const [object, verb, ...rest] = argv;
  const named = (cmd: VdpaCmdName, kind: Kind, name: string | undefined): VdpaRequest => ({
    cmd,
    req: name === undefined ? [] : [attr("DEV_NAME", name)],
    dump: name === undefined,
    json,
    kind,
  });
  if (object === "mgmtdev" && verb === "show") {
    return {
      cmd: "MGMTDEV_GET",
      req: rest[0] ? mgmtdevHandle(rest[0]) : [],
      dump: !rest[0],
      json,
      kind: "mgmtdev",
    };
  }
  if (object === "dev" && verb === "show") return named("DEV_GET", "dev", rest[0]);
  if (object === "dev" && verb === "config" && rest[0] === "show")
    return named("DEV_CONFIG_GET", "config", rest[1]);
  if (object === "dev" && verb === "vstats" && rest[0] === "show") {
    assert.equal(rest[2], "qidx", cmdline);
    const req = [attr("DEV_NAME", rest[1]), attr("DEV_QUEUE_INDEX", Number(rest[3]))];
    return { cmd: "DEV_VSTATS_GET", req, dump: false, json, kind: "vstats" };
  }
  if (object === "dev" && verb === "del") return { ...named("DEV_DEL", "dev", rest[0]), kind: null };
  if (object === "dev" && verb === "add") {
    const opts = new Map<string, string>();
    for (let i = 0; i < rest.length; i += 2) opts.set(rest[i], rest[i + 1]);
    const known = ["name", "mgmtdev", "mac", "mtu", "max_vqp"];
    assert.deepEqual(
      [...opts.keys()].filter((k) => !known.includes(k)),
      [],
      `options of ${cmdline}`,
    );
    const req = [...mgmtdevHandle(opts.get("mgmtdev")!), attr("DEV_NAME", opts.get("name")!)];
    if (opts.has("mac")) req.push(attr("DEV_NET_CFG_MACADDR", parseMac(opts.get("mac")!)));
    if (opts.has("mtu")) req.push(attr("DEV_NET_CFG_MTU", Number(opts.get("mtu"))));
    if (opts.has("max_vqp")) req.push(attr("DEV_NET_CFG_MAX_VQP", Number(opts.get("max_vqp"))));
    return { cmd: "DEV_NEW", req, dump: false, json, kind: null };
  }
  throw new Error(`no netlink request known for: ${cmdline}`);
}

// ---------------------------------------------------------------------------------------------------------
// From reply attributes to what iproute2 6.1 prints (the -j shape; text mode prints the same fields)
// ---------------------------------------------------------------------------------------------------------

type Fields = Record<string, PrintedValue>;

/** JSON keys keep iproute2's trailing spaces ("link "); text mode shows the words only. */
const keyFor = (key: string, json: boolean): string => (json ? key : key.trim());

function featureTokens(features: bigint, deviceId: number, json: boolean): (string | number)[] {
  return json ? featureTokensIproute2Json(features, deviceId) : featureNamesIproute2(features, deviceId);
}

function deviceIdInfo(id: number) {
  const info = DEVICE_IDS.find((d) => d.id === id);
  assert.ok(info, `device id ${id}`);
  return info;
}

/** pr_out_mgmtdev_show: supported_classes, max_supported_vqs, dev_features, each when its attribute is there. */
function mgmtdevFields(reply: AttrList, json: boolean): [string, Fields] {
  const bus = getAttr(reply, "MGMTDEV_BUS_NAME") as string | undefined;
  const name = getAttr(reply, "MGMTDEV_DEV_NAME") as string;
  const f: Fields = {};
  const classes = getAttr(reply, "MGMTDEV_SUPPORTED_CLASSES") as bigint | undefined;
  if (classes !== undefined) {
    f.supported_classes = featureBits(classes).map((id) => deviceIdInfo(id).iproute2Class ?? `${id}`);
  }
  const maxVqs = getAttr(reply, "DEV_MGMTDEV_MAX_VQS") as number | undefined;
  if (maxVqs !== undefined) f.max_supported_vqs = maxVqs;
  const features = getAttr(reply, "DEV_SUPPORTED_FEATURES") as bigint | undefined;
  if (features !== undefined) {
    f.dev_features = featureTokens(features, mgmtdevFeatureDeviceId(classes ?? 0n), json);
  }
  return [bus === undefined ? name : `${bus}/${name}`, f];
}

/** pr_out_dev: type and mgmtdev always; vendor_id, max_vqs, max_vq_size when sent (6.1 has no min_vq_size). */
function devFields(reply: AttrList): [string, Fields] {
  const bus = getAttr(reply, "MGMTDEV_BUS_NAME") as string | undefined;
  const mdev = getAttr(reply, "MGMTDEV_DEV_NAME") as string;
  const f: Fields = {
    type: deviceIdInfo(getAttr(reply, "DEV_ID") as number).iproute2Type ?? "<unknown type>",
    mgmtdev: bus === undefined ? mdev : `${bus}/${mdev}`,
  };
  const put = (key: string, name: Attr["name"]) => {
    const v = getAttr(reply, name);
    if (v !== undefined) f[key] = v as number;
  };
  put("vendor_id", "DEV_VENDOR_ID");
  put("max_vqs", "DEV_MAX_VQS");
  put("max_vq_size", "DEV_MAX_VQ_SIZE");
  return [getAttr(reply, "DEV_NAME") as string, f];
}

function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join(":");
}

/**
 * pr_out_dev_net_config (6.1 prints the config of net devices only): mac, link and link_announce from the
 * status, max_vqp, mtu, negotiated_features named by the device id.
 */
function configFields(reply: AttrList, json: boolean): [string, Fields] {
  const name = getAttr(reply, "DEV_NAME") as string;
  const id = getAttr(reply, "DEV_ID") as number;
  const f: Fields = {};
  if (id !== VIRTIO_ID_NET) return [name, f];
  const mac = getAttr(reply, "DEV_NET_CFG_MACADDR") as Uint8Array | undefined;
  if (mac !== undefined) f.mac = formatMac(mac);
  const status = getAttr(reply, "DEV_NET_STATUS") as number | undefined;
  if (status !== undefined) {
    f[keyFor("link ", json)] = status & VIRTIO_NET_S_LINK_UP ? "up" : "down";
    f[keyFor("link_announce ", json)] = (status & VIRTIO_NET_S_ANNOUNCE) !== 0;
  }
  const maxVqp = getAttr(reply, "DEV_NET_CFG_MAX_VQP") as number | undefined;
  if (maxVqp !== undefined) f.max_vqp = maxVqp;
  const mtu = getAttr(reply, "DEV_NET_CFG_MTU") as number | undefined;
  if (mtu !== undefined) f.mtu = mtu;
  const negotiated = getAttr(reply, "DEV_NEGOTIATED_FEATURES") as bigint | undefined;
  if (negotiated !== undefined) f.negotiated_features = featureTokens(negotiated, id, json);
  return [name, f];
}

/**
 * pr_out_dev_net_vstats walks the attributes in order: MAX_VQP (default 0) and NEGOTIATED_FEATURES must
 * come before QUEUE_INDEX, which prints queue_type ("control_vq" when CTRL_VQ was negotiated and the index
 * is 2 * max_vqp; so without MQ, where the kernel sends no MAX_VQP, queue 0 (rx) is labelled control_vq, as
 * the transcript shows); then each vendor name/value pair.
 */
function vstatsFields(reply: AttrList): [string, Fields] {
  const f: Fields = {};
  if (getAttr(reply, "DEV_ID") !== VIRTIO_ID_NET) return [getAttr(reply, "DEV_NAME") as string, f];
  let maxVqp = 0;
  let features = 0n;
  let stat = "";
  for (const a of reply) {
    if (a.name === "DEV_NET_CFG_MAX_VQP") maxVqp = a.value as number;
    else if (a.name === "DEV_NEGOTIATED_FEATURES") features = a.value as bigint;
    else if (a.name === "DEV_QUEUE_INDEX") {
      const q = a.value as number;
      const ctrl = hasFeature(features, VIRTIO_NET_F_CTRL_VQ) && q === 2 * maxVqp;
      f.queue_type = ctrl ? "control_vq" : q & 1 ? "tx" : "rx";
    } else if (a.name === "DEV_VENDOR_ATTR_NAME") stat = a.value as string;
    else if (a.name === "DEV_VENDOR_ATTR_VALUE") f[stat] = Number(a.value);
  }
  return [getAttr(reply, "DEV_NAME") as string, f];
}

function printedObjects(kind: Kind, replies: readonly AttrList[], json: boolean): PrintedObjects {
  const out: PrintedObjects = {};
  for (const reply of replies) {
    const [handle, fields] =
      kind === "mgmtdev"
        ? mgmtdevFields(reply, json)
        : kind === "dev"
          ? devFields(reply)
          : kind === "config"
            ? configFields(reply, json)
            : vstatsFields(reply);
    out[handle] = fields;
  }
  return out;
}

const TEXT_OPTIONS: Record<Kind, TextParseOptions> = {
  mgmtdev: { listKeys: new Set(["supported_classes", "dev_features"]) },
  dev: {},
  config: { listKeys: new Set(["negotiated_features"]) },
  vstats: { counters: true },
};

/** What the transcript printed for `entry`, in the -j shape. */
function printedByLinux(entry: TranscriptEntry, kind: Kind, json: boolean): PrintedObjects {
  if (!json) return parseIproute2Text(entry.stdout, TEXT_OPTIONS[kind]);
  const doc = JSON.parse(entry.stdout.join("\n")) as Record<string, PrintedObjects>;
  assert.deepEqual(Object.keys(doc), [kind], `${entry.cmd}: top-level key`);
  return doc[kind];
}

// ---------------------------------------------------------------------------------------------------------
// The system under test and the replay helpers
// ---------------------------------------------------------------------------------------------------------

const bus = new VdpaBus();
const vhost = new VhostVdpaDriver();
const guest = new GuestVirtioVdpaDriver();
// Linux registers vhost_vdpa before virtio_vdpa, so a new device binds to vhost_vdpa.
bus.registerDriver(vhost);
bus.registerDriver(guest);
const mgmt = new VdpaManagement(bus);
mgmt.registerMgmtDev(vdpasimNetMgmtDev());
mgmt.registerMgmtDev(vdpasimBlkMgmtDev());

const replay = new TranscriptReplay(ENTRIES, SKIPS);

interface ReplayOptions {
  /** Objects Linux lists that vdpa-ts does not have (the vduse management device). */
  absent?: string[];
}

/**
 * Runs the request of a `vdpa` entry on `on` and checks the answer against the transcript: the printed
 * objects in order, each with its fields in print order; an error as errno and extack; an ack as no output.
 * Returns the replies.
 */
function replayVdpa(entry: TranscriptEntry, opts: ReplayOptions = {}, on = mgmt): Attr[][] {
  const r = toRequest(entry.cmd);
  let result: RunResult;
  try {
    result = on.run(r.cmd, r.req, { dump: r.dump });
  } catch (err) {
    if (!(err instanceof VdpaError)) throw err;
    assert.notEqual(entry.rc, 0, `${entry.cmd}: Linux succeeded where we answered ${err.message}`);
    assertLinuxError(entry, err);
    return [];
  }
  assert.equal(entry.rc, 0, `${entry.cmd}: Linux failed (${entry.stderr.join(" / ")}) where we succeeded`);
  assert.deepEqual(result.warning === undefined ? [] : [`Warning: vdpa: ${result.warning}.`], entry.stderr);
  if (r.kind === null) {
    assert.deepEqual(entry.stdout, [], `${entry.cmd} prints nothing`);
    return result.replies;
  }
  const expected = printedByLinux(entry, r.kind, r.json);
  for (const handle of opts.absent ?? []) {
    assert.ok(handle in expected, `${entry.cmd}: Linux lists ${handle}`);
    delete expected[handle];
  }
  const ours = printedObjects(r.kind, result.replies, r.json);
  assert.deepEqual(Object.keys(ours), Object.keys(expected), `${entry.cmd}: objects, in order`);
  for (const handle of Object.keys(expected)) {
    assert.deepEqual(
      Object.entries(ours[handle]),
      Object.entries(expected[handle]),
      `${entry.cmd}: ${handle}, fields in order`,
    );
  }
  return result.replies;
}

/** iproute2 prints "Error: <prefix><extack>." when the kernel sent one, then "kernel answers: <strerror>". */
function assertLinuxError(entry: TranscriptEntry, err: VdpaError): void {
  const ours = err.extack === undefined ? [] : [`Error: ${extackPrefix(err)}${err.extack}.`];
  ours.push(`kernel answers: ${ERRNO[err.code].text}`);
  assert.deepEqual(ours, entry.stderr, `${entry.cmd}: ${err.message}`);
  assert.equal(entry.rc, 1);
  assert.deepEqual(entry.stdout, []);
}

function device(name: string): VdpaDevice {
  const dev = bus.device(name);
  assert.ok(dev, `${name} is on the bus`);
  return dev;
}

/** The children of a device's sysfs directory besides the attributes every vdpa device has. */
function sysfsChildren(listing: readonly string[]): string[] {
  const common = new Set(["driver", "driver_override", "power", "subsystem", "uevent"]);
  return listing.filter((name) => !common.has(name));
}

/** `ls /sys/bus/vdpa/devices/DEV/`: its vhost-vdpa-N child exists exactly while vhost_vdpa holds it. */
function replayDeviceDir(entry: TranscriptEntry): string[] {
  const name = /^ls \/sys\/bus\/vdpa\/devices\/(\S+)\/$/.exec(entry.cmd)?.[1];
  assert.ok(name, entry.cmd);
  const dev = device(name);
  const children = sysfsChildren(entry.stdout);
  const vhostChildren = children.filter((c) => c.startsWith("vhost-vdpa-"));
  assert.deepEqual(vhostChildren, vhost.get(dev) ? [`vhost-vdpa-${dev.index}`] : []);
  return children;
}

/** `readlink /sys/bus/vdpa/devices/DEV/driver`: the driver the device is bound to. */
function replayDriverLink(entry: TranscriptEntry): void {
  const name = /^readlink \/sys\/bus\/vdpa\/devices\/(\S+)\/driver$/.exec(entry.cmd)?.[1];
  assert.ok(name, entry.cmd);
  assert.equal(entry.stdout.length, 1);
  assert.equal(bus.driverOf(device(name))?.name, entry.stdout[0].split("/").at(-1));
}

/** `echo DEV > /sys/bus/vdpa/drivers/DRIVER/(un)bind`. */
function replayBindEcho(entry: TranscriptEntry): void {
  const m = /^echo (\S+) > \/sys\/bus\/vdpa\/drivers\/(\w+)\/(bind|unbind)$/.exec(entry.cmd);
  assert.ok(m, entry.cmd);
  assert.equal(entry.rc, 0);
  const dev = device(m[1]);
  if (m[3] === "unbind") {
    assert.equal(bus.driverOf(dev)?.name, m[2], "unbind names the bound driver");
    bus.unbind(dev);
  } else {
    bus.bind(dev, m[2]);
  }
  assert.equal(bus.driverOf(dev)?.name, m[3] === "bind" ? m[2] : undefined);
}

function le(bytes: Uint8Array): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]);
  return v;
}

/** The negotiated_features names Linux printed in a `vdpa dev config show` entry. */
function negotiatedNames(entry: TranscriptEntry): string[] {
  const line = entry.stdout.find((l) => l.trim().startsWith("negotiated_features"));
  assert.ok(line, `${entry.cmd} shows negotiated_features`);
  return line.trim().split(/\s+/).slice(1);
}

// ---------------------------------------------------------------------------------------------------------
// The replay, in the transcript's order
// ---------------------------------------------------------------------------------------------------------

describe("the Linux vdpa transcript, replayed on vdpasim_net and vdpasim_blk", () => {
  // Each test takes its transcript entries first (replay.take), then replays them.

  test("vdpa mgmtdev show: both simulators as Linux lists them (vduse is not ours)", () => {
    const [entry] = replay.take("vdpa mgmtdev show");
    const replies = replayVdpa(entry, { absent: ["vduse"] });
    // The feature line itself, rebuilt from the reply's DEV_SUPPORTED_FEATURES.
    const net = replies.find((r) => getAttr(r, "MGMTDEV_DEV_NAME") === "vdpasim_net")!;
    const names = featureNamesIproute2(getAttr(net, "DEV_SUPPORTED_FEATURES") as bigint, VIRTIO_ID_NET);
    const netBlock = entry.stdout.slice(entry.stdout.indexOf("vdpasim_net: "));
    assert.ok(netBlock.includes(`  dev_features ${names.join(" ")}`), netBlock.join("\n"));
  });

  test("vdpa -j / -jp mgmtdev show", () => {
    for (const entry of replay.take("vdpa -j mgmtdev show", "vdpa -jp mgmtdev show")) {
      replayVdpa(entry, { absent: ["vduse"] });
    }
  });

  test("vdpa mgmtdev show vdpasim_net / vdpasim_blk", () => {
    const [netEntry, blkEntry] = replay.take(
      "vdpa mgmtdev show vdpasim_net",
      "vdpa mgmtdev show vdpasim_blk",
    );
    assert.equal(replayVdpa(netEntry).length, 1);
    const [blk] = replayVdpa(blkEntry);
    // Linux sends max_supported_vqs and dev_features even when 0: the tool prints both lines for vdpasim_blk.
    assert.equal(getAttr(blk, "DEV_MGMTDEV_MAX_VQS"), 0);
    assert.equal(getAttr(blk, "DEV_SUPPORTED_FEATURES"), 0n);
  });

  test("vdpa dev show / vdpa -j dev show before any device: nothing", () => {
    for (const entry of replay.take("vdpa dev show", "vdpa -j dev show")) {
      assert.deepEqual(replayVdpa(entry), []);
    }
  });

  test("ls /sys/bus/vdpa: the drivers vhost_vdpa and virtio_vdpa, no devices", () => {
    const [entry] = replay.take("ls -l /sys/bus/vdpa/drivers /sys/bus/vdpa/devices");
    const dirs: Record<string, string[]> = {};
    let dir = "";
    for (const line of entry.stdout) {
      if (line.endsWith(":")) dirs[(dir = line.slice(0, -1))] = [];
      else if (line !== "" && !line.startsWith("total ")) dirs[dir].push(line.split(/\s+/).at(-1)!);
    }
    assert.deepEqual(
      bus
        .drivers()
        .map((d) => d.name)
        .sort(),
      dirs["/sys/bus/vdpa/drivers"],
    );
    assert.deepEqual(
      bus.devices().map((d) => d.name),
      dirs["/sys/bus/vdpa/devices"],
    );
  });

  test("vdpa dev add name vdpa0 mgmtdev vdpasim_net mac ... mtu ...: bound to vhost_vdpa", () => {
    const [add] = replay.take("vdpa dev add name vdpa0 mgmtdev vdpasim_net mac 00:11:22:33:44:55 mtu 1500");
    replayVdpa(add);
    assert.equal(bus.driverOf(device("vdpa0"))?.name, "vhost_vdpa");
  });

  test("vdpa dev show (dump, by name, -j, -jp)", () => {
    const [dump, byName, j, jp] = replay.take(
      "vdpa dev show",
      "vdpa dev show vdpa0",
      "vdpa -j dev show",
      "vdpa -jp dev show",
    );
    replayVdpa(dump);
    const [reply] = replayVdpa(byName);
    assert.equal(getAttr(reply, "DEV_ID"), VIRTIO_ID_NET);
    replayVdpa(j);
    replayVdpa(jp);
  });

  test("vdpa dev config show before negotiation: mac, link, mtu and no negotiated_features", () => {
    const [dump, j, jp] = replay.take(
      "vdpa dev config show",
      "vdpa -j dev config show",
      "vdpa -jp dev config show vdpa0",
    );
    const [reply] = replayVdpa(dump);
    assert.equal(getAttr(reply, "DEV_NEGOTIATED_FEATURES"), undefined);
    replayVdpa(j);
    replayVdpa(jp);
  });

  test("sysfs: vdpa0 is held by vhost_vdpa (vhost-vdpa-0), with no driver_override", () => {
    const [dir, link, override, nodes] = replay.take(
      "ls /sys/bus/vdpa/devices/vdpa0/",
      "readlink /sys/bus/vdpa/devices/vdpa0/driver",
      "cat /sys/bus/vdpa/devices/vdpa0/driver_override",
      "ls -l /dev/vhost-vdpa-* 2>&1",
    );
    replayDeviceDir(dir);
    replayDriverLink(link);
    assert.deepEqual([device("vdpa0").driverOverride ?? "(null)"], override.stdout);
    const ours = bus
      .devices()
      .filter((d) => vhost.get(d))
      .map((d) => `/dev/vhost-vdpa-${d.index}`);
    assert.deepEqual(
      ours,
      nodes.stdout.map((l) => l.split(/\s+/).at(-1)),
    );
  });

  test("rebind vdpa0 to virtio_vdpa: vhost_vdpa lets go and the guest drives it", () => {
    const [unbind, bind, link, dir] = replay.take(
      "echo vdpa0 > /sys/bus/vdpa/drivers/vhost_vdpa/unbind",
      "echo vdpa0 > /sys/bus/vdpa/drivers/virtio_vdpa/bind",
      "readlink /sys/bus/vdpa/devices/vdpa0/driver",
      "ls /sys/bus/vdpa/devices/vdpa0/",
    );
    replayBindEcho(unbind);
    replayBindEcho(bind);
    replayDriverLink(link);
    const children = replayDeviceDir(dir);
    // virtio_vdpa's child is the virtio device (virtio0); our stand-in holds the guest driver instead.
    assert.equal(children.filter((c) => /^virtio\d+$/.test(c)).length, 1);
    assert.ok(guest.guest(device("vdpa0")));
  });

  test("cat /sys/class/net/eth0/address and mtu: what the guest read from config space", () => {
    const [entry] = replay.take("cat /sys/class/net/eth0/address /sys/class/net/eth0/mtu");
    const dev = device("vdpa0");
    const mac = dev.getConfig(VIRTIO_NET_CONFIG.mac, 6);
    const mtu = Number(le(dev.getConfig(VIRTIO_NET_CONFIG.mtu, 2)));
    assert.deepEqual([formatMac(mac), String(mtu)], entry.stdout);
  });

  test("vdpa dev config show vdpa0 after negotiation: negotiated_features", () => {
    const [text, jp] = replay.take("vdpa dev config show vdpa0", "vdpa -jp dev config show vdpa0");
    const [reply] = replayVdpa(text);
    assert.ok(device("vdpa0").getStatus() & VIRTIO_CONFIG_S_FEATURES_OK);
    assert.equal(getAttr(reply, "DEV_NEGOTIATED_FEATURES"), featuresFromNames(negotiatedNames(text)));
    replayVdpa(jp);
  });

  test("vdpa dev vstats show vdpa0 qidx 0 / qidx 1 before traffic", () => {
    const [q0, q1] = replay.take(
      "vdpa dev vstats show vdpa0 qidx 0",
      "vdpa -jp dev vstats show vdpa0 qidx 1",
    );
    const [rx] = replayVdpa(q0);
    // Queue 0 is rx: the "control_vq" label is iproute2's (no MQ, so no MAX_VQP, so 2 * max_vqp is 0).
    assert.equal(getAttr(rx, "DEV_QUEUE_INDEX"), 0);
    assert.equal(getAttr(rx, "DEV_NET_CFG_MAX_VQP"), undefined);
    assert.equal(getAttr(rx, "DEV_VENDOR_ATTR_NAME"), "rx packets");
    replayVdpa(q1);
  });

  test("vdpa dev vstats show after the guest's traffic: frames plus one virtio-net header each", async () => {
    // The guest's IPv6 frames are not in the transcript, only `ip -s link`'s totals. Frames of the same
    // count and total length are sent instead (to ff02::1's multicast MAC, so the loop takes them); what
    // is checked is the simulator's accounting against Linux's: ip's bytes plus a 12-byte
    // virtio_net_hdr_v1 per frame, on tx and on the looped rx alike.
    const [q0, q1] = replay.take("vdpa dev vstats show vdpa0 qidx 0", "vdpa dev vstats show vdpa0 qidx 1");
    const ip = parseIpLinkStats(replay.lastBefore(q0, "/sbin/ip -s link show dev eth0").stdout);
    assert.deepEqual(ip.rx, ip.tx, "the simulator loops every frame back");
    const dev = device("vdpa0");
    const driver = guest.guest(dev);
    const src = dev.getConfig(VIRTIO_NET_CONFIG.mac, 6);
    for (let i = 0; i < ip.tx.packets; i++) {
      const len = Math.floor(ip.tx.bytes / ip.tx.packets) + (i < ip.tx.bytes % ip.tx.packets ? 1 : 0);
      const frame = new Uint8Array(VIRTIO_NET_HDR_V1_SIZE + len);
      frame.set([0x33, 0x33, 0, 0, 0, 1], VIRTIO_NET_HDR_V1_SIZE);
      frame.set(src, VIRTIO_NET_HDR_V1_SIZE + 6);
      frame.set([0x86, 0xdd], VIRTIO_NET_HDR_V1_SIZE + 12);
      driver.send(VDPASIM_NET_RXQ, [], [2048]);
      driver.send(VDPASIM_NET_TXQ, [frame]);
    }
    driver.kick(VDPASIM_NET_TXQ);
    await (dev.ops as VdpaSim).whenIdle();
    assert.equal(driver.collect(VDPASIM_NET_RXQ).length, ip.rx.packets);
    replayVdpa(q0);
    replayVdpa(q1);
  });

  test("vdpa dev add name vdpa1 mgmtdev vdpasim_blk; dev show lists both", () => {
    const [add, dump, jp] = replay.take(
      "vdpa dev add name vdpa1 mgmtdev vdpasim_blk",
      "vdpa dev show",
      "vdpa -jp dev show vdpa1",
    );
    replayVdpa(add);
    assert.equal(bus.driverOf(device("vdpa1"))?.name, "vhost_vdpa");
    replayVdpa(dump);
    const [reply] = replayVdpa(jp);
    assert.equal(getAttr(reply, "DEV_ID"), VIRTIO_ID_BLOCK);
  });

  test("vdpa dev config show vdpa1: iproute2 6.1 prints nothing of a block device's config", () => {
    const [text, jp] = replay.take("vdpa dev config show vdpa1", "vdpa -jp dev config show vdpa1");
    // The kernel does send the block fields (capacity, ...); 6.1 only prints the config of net devices.
    const [reply] = replayVdpa(text);
    assert.equal(getAttr(reply, "DEV_ID"), VIRTIO_ID_BLOCK);
    assert.equal(getAttr(reply, "DEV_NEGOTIATED_FEATURES"), undefined);
    replayVdpa(jp);
  });

  test("rebind vdpa1 to virtio_vdpa: the guest sees the disk's size", () => {
    const [link, unbind, bind, size] = replay.take(
      "readlink /sys/bus/vdpa/devices/vdpa1/driver",
      "echo vdpa1 > /sys/bus/vdpa/drivers/vhost_vdpa/unbind",
      "echo vdpa1 > /sys/bus/vdpa/drivers/virtio_vdpa/bind",
      "echo vda sectors=$(cat /sys/block/vda/size)",
    );
    replayDriverLink(link);
    replayBindEcho(unbind);
    replayBindEcho(bind);
    const sectors = le(device("vdpa1").getConfig(VIRTIO_BLK_CONFIG.capacity, 8));
    assert.deepEqual([`vda sectors=${sectors}`], size.stdout);
  });

  test("vdpa dev config show vdpa1 after negotiation: still nothing printed", () => {
    const [entry] = replay.take("vdpa dev config show vdpa1");
    const [reply] = replayVdpa(entry);
    // Linux sends NEGOTIATED_FEATURES for any class once FEATURES_OK is set; 6.1 does not print it here.
    const dev = device("vdpa1");
    assert.ok(dev.getStatus() & VIRTIO_CONFIG_S_FEATURES_OK);
    assert.equal(getAttr(reply, "DEV_NEGOTIATED_FEATURES"), dev.ops.getDriverFeatures());
    const sizeEntry = replay.lastBefore(entry, "echo vda sectors=$(cat /sys/block/vda/size)");
    assert.equal(`vda sectors=${getAttr(reply, "DEV_BLK_CFG_CAPACITY")}`, sizeEntry.stdout[0]);
  });

  test("errors: dev add with a name in use; dev add on an unknown management device", () => {
    const [dup, unknown] = replay.take(
      "vdpa dev add name vdpa0 mgmtdev vdpasim_net",
      "vdpa dev add name vdpa9 mgmtdev nosuchmgmt",
    );
    replayVdpa(dup);
    replayVdpa(unknown);
    // The refused add left the existing vdpa0 alone.
    assert.deepEqual(
      bus.devices().map((d) => [d.name, bus.driverOf(d)?.name]),
      [
        ["vdpa0", "virtio_vdpa"],
        ["vdpa1", "virtio_vdpa"],
      ],
    );
  });

  test("every command of the transcript was replayed or skipped for a stated reason", () => {
    assert.deepEqual(
      replay.finish().map((e) => e.cmd),
      [],
    );
    assert.equal(replay.replayed.length + replay.skipped.length, ENTRIES.length);
    // No request that reaches the vDPA layer hides behind a skip rule.
    const skippedVdpa = replay.skipped
      .map((s) => s.entry.cmd)
      .filter((cmd) => cmd.startsWith("vdpa ") && !cmd.endsWith(" help") && !cmd.endsWith(" vduse"));
    assert.deepEqual(skippedVdpa, []);
  });
});

// ---------------------------------------------------------------------------------------------------------
// The same negotiation through vhost-vdpa, as QEMU would do it (not in the transcript: its guest used
// virtio_vdpa), checked against the transcript's outputs.
// ---------------------------------------------------------------------------------------------------------

describe("the transcript's vdpa0, negotiated through vhost-vdpa instead", () => {
  const find = (cmd: string, nth = 0): TranscriptEntry => {
    const found = ENTRIES.filter((e) => e.cmd === cmd)[nth];
    assert.ok(found, `${cmd} #${nth} is in the transcript`);
    return found;
  };

  test("features set through the vhost handle show as Linux's negotiated_features; release clears them", () => {
    const ownBus = new VdpaBus();
    const ownVhost = new VhostVdpaDriver();
    ownBus.registerDriver(ownVhost);
    const own = new VdpaManagement(ownBus);
    own.registerMgmtDev(vdpasimNetMgmtDev());
    replayVdpa(find("vdpa dev add name vdpa0 mgmtdev vdpasim_net mac 00:11:22:33:44:55 mtu 1500"), {}, own);
    // With one device the dump shows just vdpa0; the named show comes only after the guest negotiated.
    const before = find("vdpa dev config show");
    const after = find("vdpa dev config show vdpa0");
    const handle = ownVhost.get(ownBus.device("vdpa0")!);
    assert.ok(handle, "vhost_vdpa holds vdpa0");

    handle.open();
    handle.setOwner();
    handle.setFeatures(featuresFromNames(negotiatedNames(after)));
    handle.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    handle.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    handle.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    replayVdpa(after, {}, own);
    // Counters before any traffic, as the transcript's first vstats show them.
    replayVdpa(find("vdpa dev vstats show vdpa0 qidx 0", 0), {}, own);
    replayVdpa(find("vdpa -jp dev vstats show vdpa0 qidx 1", 0), {}, own);

    handle.release();
    const [reply] = replayVdpa(before, {}, own);
    assert.equal(getAttr(reply, "DEV_NEGOTIATED_FEATURES"), undefined);
  });
});
