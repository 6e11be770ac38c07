#!/usr/bin/env python3
"""Train the embedded fraud-scoring XGBoost model and generate parity fixtures.

Everything here is synthetic and seeded: running the script twice with the same
``--seed`` (and the same xgboost/numpy versions) produces byte-identical outputs.

Outputs (paths relative to the repository root, defaults shown):

* ``models/fraud-xgb/model.json``      binary:logistic booster, xgboost JSON format
* ``models/fraud-xgb/MODEL_CARD.md``   model card
* ``tests/fixtures/xgb/``              parity fixtures and models the gateway must refuse

Usage (from the repository root):

    .venv/bin/python scripts/train_fraud_model.py [--seed 7] \
        [--out-dir models/fraud-xgb] [--fixtures-dir tests/fixtures/xgb]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import sys
import tarfile

import numpy as np
import xgboost as xgb

# Feature order is the gateway's feature derivation order (all f32).
FEATURE_NAMES = [
    "amount",
    "amount_ratio_30d",
    "hour_of_day",
    "merchant_category",
    "card_present",
    "foreign",
    "distance_from_home_km",
    "tx_count_1h",
    "tx_count_24h",
]
F = {name: i for i, name in enumerate(FEATURE_NAMES)}

FEATURE_DOCS = [
    ("amount", "Transaction amount in the currency's major unit",
     "request `amount`"),
    ("amount_ratio_30d", "Amount relative to the card's 30-day average amount",
     "`amount / max(avg_amount_30d, 1.0)` (computed in f64, then cast)"),
    ("hour_of_day", "Hour of the transaction, 0..23",
     "hour of request `timestamp` (receive time when absent)"),
    ("merchant_category", "ISO 18245 merchant category code (MCC) as an integer 0..9999",
     "request `merchant_category`"),
    ("card_present", "1 if the card was physically present, else 0",
     "request `card_present` (bool as 0/1)"),
    ("foreign", "1 if the merchant country differs from the card's home country, else 0",
     "`country != home_country` (0/1)"),
    ("distance_from_home_km", "Distance between the merchant and the cardholder's home, km",
     "request `distance_from_home_km`"),
    ("tx_count_1h", "Transactions on the card in the last hour",
     "request `tx_count_1h`"),
    ("tx_count_24h", "Transactions on the card in the last 24 hours",
     "request `tx_count_24h` (>= `tx_count_1h` in the training data)"),
]

# ISO 18245 merchant category codes used by the generator:
# (code, description, legitimate-traffic weight, extra risk in the fraud patterns)
MCCS = [
    (5411, "Grocery stores, supermarkets", 18.0),
    (5812, "Eating places, restaurants", 12.0),
    (5814, "Fast food restaurants", 10.0),
    (5541, "Service stations", 8.0),
    (5912, "Drug stores, pharmacies", 5.0),
    (5311, "Department stores", 5.0),
    (5999, "Miscellaneous retail", 5.0),
    (4111, "Commuter transport", 4.0),
    (4121, "Taxicabs, limousines", 3.0),
    (5651, "Family clothing stores", 4.0),
    (5942, "Book stores", 1.5),
    (5200, "Home supply warehouse stores", 2.5),
    (4900, "Utilities", 3.0),
    (8062, "Hospitals", 1.0),
    (4511, "Airlines", 1.5),
    (7011, "Hotels, motels, resorts", 1.5),
    (5815, "Digital goods: media", 3.0),
    (5816, "Digital goods: games", 1.5),
    (5944, "Jewelry stores", 0.7),
    (5732, "Electronics stores", 2.5),
    (5967, "Direct marketing: inbound teleservices", 0.6),
    (7995, "Betting, casino gaming, lottery", 0.6),
    (4829, "Wire transfers, money orders", 0.6),
    (6051, "Non-financial-institution money orders, quasi-cash, crypto", 0.5),
]
MCC_CODES = np.array([m[0] for m in MCCS], dtype=np.int64)
MCC_WEIGHTS = np.array([m[2] for m in MCCS], dtype=np.float64)
MCC_WEIGHTS /= MCC_WEIGHTS.sum()
RISKY_MCCS = [5967, 7995, 4829, 5732, 6051]
CNP_MCCS = {5815: 0.98, 5816: 0.98, 5967: 0.95, 4829: 0.7, 6051: 0.9,
            4511: 0.85, 7011: 0.5, 4900: 0.9, 7995: 0.8}
AMOUNT_SCALE = {5814: 0.3, 4111: 0.15, 4121: 0.5, 5815: 0.25, 5816: 0.4, 4511: 5.0,
                7011: 3.0, 5944: 3.0, 5732: 2.5, 8062: 2.0, 5200: 1.6, 4900: 1.5}
TRAVEL_MCCS = {4511: 0.25, 7011: 0.3, 4121: 0.08}

# Legitimate traffic by local hour (daytime heavy, a little night traffic).
LEGIT_HOUR_W = np.array([0.8, 0.5, 0.35, 0.25, 0.25, 0.4, 1.0, 2.5, 4.0, 5.0, 5.5, 6.0,
                         7.0, 6.5, 6.0, 6.0, 6.5, 7.5, 8.0, 7.0, 5.5, 4.0, 2.5, 1.5])
LEGIT_HOUR_W /= LEGIT_HOUR_W.sum()
FRAUD_HOUR_W = np.array([4.0, 4.5, 5.0, 5.0, 4.5, 3.5, 2.5, 2.5, 3.0, 3.5, 3.5, 3.5,
                         4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
FRAUD_HOUR_W /= FRAUD_HOUR_W.sum()

N_ROWS = 200_000
FRAUD_RATE = 0.01
TEST_FRACTION = 0.2
NTHREAD = 2

FRAUD_PARAMS = {
    "objective": "binary:logistic",
    "booster": "gbtree",
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 1.0,
    "max_bin": 256,
    "eval_metric": "auc",
}
FRAUD_ROUNDS = 100


# --------------------------------------------------------------------------- data

def _lookup(mcc, table, default):
    """Per-row value from an MCC -> value table."""
    out = np.full(mcc.shape, default, dtype=np.float64)
    for code, value in table.items():
        out[mcc == code] = value
    return out


def _mcc_choice(rng, n, codes):
    return rng.choice(np.array(codes, dtype=np.int64), size=n)


def _legit(rng, n, avg30):
    """Legitimate transactions for cards with the given 30-day average ticket."""
    mcc = rng.choice(MCC_CODES, size=n, p=MCC_WEIGHTS)
    scale = _lookup(mcc, AMOUNT_SCALE, 1.0)
    base = np.where(avg30 > 0, avg30, 45.0)
    amount = base * scale * rng.lognormal(0.0, 0.75, n)
    # Occasional legitimate big-ticket purchases.
    big = rng.random(n) < 0.01
    amount[big] *= rng.lognormal(1.3, 0.6, big.sum())
    cnp_p = _lookup(mcc, CNP_MCCS, 0.22)
    card_present = (rng.random(n) >= cnp_p).astype(np.float64)
    travel_p = _lookup(mcc, TRAVEL_MCCS, 0.035)
    foreign = (rng.random(n) < travel_p).astype(np.float64)
    hour = rng.choice(24, size=n, p=LEGIT_HOUR_W).astype(np.float64)
    distance = np.where(card_present == 1, rng.lognormal(np.log(6.0), 1.0, n),
                        rng.lognormal(np.log(12.0), 1.4, n))
    distance = np.where(foreign == 1, distance + rng.lognormal(np.log(1200.0), 0.9, n), distance)
    # Some legitimate domestic travel.
    trip = (foreign == 0) & (rng.random(n) < 0.03)
    distance[trip] += rng.lognormal(np.log(400.0), 0.8, trip.sum())
    activity = rng.gamma(2.0, 1.0, n)
    tx1 = rng.poisson(0.15 * activity)
    tx24 = tx1 + rng.poisson(1.6 * activity)
    return {
        "amount": amount, "hour": hour, "mcc": mcc, "card_present": card_present,
        "foreign": foreign, "distance": distance, "tx1": tx1, "tx24": tx24,
    }


def _fraud(rng, n, avg30):
    """Fraudulent transactions drawn from a mixture of fraud patterns."""
    out = _legit(rng, n, avg30)  # pattern "blends in": left as drawn
    base = np.where(avg30 > 0, avg30, 45.0)
    pattern = rng.choice(5, size=n, p=[0.25, 0.32, 0.16, 0.12, 0.15])

    def put(key, mask, values):
        out[key][mask] = values

    # 0: card testing: tiny card-not-present amounts, bursts of attempts.
    m = pattern == 0
    k = int(m.sum())
    put("amount", m, rng.uniform(0.5, 6.0, k))
    put("mcc", m, _mcc_choice(rng, k, [5967, 5815, 5816, 4829, 5999, 5814]))
    put("card_present", m, (rng.random(k) < 0.08).astype(np.float64))
    put("hour", m, rng.choice(24, size=k, p=FRAUD_HOUR_W).astype(np.float64))
    t1 = rng.poisson(2.5, k) + rng.integers(0, 2, k)
    put("tx1", m, t1)
    put("tx24", m, t1 + rng.poisson(4.0, k))
    put("distance", m, rng.lognormal(np.log(60.0), 1.8, k))

    # 1: account takeover / card-not-present big ticket.
    m = pattern == 1
    k = int(m.sum())
    put("amount", m, base[m] * rng.lognormal(1.1, 0.9, k))
    put("mcc", m, _mcc_choice(rng, k, [5732, 5732, 5944, 6051, 4829, 5311, 5999, 5651]))
    put("card_present", m, (rng.random(k) < 0.12).astype(np.float64))
    fr = (rng.random(k) < 0.3).astype(np.float64)
    put("foreign", m, fr)
    put("hour", m, rng.choice(24, size=k, p=FRAUD_HOUR_W).astype(np.float64))
    put("distance", m, rng.lognormal(np.log(150.0), 1.5, k) + fr * rng.lognormal(np.log(2500.0), 0.7, k))
    t1 = rng.poisson(0.6, k)
    put("tx1", m, t1)
    put("tx24", m, t1 + rng.poisson(3.5, k))

    # 2: counterfeit card used in person far from home.
    m = pattern == 2
    k = int(m.sum())
    put("amount", m, base[m] * rng.lognormal(0.6, 0.8, k))
    put("mcc", m, _mcc_choice(rng, k, [5732, 5411, 5541, 5944, 5999, 5311, 5912]))
    put("card_present", m, np.ones(k))
    fr = (rng.random(k) < 0.45).astype(np.float64)
    put("foreign", m, fr)
    put("distance", m, rng.lognormal(np.log(500.0), 1.2, k) + fr * rng.lognormal(np.log(3000.0), 0.6, k))
    t1 = rng.poisson(1.0, k)
    put("tx1", m, t1)
    put("tx24", m, t1 + rng.poisson(5.0, k))

    # 3: cash-out through gambling, wire transfer or crypto merchants.
    m = pattern == 3
    k = int(m.sum())
    put("amount", m, base[m] * rng.lognormal(0.9, 0.8, k))
    put("mcc", m, _mcc_choice(rng, k, [7995, 6051, 4829]))
    put("card_present", m, (rng.random(k) < 0.1).astype(np.float64))
    put("hour", m, rng.choice(24, size=k, p=FRAUD_HOUR_W).astype(np.float64))
    t1 = rng.poisson(1.2, k)
    put("tx1", m, t1)
    put("tx24", m, t1 + rng.poisson(3.0, k))

    # 4: blends in with the cardholder's normal behaviour (left as drawn by _legit).
    return out


def generate_dataset(rng, n):
    """Return (X float32 [n, 9], y float32 [n], avg30 float64 [n])."""
    y = (rng.random(n) < FRAUD_RATE).astype(np.float32)
    # Card 30-day average ticket; about 2% of cards are new (no history -> 0).
    avg30 = np.round(rng.lognormal(np.log(55.0), 0.8, n), 2)
    avg30[rng.random(n) < 0.02] = 0.0
    cols = _legit(rng, n, avg30)
    fi = np.flatnonzero(y == 1)
    fraud = _fraud(rng, fi.size, avg30[fi])
    for key in cols:
        cols[key][fi] = fraud[key]

    amount = np.round(np.clip(cols["amount"], 0.5, 25_000.0), 2)
    X = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    X[:, F["amount"]] = amount
    X[:, F["amount_ratio_30d"]] = amount / np.maximum(avg30, 1.0)
    X[:, F["hour_of_day"]] = cols["hour"]
    X[:, F["merchant_category"]] = cols["mcc"]
    X[:, F["card_present"]] = cols["card_present"]
    X[:, F["foreign"]] = cols["foreign"]
    X[:, F["distance_from_home_km"]] = np.round(np.clip(cols["distance"], 0.0, 20_000.0), 1)
    X[:, F["tx_count_1h"]] = cols["tx1"]
    X[:, F["tx_count_24h"]] = np.maximum(cols["tx24"], cols["tx1"])
    # Geolocation is unavailable for some card-not-present transactions.
    geo_missing = (X[:, F["card_present"]] == 0) & (rng.random(n) < 0.06)
    X[geo_missing, F["distance_from_home_km"]] = np.nan
    # Label noise: a few chargebacks on legitimate-looking traffic, some fraud never reported.
    flip_up = (y == 0) & (rng.random(n) < 0.0003)
    flip_down = (y == 1) & (rng.random(n) < 0.03)
    y[flip_up] = 1.0
    y[flip_down] = 0.0
    return X.astype(np.float32), y, avg30


# --------------------------------------------------------------------------- metrics

def roc_auc(y, s):
    """ROC AUC via the Mann-Whitney U statistic (ties get average ranks)."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # average ranks over tie groups
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y, s):
    """Average precision: sum over thresholds of (R_k - R_{k-1}) * P_k."""
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    y_sorted = y[order]
    s_sorted = s[order]
    last_of_group = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_group]
    fp = np.cumsum(1.0 - y_sorted)[last_of_group]
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


