//! Tests of model loading and scoring, through the public API.

use super::*;
use serde_json::{Value, json};

fn tree(left: &[i64], right: &[i64], feature: &[i64], cond: &[f32], dl: &[u8]) -> Value {
    let n = left.len();
    json!({
        "base_weights": cond,
        "categories": [],
        "categories_nodes": [],
        "categories_segments": [],
        "categories_sizes": [],
        "default_left": dl,
        "id": 0,
        "left_children": left,
        "loss_changes": vec![0.0; n],
        "parents": vec![2147483647; n],
        "right_children": right,
        "split_conditions": cond,
        "split_indices": feature,
        "split_type": vec![0; n],
        "sum_hessian": vec![1.0; n],
        "tree_param": {
            "num_deleted": "0",
            "num_feature": "2",
            "num_nodes": n.to_string(),
            "size_leaf_vector": "1"
        }
    })
}

/// f0 < 0.5 ? -1 : 2, with missing values going left when `dl` is 1.
fn stump(dl: u8) -> Value {
    tree(
        &[1, -1, -1],
        &[2, -1, -1],
        &[0, 0, 0],
        &[0.5, -1.0, 2.0],
        &[dl, 0, 0],
    )
}

fn leaf(value: f32) -> Value {
    tree(&[-1], &[-1], &[0], &[value], &[0])
}

fn model(objective: &str, base_score: &str, trees: Vec<Value>) -> Value {
    let n = trees.len();
    json!({
        "learner": {
            "attributes": {},
            "feature_names": ["f0", "f1"],
            "feature_types": ["float", "float"],
            "gradient_booster": {
                "model": {
                    "cats": {"enc": [], "feature_segments": [], "sorted_idx": []},
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": n.to_string()},
                    "iteration_indptr": (0..=n).collect::<Vec<_>>(),
                    "tree_info": vec![0; n],
                    "trees": trees
                },
                "name": "gbtree"
            },
            "learner_model_param": {
                "base_score": base_score,
                "boost_from_average": "1",
                "num_class": "0",
                "num_feature": "2",
                "num_target": "1"
            },
            "objective": {"name": objective, "reg_loss_param": {"scale_pos_weight": "1"}}
        },
        "version": [3, 2, 0]
    })
}

fn load(value: &Value) -> Result<XgbModel, LoadError> {
    XgbModel::from_bytes(&serde_json::to_vec(value).unwrap())
}

fn load_err(value: &Value) -> String {
    load(value).expect_err("must be refused").to_string()
}

/// Encodes a JSON value the way xgboost writes UBJSON: 64-bit lengths,
/// typed arrays for numbers.
fn to_ubjson(value: &Value) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, n: usize) {
        out.push(b'L');
        out.extend_from_slice(&(n as i64).to_be_bytes());
    }
    fn scalar(out: &mut Vec<u8>, value: &Value, typed: Option<u8>) {
        match value {
            Value::Null => out.push(b'Z'),
            Value::Bool(b) => out.push(if *b { b'T' } else { b'F' }),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    if typed.is_none() {
                        out.push(b'l');
                    }
                    out.extend_from_slice(&(i as i32).to_be_bytes());
                } else {
                    if typed.is_none() {
                        out.push(b'd');
                    }
                    out.extend_from_slice(&(n.as_f64().unwrap() as f32).to_be_bytes());
                }
            }
            Value::String(s) => {
                out.push(b'S');
                length(out, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Array(items) => {
                let ty = if !items.is_empty() && items.iter().all(|v| v.is_i64()) {
                    Some(b'l')
                } else if !items.is_empty() && items.iter().all(|v| v.is_number()) {
                    Some(b'd')
                } else {
                    None
                };
                out.push(b'[');
                if let Some(ty) = ty {
                    out.extend_from_slice(&[b'$', ty]);
                }
                out.push(b'#');
                length(out, items.len());
                for item in items {
                    scalar(out, item, ty);
                }
            }
            Value::Object(map) => {
                out.push(b'{');
                for (key, item) in map {
                    length(out, key.len());
                    out.extend_from_slice(key.as_bytes());
                    scalar(out, item, None);
                }
                out.push(b'}');
            }
        }
    }
    let mut out = Vec::new();
    scalar(&mut out, value, None);
    out
}

