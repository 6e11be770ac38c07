#!/usr/bin/env bash
# Stream scoring end to end (records in a stream -> scored JSON lines) on this machine:
# infergate's built-in consumer vs a simple boto3 polling loop that scores through infergate's
# REST API, alternately, against kinesalite, with the embedded model.
#   loadtest/kinesis-throughput.sh [records, default 50000] [rounds, default 2]
# Needs the test tools (scripts/test installs them): the test virtualenv (boto3, requests) and
# kinesalite.
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-50000}"
rounds="${2:-2}"
venv="${TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/infergate/test-venv}"
node_dir="${TEST_NODE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/infergate/node}"
cargo build --release --quiet --bin infergate
work="$(mktemp -d)"
kl_port=18451
gw_port=18452
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
node "$node_dir/node_modules/kinesalite/cli.js" --port "$kl_port" --createStreamMs 0 >/dev/null 2>&1 &
kinesalite=$!
trap 'kill $kinesalite 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 1
"$venv/bin/python" loadtest/peers/kinesis_produce.py --endpoint-url "http://127.0.0.1:$kl_port" --count "$count"
lines() { [[ -f "$1" ]] && wc -l <"$1" || echo 0; }
for round in $(seq 1 "$rounds"); do
    echo "# round $round"
    rm -rf "$work/ck" "$work/scored.jsonl"
    printf '[kinesis]\nstream = "bench"\nendpoint_url = "http://127.0.0.1:%s"\npoll_interval_ms = 100\ncheckpoint = { kind = "file", dir = "%s/ck" }\nsink = { kind = "file", path = "%s/scored.jsonl" }\ndead_letter = { kind = "file", path = "%s/dead.jsonl" }\n' \
        "$kl_port" "$work" "$work" "$work" > "$work/gw.toml"
    start=$(date +%s.%N)
    ./target/release/infergate --config "$work/gw.toml" --bind "127.0.0.1:$gw_port" >/dev/null 2>&1 &
    gateway=$!
    while (( $(lines "$work/scored.jsonl") < count )); do sleep 0.05; done
    end=$(date +%s.%N)
    kill "$gateway"; wait "$gateway" 2>/dev/null || true
    python3 -c "print(f'infergate consumer     records=$count seconds={$end - $start:.2f} records_per_s={$count / ($end - $start):.0f} (includes start-up)')"

    ./target/release/infergate --bind "127.0.0.1:$gw_port" >/dev/null 2>&1 &
    gateway=$!
    sleep 0.5
    printf 'boto3 loop + REST      '
    "$venv/bin/python" loadtest/peers/boto3_consumer.py --endpoint-url "http://127.0.0.1:$kl_port" \
        --gateway-url "http://127.0.0.1:$gw_port" --count "$count" --out "$work/boto3.jsonl" | sed 's/^RESULT //'
    kill "$gateway"; wait "$gateway" 2>/dev/null || true
done
