#!/usr/bin/env python3
"""Generate KPL de-aggregation fixtures with the ``aws-kinesis-agg`` package.

The Kinesis consumer de-aggregates records written by the Kinesis Producer
Library (src/kinesis/kpl.rs). The Rust tests must agree with a real producer,
not with a second reading of the format by the same author, so this script has
AWS's own Python aggregator (``aws_kinesis_agg.aggregator``) build the
aggregated records and writes them, with the user records that went in, to
``tests/fixtures/kpl/cases.json``.

Each case holds:

* ``partition_key``: the key the aggregated record would be put to Kinesis
  with (the first user record's key, as the aggregator reports it);
* ``aggregated``: the Kinesis record's data, base64;
* either ``records``: the user records expected back, in order (their
  sub-sequence numbers are their positions), each with ``partition_key``,
  ``explicit_hash_key`` (string or null) and ``data`` (base64), or, for large
  payloads, ``data_len`` and ``data_md5`` (hex) instead of ``data`` to keep the
  fixture small;
* or ``plain``: the reason code the record must be read as one plain record
  for. These are malformed messages built with the package's own protobuf
  classes (``messages_pb2``), which the aggregator API cannot produce.

The expectations are the inputs handed to the aggregator, not the output of
the package's de-aggregator; the script still runs that de-aggregator over
every case as a cross-check. It has one known divergence from the format (and
from the Java KCL): when a record's key table holds explicit hash keys, a user
record without one is given the table's first entry. The cross-check therefore
compares explicit hash keys only where a user record has one.

Usage (from the repository root):

    .venv/bin/pip install aws-kinesis-agg==1.2.3 protobuf==7.36.2
    .venv/bin/python scripts/make_kpl_fixtures.py [--out tests/fixtures/kpl/cases.json]

The data is drawn from a seeded generator and protobuf serialisation of these
messages is deterministic, so re-running with the same package versions
rewrites a byte-identical file.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.metadata
import json
import random
import string
from pathlib import Path

import aws_kinesis_agg

# The aggregator module must be imported before messages_pb2: the generated
# messages_pb2 does a top-level `import config_pb2`, which only resolves once
# the aggregator has put the package's own folder on sys.path.
from aws_kinesis_agg.aggregator import AggRecord, RecordAggregator
from aws_kinesis_agg.deaggregator import deaggregate_records
from aws_kinesis_agg import messages_pb2  # noqa: E402 (order matters, see above)

SEED = 20250614
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kpl" / "cases.json"

# Above this size a user record's data is given by length and MD5 only, so
# that the large case does not store its payload twice (once inside the
# aggregated record, once as the expectation).
INLINE_DATA_LIMIT = 4096

# 2^128 - 1: the largest hash key Kinesis accepts; explicit hash keys are
# decimal strings in [0, 2^128 - 1].
MAX_HASH_KEY = (1 << 128) - 1


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def wrap(message: bytes) -> bytes:
    """Frame a serialised AggregatedRecord the way the aggregator does."""
    return aws_kinesis_agg.MAGIC + message + hashlib.md5(message).digest()


def expected(user_records):
    out = []
    for pk, ehk, data in user_records:
        rec = {"partition_key": pk, "explicit_hash_key": ehk}
        if len(data) > INLINE_DATA_LIMIT:
            rec["data_len"] = len(data)
            rec["data_md5"] = hashlib.md5(data).hexdigest()
        else:
            rec["data"] = b64(data)
        out.append(rec)
    return out


def aggregate_one(user_records):
    """Aggregate user records that must fit into a single Kinesis record."""
    agg = AggRecord()
    for pk, ehk, data in user_records:
        if not agg.add_user_record(pk, data, ehk):
            raise SystemExit("fixture case does not fit into one aggregated record")
    pk, _ehk, blob = agg.get_contents()
    return pk, blob


def cross_check(name, pk, blob, user_records):
    """Read the record back with the package's own de-aggregator."""
    kinesis_record = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "sequenceNumber": "1",
            "approximateArrivalTimestamp": 0,
            "partitionKey": pk,
            "data": b64(blob),
        }
    }
    got = deaggregate_records([kinesis_record])
    if len(got) != len(user_records):
        raise SystemExit(f"{name}: de-aggregator returned {len(got)} records, expected {len(user_records)}")
    for i, (rec, (want_pk, want_ehk, want_data)) in enumerate(zip(got, user_records)):
        k = rec["kinesis"]
        ok = (
            k["subSequenceNumber"] == i
            and k["partitionKey"] == want_pk
            and base64.b64decode(k["data"]) == want_data
            and (want_ehk is None or k["explicitHashKey"] == want_ehk)
        )
        if not ok:
            raise SystemExit(f"{name}: user record {i} differs from the package's de-aggregator")


