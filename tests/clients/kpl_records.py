"""Builds Kinesis records the way a KPL producer does, with AWS's own aggregator.

Prints a JSON list of records to put: aggregated records holding the transactions
`<prefix>-<i>` for the even i (several user records each), plain records for the odd i, and one
aggregated record whose checksum is broken (a consumer must read it as one plain record).
"""

import argparse
import base64
import json
import sys

# The package's protobuf module only imports after its aggregator has been imported.
from aws_kinesis_agg.aggregator import RecordAggregator


def transaction(tx_id: str, i: int) -> dict:
    return {
        "transaction_id": tx_id,
        "card_id": f"card-{i % 31}",
        "amount": (i % 400) + 0.25,
        "merchant_category": 5411,
        "card_present": True,
        "country": "DE",
        "home_country": "DE",
        "distance_from_home_km": 2.5,
        "tx_count_1h": 0,
        "tx_count_24h": 3,
        "avg_amount_30d": 60.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", default="kpl")
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--max-size", type=int, default=4096)
    args = parser.parse_args()

    out = []
    emitted = []
    aggregator = RecordAggregator(max_size=args.max_size)
    aggregator.on_record_complete(emitted.append, execute_on_new_thread=False)
    for i in range(args.count):
        tx = transaction(f"{args.prefix}-{i}", i)
        data = json.dumps(tx).encode()
        if i % 2 == 0:
            aggregator.add_user_record(tx["card_id"], data)
        else:
            out.append({"kind": "plain", "partition_key": tx["card_id"], "data_base64": base64.b64encode(data).decode()})
    tail = aggregator.clear_and_get()
    if tail is not None:
        emitted.append(tail)
    for record in emitted:
        pk, _ehk, blob = record.get_contents()
        out.append({"kind": "aggregated", "partition_key": pk, "data_base64": base64.b64encode(blob).decode()})
    # A broken checksum: the whole record becomes one (undecodable) plain record.
    pk, _ehk, blob = emitted[0].get_contents()
    broken = bytearray(blob)
    broken[-1] ^= 0xFF
    out.append({"kind": "corrupted", "partition_key": pk, "data_base64": base64.b64encode(bytes(broken)).decode()})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
