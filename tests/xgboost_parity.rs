//! Parity of the native XGBoost evaluator with xgboost itself.
//!
//! The fixtures under `tests/fixtures/xgb/` were scored by xgboost's own
//! Python predictor; each CSV holds the feature names as its header, then
//! one row per line with its prediction in the last column (an empty field
//! is a missing value).

use std::path::{Path, PathBuf};

use infergate::model::xgboost::{LoadError, Objective, XgbModel};

/// Largest absolute difference allowed between our score and xgboost's,
/// for every single row.
const TOLERANCE: f64 = 1e-6;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn fixture(name: &str) -> PathBuf {
    repo_path("tests/fixtures/xgb").join(name)
}

fn load(path: &Path) -> XgbModel {
    XgbModel::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Parity {
    feature_names: Vec<String>,
    /// Row-major feature values, NaN for missing ones.
    rows: Vec<f32>,
    expected: Vec<f32>,
}

impl Parity {
    fn read(name: &str) -> Parity {
        let path = fixture(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut lines = text.lines();
        let mut header: Vec<String> = lines
            .next()
            .expect("a header line")
            .split(',')
            .map(|s| s.trim().to_owned())
            .collect();
        assert_eq!(
            header.pop().as_deref(),
            Some("prediction"),
            "{name}: last column"
        );
        let width = header.len();
        let mut rows = Vec::new();
        let mut expected = Vec::new();
        for (line_no, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), width + 1, "{name}: data line {line_no}");
            let parse = |field: &str| -> f32 {
                let field = field.trim();
                if field.is_empty() {
                    f32::NAN
                } else {
                    field
                        .parse()
                        .unwrap_or_else(|_| panic!("{name}: data line {line_no}: `{field}`"))
                }
            };
            rows.extend(fields[..width].iter().map(|f| parse(f)));
            expected.push(parse(fields[width]));
        }
        assert!(!expected.is_empty(), "{name} has no rows");
        Parity {
            feature_names: header,
            rows,
            expected,
        }
    }

    fn width(&self) -> usize {
        self.feature_names.len()
    }

    fn row(&self, index: usize) -> &[f32] {
        &self.rows[index * self.width()..(index + 1) * self.width()]
    }
}

