// Runs every compiled test file under dist/test with Node's test runner and fails when fewer tests ran
// than test/min-tests.json records, so a test file that stops being found (renamed, not compiled, a
// broken import that kills the file) turns the build red instead of silently shrinking the suite.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { run } from "node:test";
import { spec } from "node:test/reporters";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const compiledTests = join(root, "dist", "test");

function findTests(dir: string, pattern: RegExp): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...findTests(path, pattern));
    else if (pattern.test(name)) out.push(path);
  }
  return out;
}

const suite = process.argv[2] === "vm" ? /\.vm\.test\.js$/ : /(?<!\.vm)\.test\.js$/;
const files = findTests(compiledTests, suite);
const minimum = JSON.parse(readFileSync(join(root, "test", "min-tests.json"), "utf8")) as Record<
  string,
  number
>;
const floor = minimum[process.argv[2] === "vm" ? "vm" : "unit"] ?? 0;

let passed = 0;
let failed = 0;
let skipped = 0;
// Guests run one at a time: each QEMU under TCG wants a core of its own.
// A hung test fails (and the run ends) instead of holding CI forever.
const stream = run({
  files,
  concurrency: process.argv[2] === "vm" ? 1 : 2,
  timeout: process.argv[2] === "vm" ? 600_000 : 60_000,
});
stream.on("test:pass", (event) => {
  if (event.details.type === "suite") return;
  if (event.skip || event.todo) skipped++;
  else passed++;
});
stream.on("test:fail", (event) => {
  if (event.details.type === "suite") return;
  failed++;
});
const report = stream.compose(new spec());
report.pipe(process.stdout, { end: false });
report.on("end", () => {
  const ran = passed + failed;
  console.log(`${files.length} test files under ${relative(process.cwd(), compiledTests) || "."}`);
  if (skipped > 0 && process.env.CI) {
    console.error(`FAIL: ${skipped} tests skipped; nothing may be skipped in CI`);
    process.exitCode = 1;
  }
  if (ran < floor) {
    console.error(`FAIL: only ${ran} tests ran, test/min-tests.json expects at least ${floor}`);
    process.exitCode = 1;
  }
  if (failed > 0) process.exitCode = 1;
  console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
});