fn targz(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    gzip(&tar)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A small deterministic generator, so failures reproduce.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn stump_splits_on_less_than_and_routes_missing_values() {
    for (dl, missing) in [(1, -0.5), (0, 2.5)] {
        let m = load(&model("reg:squarederror", "5E-1", vec![stump(dl)])).unwrap();
        assert_eq!(m.num_trees(), 1);
        assert_eq!(m.num_features(), 2);
        assert_eq!(m.feature_names(), ["f0", "f1"]);
        assert_eq!(m.objective(), Objective::RegSquaredError);
        assert_eq!(m.predict_row(&[0.2, 9.0]), -0.5);
        assert_eq!(m.predict_row(&[0.5, 9.0]), 2.5, "equal goes right");
        assert_eq!(m.predict_row(&[f32::INFINITY, 0.0]), 2.5);
        assert_eq!(m.predict_row(&[f32::NEG_INFINITY, 0.0]), -0.5);
        assert_eq!(
            m.predict_row(&[f32::NAN, 0.0]),
            missing,
            "default_left {dl}"
        );
    }
}

#[test]
fn missing_values_follow_default_left_at_every_level() {
    // f0 < 0 ? (f1 < 1 ? 10 : 20) : (f1 < 2 ? 30 : 40)
    let t = tree(
        &[1, 3, 5, -1, -1, -1, -1],
        &[2, 4, 6, -1, -1, -1, -1],
        &[0, 1, 1, 0, 0, 0, 0],
        &[0.0, 1.0, 2.0, 10.0, 20.0, 30.0, 40.0],
        &[0, 1, 0, 0, 0, 0, 0],
    );
    let m = load(&model("reg:squarederror", "0E0", vec![t])).unwrap();
    let cases = [
        ([-1.0, 0.0], 10.0),
        ([-1.0, 1.0], 20.0),
        ([-1.0, f32::NAN], 10.0),
        ([1.0, f32::NAN], 40.0),
        ([f32::NAN, 1.5], 30.0),
        ([f32::NAN, f32::NAN], 40.0),
    ];
    for (row, want) in cases {
        assert_eq!(m.predict_row(&row), want, "{row:?}");
    }
}

#[test]
fn signed_zeros_and_infinities_compare_like_floats() {
    // f0 < 0 ? -1 : 2 ; f0 < -inf never holds, and +inf is not below 0.
    let mut t = stump(0);
    t["split_conditions"] = json!([0.0, -1.0, 2.0]);
    let m = load(&model("reg:squarederror", "0E0", vec![t])).unwrap();
    assert_eq!(m.predict_row(&[-0.0, 0.0]), 2.0, "-0 is not below 0");
    assert_eq!(m.predict_row(&[0.0, 0.0]), 2.0);
    assert_eq!(m.predict_row(&[-1e-45, 0.0]), -1.0, "negative subnormal");
    assert_eq!(m.predict_row(&[f32::MIN, 0.0]), -1.0);
    assert_eq!(m.predict_row(&[f32::INFINITY, 0.0]), 2.0);
    let mut t = stump(1);
    t["split_conditions"] = json!([-0.0, -1.0, 2.0]);
    let m = load(&model("reg:squarederror", "0E0", vec![t])).unwrap();
    assert_eq!(m.predict_row(&[0.0, 0.0]), 2.0, "0 is not below -0");
    assert_eq!(m.predict_row(&[-f32::MIN_POSITIVE, 0.0]), -1.0);
    assert_eq!(m.predict_row(&[f32::NEG_INFINITY, 0.0]), -1.0);
    assert_eq!(m.predict_row(&[f32::NAN, 0.0]), -1.0);
}

#[test]
fn wide_models_use_the_wide_layout_and_agree() {
    let width = 5000;
    let mut t = stump(0);
    t["split_indices"] = json!([width - 1, 0, 0]);
    let mut doc = model("reg:squarederror", "0E0", vec![t, leaf(0.5), stump(1)]);
    doc["learner"]["learner_model_param"]["num_feature"] = json!(width.to_string());
    doc["learner"]["feature_names"] = json!([]);
    doc["learner"]["feature_types"] = json!([]);
    let m = load(&doc).unwrap();
    assert!(format!("{m:?}").contains("wide"), "{m:?}");
    let mut rows = vec![0.0f32; 3 * width];
    rows[width - 1] = 0.7; // row 0: tree 0 right, tree 2 left
    rows[width] = f32::NAN; // row 1: tree 0 left, tree 2 missing -> left
    rows[2 * width] = 0.9; // row 2: tree 0 left, tree 2 right
    rows[3 * width - 1] = f32::NAN; // row 2: tree 0 missing -> right
    let want = [2.0 + 0.5 - 1.0, -1.0 + 0.5 - 1.0, 2.0 + 0.5 + 2.0];
    let mut out = [0.0; 3];
    m.predict_batch(&rows, &mut out);
    assert_eq!(out, want);
    for (i, row) in rows.chunks(width).enumerate() {
        assert_eq!(m.predict_row(row), want[i], "row {i}");
    }
}

/// A random tree of at most `max_depth` levels, as xgboost lays trees
/// out (node ids in creation order), with thresholds and leaf values
/// drawn from `values`.
fn random_tree(rng: &mut Lcg, width: usize, max_depth: usize, values: &[f32]) -> Value {
    let (mut left, mut right, mut feature, mut cond, mut dl) = (
        vec![-1i64],
        vec![-1i64],
        vec![0i64],
        vec![0.0f32],
        vec![0u8],
    );
    let mut open = vec![(0usize, 0usize)];
    while let Some((id, depth)) = open.pop() {
        let pick = values[rng.next() as usize % values.len()];
        if depth == max_depth || rng.next().is_multiple_of(4) {
            cond[id] = pick;
            continue;
        }
        feature[id] = (rng.next() as usize % width) as i64;
        cond[id] = pick;
        dl[id] = (rng.next() % 2) as u8;
        let first = cond.len();
        left[id] = first as i64;
        right[id] = first as i64 + 1;
        for child in [first, first + 1] {
            open.push((child, depth + 1));
            left.push(-1);
            right.push(-1);
            feature.push(0);
            cond.push(0.0);
            dl.push(0);
        }
    }
    let mut t = tree(&left, &right, &feature, &cond, &dl);
    t["tree_param"]["num_feature"] = json!(width.to_string());
    t
}

/// XGBoost's rule, straight from the document: left iff `x < condition`,
/// missing values by `default_left`, leaves summed in tree order.
fn reference_margin(doc: &Value, row: &[f32]) -> f32 {
    let trees = doc["learner"]["gradient_booster"]["model"]["trees"]
        .as_array()
        .unwrap();
    let mut margin = 0.0f32;
    for t in trees {
        let get = |key: &str, i: usize| t[key][i].as_f64().unwrap();
        let mut node = 0;
        while get("left_children", node) >= 0.0 {
            let x = row[get("split_indices", node) as usize];
            let go_left = if x.is_nan() {
                get("default_left", node) != 0.0
            } else {
                x < get("split_conditions", node) as f32
            };
            let child = if go_left {
                "left_children"
            } else {
                "right_children"
            };
            node = get(child, node) as usize;
        }
        margin += get("split_conditions", node) as f32;
    }
    margin
}

#[test]
fn random_models_match_the_reference_rule() {
    let values = [
        0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 1e-40, -1e-40, 3.4e38, -3.4e38, 1e-7, 100.0,
    ];
    let inputs = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        0.49999997,
        -2.5,
        1e-40,
        -1e-40,
        f32::MIN_POSITIVE,
        3.4e38,
        -3.4e38,
        7.0,
    ];
    let mut rng = Lcg(2024);
    let shapes = [(1, 1), (2, 2), (3, 3), (9, 6), (40, 10), (5000, 5), (7, 13)];
    for (width, depth) in shapes {
        let n_trees = 1 + (rng.next() % 40) as usize;
        let trees: Vec<Value> = (0..n_trees)
            .map(|_| random_tree(&mut rng, width, depth, &values))
            .collect();
        let mut doc = model("reg:squarederror", "0E0", trees);
        doc["learner"]["learner_model_param"]["num_feature"] = json!(width.to_string());
        doc["learner"]["feature_names"] = json!([]);
        let m = load(&doc).unwrap();
        let n_rows = 77;
        let rows: Vec<f32> = (0..n_rows * width)
            .map(|_| inputs[rng.next() as usize % inputs.len()])
            .collect();
        let mut batch = vec![0.0; n_rows];
        m.predict_batch(&rows, &mut batch);
        for (i, row) in rows.chunks(width).enumerate() {
            let want = reference_margin(&doc, row);
            let single = m.predict_row(row);
            assert_eq!(single.to_bits(), want.to_bits(), "width {width} row {i}");
            assert_eq!(batch[i].to_bits(), want.to_bits(), "width {width} row {i}");
        }
    }
}

