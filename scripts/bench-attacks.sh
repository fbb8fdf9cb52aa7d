#!/usr/bin/env bash
# Issue 10's attack benchmark: does an attack hurt the well-behaved clients?
#
#   scripts/bench-attacks.sh                          # every attack, ROUNDS pairs each
#   ATTACKS="ping-flood slowloris" scripts/bench-attacks.sh
#
# For each attack and round, two runs on a fresh server each, one after the other: without
# the attack ("none"), then with it. Each run starts `ringport serve --workers 2` (secret set,
# per-IP limits on for loopback: `limits.exempt_loopback=false`, defaults otherwise) pinned to
# SERVER_CPU, and on CLIENT_CPU the well-behaved population:
#   - `ringport-bench fanout`: SUBS subscribers in one room, FANOUT_RATE msg/s through the
#     admin API -> delivery p99, lost deliveries, the server's peak RSS (1 s samples);
#   - `ringport-bench churn --poisson --rooms-per-conn 0`: CHURN_RATE connect/HELLO/WELCOME/
#     close per second at random times (evenly spaced ones keep one phase against the
#     fan-out's pushes, so their tail would depend on a phase that differs per run)
#     -> WELCOME p99 (connect -> WELCOME);
# both from 127.0.0.2-127.0.0.250, and, a second later, `ringport-bench attack --kind K` from
# 127.0.1.1-127.0.1.64 (the one-address floods from 127.0.1.1), also on CLIENT_CPU but under
# SCHED_IDLE (`chrt --idle 0`; ATTACK_SCHED=nice runs it at `nice -n ATTACK_NICE`, default 19,
# as before 2026-12-04), for the whole run: on a 2-core machine the attacker stands in for
# other machines, and its own CPU would otherwise slow the population's client and show up as
# the server's latency. A niced task still keeps the core for a slice once the client wakes;
# an idle-class one gives it up at once. After the run the server's limit counters (ringport_limit_hits_total and the
# closes by reason) are kept. Every run's JSON is in OUT; the table goes to stdout.
set -euo pipefail
source "$(dirname "$0")/bench-common.sh"

ROUNDS=${ROUNDS:-1}
FANOUT_RATE=${FANOUT_RATE:-10}
CHURN_RATE=${CHURN_RATE:-50}
WORKERS=${WORKERS:-2}
ATTACK_NICE=${ATTACK_NICE:-19}
ATTACK_SCHED=${ATTACK_SCHED:-idle}
PORT=${PORT:-17180}
ADMIN_PORT=${ADMIN_PORT:-17181}
ALL_ATTACKS="resume-flood join-churn publish-flood partial-frame conn-flood handshake-flood auth-fail
ping-flood slowloris half-open garbage oversized rst-storm slow-consumer session-replace
admin-slowloris admin-idle"
ATTACKS=${ATTACKS:-$ALL_ATTACKS}
gateway_run_defaults attacks
trap stop_server EXIT

SERVERS=ringport build

# Connections the held attacks keep (the rest run this many attacker threads, at most 16).
attack_connections() {
    case $1 in
    conn-flood) echo 1500 ;;     # over limits.max_connections_per_ip (1024)
    admin-idle) echo 400 ;;      # over admin.max_connections (256)
    partial-frame | slowloris | half-open | admin-slowloris) echo 300 ;;
    slow-consumer) echo 50 ;;
    *) echo 4 ;;
    esac
}