# --------------------------------------------------------------------------- fixtures

def fmt32(v):
    """Format a float32 so that it parses back to the identical float32 ('' for NaN)."""
    v = np.float32(v)
    if np.isnan(v):
        return ""
    return "%.9g" % float(v)


def write_parity_csv(path, X, pred):
    X = np.asarray(X, dtype=np.float32)
    pred = np.asarray(pred, dtype=np.float32)
    lines = [",".join(FEATURE_NAMES + ["prediction"])]
    for row, p in zip(X, pred):
        lines.append(",".join([fmt32(v) for v in row] + [fmt32(p)]))
    with open(path, "w", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def inject_missing(rng, X, frac_partial=0.12, frac_all=0.01):
    """Blank out values: some rows partially, a few rows completely."""
    X = X.copy()
    n = X.shape[0]
    u = rng.random(n)
    partial = u < frac_partial
    all_missing = (u >= frac_partial) & (u < frac_partial + frac_all)
    for i in np.flatnonzero(partial):
        mask = rng.random(X.shape[1]) < 0.3
        if not mask.any():
            mask[rng.integers(0, X.shape[1])] = True
        X[i, mask] = np.nan
    X[all_missing, :] = np.nan
    return X


def split_thresholds(booster):
    """Map feature index -> sorted unique float32 split conditions used by the model."""
    model = json.loads(booster.save_raw("json"))
    out = {}
    for tree in model["learner"]["gradient_booster"]["model"]["trees"]:
        left = tree["left_children"]
        for node, (fidx, cond) in enumerate(zip(tree["split_indices"], tree["split_conditions"])):
            if left[node] != -1:
                out.setdefault(int(fidx), set()).add(float(np.float32(cond)))
    return {k: np.array(sorted(v), dtype=np.float32) for k, v in out.items()}


def add_boundary_rows(rng, X, booster, n):
    """Copies of rows with one feature set exactly on (or one ulp around) a split condition."""
    th = split_thresholds(booster)
    feats = sorted(th)
    rows = X[rng.integers(0, X.shape[0], n)].copy()
    for r in rows:
        f = feats[rng.integers(0, len(feats))]
        t = th[f][rng.integers(0, th[f].size)]
        step = rng.integers(0, 3)
        if step == 1:
            t = np.nextafter(t, np.float32(-np.inf))
        elif step == 2:
            t = np.nextafter(t, np.float32(np.inf))
        r[f] = t
    return rows


def predict(booster, X):
    dm = xgb.DMatrix(X, missing=np.nan, feature_names=FEATURE_NAMES, nthread=NTHREAD)
    return booster.predict(dm).astype(np.float32)


def deterministic_targz(path, member_bytes, member_name="xgboost-model"):
    """gzip'd tar with a single member and fixed metadata (byte-reproducible)."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(name=member_name)
        info.size = len(member_bytes)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(member_bytes))
    with open(path, "wb") as f:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
            gz.write(tar_buf.getvalue())


def small_data(rng, n=300):
    X, y, _ = generate_dataset(rng, n)
    # make sure both classes are present in tiny samples
    y[: n // 10] = 1.0
    return X, y


def train_unsupported(rng, fixtures_dir):
    X, y = small_data(rng)
    written = []
    common = {"max_depth": 3, "eta": 0.3, "seed": 1, "nthread": NTHREAD, "tree_method": "hist"}

    dm = xgb.DMatrix(X, label=y, feature_names=FEATURE_NAMES, nthread=NTHREAD)
    dart = xgb.train({**common, "objective": "binary:logistic", "booster": "dart",
                      "rate_drop": 0.1, "skip_drop": 0.0}, dm, num_boost_round=4)
    p = os.path.join(fixtures_dir, "unsupported_dart.json")
    dart.save_model(p)
    written.append(p)

    lin = xgb.train({"objective": "binary:logistic", "booster": "gblinear", "seed": 1,
                     "nthread": NTHREAD, "updater": "coord_descent"}, dm, num_boost_round=4)
    p = os.path.join(fixtures_dir, "unsupported_gblinear.json")
    lin.save_model(p)
    written.append(p)

    y3 = (np.arange(X.shape[0]) % 3).astype(np.float32)
    dm3 = xgb.DMatrix(X, label=y3, feature_names=FEATURE_NAMES, nthread=NTHREAD)
    mc = xgb.train({**common, "objective": "multi:softprob", "num_class": 3}, dm3, num_boost_round=3)
    p = os.path.join(fixtures_dir, "unsupported_multiclass.json")
    mc.save_model(p)
    written.append(p)

    # merchant_category declared categorical ('c'); the remaining features numeric ('q').
    ftypes = ["c" if name == "merchant_category" else "q" for name in FEATURE_NAMES]
    Xc = X.copy()
    # Give the categorical feature a strong, non-monotone signal so that categorical splits are made.
    codes = Xc[:, F["merchant_category"]]
    yc = np.isin(codes, np.array(RISKY_MCCS, dtype=np.float32)).astype(np.float32)
    dmc = xgb.DMatrix(Xc, label=yc, feature_names=FEATURE_NAMES, feature_types=ftypes,
                      enable_categorical=True, nthread=NTHREAD)
    cat = xgb.train({**common, "objective": "binary:logistic", "max_cat_to_onehot": 1},
                    dmc, num_boost_round=3)
    p = os.path.join(fixtures_dir, "unsupported_categorical.json")
    cat.save_model(p)
    written.append(p)
    return written


# --------------------------------------------------------------------------- regression fixtures

def regression_target(rng, X):
    """Continuous 'expected loss score' in roughly [0, 5]."""
    ratio = np.nan_to_num(X[:, F["amount_ratio_30d"]].astype(np.float64), nan=1.0)
    hour = X[:, F["hour_of_day"]].astype(np.float64)
    dist = np.nan_to_num(X[:, F["distance_from_home_km"]].astype(np.float64), nan=50.0)
    night = ((hour <= 5) | (hour >= 23)).astype(np.float64)
    t = (0.6 * np.log1p(ratio) + 0.9 * X[:, F["foreign"]] + 0.4 * night
         + 0.5 * (1.0 - X[:, F["card_present"]]) + 0.25 * np.log1p(dist) / 3.0
         + 0.3 * np.minimum(X[:, F["tx_count_1h"]], 5.0)
         + 0.7 * np.isin(X[:, F["merchant_category"]], RISKY_MCCS)
         + rng.normal(0.0, 0.35, X.shape[0]))
    return np.clip(t, 0.0, 5.0).astype(np.float32)


def train_regressions(rng, X_pool, fixtures_dir):
    written = []
    # reg:squarederror: 50 trees, depth 5.
    n_train, n_fix = 30_000, 10_500
    idx = rng.permutation(X_pool.shape[0])[: n_train + n_fix]
    Xtr, Xfx = X_pool[idx[:n_train]], X_pool[idx[n_train:]]
    ytr = regression_target(rng, Xtr)
    Xtr = inject_missing(rng, Xtr, 0.05, 0.0)
    dm = xgb.DMatrix(Xtr, label=ytr, missing=np.nan, feature_names=FEATURE_NAMES, nthread=NTHREAD)
    reg = xgb.train({"objective": "reg:squarederror", "tree_method": "hist", "max_depth": 5,
                     "eta": 0.15, "subsample": 0.9, "seed": 11, "nthread": NTHREAD},
                    dm, num_boost_round=50)
    p = os.path.join(fixtures_dir, "reg_squarederror.json")
    reg.save_model(p)
    written.append(p)
    Xfx = np.vstack([inject_missing(rng, Xfx), add_boundary_rows(rng, Xfx, reg, 500)])
    p = os.path.join(fixtures_dir, "reg_squarederror_parity.csv")
    write_parity_csv(p, Xfx, predict(reg, Xfx))
    written.append(p)

    # reg:logistic: target in [0, 1], 20 trees.
    n_train, n_fix = 8_000, 2_000
    idx = rng.permutation(X_pool.shape[0])[: n_train + n_fix]
    Xtr, Xfx = X_pool[idx[:n_train]], X_pool[idx[n_train:]]
    ytr = (regression_target(rng, Xtr) / 5.0).astype(np.float32)
    Xtr = inject_missing(rng, Xtr, 0.05, 0.0)
    dm = xgb.DMatrix(Xtr, label=ytr, missing=np.nan, feature_names=FEATURE_NAMES, nthread=NTHREAD)
    rlog = xgb.train({"objective": "reg:logistic", "tree_method": "hist", "max_depth": 4,
                      "eta": 0.3, "seed": 13, "nthread": NTHREAD}, dm, num_boost_round=20)
    p = os.path.join(fixtures_dir, "reg_logistic.json")
    rlog.save_model(p)
    written.append(p)
    Xfx = np.vstack([inject_missing(rng, Xfx), add_boundary_rows(rng, Xfx, rlog, 200)])
    p = os.path.join(fixtures_dir, "reg_logistic_parity.csv")
    write_parity_csv(p, Xfx, predict(rlog, Xfx))
    written.append(p)
    return written


# --------------------------------------------------------------------------- model card

def model_card(stats):
    feat_rows = "\n".join(
        f"| {i} | `{name}` | {meaning} | {deriv} |"
        for i, (name, meaning, deriv) in enumerate(FEATURE_DOCS)
    )
    params = "\n".join(f"| `{k}` | `{v}` |" for k, v in stats["params"].items())
    risky = ", ".join(str(c) for c in RISKY_MCCS)
    return f"""# Model card: fraud-xgb

## Purpose

Real-time card-transaction fraud score for the infergate gateway. The model is an
XGBoost `binary:logistic` gradient-boosted tree ensemble; its output is the
probability that a transaction is fraudulent. The gateway evaluates the trees
natively from `model.json`, so this file is the single source of truth for scoring.

**The training data are entirely synthetic.** They are produced by
`scripts/train_fraud_model.py` from hand-written fraud rules; the model has never
seen real transactions and its scores must not be used for real decisions. It
exists to exercise the serving path with a realistic feature set and score
distribution.

## Features

Input vector: 9 `f32` values in exactly this order (stored as
`learner.feature_names` in `model.json`). A missing value is passed as NaN and
follows the learned default direction of each split.

| # | name | meaning | derivation |
|---|------|---------|------------|
{feat_rows}

## Scoring semantics

* `base_score` is stored as a string holding a one-element list of the
  intercept probability (`learner.learner_model_param.base_score`, here
  `"{stats["base_score"]}"`).
* margin = logit(base_score) + sum of the leaf values of all trees, accumulated in
  f32 starting from the base margin, in tree order; score = 1 / (1 + exp(-margin)).
* At a split node a row goes left when `value < split_condition`; a missing (NaN)
  value follows `default_left`.
* The gateway always supplies all 9 features; the training data contain some
  rows with a missing `distance_from_home_km`, so missing values follow learned
  default directions.
* `tests/fixtures/xgb/fraud_parity.csv` holds xgboost's own predictions for
  hold-out rows (with injected missing values and rows on split thresholds) to
  check the native evaluator against.

## Training data

* {stats["n_rows"]:,} synthetic transactions, fraud rate {stats["fraud_rate"]:.3%}
  ({stats["n_fraud"]:,} fraudulent).
* Split: {stats["n_train"]:,} training rows / {stats["n_test"]:,} hold-out rows
  (random 80/20, seeded).
* Legitimate traffic: day-heavy hour profile, MCC mix dominated by groceries,
  restaurants and fuel, amounts log-normal around the card's 30-day average,
  mostly card-present and domestic, low velocity.
* Fraud is a mixture of patterns: card testing (tiny card-not-present amounts,
  high 1-hour velocity), account takeover (large amount ratio, electronics /
  jewellery / quasi-cash, night-time, often foreign), counterfeit card-present use
  far from home, cash-out through gambling / wire-transfer / crypto merchants, and
  a share of fraud that is indistinguishable from the cardholder's normal
  behaviour. Higher-risk MCCs: {risky}.
* Noise: overlapping distributions, legitimate travel and big-ticket purchases,
  about 6% of card-not-present rows without a `distance_from_home_km` value,
  and label noise (unreported fraud, spurious chargebacks).

## Training

* xgboost {stats["xgb_version"]} (numpy {stats["np_version"]}, Python {stats["py_version"]}),
  `xgb.train` for {stats["rounds"]} boosting rounds, seed {stats["seed"]}, features cast to float32.

| parameter | value |
|-----------|-------|
{params}

## Hold-out evaluation ({stats["n_test"]:,} rows, {stats["n_test_fraud"]:,} fraudulent)

| metric | value |
|--------|-------|
| ROC AUC | {stats["roc_auc"]:.4f} |
| PR AUC (average precision) | {stats["pr_auc"]:.4f} |

## Regenerating

From the repository root:

```
python3 -m venv .venv
.venv/bin/pip install -r scripts/requirements.txt
.venv/bin/python scripts/train_fraud_model.py --seed {stats["seed"]}
```

The run is deterministic: the same seed and package versions reproduce
`model.json` and all fixtures in `tests/fixtures/xgb/` byte for byte.
"""


# --------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out-dir", default="models/fraud-xgb")
    ap.add_argument("--fixtures-dir", default="tests/fixtures/xgb")
    args = ap.parse_args(argv)

    os.makedirs(args.out_dir, exist_ok=True)
    os.makedirs(args.fixtures_dir, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    X, y, _ = generate_dataset(rng, N_ROWS)
    perm = rng.permutation(N_ROWS)
    n_test = int(N_ROWS * TEST_FRACTION)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    Xtr, ytr, Xte, yte = X[train_idx], y[train_idx], X[test_idx], y[test_idx]

    dtrain = xgb.DMatrix(Xtr, label=ytr, missing=np.nan, feature_names=FEATURE_NAMES, nthread=NTHREAD)
    params = {**FRAUD_PARAMS, "seed": args.seed, "nthread": NTHREAD}
    booster = xgb.train(params, dtrain, num_boost_round=FRAUD_ROUNDS)

    p_te = predict(booster, Xte)
    auc = roc_auc(yte, p_te)
    ap_score = average_precision(yte, p_te)

    model_path = os.path.join(args.out_dir, "model.json")
    booster.save_model(model_path)

    stats = {
        "n_rows": N_ROWS, "n_fraud": int(y.sum()), "fraud_rate": float(y.mean()),
        "n_train": int(train_idx.size), "n_test": int(test_idx.size),
        "n_test_fraud": int(yte.sum()), "roc_auc": auc, "pr_auc": ap_score,
        "rounds": FRAUD_ROUNDS, "seed": args.seed, "xgb_version": xgb.__version__,
        "np_version": np.__version__, "py_version": platform.python_version(),
        "params": {k: v for k, v in params.items() if k != "nthread"},
        "base_score": json.loads(bytes(booster.save_raw("json")))["learner"]
        ["learner_model_param"]["base_score"],
    }
    card_path = os.path.join(args.out_dir, "MODEL_CARD.md")
    with open(card_path, "w", newline="\n") as f:
        f.write(model_card(stats))

    written = [model_path, card_path]
    fx = args.fixtures_dir

    # Fraud parity rows: every hold-out fraud row, random legitimate hold-out rows,
    # injected missing values, and rows sitting exactly on split conditions.
    fraud_rows = np.flatnonzero(yte == 1)
    legit_rows = rng.choice(np.flatnonzero(yte == 0), size=11_000 - fraud_rows.size, replace=False)
    rows = rng.permutation(np.r_[fraud_rows, legit_rows])
    Xp = inject_missing(rng, Xte[rows])
    Xp = np.vstack([Xp, add_boundary_rows(rng, Xte[rows], booster, 1_000)])
    p = os.path.join(fx, "fraud_parity.csv")
    write_parity_csv(p, Xp, predict(booster, Xp))
    written.append(p)

    p = os.path.join(fx, "fraud.ubj")
    booster.save_model(p)
    written.append(p)
    ubj_bytes = bytes(booster.save_raw("ubj"))
    json_bytes = bytes(booster.save_raw("json"))
    with open(p, "rb") as f:
        assert f.read() == ubj_bytes, "save_model(.ubj) and save_raw('ubj') differ"
    with open(model_path, "rb") as f:
        assert f.read() == json_bytes, "save_model(.json) and save_raw('json') differ"
    p = os.path.join(fx, "fraud-model.tar.gz")
    deterministic_targz(p, ubj_bytes)
    written.append(p)
    p = os.path.join(fx, "fraud-model-json.tar.gz")
    deterministic_targz(p, json_bytes)
    written.append(p)

    written += train_regressions(rng, Xte, fx)
    written += train_unsupported(rng, fx)

    # Sanity: reloading every saved format gives the same predictions.
    for path in (model_path, os.path.join(fx, "fraud.ubj")):
        b2 = xgb.Booster(model_file=path)
        assert np.array_equal(predict(b2, Xp), predict(booster, Xp)), path

    n_missing_rows = int(np.isnan(Xp).any(axis=1).sum())
    n_all_missing = int(np.isnan(Xp).all(axis=1).sum())
    print(f"xgboost {xgb.__version__}, numpy {np.__version__}, seed {args.seed}")
    print(f"data: {N_ROWS} rows, fraud rate {y.mean():.4%}; train {train_idx.size}, "
          f"hold-out {test_idx.size} ({int(yte.sum())} fraud)")
    print(f"hold-out ROC AUC {auc:.4f}, PR AUC (average precision) {ap_score:.4f}")
    print(f"fraud_parity.csv: {Xp.shape[0]} rows, {n_missing_rows} with missing values "
          f"({n_all_missing} all-missing)")
    for path in written:
        print(f"  {os.path.getsize(path):>10,d}  {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