#[test]
fn logistic_objectives_start_from_the_logit_of_base_score() {
    for objective in ["binary:logistic", "reg:logistic"] {
        for base in ["2.5E-1", "[2.5E-1]", " [ 2.5E-1 ] "] {
            let m = load(&model(objective, base, vec![leaf(0.0)])).unwrap();
            let p = m.predict_row(&[0.0, 0.0]);
            assert!((p - 0.25).abs() < 1e-6, "{objective} {base}: {p}");
        }
        let m = load(&model(objective, "5E-1", vec![leaf(1.0), leaf(-3.0)])).unwrap();
        let want = 1.0 / (1.0 + 2.0f32.exp());
        assert!((m.predict_row(&[0.0, 0.0]) - want).abs() < 1e-7);
    }
    let m = load(&model("reg:squarederror", "[1.5E0]", vec![leaf(0.25)])).unwrap();
    assert_eq!(m.predict_row(&[0.0, 0.0]), 1.75);
    assert_eq!(m.objective().name(), "reg:squarederror");
}

#[test]
fn older_encodings_are_accepted() {
    // xgboost 1.x: scalar base_score, no num_target, no split_type or
    // categories, and booleans or numbers where 3.x writes strings.
    let mut doc = model("reg:linear", "5E-1", vec![stump(1)]);
    let learner = &mut doc["learner"];
    learner["learner_model_param"] = json!({"base_score": 0.5, "num_class": 0, "num_feature": "2"});
    learner.as_object_mut().unwrap().remove("feature_names");
    let gbtree = &mut learner["gradient_booster"]["model"];
    gbtree.as_object_mut().unwrap().remove("cats");
    let tree = gbtree["trees"][0].as_object_mut().unwrap();
    for key in ["split_type", "categories", "categories_nodes"] {
        tree.remove(key);
    }
    tree.insert("default_left".into(), json!([true, false, false]));
    let m = load(&doc).unwrap();
    assert_eq!(m.objective(), Objective::RegSquaredError);
    assert!(m.feature_names().is_empty());
    assert_eq!(m.predict_row(&[f32::NAN, 0.0]), -0.5);
}

