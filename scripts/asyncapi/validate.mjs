// Validates an AsyncAPI document with the official parser (@asyncapi/parser,
// whose Spectral ruleset also checks message examples against their schemas)
// and fails on any error. Relative $refs (the JSON Schemas under
// messages/schemas/) are resolved from the file system: nothing is fetched.
//
//   node validate.mjs ../../docs/asyncapi.yaml [--strict]
//
// --strict fails on warnings too. Exit codes: 0 valid, 1 invalid, 2 usage.
import path from 'node:path';
import fs from 'node:fs';
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const args = process.argv.slice(2);
const strict = args.includes('--strict');
const files = args.filter((a) => !a.startsWith('--'));
if (files.length !== 1) {
  console.error('usage: node validate.mjs <asyncapi.yaml> [--strict]');
  process.exit(2);
}
const file = path.resolve(files[0]);
if (!fs.existsSync(file)) {
  console.error(`${file}: no such file`);
  process.exit(2);
}

// Refuse any network access: every reference must resolve locally.
const parser = new Parser({
  __unstable: {
    resolver: {
      cache: false,
      resolvers: [
        { schema: 'http', order: 1, canRead: true, read: (uri) => { throw new Error(`refusing to fetch ${uri}: references must be local files`); } },
        { schema: 'https', order: 1, canRead: true, read: (uri) => { throw new Error(`refusing to fetch ${uri}: references must be local files`); } },
      ],
    },
  },
});

const { document, diagnostics } = await fromFile(parser, file).parse({ validateOptions: { allowedSeverity: { warning: true, info: true, hint: true } } });

const names = { [DiagnosticSeverity.Error]: 'error', [DiagnosticSeverity.Warning]: 'warning', [DiagnosticSeverity.Information]: 'info', [DiagnosticSeverity.Hint]: 'hint' };
let errors = 0;
let warnings = 0;
for (const d of diagnostics) {
  const where = d.path && d.path.length ? d.path.join('.') : '(document)';
  const line = d.range ? `:${d.range.start.line + 1}` : '';
  console.log(`${names[d.severity] ?? d.severity} ${path.relative(process.cwd(), d.source ?? file)}${line} ${where}: ${d.message} [${d.code}]`);
  if (d.severity === DiagnosticSeverity.Error) errors++;
  if (d.severity === DiagnosticSeverity.Warning) warnings++;
}

if (!document || errors > 0 || (strict && warnings > 0)) {
  console.error(`${path.basename(file)}: INVALID (${errors} errors, ${warnings} warnings)`);
  process.exit(1);
}

// Checks of our own: the contract's three channels, each with its message and
// an example, every payload schema resolved (not left as a $ref), and every
// example's payload and headers valid against the message's schemas (the
// parser's ruleset does not check examples of AsyncAPI 3 multi-format
// payloads). The JSON Schemas are draft 2020-12; Ajv2020 reads them as such.
const problems = [];
// schemaJSON returns a schema model's JSON Schema, unwrapping an AsyncAPI 3
// multi-format schema object ({schemaFormat, schema}).
const schemaJSON = (model) => {
  if (!model) return undefined;
  const json = model.json();
  return json && typeof json === 'object' && 'schemaFormat' in json && 'schema' in json ? json.schema : json;
};
const want = {
  'pathling.sync.requested.{target}': 'SyncRequested',
  'pathling.sync.completed.{target}': 'SyncCompleted',
  'pathling.sync.failed.{target}': 'SyncFailed',
};
const channels = new Map(document.channels().all().map((c) => [c.address(), c]));
for (const [address, messageName] of Object.entries(want)) {
  const ch = channels.get(address);
  if (!ch) { problems.push(`channel ${address} is missing`); continue; }
  const msgs = ch.messages().all();
  const msg = msgs.find((m) => m.name() === messageName);
  if (!msg) { problems.push(`channel ${address} lacks message ${messageName}`); continue; }
  const payload = schemaJSON(msg.payload());
  if (!payload || payload.type !== 'object' || Object.keys(payload.properties ?? {}).length === 0) {
    problems.push(`${messageName}: payload schema did not resolve to an object schema with properties`);
  }
  if (msg.examples().length === 0) problems.push(`${messageName}: no example`);
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  const check = (what, schema, value, example) => {
    if (value === undefined || !schema) return;
    const json = structuredClone(schema);
    delete json.$id; // one compiler per message: ids would clash across examples
    let validate;
    try {
      validate = ajv.compile(json); // also checks the schema against its meta-schema
    } catch (err) {
      problems.push(`${messageName}: ${what} schema does not compile: ${err.message}`);
      return;
    }
    if (!validate(value)) {
      for (const e of validate.errors) {
        problems.push(`${messageName} example ${JSON.stringify(example.name() ?? '')}: ${what}${e.instancePath} ${e.message}${e.params && e.params.allowedValues ? ' ' + JSON.stringify(e.params.allowedValues) : ''}`);
      }
    }
  };
  for (const ex of msg.examples().all()) {
    check('payload', payload, ex.payload(), ex);
    check('headers', schemaJSON(msg.headers()), ex.headers(), ex);
  }
}
for (const p of problems) console.log(`error ${p}`);
if (problems.length > 0) {
  console.error(`${path.basename(file)}: INVALID (${problems.length} contract problems)`);
  process.exit(1);
}
console.log(`${path.basename(file)}: valid AsyncAPI ${document.version()} — ${document.channels().length} channels, ${document.operations().length} operations, ${document.messages().length} messages (${warnings} warnings)`);
