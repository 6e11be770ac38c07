#!/usr/bin/env bash
# A quick REST measurement with wrk (apt-get install wrk), a cross-check of the load tool: one
# release build, scenarios run alternately in one run, so the figures compare as ratios.
#   loadtest/quick-bench.sh [duration, default 10s] [rounds, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
rounds="${2:-2}"
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
# BENCH_BIN: a binary to measure instead of building one.
bin="${BENCH_BIN:-}"
if [[ -z "$bin" ]]; then
    cargo build --release --quiet --bin infergate
    bin=./target/release/infergate
fi
key="bench-$(date +%s%N)"
port=18181
run_gateway() {   # $@: extra environment
    env "$@" "$bin" --bind "127.0.0.1:$port" >/dev/null 2>&1 &
    gateway=$!
    for _ in $(seq 1 100); do
        python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health/ready')" 2>/dev/null && return
        sleep 0.1
    done
    echo "gateway did not start" >&2; exit 1
}
stop_gateway() { kill "$gateway"; wait "$gateway" 2>/dev/null || true; }
load() {   # $1: name, $2: API key or "", $3: UNIQUE 0|1
    local out
    out=$(API_KEY="$2" UNIQUE="$3" wrk -t2 -c64 -d"$duration" -s loadtest/wrk/score.lua \
        "http://127.0.0.1:$port/v1/transactions/score" | grep '^RESULT')
    printf '%-34s %s\n' "$1" "${out#RESULT }"
}
protected=(INFERGATE_AUTH__API_KEYS="[{name = \"bench\", key_env = \"BENCH_KEY\", rate = 10000000}]" BENCH_KEY="$key")
for round in $(seq 1 "$rounds"); do
    echo "# round $round"
    run_gateway INFERGATE_CACHE__MAX_ENTRIES=0
    load "open, no cache (model path)" "" 1
    stop_gateway
    run_gateway "${protected[@]}"
    load "auth+limits+cache, miss" "$key" 1
    load "auth+limits+cache, hit" "$key" 0
    stop_gateway
done
