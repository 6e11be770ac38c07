#!/usr/bin/env python3
"""Write the TreeSHAP parity fixtures: XGBoost's own ``pred_contribs`` for rows of the parity
fixtures (missing values included), for the embedded fraud model and the reg:squarederror one.

Each output CSV has the feature names, then ``contrib_<feature>`` for each feature, then
``bias`` and ``margin`` (XGBoost's ``output_margin``): one row per input row. Deterministic with
the pinned versions of scripts/requirements.txt.

    .venv/bin/python scripts/make_shap_fixtures.py [--rows 2500]
"""

from __future__ import annotations

import argparse
import csv
import math

import numpy as np
import xgboost as xgb

CASES = [
    ("models/fraud-xgb/model.json", "tests/fixtures/xgb/fraud_parity.csv",
     "tests/fixtures/xgb/fraud_contribs.csv"),
    ("tests/fixtures/xgb/reg_squarederror.json", "tests/fixtures/xgb/reg_squarederror_parity.csv",
     "tests/fixtures/xgb/reg_squarederror_contribs.csv"),
]


def read_rows(path: str, n: int) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)[:-1]
        rows = []
        for line in reader:
            if len(rows) == n:
                break
            rows.append([float(v) if v.strip() else math.nan for v in line[:-1]])
    return header, np.asarray(rows, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2500)
    args = parser.parse_args()
    for model_path, rows_path, out_path in CASES:
        booster = xgb.Booster()
        booster.load_model(model_path)
        names, x = read_rows(rows_path, args.rows)
        matrix = xgb.DMatrix(x, missing=math.nan, feature_names=booster.feature_names)
        contribs = booster.predict(matrix, pred_contribs=True)
        margins = booster.predict(matrix, output_margin=True)
        with open(out_path, "w", newline="") as f:
            out = csv.writer(f, lineterminator="\n")
            out.writerow(names + [f"contrib_{n}" for n in names] + ["bias", "margin"])
            for row, contrib, margin in zip(x, contribs, margins):
                values = ["" if math.isnan(v) else f"{v:.9g}" for v in row]
                out.writerow(values + [f"{c:.9g}" for c in contrib] + [f"{margin:.9g}"])
        missing = int(np.isnan(x).any(axis=1).sum())
        print(f"{out_path}: {len(x)} rows ({missing} with a missing value), xgboost {xgb.__version__}")


if __name__ == "__main__":
    main()
