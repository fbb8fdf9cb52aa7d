#!/usr/bin/env bash
# Server memory per idle connection: ringport vs the tokio baseline.
#
#   scripts/bench-idle-memory.sh            # 19000 idle connections to each server
#   OURS=engine-example scripts/bench-idle-memory.sh
#
# For each server: start it pinned, sample its RSS, open $CONNS connections from source
# addresses $SOURCE_ADDRS (nothing is sent), hold them for $HOLD s, sample RSS again, and
# report (RSS after - RSS before) / connections. 19,000 stays under the 20,000 open-file
# limit of the server process (ringport needs no fds for them, tokio-echo does).
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

CONNS=${CONNS:-19000}
HOLD=${HOLD:-5}
SOURCE_ADDRS=${SOURCE_ADDRS:-127.0.0.2-127.0.0.250}
PORT=${PORT:-17072}
OUT=${OUT:-"$ROOT/target/bench/idle-$(date +%Y%m%d-%H%M%S)"}
mkdir -p "$OUT"
trap stop_server EXIT

build
echo "# bench-idle-memory: conns=$CONNS hold=${HOLD}s sources=$SOURCE_ADDRS servers=[$SERVERS] results in $OUT"
for server in $SERVERS; do
    start_server "$server" "$PORT"
    file="$OUT/$server-idle.json"
    bench echo --idle --target "$SERVER_ADDR" --connections "$CONNS" --source-addrs "$SOURCE_ADDRS" \
        --duration "$HOLD" --warmup 1 --server-pid "$SERVER_PID" --json >"$file"
    stop_server
    printf '%-9s peak_connections=%-6s rss_before=%sKiB rss_after=%sKiB rss_per_connection=%s bytes connect_failed=%s\n' \
        "$server" \
        "$(json "$file" 'r["peak_connections"]')" \
        "$(json "$file" 'r["server"]["rss_before_kib"]')" \
        "$(json "$file" 'r["server"]["rss_after_kib"]')" \
        "$(json "$file" 'r["server"]["rss_bytes_per_connection"]')" \
        "$(json "$file" 'r["connect_failed"]')"
done
