#!/usr/bin/env bash
# Tests of the JavaScript SDK: unit tests (codec against docs/protocol.md's examples, the
# session state machine, the client with a scripted WebSocket) and integration tests against
# a real gateway (target/release/ringport, built here if missing). Fails if node is missing.
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null || { echo "sdk/js/test.sh: node (>= 18) is required" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
(( major >= 18 )) || { echo "sdk/js/test.sh: node >= 18 required, found $(node --version)" >&2; exit 1; }
# devDependencies only (ws and typescript, for the tests); the SDK itself has no dependencies.
if [[ -f package-lock.json ]]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
if [[ -z "${RINGPORT_BIN:-}" ]]; then
    (cd ../.. && nice -n 19 cargo build --release -p ringport)
fi
# The hand-written declarations (index.d.ts) against a typed usage of the API.
npx --no-install tsc -p test/types
exec node --test test/*.test.js
