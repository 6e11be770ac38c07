"""The hand-written alternative to infergate's consumer: a simple boto3 polling loop that reads
every shard of a stream, decodes each record, scores each GetRecords page with one HTTP call to
infergate's score-batch route, and writes the scores as JSON lines. It stops when it has written
--count lines, and prints the records per second."""

import argparse
import json
import time

import boto3
import requests


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint-url", required=True)
    p.add_argument("--gateway-url", required=True)
    p.add_argument("--stream", default="bench")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    kinesis = boto3.client("kinesis", endpoint_url=a.endpoint_url, region_name="us-east-1")
    http = requests.Session()
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=a.stream)["Shards"]]
    iterators = {
        s: kinesis.get_shard_iterator(StreamName=a.stream, ShardId=s, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for s in shards
    }
    written = 0
    started = time.monotonic()
    with open(a.out, "w") as out:
        while written < a.count:
            for shard, iterator in list(iterators.items()):
                if iterator is None:
                    continue
                page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                iterators[shard] = page.get("NextShardIterator")
                transactions = [json.loads(r["Data"]) for r in page["Records"]]
                if not transactions:
                    continue
                for i in range(0, len(transactions), 1000):
                    chunk = transactions[i : i + 1000]
                    response = http.post(f"{a.gateway_url}/v1/transactions/score-batch", json={"transactions": chunk})
                    response.raise_for_status()
                    for result in response.json()["results"]:
                        out.write(json.dumps(result["score"]) + "\n")
                        written += 1
    elapsed = time.monotonic() - started
    print(f"RESULT records={written} seconds={elapsed:.2f} records_per_s={written / elapsed:.0f}")


if __name__ == "__main__":
    main()
