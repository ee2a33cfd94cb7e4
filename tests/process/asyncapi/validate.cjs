// Parses AsyncAPI documents with the official parser (@asyncapi/parser) and prints its
// diagnostics as one JSON array: [{file, severity, code, message, path}], severity
// "error", "warning", "information" or "hint". Exits 0 once every document was parsed,
// whatever it found (the test judges), 2 on a usage or set-up problem.
//
//   node validate.cjs NODE_MODULES_DIR DOCUMENT...
//
// NODE_MODULES_DIR is where the test set-up installed the parser (never committed).
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { createRequire } = require("node:module");

const SEVERITIES = ["error", "warning", "information", "hint"];

async function main([modules, ...documents]) {
  if (!modules || documents.length === 0) {
    console.error("usage: node validate.cjs NODE_MODULES_DIR DOCUMENT...");
    return 2;
  }
  // Resolve the parser from its install folder, not from this script's.
  const requireThere = createRequire(path.join(path.resolve(modules), "resolver.js"));
  const { Parser } = requireThere("@asyncapi/parser");
  const parser = new Parser();
  const found = [];
  for (const file of documents) {
    const { diagnostics } = await parser.parse(fs.readFileSync(file, "utf8"), { source: path.resolve(file) });
    for (const d of diagnostics) {
      found.push({ file, severity: SEVERITIES[d.severity] ?? String(d.severity), code: String(d.code),
                   message: d.message, path: (d.path || []).join("/") });
    }
  }
  process.stdout.write(JSON.stringify(found) + "\n");
  return 0;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(2);
});
