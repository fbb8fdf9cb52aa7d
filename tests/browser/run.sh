#!/usr/bin/env bash
# The demo (GET /demo) and dashboard (GET /dashboard) pages in headless Chromium against a
# real `ringport serve` (tests/browser/demo-dashboard.test.mjs). Needs node (>= 18), npm and
# Debian's chromium (CHROMIUM to use another binary); fails, never skips, when one is missing.
# Screenshots, console logs and the gateway's logs: target/browser-artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
command -v node >/dev/null || { echo "tests/browser/run.sh: node (>= 18) is required" >&2; exit 1; }
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[[ -x "$CHROMIUM" ]] || { echo "tests/browser/run.sh: no Chromium at $CHROMIUM (apt-get install chromium)" >&2; exit 1; }
export CHROMIUM
"$CHROMIUM" --version
# playwright-core only: it drives the installed browser and downloads none.
npm ci --no-audit --no-fund
if [[ -z "${RINGPORT_BIN:-}" ]]; then
    (cd ../.. && nice -n 19 cargo build --release -p ringport)
fi
rm -rf ../../target/browser-artifacts
exec node --test --test-concurrency=1 demo-dashboard.test.mjs
