// The pieces of the `vdpa` tool that do not need a daemon: iproute2's JSON writer, glibc's getopt_long and
// iproute2's argument helpers, each against what the C code does (iproute2 v6.1.0 lib/json_writer.c,
// lib/utils.c, lib/ll_addr.c, vdpa/vdpa.c; glibc 2.36 getopt).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { matches, OPT, parseCommandArgs, parseMac, parseSize, parseUnsigned } from "../../src/cli/args.js";
import { scanOptions } from "../../src/cli/getopt.js";
import { JsonWriter } from "../../src/cli/json-writer.js";

describe("JsonWriter (iproute2 json_writer)", () => {
  const build = (pretty: boolean): string => {
    const w = new JsonWriter(pretty);
    w.startObject();
    w.name("dev");
    w.startObject();
    w.name("a");
    w.startArray();
    w.string("x");
    w.raw("7");
    w.endArray();
    w.name("empty");
    w.startArray();
    w.endArray();
    w.name("obj");
    w.startObject();
    w.endObject();
    w.endObject();
    w.endObject();
    return w.finish();
  };

  test("compact output has no whitespace and ends with one newline", () => {
    assert.equal(build(false), '{"dev":{"a":["x",7],"empty":[],"obj":{}}}\n');
  });

  test("pretty output: 4-space levels, arrays on one line, [ ] and {} when empty", () => {
    assert.equal(
      build(true),
      '{\n    "dev": {\n        "a": [ "x",7 ],\n        "empty": [ ],\n        "obj": {}\n    }\n}\n',
    );
  });

  test("escapes only what iproute2 escapes", () => {
    const w = new JsonWriter(false);
    w.string('a"b\\c\td\ne\x01é');
    assert.equal(w.finish(), '"a\\"b\\\\c\\td\\ne\x01é"\n');
  });

  test("an unbalanced document is a bug, not output", () => {
    const w = new JsonWriter(false);
    w.startObject();
    assert.throws(() => w.finish(), /1 level/);
    assert.throws(() => new JsonWriter(false).endObject(), /unbalanced/);
  });
});

describe("scanOptions (glibc getopt_long)", () => {
  const LONG = [
    { name: "Version", short: "V" },
    { name: "json", short: "j" },
    { name: "pretty", short: "p" },
    { name: "help", short: "h" },
  ];
  const scan = (...argv: string[]) => scanOptions(argv, "Vjpsh", LONG);

  test("permutes: options after command words count, operands keep their order", () => {
    assert.deepEqual(scan("dev", "-j", "show", "-p"), {
      events: [
        { kind: "option", short: "j" },
        { kind: "option", short: "p" },
      ],
      operands: ["dev", "show"],
    });
  });

  test("clusters, long names, unique prefixes; -- ends the options; a lone - is an operand", () => {
    assert.deepEqual(
      scan("-jp", "--js", "--", "-V", "-").events.map((e) => (e.kind === "option" ? e.short : e.kind)),
      ["j", "p", "j"],
    );
    assert.deepEqual(scan("--", "-V", "-").operands, ["-V", "-"]);
    assert.deepEqual(scan("-", "x").operands, ["-", "x"]);
  });

  test("glibc's messages for bad options", () => {
    assert.deepEqual(scan("-x").events, [{ kind: "error", message: "vdpa: invalid option -- 'x'\n" }]);
    // long names are case-sensitive: iproute2's is "Version"
    assert.deepEqual(scan("--version").events, [
      { kind: "error", message: "vdpa: unrecognized option '--version'\n" },
    ]);
    assert.deepEqual(scan("--foo=1").events, [
      { kind: "error", message: "vdpa: unrecognized option '--foo=1'\n" },
    ]);
    assert.deepEqual(scan("--js=1").events, [
      { kind: "error", message: "vdpa: option '--json' doesn't allow an argument\n" },
    ]);
    const ambiguous = scanOptions(["--p"], "pP", [
      { name: "pretty", short: "p" },
      { name: "pid", short: "P" },
    ]);
    assert.deepEqual(ambiguous.events, [
      { kind: "error", message: "vdpa: option '--p' is ambiguous; possibilities: '--pretty' '--pid'\n" },
    ]);
  });

  test("a cluster with a bad letter reports it in place", () => {
    assert.deepEqual(scan("-jxp").events, [
      { kind: "option", short: "j" },
      { kind: "error", message: "vdpa: invalid option -- 'x'\n" },
      { kind: "option", short: "p" },
    ]);
  });
});