#[test]
fn batch_matches_single_rows() {
    let mut trees = Vec::new();
    for i in 0..7 {
        let s = i as f32 / 7.0;
        trees.push(tree(
            &[1, 3, 5, -1, -1, -1, -1],
            &[2, 4, 6, -1, -1, -1, -1],
            &[i % 2, 1, 0, 0, 0, 0, 0],
            &[s, 0.3, 0.6, 0.1 * s, -0.2, 0.3 + s, -0.4],
            &[(i % 2) as u8, 0, 1, 0, 0, 0, 0],
        ));
        trees.push(if i % 3 == 0 { leaf(0.01 * s) } else { stump(1) });
    }
    let m = load(&model("binary:logistic", "[3E-1]", trees)).unwrap();
    let mut rng = Lcg(7);
    let rows: Vec<f32> = (0..2 * 203)
        .map(|_| match rng.next() % 10 {
            0 => f32::NAN,
            r => r as f32 / 10.0 - 0.05 * (rng.next() % 3) as f32,
        })
        .collect();
    let singles: Vec<f32> = rows.chunks(2).map(|r| m.predict_row(r)).collect();
    for batch in [1, 2, 7, 8, 9, 64, 65, 130, 203] {
        let mut out = vec![0.0; 203];
        for (r, o) in rows.chunks(batch * 2).zip(out.chunks_mut(batch)) {
            m.predict_batch(r, o);
        }
        let same = out
            .iter()
            .zip(&singles)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "batch of {batch}");
    }
    m.predict_batch(&[], &mut []);
}

