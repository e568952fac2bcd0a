// Output in the two modes of iproute2's print helpers (lib/json_print.c, and vdpa/vdpa.c's pr_out_*): each
// call carries both the JSON key and the text form, and the mode decides which one is written. Keeping the
// calls in the order iproute2 makes them is what makes text lines (trailing spaces included) and JSON
// (key order, pretty layout) come out identical.

import { JsonWriter } from "./json-writer.js";

/** iproute2's indentation step for nested text lines (lib/utils.c INDENT_STR_STEP). */
const INDENT_STEP = 2;

export class Printer {
  private textOut = "";
  private readonly json: JsonWriter | null;
  private indent = 0;

  constructor(jsonMode: boolean, pretty: boolean) {
    this.json = jsonMode ? new JsonWriter(pretty) : null;
  }

  get isJson(): boolean {
    return this.json !== null;
  }

  /** Everything written to stdout, the JSON document closed with its newline. */
  finish(): string {
    return this.json ? this.json.finish() : this.textOut;
  }

  /** open_json_object: a JSON object, named when `key` is given; nothing in text mode. */
  openObject(key?: string): void {
    if (!this.json) return;
    if (key !== undefined) this.json.name(key);
    this.json.startObject();
  }

  closeObject(): void {
    this.json?.endObject();
  }

  /** print_string(PRINT_ANY, key, fmt, value): `text` is the printf result for text mode. */
  string(key: string | null, text: string, value: string): void {
    if (this.json) {
      if (key !== null) this.json.name(key);
      this.json.string(value);
    } else {
      this.textOut += text;
    }
  }

  /** print_uint / print_u64 (PRINT_ANY): the number in JSON, `text` in text mode. */
  number(key: string | null, text: string, value: number | bigint): void {
    if (this.json) {
      if (key !== null) this.json.name(key);
      this.json.raw(String(value));
    } else {
      this.textOut += text;
    }
  }

  /** print_bool (PRINT_ANY). */
  bool(key: string, text: string, value: boolean): void {
    if (this.json) {
      this.json.name(key);
      this.json.raw(value ? "true" : "false");
    } else {
      this.textOut += text;
    }
  }

  /** Text written in text mode only (a handle "vdpa0: "). */
  textOnly(text: string): void {
    if (!this.json) this.textOut += text;
  }

  /** print_nl: a line break in text mode. */
  nl(): void {
    if (!this.json) this.textOut += "\n";
  }

  /**
   * vdpa's pr_out_array_start: in text mode a new line, one indentation step deeper, then the name; in
   * JSON an array under that name.
   */
  arrayStart(name: string): void {
    if (this.json) {
      this.json.name(name);
      this.json.startArray();
      return;
    }
    this.nl();
    this.indent += INDENT_STEP;
    this.textOut += " ".repeat(this.indent);
    this.textOut += name;
  }

  /** vdpa's pr_out_array_end. */
  arrayEnd(): void {
    if (this.json) this.json.endArray();
    else this.indent -= INDENT_STEP;
  }

  /** vdpa's pr_out_section_start: `{"name":{` in JSON, nothing in text. */
  sectionStart(name: string): void {
    this.openObject();
    this.openObject(name);
  }

  sectionEnd(): void {
    this.closeObject();
    this.closeObject();
  }

  /** vdpa's handle start: an object named `handle` in JSON, `handle: ` in text. */
  handleStart(handle: string): void {
    if (this.json) this.openObject(handle);
    else this.textOut += `${handle}: `;
  }

  handleEnd(): void {
    if (this.json) this.closeObject();
    else this.nl();
  }
}
