//! Scoring speed of the native XGBoost evaluator against hessboost, on the
//! fraud model and the rows of its parity fixture.
//!
//! Rows are taken in turn from the fixture rather than repeating one row, so
//! that branch predictors cannot learn a single path through the trees.
//! `scripts/bench_xgboost.py` times xgboost's own predictors on the same rows. The last group
//! times an explanation (TreeSHAP) beside the score of the same row.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hessboost::prelude::{BoostedModel, Iterations, ModelFormat};
use infergate::model::xgboost::XgbModel;

const BATCH: usize = 64;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Feature rows of the parity fixture, row-major, NaN for missing values.
fn fixture_rows(width: usize) -> Vec<f32> {
    let path = repo_path("tests/fixtures/xgb/fraud_parity.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut rows = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), width + 1, "{line}");
        rows.extend(fields[..width].iter().map(|f| {
            if f.is_empty() {
                f32::NAN
            } else {
                f.parse::<f32>().expect("a number")
            }
        }));
    }
    rows
}

fn bench(c: &mut Criterion) {
    let model_path = repo_path("models/fraud-xgb/model.json");
    let ours = XgbModel::from_path(&model_path).expect("our model");
    let theirs = BoostedModel::load(&model_path, ModelFormat::XgboostJson).expect("hessboost");
    let width = ours.num_features();
    let rows = fixture_rows(width);
    let n_rows = rows.len() / width;
    let n_batches = n_rows / BATCH;
    let row = |i: usize| &rows[i * width..(i + 1) * width];
    let batch = |i: usize| &rows[i * BATCH * width..(i + 1) * BATCH * width];

    // Both must score the same, or the comparison is meaningless.
    for i in 0..n_rows {
        let (a, b) = (
            ours.predict_row(row(i)),
            theirs.predict_row(row(i), Iterations::Best).unwrap(),
        );
        assert!((a - b).abs() <= 1e-6, "row {i}: ours {a}, hessboost {b}");
    }

    let mut single = c.benchmark_group("xgboost/1 row");
    single.throughput(Throughput::Elements(1));
    single.bench_function("infergate", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % n_rows;
            ours.predict_row(black_box(row(i)))
        })
    });
    single.bench_function("hessboost", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % n_rows;
            theirs
                .predict_row(black_box(row(i)), Iterations::Best)
                .unwrap()
        })
    });
    single.finish();

    let mut batched = c.benchmark_group("xgboost/batch of 64");
    batched.throughput(Throughput::Elements(BATCH as u64));
    batched.bench_function("infergate", |b| {
        let mut out = [0.0f32; BATCH];
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % n_batches;
            ours.predict_batch(black_box(batch(i)), &mut out);
            out[BATCH - 1]
        })
    });
    batched.bench_function("hessboost", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % n_batches;
            theirs
                .predict_rows(black_box(batch(i)), Iterations::Best)
                .unwrap()
        })
    });
    batched.finish();

    // Reasons for a score: exact TreeSHAP against the walk that scores the same row.
    let mut explain = c.benchmark_group("xgboost/explain 1 row");
    explain.throughput(Throughput::Elements(1));
    explain.bench_function("score", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % n_rows;
            ours.predict_row(black_box(row(i)))
        })
    });
    explain.bench_function("treeshap", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % n_rows;
            ours.explain_row(black_box(row(i))).unwrap()
        })
    });
    explain.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
