"""Creates a stream on a Kinesis endpoint and fills it with N transactions (ids tx-0 ... tx-N-1)."""

import argparse
import json
import time

import boto3


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--stream", default="bench")
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--count", type=int, default=50_000)
    a = p.parse_args()
    kinesis = boto3.client("kinesis", endpoint_url=a.endpoint_url, region_name="us-east-1")
    kinesis.create_stream(StreamName=a.stream, ShardCount=a.shards)
    while kinesis.describe_stream_summary(StreamName=a.stream)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.05)
    batch = []
    for i in range(a.count):
        tx = {
            "transaction_id": f"tx-{i}", "card_id": f"card-{i % 997}", "amount": (i % 700) + 0.5,
            "merchant_category": 5411, "card_present": i % 3 != 0, "country": "DE", "home_country": "DE",
            "distance_from_home_km": (i % 50) * 1.5, "tx_count_1h": i % 4, "tx_count_24h": i % 12,
            "avg_amount_30d": 80.0,
        }
        batch.append({"Data": json.dumps(tx).encode(), "PartitionKey": tx["card_id"]})
        if len(batch) == 500 or i == a.count - 1:
            while batch:
                out = kinesis.put_records(StreamName=a.stream, Records=batch)
                batch = [r for r, res in zip(batch, out["Records"]) if "ErrorCode" in res]
    print(f"produced {a.count} records into {a.shards} shards")


if __name__ == "__main__":
    main()
