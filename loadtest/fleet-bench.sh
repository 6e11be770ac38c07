#!/usr/bin/env bash
# The cost of sharing usage plans and the cache through Redis: infergate with an API key and a
# usage plan, every request a cache miss, alone and with `[fleet]` on a local redis-server, at
# the same open-loop rate (half of the in-process peak), alternately for 2 rounds. Prints, per
# round, p50 / p99 latency and the gateway's CPU per request (utime + stime of the process from
# /proc, before and after), and the ratios. Not part of CI.
#   loadtest/fleet-bench.sh [seconds per run, default 10]
# With PIN=1 the gateway runs on core 0 and the load generator on core 1 (taskset).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
work="$(mktemp -d)"
source loadtest/lib.sh
trap 'stop_all; rm -rf "$work"' EXIT
command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --quiet --bin infergate
cargo build --release --quiet -p infergate-loadtest
gw=./target/release/infergate
lt=./target/release/loadtest
gw_pin=(); lt_pin=()
[[ "${PIN:-0}" == 1 ]] && gw_pin=(taskset -c 0) && lt_pin=(taskset -c 1)

rp=$(free_port)
start redis redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no
sleep 0.3
key="bench-$(date +%s%N)"
auth=(INFERGATE_AUTH__API_KEYS="[{name = \"bench\", key_env = \"BENCH_KEY\", rate = 100000000}]" BENCH_KEY="$key")
fleet=(INFERGATE_FLEET__REDIS_URL="redis://127.0.0.1:$rp")
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run NAME RATE ENV...: one run of the gateway with ENV; prints "p50 p99 cpu_us_per_request rps".
run() {
    local name=$1 rate=$2; shift 2
    local p; p=$(free_port)
    start g env "${auth[@]}" "$@" "${gw_pin[@]}" "$gw" --bind "127.0.0.1:$p"
    wait_http "http://127.0.0.1:$p/health/ready"
    local rate_flag=(); [[ "$rate" != peak ]] && rate_flag=(--rate "$rate")
    local before; before=$(ticks "$g")
    "${lt_pin[@]}" "$lt" http --url "http://127.0.0.1:$p" --api-key "$key" --seconds "$secs" --quiet \
        --connections 64 "${rate_flag[@]}" --out "$work/$name.json" >/dev/null
    local after; after=$(ticks "$g")
    stop "$g"
    python3 - "$work/$name.json" "$before" "$after" "$hz" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
cpu_s = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
ok = max(s["ok"], 1)
print(f'{s["ok_latency_ms"]["p50"]} {s["ok_latency_ms"]["p99"]} {cpu_s / ok * 1e6:.1f} {s["achieved_rps"]:.0f}')
PY
}

read -r _ _ _ peak < <(run peak peak)
half=$(( peak / 2 ))
echo "in-process peak (every request a miss): $peak req/s; both runs at $half req/s"
echo "| round | in-process p50 / p99 ms | fleet (Redis) p50 / p99 ms | added p50 / p99 ms | CPU per request in-process / fleet (µs) | ratio |"
echo "|---|---|---|---|---|---|"
for round in 1 2; do
    read -r lp50 lp99 lcpu _ < <(run "local$round" "$half")
    read -r fp50 fp99 fcpu _ < <(run "fleet$round" "$half" "${fleet[@]}")
    python3 - "$round" "$lp50" "$lp99" "$lcpu" "$fp50" "$fp99" "$fcpu" <<'PY'
import sys
r, lp50, lp99, lcpu, fp50, fp99, fcpu = sys.argv[1], *map(float, sys.argv[2:])
print(f"| {r} | {lp50:.3f} / {lp99:.3f} | {fp50:.3f} / {fp99:.3f} | {fp50 - lp50:+.3f} / {fp99 - lp99:+.3f} | {lcpu:.1f} / {fcpu:.1f} | {fcpu / lcpu:.2f} |")
PY
done
