#!/usr/bin/env bash
# Type-checks the web client's JSDoc with TypeScript (checkJs, no emit).
# The client itself has no dependencies and no build step; TypeScript is
# only a checker, pinned and kept under target/ (not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
TSC_VERSION=5.9.3
tools=target/tools/typescript-$TSC_VERSION
if [ ! -x "$tools/node_modules/.bin/tsc" ]; then
  mkdir -p "$tools"
  npm install --silent --no-audit --no-fund --prefix "$tools" "typescript@$TSC_VERSION" >/dev/null
fi
"$tools/node_modules/.bin/tsc" -p web/jsconfig.json
echo "web/*.js: no type errors"