describe("iproute2 argument helpers", () => {
  test("matches: a non-empty prefix", () => {
    assert.ok(matches("s", "show"));
    assert.ok(matches("show", "show"));
    assert.ok(!matches("shows", "show"));
    assert.ok(!matches("", "show"));
  });

  test("parseUnsigned follows strtoul: blanks, signs, -0, saturation, trailing junk", () => {
    const u16 = (w: string) => parseUnsigned(w, 10, 0xffffn);
    assert.equal(u16("1500"), 1500n);
    assert.equal(u16(" +7"), 7n);
    assert.equal(u16("-0"), 0n);
    assert.equal(u16("65535"), 65535n);
    assert.equal(u16("65536"), undefined);
    assert.equal(u16("-1"), undefined);
    assert.equal(u16("12a"), undefined);
    assert.equal(u16(""), undefined);
    assert.equal(u16("0x10"), undefined);
    assert.equal(u16("99999999999999999999999"), undefined);
    const u64hex = (w: string) => parseUnsigned(w, 16, 0xffff_ffff_ffff_ffffn);
    assert.equal(u64hex("0x300000020"), 0x300000020n);
    assert.equal(u64hex("300000020"), 0x300000020n);
    assert.equal(u64hex("ffffffffffffffff"), 0xffff_ffff_ffff_ffffn);
    assert.equal(u64hex("10000000000000000"), undefined);
    assert.equal(u64hex("0x"), undefined);
    assert.equal(u64hex("xyz"), undefined);
  });

  test("parseMac follows ll_addr_a2n", () => {
    const ok = (w: string) => {
      const r = parseMac(w);
      assert.ok("mac" in r, w);
      return Array.from(r.mac);
    };
    assert.deepEqual(ok("00:11:22:33:44:55"), [0, 0x11, 0x22, 0x33, 0x44, 0x55]);
    assert.deepEqual(ok("0x1f:1g"), [0x1f, 1, 0, 0, 0, 0], "sscanf %x stops at the first non-hex");
    assert.deepEqual(ok("1:2:3:4:5:6:7"), [1, 2, 3, 4, 5, 6], "fields after the sixth are ignored");
    assert.deepEqual(ok("1.2.3.4"), [1, 2, 3, 4, 0, 0], "an IPv4 address fills four bytes");
    assert.deepEqual(parseMac("00:zz:11"), { error: '"zz" is invalid lladdr.\n' });
    assert.deepEqual(parseMac("00::11"), { error: '"" is invalid lladdr.\n' });
    assert.deepEqual(parseMac("100"), { error: '"100" is invalid lladdr.\n' });
    assert.deepEqual(parseMac("-1"), { error: '"-1" is invalid lladdr.\n' });
    assert.deepEqual(parseMac("1.2.3"), { error: '"1.2.3" is invalid lladdr.\n' });
  });

  test("parseSize: bytes with binary suffixes", () => {
    assert.equal(parseSize("4096"), 4096n);
    assert.equal(parseSize("128M"), 128n << 20n);
    assert.equal(parseSize("1GiB"), 1n << 30n);
    assert.equal(parseSize("2k"), 2048n);
    assert.equal(parseSize("1.5G"), undefined);
    assert.equal(parseSize("-1"), undefined);
  });

  describe("parseCommandArgs (vdpa_argv_parse)", () => {
    const add = (...argv: string[]) =>
      parseCommandArgs(
        argv,
        OPT.VDEV_MGMTDEV_HANDLE | OPT.VDEV_NAME,
        OPT.VDEV_MAC | OPT.VDEV_MTU | OPT.MAX_VQP,
      );

    test("attributes in vdpa_opts_put's order, whatever the order on the line", () => {
      assert.deepEqual(add("mtu", "1500", "mac", "00:11:22:33:44:55", "n", "v0", "mg", "pci/m0"), {
        attrs: [
          { name: "MGMTDEV_BUS_NAME", value: "pci" },
          { name: "MGMTDEV_DEV_NAME", value: "m0" },
          { name: "DEV_NAME", value: "v0" },
          { name: "DEV_NET_CFG_MACADDR", value: Uint8Array.from([0, 0x11, 0x22, 0x33, 0x44, 0x55]) },
          { name: "DEV_NET_CFG_MTU", value: 1500 },
        ],
      });
    });

    test("a single trailing word is ignored; two are refused", () => {
      assert.ok("attrs" in add("name", "a", "mgmtdev", "b", "junk"));
      assert.deepEqual(add("name", "a", "mgmtdev", "b", "junk", "more"), {
        error: 'Unknown option "junk"\n',
      });
      assert.ok(
        "attrs" in add("name", "a", "mgmtdev", "b", "mtu"),
        "mtu without a value is dropped silently",
      );
    });

    test("prefixes only where iproute2 matches prefixes", () => {
      assert.ok("attrs" in add("name", "a", "mgmtdev", "b", "ma", "2"), "ma = max_vqp");
      assert.deepEqual(add("name", "a", "mgmtdev", "b", "mt", "1500"), { error: 'Unknown option "mt"\n' });
      assert.deepEqual(add("name", "a", "mgmtdev", "b", "ma", "00:11:22:33:44:55"), { error: "" });
    });

    test("missing required options name the first one missing", () => {
      assert.deepEqual(add(), { error: "management device handle not set.\n" });
      assert.deepEqual(add("name", "a"), { error: "management device handle not set.\n" });
      assert.deepEqual(add("mgmtdev", "b"), { error: "device name is not set.\n" });
      assert.deepEqual(parseCommandArgs([], OPT.VDEV_HANDLE, 0), { error: "String parameter expected\n" });
    });

    test("bad numbers fail silently, a bad handle with iproute2's three lines", () => {
      assert.deepEqual(add("name", "a", "mgmtdev", "b", "mtu", "65536"), { error: "" });
      assert.deepEqual(add("name", "a", "mgmtdev", "b", "max_vqp", "x"), { error: "" });
      assert.deepEqual(add("name", "a", "mgmtdev", "a/b/c"), {
        error:
          'Wrong vdpa mgmtdev identification string format\nExpected "mgmtdev_bus_name/mgmtdev_name"\nExpected "mgmtdev_name"\n',
      });
    });

    test("options a command does not take are unknown there", () => {
      assert.deepEqual(parseCommandArgs(["vdpa0", "name", "x"], OPT.VDEV_HANDLE, 0), {
        error: 'Unknown option "name"\n',
      });
      assert.deepEqual(
        parseCommandArgs(
          ["name", "v", "mgmtdev", "m", "device_features", "1"],
          OPT.VDEV_NAME | OPT.VDEV_MGMTDEV_HANDLE,
          0,
        ),
        { error: 'Unknown option "device_features"\n' },
      );
    });
  });
});