#[test]
fn featureless_models_score_their_leaves() {
    let featureless = |mut t: Value| {
        t["tree_param"]["num_feature"] = json!("0");
        t
    };
    let trees = vec![featureless(leaf(0.25)), featureless(leaf(0.5))];
    let mut doc = model("reg:squarederror", "1E0", trees);
    doc["learner"]["learner_model_param"]["num_feature"] = json!("0");
    doc["learner"]["feature_names"] = json!([]);
    let m = load(&doc).unwrap();
    assert_eq!(m.predict_row(&[]), 1.75);
    let mut out = [0.0; 3];
    m.predict_batch(&[], &mut out);
    assert_eq!(out, [1.75; 3]);
    doc["learner"]["gradient_booster"]["model"]["trees"][0] = featureless(stump(0));
    let err = load_err(&doc);
    assert!(err.contains("feature 0, but the model has 0"), "{err}");
}

#[test]
#[should_panic(expected = "row has 3 values")]
fn predict_row_checks_the_row_length() {
    let m = load(&model("binary:logistic", "5E-1", vec![stump(0)])).unwrap();
    m.predict_row(&[0.0, 0.0, 0.0]);
}

#[test]
#[should_panic(expected = "values given for")]
fn predict_batch_checks_the_lengths() {
    let m = load(&model("binary:logistic", "5E-1", vec![stump(0)])).unwrap();
    m.predict_batch(&[0.0; 5], &mut [0.0; 2]);
}

#[test]
fn model_is_shareable_and_debug_is_short() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<XgbModel>();
    let m = load(&model("binary:logistic", "5E-1", vec![stump(0); 50])).unwrap();
    let debug = format!("{m:?}");
    assert!(debug.contains("num_trees: 50"), "{debug}");
    assert!(debug.contains("compact"), "{debug}");
    assert!(debug.len() < 200, "{debug}");
}

#[test]
fn formats_are_told_apart_by_their_bytes() {
    let doc = model("binary:logistic", "[3E-1]", vec![stump(1), leaf(0.5)]);
    let json = serde_json::to_vec_pretty(&doc).unwrap();
    let reference = XgbModel::from_bytes(&json).unwrap();
    let row = [f32::NAN, 1.0];
    let want = reference.predict_row(&row);

    let mut padded = b"\xef\xbb\xbf \n\t".to_vec();
    padded.extend_from_slice(&json);
    let ubj = to_ubjson(&doc);
    assert_eq!(ubj[0], b'{');
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("json with BOM and whitespace", padded),
        ("ubjson", ubj.clone()),
        (
            "tar xgboost-model ubjson",
            targz(&[("xgboost-model", &ubj)]),
        ),
        (
            "tar xgboost-model json among others",
            targz(&[
                ("code/inference.py", b"print()"),
                ("./xgboost-model", &json),
            ]),
        ),
        (
            "tar single json",
            targz(&[("model/model.json", &json), ("README", b"x")]),
        ),
        (
            "tar single ubj",
            targz(&[("._m.ubj", b"junk"), ("m.ubj", &ubj)]),
        ),
        ("gzipped json", gzip(&json)),
    ];
    for (what, bytes) in variants {
        let m = XgbModel::from_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(m.predict_row(&row).to_bits(), want.to_bits(), "{what}");
    }

    let ambiguous = targz(&[("a.json", &json), ("b.ubj", &ubj)]);
    let err = XgbModel::from_bytes(&ambiguous).unwrap_err().to_string();
    assert!(err.contains("`a.json`") && err.contains("`b.ubj`"), "{err}");
    let none = targz(&[("weights.bin", b"0000")]);
    let err = XgbModel::from_bytes(&none).unwrap_err().to_string();
    assert!(
        err.contains("xgboost-model") && err.contains("`weights.bin`"),
        "{err}"
    );
    let nested = targz(&[("xgboost-model", &gzip(&json))]);
    assert!(matches!(
        XgbModel::from_bytes(&nested),
        Err(LoadError::Archive(_))
    ));
    let legacy_in_tar = targz(&[("xgboost-model", b"binf\0\0\0\x3f\x09\0\0\0")]);
    let err = XgbModel::from_bytes(&legacy_in_tar)
        .unwrap_err()
        .to_string();
    assert!(err.contains("save_model"), "{err}");
    let corrupt_gzip = &targz(&[("xgboost-model", &json)])[..40];
    assert!(XgbModel::from_bytes(corrupt_gzip).is_err());
}

