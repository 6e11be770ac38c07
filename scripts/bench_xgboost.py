#!/usr/bin/env python3
"""Time xgboost's own in-process predictors on the fraud model.

The rows are those of tests/fixtures/xgb/fraud_parity.csv, as in the Rust
benchmark (`cargo bench --bench xgboost`), so the numbers compare directly:
one row per call, and batches of 64 rows, through `inplace_predict` and
through `predict` on a freshly built DMatrix (what a service has to do for
each request), and the explanations (`pred_contribs`, exact TreeSHAP) of
both. Prints microseconds per row.

Usage: .venv/bin/python scripts/bench_xgboost.py [--threads N] [--seconds S]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

import numpy as np
import xgboost as xgb

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "fraud-xgb" / "model.json"
ROWS = ROOT / "tests" / "fixtures" / "xgb" / "fraud_parity.csv"
BATCH = 64


def load_rows() -> tuple[list[str], np.ndarray, np.ndarray]:
    with ROWS.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        data = [[float(v) if v != "" else np.nan for v in line] for line in reader if line]
    table = np.asarray(data, dtype=np.float32)
    return header[:-1], table[:, :-1].copy(), table[:, -1].copy()


def time_per_row(call, n_calls: int, rows_per_call: int, seconds: float) -> float:
    """Median over repeats of the mean time per row, in microseconds.

    Each repeat cycles through `n_calls` distinct inputs, like the Rust
    benchmark, so no single input is replayed from a warm cache.
    """
    for i in range(min(n_calls, 200)):  # warm-up
        call(i)
    samples = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        calls = min(n_calls, 500)
        start = time.perf_counter_ns()
        for i in range(calls):
            call(i)
        elapsed = time.perf_counter_ns() - start
        samples.append(elapsed / 1000.0 / (calls * rows_per_call))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="xgboost nthread (default 1)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()

    names, x, expected = load_rows()
    booster = xgb.Booster(model_file=str(MODEL))
    booster.set_param({"nthread": args.threads})
    assert booster.feature_names == names, (booster.feature_names, names)

    # Sanity: these are the predictions the parity fixture was made from.
    got = booster.inplace_predict(x)
    assert np.max(np.abs(got - expected)) <= 1e-6, np.max(np.abs(got - expected))

    n_rows = x.shape[0]
    n_batches = n_rows // BATCH
    singles = [x[i : i + 1] for i in range(n_rows)]
    batches = [x[i * BATCH : (i + 1) * BATCH] for i in range(n_batches)]

    def dmatrix(rows: np.ndarray) -> xgb.DMatrix:
        return xgb.DMatrix(rows, missing=np.nan, feature_names=names, nthread=args.threads)

    results = {
        ("inplace_predict", 1): time_per_row(
            lambda i: booster.inplace_predict(singles[i % n_rows]), n_rows, 1, args.seconds
        ),
        ("predict(DMatrix)", 1): time_per_row(
            lambda i: booster.predict(dmatrix(singles[i % n_rows])), n_rows, 1, args.seconds
        ),
        ("inplace_predict", BATCH): time_per_row(
            lambda i: booster.inplace_predict(batches[i % n_batches]), n_batches, BATCH, args.seconds
        ),
        ("predict(DMatrix)", BATCH): time_per_row(
            lambda i: booster.predict(dmatrix(batches[i % n_batches])), n_batches, BATCH, args.seconds
        ),
        # Explanations: exact TreeSHAP, what `cargo bench --bench xgboost -- explain` times.
        ("pred_contribs", 1): time_per_row(
            lambda i: booster.predict(dmatrix(singles[i % n_rows]), pred_contribs=True),
            n_rows, 1, args.seconds,
        ),
        ("pred_contribs", BATCH): time_per_row(
            lambda i: booster.predict(dmatrix(batches[i % n_batches]), pred_contribs=True),
            n_batches, BATCH, args.seconds,
        ),
    }

    print(f"xgboost {xgb.__version__}, numpy {np.__version__}, nthread={args.threads}")
    print(f"model {MODEL.relative_to(ROOT)}: {booster.num_boosted_rounds()} trees, {len(names)} features")
    print(f"{'method':<18} {'rows/call':>9} {'us/row':>10}")
    for (method, rows), us in results.items():
        print(f"{method:<18} {rows:>9} {us:>10.3f}")


if __name__ == "__main__":
    main()
