#!/usr/bin/env bash
# Validates docs/asyncapi.yaml (AsyncAPI 3) with the official parser, offline:
# the JSON Schemas it references (messages/schemas/) are read from the work
# tree, and every message example is checked against its schemas. Then proves
# the check can fail, on a copy with a broken example. Installs Node.js and the
# pinned npm packages (scripts/asyncapi/package-lock.json) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
dir=scripts/asyncapi
if [ ! -d "$dir/node_modules/@asyncapi/parser" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
fi

echo "asyncapi: validating docs/asyncapi.yaml"
node "$dir/validate.mjs" docs/asyncapi.yaml

# The check must be able to fail: an example that breaks its schema.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/docs"
cp -r messages "$tmp/messages"
sed 's/^            saveMode: overwrite$/            saveMode: sideways/' docs/asyncapi.yaml >"$tmp/docs/asyncapi.yaml"
if cmp -s docs/asyncapi.yaml "$tmp/docs/asyncapi.yaml"; then
  echo "asyncapi: self-test could not plant its error (the full-overwrite example changed?)" >&2
  exit 1
fi
if node "$dir/validate.mjs" "$tmp/docs/asyncapi.yaml" >"$tmp/out" 2>&1; then
  cat "$tmp/out"
  echo "asyncapi: self-test FAILED: a broken example passed validation" >&2
  exit 1
fi
grep -q 'saveMode must be equal to one of the allowed values' "$tmp/out" || { cat "$tmp/out"; echo "asyncapi: self-test failed for another reason" >&2; exit 1; }
echo "asyncapi: self-test ok (a broken example is rejected)"