#[test]
fn legacy_binary_pickle_and_garbage_are_refused_with_advice() {
    let legacy: &[u8] = b"\0\0\0\x3f\x09\0\0\0\0\0\0\0\x01\0\0\0";
    for bytes in [legacy, b"binf\0\0\0\x3f", b"hello", b"[1, 2]"] {
        let err = XgbModel::from_bytes(bytes).unwrap_err();
        assert!(matches!(err, LoadError::Format(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("legacy binary"), "{message}");
        assert!(message.contains("save_model(\"model.json\")"), "{message}");
    }
    let err = XgbModel::from_bytes(b"\x80\x04\x95\x10\0\0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("pickle"), "{err}");
    let err = XgbModel::from_bytes(b"").unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[test]
fn unsupported_models_say_why() {
    let base = model("binary:logistic", "5E-1", vec![stump(0)]);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut doc = base.clone();
        edit(&mut doc);
        doc
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with(&|d| {
                d["learner"]["gradient_booster"] =
                    json!({"name": "dart", "gbtree": {}, "weight_drop": [1.0]})
            }),
            "booster=\"gbtree\"",
        ),
        (
            with(&|d| {
                d["learner"]["gradient_booster"] =
                    json!({"name": "gblinear", "model": {"weights": [0.1, 0.2, 0.3]}})
            }),
            "gblinear",
        ),
        (
            with(&|d| d["learner"]["objective"]["name"] = json!("reg:gamma")),
            "binary:logistic, reg:logistic, reg:squarederror",
        ),
        (
            with(&|d| d["learner"]["objective"]["name"] = json!("multi:softprob")),
            "multi-class",
        ),
        (
            with(&|d| d["learner"]["learner_model_param"]["num_class"] = json!("3")),
            "multi-class",
        ),
        (
            with(&|d| d["learner"]["learner_model_param"]["num_target"] = json!("2")),
            "multi-target",
        ),
        (
            with(&|d| d["learner"]["learner_model_param"]["base_score"] = json!("[5E-1,5E-1]")),
            "intercepts",
        ),
        (
            with(&|d| d["learner"]["gradient_booster"]["model"]["tree_info"] = json!([1])),
            "multi-class",
        ),
        (
            with(&|d| {
                d["learner"]["gradient_booster"]["model"]["trees"][0]["split_type"] =
                    json!([1, 0, 0])
            }),
            "categorical",
        ),
        (
            with(&|d| {
                d["learner"]["gradient_booster"]["model"]["trees"][0]["categories_nodes"] =
                    json!([0])
            }),
            "categorical",
        ),
        (
            with(&|d| {
                d["learner"]["gradient_booster"]["model"]["trees"][0]["tree_param"]["size_leaf_vector"] =
                    json!("3")
            }),
            "multi-target",
        ),
        (
            with(&|d| d["learner"]["feature_types"] = json!(["float", "c"])),
            "`f1` is categorical",
        ),
        (
            with(&|d| d["learner"]["gradient_booster"]["model"]["cats"]["enc"] = json!([{"x": 1}])),
            "categorical",
        ),
    ];
    for (doc, word) in cases {
        let err = load(&doc).expect_err(word);
        assert!(matches!(err, LoadError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains(word), "`{err}` lacks `{word}`");
    }
}

#[test]
fn broken_trees_are_refused() {
    let with_tree = |t: Value| model("reg:squarederror", "5E-1", vec![t]);
    let f = [0.5, -1.0, 2.0];
    // A chain far deeper than MAX_DEPTH: node i splits into i+1 and a leaf.
    let deep = 300usize;
    let mut left = Vec::new();
    let mut right = Vec::new();
    for i in 0..deep {
        left.push(i as i64 + 1);
        right.push((deep + 1 + i) as i64);
    }
    left.extend(vec![-1; deep + 1]);
    right.extend(vec![-1; deep + 1]);
    let n = left.len();
    let deep_tree = tree(&left, &right, &vec![0; n], &vec![0.0; n], &vec![0; n]);
    let cases: Vec<(Value, &str)> = vec![
        (
            with_tree(tree(&[1, -1, -1], &[7, -1, -1], &[0; 3], &f, &[0; 3])),
            "outside",
        ),
        (
            with_tree(tree(&[1, -1, -1], &[-2, -1, -1], &[0; 3], &f, &[0; 3])),
            "outside",
        ),
        (
            with_tree(tree(&[1, 0, -1], &[2, 2, -1], &[0; 3], &f, &[0; 3])),
            "reached twice",
        ),
        (
            with_tree(tree(&[1, -1, -1], &[1, -1, -1], &[0; 3], &f, &[0; 3])),
            "reached twice",
        ),
        (
            with_tree(tree(&[1, -1, -1], &[2, -1, -1], &[2, 0, 0], &f, &[0; 3])),
            "feature 2",
        ),
        (
            with_tree(tree(&[1, -1, -1], &[2, -1, -1], &[-1, 0, 0], &f, &[0; 3])),
            "feature -1",
        ),
        (
            with_tree(tree(&[1, -1, -1], &[2, -1], &[0; 3], &f, &[0; 3])),
            "right_children",
        ),
        (
            with_tree(tree(&[1, -1, -1], &[2, -1, -1], &[0; 3], &f, &[0; 2])),
            "default_left",
        ),
        (with_tree(tree(&[], &[], &[], &[], &[])), "no nodes"),
        (with_tree(deep_tree), "deeper than 128"),
        (
            {
                let mut d = with_tree(stump(0));
                d["learner"]["gradient_booster"]["model"]["trees"][0]["tree_param"]["num_nodes"] =
                    json!("5");
                d
            },
            "for 5 nodes",
        ),
        (
            {
                let mut d = with_tree(stump(0));
                d["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] =
                    json!("2");
                d
            },
            "num_trees",
        ),
        (
            {
                let mut d = with_tree(stump(0));
                d["learner"]["feature_names"] = json!(["only-one"]);
                d
            },
            "feature names",
        ),
        (
            model("binary:logistic", "1E0", vec![stump(0)]),
            "between 0 and 1",
        ),
        (
            model("binary:logistic", "abc", vec![stump(0)]),
            "not a number",
        ),
    ];
    for (doc, word) in cases {
        let err = load(&doc).expect_err(word);
        assert!(matches!(err, LoadError::Invalid(_)), "{word}: {err:?}");
        assert!(err.to_string().contains(word), "`{err}` lacks `{word}`");
    }
}

#[test]
fn wrong_types_are_parse_errors() {
    let base = model("reg:squarederror", "5E-1", vec![stump(0)]);
    let tree = "/learner/gradient_booster/model/trees/0";
    let edits = [
        (format!("{tree}/split_conditions"), json!([0.5, "NaN", 1.0])),
        (format!("{tree}/left_children"), json!([1.5, -1, -1])),
        (format!("{tree}/default_left"), json!([2, 0, 0])),
        (format!("{tree}/tree_param"), json!([])),
        (
            "/learner/gradient_booster/model/trees".into(),
            json!({"0": 1}),
        ),
        (
            "/learner/learner_model_param/num_feature".into(),
            json!(null),
        ),
        (
            "/learner/learner_model_param/num_feature".into(),
            json!("-3"),
        ),
        ("/learner/objective".into(), json!("binary:logistic")),
        ("/learner".into(), json!(null)),
    ];
    for (pointer, value) in edits {
        let mut doc = base.clone();
        *doc.pointer_mut(&pointer).unwrap() = value;
        let err = load(&doc).expect_err(&pointer);
        assert!(
            matches!(err, LoadError::Parse { .. } | LoadError::Invalid(_)),
            "{pointer}: {err:?}"
        );
    }
    let mut doc = base.clone();
    doc["learner"]["learner_model_param"]
        .as_object_mut()
        .unwrap()
        .remove("num_feature");
    assert!(load_err(&doc).contains("num_feature"));
}

#[test]
fn non_finite_values_from_ubjson_are_refused() {
    let mut doc = model("reg:squarederror", "5E-1", vec![stump(0)]);
    // Placeholders that the UBJSON encoder writes as float32, patched to
    // NaN afterwards since JSON cannot carry NaN.
    doc["learner"]["gradient_booster"]["model"]["trees"][0]["split_conditions"] =
        json!([0.5, -1.0, 1234.5]);
    let mut ubj = to_ubjson(&doc);
    let marker = 1234.5f32.to_be_bytes();
    let at = ubj.windows(4).position(|w| w == marker).unwrap();
    ubj[at..at + 4].copy_from_slice(&f32::NAN.to_be_bytes());
    let err = XgbModel::from_bytes(&ubj).unwrap_err().to_string();
    assert!(err.contains("non-finite"), "{err}");
}

#[test]
fn huge_ubjson_counts_are_refused_before_allocating() {
    let doc = model("reg:squarederror", "5E-1", vec![stump(0)]);
    let ubj = to_ubjson(&doc);
    // The count of the first typed int32 array (left_children or
    // default_left) is rewritten to 2^40 elements.
    let at = ubj.windows(4).position(|w| w == b"[$l#").unwrap();
    let mut forged = ubj.clone();
    forged[at + 5..at + 13].copy_from_slice(&(1i64 << 40).to_be_bytes());
    let err = XgbModel::from_bytes(&forged).unwrap_err().to_string();
    assert!(err.contains("exceeds"), "{err}");
    forged[at + 5..at + 13].copy_from_slice(&(-1i64).to_be_bytes());
    assert!(XgbModel::from_bytes(&forged).is_err());
}

/// Whatever the bytes, loading returns an error or a model that scores
/// without panicking.
fn load_never_panics(bytes: &[u8]) {
    if let Ok(m) = XgbModel::from_bytes(bytes) {
        let row = vec![0.25; m.num_features()];
        let _ = m.predict_row(&row);
        let nan = vec![f32::NAN; m.num_features()];
        let _ = m.predict_row(&nan);
        let rows = vec![-0.5; 9 * m.num_features()];
        m.predict_batch(&rows, &mut [0.0; 9]);
    }
}

#[test]
fn truncated_and_corrupted_input_never_panics() {
    let doc = model(
        "binary:logistic",
        "[3E-1]",
        vec![stump(1), leaf(0.5), stump(0)],
    );
    let json = serde_json::to_vec(&doc).unwrap();
    let ubj = to_ubjson(&doc);
    let tgz = targz(&[("xgboost-model", &ubj)]);
    for bytes in [&json, &ubj] {
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            assert!(XgbModel::from_bytes(cut).is_err(), "prefix of {len} bytes");
        }
    }
    // An archive cut after its model member still yields that (complete)
    // model; any shorter cut must fail.
    for len in 0..tgz.len() {
        load_never_panics(&tgz[..len]);
    }
    assert!(XgbModel::from_bytes(&tgz[..tgz.len() / 2]).is_err());
    let mut rng = Lcg(42);
    for round in 0..3000 {
        let mut bytes = if round % 2 == 0 {
            ubj.clone()
        } else {
            json.clone()
        };
        for _ in 0..1 + rng.next() % 4 {
            let at = (rng.next() as usize) % bytes.len();
            bytes[at] = rng.next() as u8;
        }
        load_never_panics(&bytes);
    }
}
