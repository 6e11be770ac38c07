//! TreeSHAP parity with XGBoost's own `pred_contribs` (tests/fixtures/xgb/*_contribs.csv, made
//! by scripts/make_shap_fixtures.py with the pinned xgboost): every contribution and the bias of
//! every row within 1e-5, and contributions + bias = the margin.

use std::path::{Path, PathBuf};

use infergate::model::xgboost::XgbModel;

const TOLERANCE: f64 = 1e-5;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A row of features (NaN: missing), XGBoost's contributions and bias, and its margin.
type Case = (Vec<f32>, Vec<f64>, f64);

/// The width of the rows, and the cases.
fn fixture(name: &str) -> (usize, Vec<Case>) {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/xgb").join(name)).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let width = header.iter().filter(|h| h.starts_with("contrib_")).count();
    assert_eq!(header.len(), 2 * width + 2, "{name}: header");
    let rows = lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let row = fields[..width]
                .iter()
                .map(|f| {
                    if f.is_empty() {
                        f32::NAN
                    } else {
                        f.parse().unwrap()
                    }
                })
                .collect();
            let expected = fields[width..2 * width + 1]
                .iter()
                .map(|f| f.parse().unwrap())
                .collect();
            (row, expected, fields[2 * width + 1].parse().unwrap())
        })
        .collect();
    (width, rows)
}

fn check(model: &str, fixture_name: &str) {
    let model = XgbModel::from_path(&repo_path(model)).unwrap();
    let (width, rows) = fixture(fixture_name);
    assert_eq!(width, model.num_features());
    assert!(rows.len() >= 2_000, "{} rows", rows.len());
    let with_missing = rows
        .iter()
        .filter(|(r, ..)| r.iter().any(|v| v.is_nan()))
        .count();
    assert!(
        with_missing > 100,
        "missing values are covered: {with_missing}"
    );
    let mut worst: f64 = 0.0;
    for (i, (row, expected, margin)) in rows.iter().enumerate() {
        let ours = model.explain_row(row).unwrap();
        assert_eq!(ours.len(), width + 1);
        for (j, (a, b)) in ours.iter().zip(expected).enumerate() {
            let diff = (a - b).abs();
            worst = worst.max(diff);
            assert!(
                diff <= TOLERANCE,
                "{fixture_name} row {i} value {j}: ours {a}, xgboost {b}"
            );
        }
        let total: f64 = ours.iter().sum();
        assert!(
            (total - margin).abs() <= TOLERANCE,
            "{fixture_name} row {i}: contributions + bias = {total}, margin {margin}"
        );
        let ours_margin = f64::from(model.margin_row(row));
        assert!((total - ours_margin).abs() <= TOLERANCE, "row {i}");
    }
    eprintln!(
        "{fixture_name}: {} rows, largest difference {worst:.2e}",
        rows.len()
    );
}

#[test]
fn the_fraud_models_contributions_match_xgboost() {
    check("models/fraud-xgb/model.json", "fraud_contribs.csv");
}

#[test]
fn a_squared_error_models_contributions_match_xgboost() {
    check(
        "tests/fixtures/xgb/reg_squarederror.json",
        "reg_squarederror_contribs.csv",
    );
}

#[test]
fn a_model_without_covers_cannot_be_explained_and_says_why() {
    let text = std::fs::read_to_string(repo_path("models/fraud-xgb/model.json")).unwrap();
    let mut document: serde_json::Value = serde_json::from_str(&text).unwrap();
    let trees = document["learner"]["gradient_booster"]["model"]["trees"]
        .as_array_mut()
        .unwrap();
    for tree in trees {
        tree.as_object_mut().unwrap().remove("sum_hessian");
    }
    let model = XgbModel::from_bytes(document.to_string().as_bytes()).unwrap();
    let row = vec![1.0; model.num_features()];
    assert!(model.predict_row(&row).is_finite(), "it still scores");
    let why = model.explain_row(&row).unwrap_err();
    assert!(why.contains("sum_hessian"), "{why}");
}

#[tokio::test]
async fn explaining_every_flagged_score_refuses_at_start_a_model_without_covers() {
    let text = std::fs::read_to_string(repo_path("models/fraud-xgb/model.json")).unwrap();
    let mut document: serde_json::Value = serde_json::from_str(&text).unwrap();
    for tree in document["learner"]["gradient_booster"]["model"]["trees"]
        .as_array_mut()
        .unwrap()
    {
        tree.as_object_mut().unwrap().remove("sum_hessian");
    }
    let path = std::env::temp_dir().join(format!("infergate-nocovers-{}.json", std::process::id()));
    std::fs::write(&path, document.to_string()).unwrap();
    let mut config = infergate::Config::default();
    config.model.path = Some(path.clone());
    assert!(
        infergate::model::build(&config, None).await.is_ok(),
        "on request: it loads"
    );
    config.explanations.mode = infergate::config::ExplainMode::DeclineAndReview;
    let error = infergate::model::build(&config, None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("sum_hessian") && error.contains("on_request"),
        "{error}"
    );
    std::fs::remove_file(path).unwrap();
}
