// A streaming JSON writer that produces byte for byte what iproute2's writer (lib/json_writer.c) produces,
// because `vdpa -j` and `vdpa -jp` output is a compatibility fact scripts parse and diff:
// - compact: no whitespace at all;
// - pretty: four spaces per level, `"key": value`, arrays written on one line as `[ "a","b" ]` (no space
//   after the comma) and an empty array as `[ ]`, an empty object as `{}`;
// - strings escape only \t \n \r \f \b \\ and \", everything else passes through as is;
// - the document ends with one newline.

export class JsonWriter {
  private out = "";
  private depth = 0;
  /** "," once the current container holds something, "" right after it opens or after a key. */
  private sep: "" | "," = "";

  constructor(private readonly pretty: boolean) {}

  /** The text written so far. */
  text(): string {
    return this.out;
  }

  /** Ends the document (iproute2's jsonw_destroy): one newline. */
  finish(): string {
    if (this.depth !== 0) throw new Error(`JSON document ends ${this.depth} level(s) deep`);
    this.out += "\n";
    return this.out;
  }

  name(key: string): void {
    this.separate();
    this.newline();
    this.sep = "";
    this.out += quote(key);
    this.out += this.pretty ? ": " : ":";
  }

  startObject(): void {
    this.begin("{");
  }

  endObject(): void {
    this.end("}");
  }

  startArray(): void {
    this.begin("[");
    if (this.pretty) this.out += " ";
  }

  endArray(): void {
    if (this.pretty && this.sep !== "") this.out += " ";
    this.sep = "";
    this.end("]");
  }

  string(value: string): void {
    this.separate();
    this.out += quote(value);
  }

  /** A number or a literal (true, false), written as given. */
  raw(value: string): void {
    this.separate();
    this.out += value;
  }

  private begin(open: string): void {
    this.separate();
    this.out += open;
    this.depth++;
    this.sep = "";
  }

  private end(close: string): void {
    if (this.depth === 0) throw new Error(`unbalanced ${close}`);
    this.depth--;
    // A container that holds something closes on its own line; an empty one closes at once ("{}").
    if (this.sep !== "") this.newline();
    this.out += close;
    this.sep = ",";
  }

  private separate(): void {
    this.out += this.sep;
    this.sep = ",";
  }

  private newline(): void {
    if (!this.pretty) return;
    this.out += `\n${"    ".repeat(this.depth)}`;
  }
}

const ESCAPES: Record<string, string> = {
  "\t": "\\t",
  "\n": "\\n",
  "\r": "\\r",
  "\f": "\\f",
  "\b": "\\b",
  "\\": "\\\\",
  '"': '\\"',
};

function quote(s: string): string {
  return `"${s.replace(/[\t\n\r\f\b\\"]/g, (c) => ESCAPES[c])}"`;
}