def aggregated_case(name, user_records, note):
    pk, blob = aggregate_one(user_records)
    cross_check(name, pk, blob, user_records)
    return {
        "name": name,
        "note": note,
        "partition_key": pk,
        "aggregated": b64(blob),
        "records": expected(user_records),
    }


def plain_case(name, partition_key, message: messages_pb2.AggregatedRecord, reason, note):
    # SerializePartialToString: some of these deliberately lack required fields.
    blob = wrap(message.SerializePartialToString())
    return {
        "name": name,
        "note": note,
        "partition_key": partition_key,
        "aggregated": b64(blob),
        "plain": reason,
    }


def rand_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def rand_key(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + "-_.") for _ in range(n))


def rand_hash_key(rng: random.Random) -> str:
    return str(rng.randint(0, MAX_HASH_KEY))


def build_cases(rng: random.Random):
    cases = []

    cases.append(
        aggregated_case(
            "single",
            [("card-4242", None, b'{"amount":12.5,"currency":"EUR"}')],
            "one user record, no explicit hash key",
        )
    )

    pks = [rand_key(rng, rng.randint(1, 40)) for _ in range(7)]
    ehks = [rand_hash_key(rng) for _ in range(3)] + ["0", str(MAX_HASH_KEY)]
    fifty = []
    for i in range(50):
        ehk = rng.choice(ehks) if i % 3 == 1 else None
        n = 0 if i % 17 == 5 else rng.randint(1, 300)
        fifty.append((rng.choice(pks), ehk, rand_bytes(rng, n)))
    cases.append(
        aggregated_case(
            "fifty_mixed_keys",
            fifty,
            "50 user records over 7 partition keys; every third has an explicit hash key "
            "(including 0 and 2^128-1); some data is empty",
        )
    )

    # The package's aggregator sends the magic bytes (and a whole aggregated
    # record) through as opaque data; a de-aggregator must not recurse into it.
    nested = aggregate_one([("inner", None, b"inner payload")])[1]
    cases.append(
        aggregated_case(
            "binary_data",
            [
                ("bin", None, bytes(range(256))),
                ("bin", None, aws_kinesis_agg.MAGIC),
                ("bin", None, nested),
                ("bin", None, b"\x00" * 64),
                ("bin", None, b"\xff" * 17),
            ],
            "every byte value, the magic alone, a whole aggregated record as data (not recursed into), "
            "zero and 0xff runs",
        )
    )

    cases.append(
        aggregated_case(
            "unicode_keys",
            [
                ("카드-번호", None, "결제 승인".encode()),
                ("💳🧾", "12345678901234567890", b"emoji key"),
                ("e\u0301te\u0301", None, b"combining accents"),
                ("\u00e9t\u00e9", None, b"precomposed accents: a different key"),
                ("ключ/с/слэшами", None, b""),
                ("€" * 256, None, b"256 three-byte characters: the Kinesis partition key limit"),
                ("💳🧾", None, b"key reused without an explicit hash key"),
            ],
            "non-ASCII partition keys, including one at the 256-character limit",
        )
    )

    large = [("big", None, rand_bytes(rng, 30_000))]
    large_pks = [f"shard-key-{i}" for i in range(40)]
    for i in range(200):
        ehk = rand_hash_key(rng) if i % 10 == 0 else None
        large.append((rng.choice(large_pks), ehk, rand_bytes(rng, rng.randint(20, 150))))
    cases.append(
        aggregated_case(
            "large",
            large,
            "201 user records, one of them 30 KB, 20 distinct explicit hash keys; "
            "data larger than 4 KB is given by length and MD5",
        )
    )

    # A small max_size makes the aggregator split a stream of user records
    # over several Kinesis records, as a producer does at the 1 MB limit; each
    # part is a record of its own and its sub-sequence numbers start at 0.
    emitted = []
    aggregator = RecordAggregator(max_size=1024)
    aggregator.on_record_complete(emitted.append, execute_on_new_thread=False)
    stream = [(f"user-{i % 4}", None, rand_bytes(rng, 90)) for i in range(25)]
    boundaries = []
    for pk, ehk, data in stream:
        aggregator.add_user_record(pk, data, ehk)
        boundaries.append(len(emitted))
    tail = aggregator.clear_and_get()
    if tail is not None:
        emitted.append(tail)
    if len(emitted) < 2:
        raise SystemExit("split case did not split")
    for part, record in enumerate(emitted):
        members = [u for u, b in zip(stream, boundaries) if b == part]
        pk, _ehk, blob = record.get_contents()
        name = f"split_part_{part}"
        cross_check(name, pk, blob, members)
        cases.append(
            {
                "name": name,
                "note": f"part {part + 1} of {len(emitted)} of 25 user records aggregated with max_size=1024",
                "partition_key": pk,
                "aggregated": b64(blob),
                "records": expected(members),
            }
        )

    # Messages the aggregator API cannot produce, built with its protobuf classes.
    msg = messages_pb2.AggregatedRecord()
    msg.partition_key_table.append("orphan-key")
    msg.explicit_hash_key_table.append("42")
    cases.append(
        {
            "name": "zero_records",
            "note": "key tables but no user records: the KCL yields nothing for it",
            "partition_key": "orphan-key",
            "aggregated": b64(wrap(msg.SerializeToString())),
            "records": [],
        }
    )

    msg = messages_pb2.AggregatedRecord()
    msg.partition_key_table.append("only-key")
    for idx in (0, 1):
        r = msg.records.add()
        r.partition_key_index = idx
        r.data = b"x"
    cases.append(
        plain_case(
            "pk_index_out_of_range", "only-key", msg, "bad_index",
            "second record's partition key index is past the table",
        )
    )

    msg = messages_pb2.AggregatedRecord()
    msg.partition_key_table.append("k")
    msg.explicit_hash_key_table.append("7")
    r = msg.records.add()
    r.partition_key_index = 0
    r.explicit_hash_key_index = 3
    r.data = b"x"
    cases.append(
        plain_case("ehk_index_out_of_range", "k", msg, "bad_index", "explicit hash key index is past the table")
    )

    msg = messages_pb2.AggregatedRecord()
    msg.partition_key_table.append("k")
    r = msg.records.add()
    r.partition_key_index = 0
    cases.append(
        plain_case("missing_required_data", "k", msg, "bad_protobuf", "a record without its required data field")
    )

    msg = messages_pb2.AggregatedRecord()
    msg.partition_key_table.append("k")
    r = msg.records.add()
    r.data = b"x"
    cases.append(
        plain_case(
            "missing_required_pk_index", "k", msg, "bad_protobuf",
            "a record without its required partition key index",
        )
    )

    msg = messages_pb2.AggregatedRecord()
    msg.partition_key_table.append("k")
    r = msg.records.add()
    r.partition_key_index = 0
    r.data = b"x"
    r.tags.add().value = "tag without its required key"
    cases.append(plain_case("tag_missing_key", "k", msg, "bad_protobuf", "a tag without its required key"))

    # Tags are part of the format but unused by the KPL and KCL; a well-formed
    # one is accepted and ignored.
    msg = messages_pb2.AggregatedRecord()
    msg.partition_key_table.append("tagged")
    r = msg.records.add()
    r.partition_key_index = 0
    r.data = b"with tags"
    t = r.tags.add()
    t.key = "source"
    t.value = "pos-terminal"
    r.tags.add().key = "no-value"
    blob = wrap(msg.SerializeToString())
    cross_check("tags_ignored", "tagged", blob, [("tagged", None, b"with tags")])
    cases.append(
        {
            "name": "tags_ignored",
            "note": "well-formed tags are accepted and dropped",
            "partition_key": "tagged",
            "aggregated": b64(blob),
            "records": expected([("tagged", None, b"with tags")]),
        }
    )

    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    cases = build_cases(random.Random(SEED))
    doc = {
        "generator": "scripts/make_kpl_fixtures.py",
        "aws_kinesis_agg_version": importlib.metadata.version("aws-kinesis-agg"),
        "protobuf_version": importlib.metadata.version("protobuf"),
        "seed": SEED,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
