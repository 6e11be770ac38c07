#!/usr/bin/env bash
# Batching on vs off in front of a SageMaker endpoint that takes 5 ms per invocation and serves
# 8 at once (the fake endpoint of this crate), measured alternately in one run with wrk.
#   loadtest/sagemaker-batching.sh [duration, default 10s] [rounds, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
rounds="${2:-2}"
command -v wrk >/dev/null || { echo "wrk is required: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --bin infergate && cargo build --release --quiet -p infergate-loadtest
gw_port=18281
ep_port=18282
./target/release/loadtest fake-endpoint --bind "127.0.0.1:$ep_port" --latency-ms 5 --concurrency 8 2>/dev/null &
endpoint=$!
trap 'kill $endpoint 2>/dev/null || true' EXIT
ready() { python3 -c "import urllib.request; urllib.request.urlopen('$1')" 2>/dev/null; }
stats() { python3 -c "import json, urllib.request; s = json.load(urllib.request.urlopen('http://127.0.0.1:$ep_port/stats')); print(s['invocations'], s['rows'])"; }
for _ in $(seq 1 50); do ready "http://127.0.0.1:$ep_port/stats" && break; sleep 0.1; done
run() {   # $1: name, $2: max_batch_size
    AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
    INFERGATE_MODEL__KIND=sagemaker INFERGATE_MODEL__SAGEMAKER__ENDPOINT_NAME=fraud-xgb \
    INFERGATE_MODEL__SAGEMAKER__ENDPOINT_URL="http://127.0.0.1:$ep_port" \
    INFERGATE_BATCHING__MAX_BATCH_SIZE="$2" INFERGATE_CACHE__MAX_ENTRIES=0 \
        ./target/release/infergate --bind "127.0.0.1:$gw_port" >/dev/null 2>&1 &
    local gateway=$!
    for _ in $(seq 1 100); do ready "http://127.0.0.1:$gw_port/health/ready" && break; sleep 0.1; done
    read -r inv0 rows0 <<<"$(stats)"
    local out
    out=$(UNIQUE=1 wrk -t2 -c64 -d"$duration" -s loadtest/wrk/score.lua \
        "http://127.0.0.1:$gw_port/v1/transactions/score" | grep '^RESULT')
    read -r inv1 rows1 <<<"$(stats)"
    kill "$gateway"; wait "$gateway" 2>/dev/null || true
    local inv=$((inv1 - inv0)) rows=$((rows1 - rows0))
    printf '%-22s %s invocations=%d rows=%d invocations_per_1000_tx=%.1f\n' "$1" "${out#RESULT }" \
        "$inv" "$rows" "$(python3 -c "print(1000 * $inv / max($rows, 1))")"
}
for round in $(seq 1 "$rounds"); do
    echo "# round $round"
    run "batching (max 64)" 64
    run "no batching (max 1)" 1
done