/// Checks every row against xgboost's prediction and returns the largest
/// difference seen.
fn assert_parity(model: &XgbModel, parity: &Parity, what: &str) -> f64 {
    assert_eq!(model.num_features(), parity.width(), "{what}: num_features");
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for (index, &expected) in parity.expected.iter().enumerate() {
        let ours = model.predict_row(parity.row(index));
        let diff = (f64::from(ours) - f64::from(expected)).abs();
        if diff.is_nan() || diff > TOLERANCE {
            failures.push(format!(
                "row {index}: ours {ours:e}, xgboost {expected:e}, |diff| {diff:e}"
            ));
        }
        if !diff.is_nan() {
            worst = worst.max(diff);
        }
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {} rows differ from xgboost by more than {TOLERANCE:e}:\n{}",
        failures.len(),
        parity.expected.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!(
        "{what}: {} rows, max |ours - xgboost| = {worst:e}",
        parity.expected.len()
    );
    worst
}

/// `predict_batch` over batches of awkward sizes (single rows, partial
/// lane groups and blocks) must give `predict_row`'s bits.
fn assert_batch_matches_rows(model: &XgbModel, parity: &Parity, what: &str) {
    let singles: Vec<f32> = (0..parity.expected.len())
        .map(|i| model.predict_row(parity.row(i)))
        .collect();
    for batch in [1, 3, 8, 9, 63, 64, 65, 200, 1000, parity.expected.len()] {
        let mut out = vec![f32::NAN; parity.expected.len()];
        for (rows, scores) in parity
            .rows
            .chunks(batch * parity.width())
            .zip(out.chunks_mut(batch))
        {
            model.predict_batch(rows, scores);
        }
        for (index, (&batched, &single)) in out.iter().zip(&singles).enumerate() {
            assert!(
                batched.to_bits() == single.to_bits(),
                "{what}: batches of {batch}: row {index}: predict_batch {batched:e}, \
                 predict_row {single:e}, |diff| {:e}",
                (batched - single).abs()
            );
        }
    }
}

fn fraud_json() -> XgbModel {
    load(&repo_path("models/fraud-xgb/model.json"))
}

#[test]
fn fraud_model_json_matches_xgboost() {
    let model = fraud_json();
    let parity = Parity::read("fraud_parity.csv");
    assert_eq!(model.objective(), Objective::BinaryLogistic);
    assert_eq!(model.feature_names(), parity.feature_names.as_slice());
    assert_eq!(model.num_trees(), 100);
    assert_parity(&model, &parity, "fraud model.json");
    assert_batch_matches_rows(&model, &parity, "fraud model.json");
}

#[test]
fn reg_squarederror_matches_xgboost() {
    let model = load(&fixture("reg_squarederror.json"));
    let parity = Parity::read("reg_squarederror_parity.csv");
    assert_eq!(model.objective(), Objective::RegSquaredError);
    assert_eq!(model.objective().name(), "reg:squarederror");
    assert_eq!(model.feature_names(), parity.feature_names.as_slice());
    assert_parity(&model, &parity, "reg_squarederror.json");
    assert_batch_matches_rows(&model, &parity, "reg_squarederror.json");
}

#[test]
fn reg_logistic_matches_xgboost() {
    let model = load(&fixture("reg_logistic.json"));
    let parity = Parity::read("reg_logistic_parity.csv");
    assert_eq!(model.objective(), Objective::RegLogistic);
    assert_eq!(model.objective().name(), "reg:logistic");
    assert_eq!(model.feature_names(), parity.feature_names.as_slice());
    assert_parity(&model, &parity, "reg_logistic.json");
    assert_batch_matches_rows(&model, &parity, "reg_logistic.json");
}

/// The same booster saved as UBJSON, and packed the way SageMaker packs it,
/// must score exactly like the JSON file.
#[test]
fn ubjson_and_archives_predict_like_json() {
    let reference = fraud_json();
    let parity = Parity::read("fraud_parity.csv");
    for name in ["fraud.ubj", "fraud-model.tar.gz", "fraud-model-json.tar.gz"] {
        let model = load(&fixture(name));
        assert_eq!(model.objective(), reference.objective(), "{name}");
        assert_eq!(model.num_trees(), reference.num_trees(), "{name}");
        assert_eq!(model.num_features(), reference.num_features(), "{name}");
        assert_eq!(
            model.feature_names(),
            parity.feature_names.as_slice(),
            "{name}"
        );
        for index in 0..parity.expected.len() {
            let row = parity.row(index);
            let (ours, json) = (model.predict_row(row), reference.predict_row(row));
            assert!(
                ours.to_bits() == json.to_bits(),
                "{name}: row {index}: {ours:e} vs model.json {json:e}, |diff| {:e}",
                (ours - json).abs()
            );
        }
        assert_parity(&model, &parity, name);
    }
}

#[test]
fn from_bytes_detects_the_format_without_a_file_name() {
    let reference = fraud_json();
    let parity = Parity::read("fraud_parity.csv");
    for name in ["fraud.ubj", "fraud-model.tar.gz"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let model = XgbModel::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let row = parity.row(0);
        assert_eq!(model.predict_row(row), reference.predict_row(row), "{name}");
    }
}

/// Each `unsupported_*.json` fixture must be refused, naming the problem.
#[test]
fn unsupported_models_are_refused_with_a_reason() {
    let expected_words = [
        ("unsupported_dart.json", "dart"),
        ("unsupported_gblinear.json", "gblinear"),
        ("unsupported_categorical.json", "categorical"),
        ("unsupported_multiclass.json", "multi-class"),
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(fixture("")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !(name.starts_with("unsupported_") && name.ends_with(".json")) {
            continue;
        }
        seen += 1;
        let error =
            XgbModel::from_path(&fixture(&name)).expect_err(&format!("{name} must be refused"));
        assert!(
            matches!(error, LoadError::Unsupported(_)),
            "{name}: {error:?}"
        );
        let message = error.to_string();
        if let Some((_, word)) = expected_words.iter().find(|(file, _)| *file == name) {
            assert!(message.contains(word), "{name}: `{message}` lacks `{word}`");
        }
        println!("{name}: {message}");
    }
    assert!(
        seen >= expected_words.len(),
        "only {seen} unsupported fixtures"
    );
}

#[test]
fn missing_file_names_the_path() {
    let path = fixture("no-such-model.json");
    let error = XgbModel::from_path(&path).unwrap_err();
    assert!(matches!(error, LoadError::Io { .. }), "{error:?}");
    assert!(error.to_string().contains("no-such-model.json"), "{error}");
}