one_run() { # one_run ATTACK ROUND
    local attack=$1 round=$2 tag="$1-$2"
    [[ $attack == none ]] && tag="none-before-$3-$2"
    taskset -c "$SERVER_CPU" "$RELEASE/ringport" serve --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
        --workers "$WORKERS" --log-level warn --set limits.exempt_loopback=false >"$OUT/$tag-server.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$PORT" && wait_port "$ADMIN_PORT" || { stop_server; die "ringport serve did not listen"; }
    local common=(--target "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" --duration "$DURATION"
        --warmup "$WARMUP" --source-addrs 127.0.0.2-127.0.0.250 --json)
    timeout 300 taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" fanout "${common[@]}" --connections "$SUBS" \
        --rooms 1 --rate "$FANOUT_RATE" --server-pid "$SERVER_PID" --softirq-cpu "$SERVER_CPU" >"$OUT/$tag-fanout.json" &
    local fan=$!
    timeout 300 taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" churn "${common[@]}" --rate "$CHURN_RATE" \
        --poisson --rooms-per-conn 0 >"$OUT/$tag-churn.json" &
    local churn=$!
    local att=
    if [[ $attack != none ]]; then
        sleep 1
        local sched=(nice -n "$ATTACK_NICE")
        [[ $ATTACK_SCHED == idle ]] && sched=(chrt --idle 0)
        timeout 300 "${sched[@]}" taskset -c "$CLIENT_CPU" "$RELEASE/ringport-bench" attack --kind "$attack" \
            --target "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" --duration "$((WARMUP + DURATION + 3))" \
            --connections "$(attack_connections "$attack")" --json >"$OUT/$tag-attack.json" &
        att=$!
    fi
    local ok=0
    wait "$fan" || ok=$?
    wait "$churn" || ok=$?
    [[ -n $att ]] && { wait "$att" || ok=$?; }
    [[ $ok == 0 ]] || echo "  warning: a client of $tag exited with $ok" >&2
    curl -s -m 10 "http://127.0.0.1:$ADMIN_PORT/metrics" >"$OUT/$tag-metrics.txt" || true
    stop_server
    python3 - "$OUT" "$tag" "$attack" <<'EOF'
import json, re, sys
out, tag, attack = sys.argv[1:4]
def load(name):
    try:
        return json.load(open(f"{out}/{tag}-{name}.json"))
    except Exception:
        return None
fan, churn, att = load("fanout"), load("churn"), load("attack")
def ms(r):
    return "-" if r is None else f'{r["run"]["latency"]["p99_us"] / 1000:.2f}'
rss, cpu = "-", "-"
if fan and fan["run"].get("server"):
    sv = fan["run"]["server"]
    busy = sv["cpu_secs"] + (sv.get("softirq_cpu_secs") or 0)
    cpu = f'{100 * busy / fan["run"]["measured_secs"]:.0f}'
if fan:
    samples = [s.get("server_rss_kib") or 0 for s in fan["run"]["timeline"]]
    if samples:
        rss = f"{max(samples) / 1024:.0f}"
hits = []
try:
    for line in open(f"{out}/{tag}-metrics.txt"):
        m = re.match(r'ringport_limit_hits_total\{limit="([a-z_]+)"\} (\d+)', line)
        if m and int(m.group(2)) > 0:
            hits.append(f"{m.group(1)} {m.group(2)}")
        m = re.match(r'ringport_connections_closed_total\{reason="(slow_consumer|handshake_timeout)"\} (\d+)', line)
        if m and int(m.group(2)) > 0:
            hits.append(f"closed {m.group(1)} {m.group(2)}")
except OSError:
    pass
lost = "-" if fan is None else fan.get("lost")
welcomes = "-" if churn is None else churn["run"]["messages"]
churn_failed = "-" if churn is None else churn["run"]["connect_failed"]
outcomes = "" if att is None else ", ".join(f"{k} {v}" for k, v in att["outcomes"].items())
opened = "" if att is None else att["connections_opened"]
print(f"| {attack} | {ms(churn)} | {welcomes} | {churn_failed} | {ms(fan)} | {lost} | {rss} | {cpu} | {opened} | {outcomes} | {'; '.join(hits)} |")
EOF
}

echo "load average before: $(cat /proc/loadavg)"
echo "| attack | WELCOME p99 ms | welcomes | churn failures | delivery p99 ms | lost | server peak RSS MiB | server CPU % | attack connections | attack outcomes | limit counters |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for attack in $ATTACKS; do
    for round in $(seq "$ROUNDS"); do
        one_run none "$round" "$attack"
        one_run "$attack" "$round"
    done
done
echo "load average after: $(cat /proc/loadavg)"
