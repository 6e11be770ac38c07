//! Entry points for the fuzz targets in `fuzz/` and for the replay of their corpus
//! (`tests/fuzz_corpus.rs`). Not part of the gateway's API: hidden from the docs and free to
//! change.
//!
//! Each `check_*` function takes arbitrary bytes, hands them to one parser of untrusted input
//! and asserts what its documentation promises; a broken promise or a panic inside the parser
//! is a failure of the fuzz target (and of the corpus replay). Inputs the parser refuses are
//! fine as long as it refuses them cleanly.

use std::time::{Duration, UNIX_EPOCH};

use md5::{Digest, Md5};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::api::sagemaker::{csv_cost, parse_csv};
use crate::domain::{MAX_FIELD_ERRORS, MAX_ID_CHARS, MAX_TX_COUNT, N_FEATURES, ValidTransaction};
use crate::kinesis::kpl::{MAGIC, PlainReason, deaggregate};
use crate::middleware::sigv4::{ALGORITHM, SigV4Error, parse_amz_date, parse_authorization};
use crate::model::xgboost::{Objective, XgbModel};

/// A fuzz target's body: panics when `data` breaks one of the parser's promises.
pub type Check = fn(data: &[u8]);

/// The target names, each with its check: the fuzz crate has one target per entry and its
/// corpus lives in `fuzz/corpus/<name>/`.
pub const TARGETS: [(&str, Check); 5] = [
    ("validator", check_validator),
    ("sagemaker_csv", check_sagemaker_csv),
    ("kpl_deaggregate", check_kpl_deaggregate),
    ("xgboost_load", check_xgboost_load),
    ("sigv4_header", check_sigv4_header),
];

/// The time a transaction without a timestamp is taken to have been received.
const RECEIVED: OffsetDateTime = datetime!(2026-11-26 17:00 UTC);

/// The codes a [`crate::domain::FieldError`] may carry.
const FIELD_CODES: [&str; 7] = [
    "missing",
    "wrong_type",
    "out_of_range",
    "unknown_field",
    "invalid_format",
    "invalid_json",
    "too_many",
];

/// Generous upper bound on one validation message: every part quoted from the input is
/// clipped, so a message never grows with the payload.
const MAX_FIELD_MESSAGE_BYTES: usize = 1024;

/// The transaction validator on a JSON document: no panic; a valid transaction has ids within
/// limits and features in their ranges; an invalid one lists between one and
/// [`MAX_FIELD_ERRORS`] problems with known codes and bounded messages.
pub fn check_validator(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match ValidTransaction::from_json(&value, RECEIVED) {
        Ok(tx) => {
            for id in [&tx.transaction_id, &tx.card_id] {
                let chars = id.chars().count();
                assert!((1..=MAX_ID_CHARS).contains(&chars), "id of {chars} chars");
            }
            let f = tx.features.0;
            assert_eq!(f.len(), N_FEATURES);
            assert!(
                f.iter().all(|x| x.is_finite()),
                "NaN or infinite feature: {f:?}"
            );
            assert!(f.iter().all(|&x| x >= 0.0), "negative feature: {f:?}");
            assert!(f[2] < 24.0 && f[2].fract() == 0.0, "hour {}", f[2]);
            assert!(f[3] <= 9999.0 && f[3].fract() == 0.0, "mcc {}", f[3]);
            assert!(f[4] == 0.0 || f[4] == 1.0, "card_present {}", f[4]);
            assert!(f[5] == 0.0 || f[5] == 1.0, "foreign {}", f[5]);
            for count in [f[7], f[8]] {
                assert!(count <= MAX_TX_COUNT as f32 && count.fract() == 0.0);
            }
        }
        Err(invalid) => {
            assert!(!invalid.errors.is_empty(), "refused without a reason");
            assert!(invalid.errors.len() <= MAX_FIELD_ERRORS);
            assert!(invalid.omitted == 0 || invalid.errors.len() == MAX_FIELD_ERRORS);
            for e in &invalid.errors {
                assert!(FIELD_CODES.contains(&e.code.as_str()), "code {:?}", e.code);
                assert!(e.field.chars().count() <= 64, "field {:?}", e.field);
                assert!(
                    e.message.len() <= MAX_FIELD_MESSAGE_BYTES,
                    "message of {} bytes",
                    e.message.len()
                );
            }
        }
    }
}

/// Upper bound on a CSV `ValidationError` message: at most ten problems, each quoting at most
/// 32 characters of a field.
const MAX_CSV_MESSAGE_BYTES: usize = 10 * 256 + 64;

/// The SageMaker CSV row parser. The first byte picks the row width (1 to 16 features), the rest
/// is the body. No panic; accepted rows have that width and only finite or missing (NaN)
/// values, and never outnumber the rows the rate limit charged for ([`csv_cost`]); a refusal
/// has a bounded message.
pub fn check_sagemaker_csv(data: &[u8]) {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let width = 1 + usize::from(first % 16);
    match parse_csv(body, width) {
        Ok(rows) => {
            assert!(!rows.is_empty(), "accepted a body without rows");
            let charged = csv_cost(body) as usize;
            assert!(
                rows.len() <= charged,
                "{} rows scored, {charged} charged",
                rows.len()
            );
            for row in &rows {
                assert_eq!(row.len(), width);
                assert!(row.iter().all(|v| v.is_finite() || v.is_nan()), "{row:?}");
            }
        }
        Err(message) => {
            assert!(!message.is_empty());
            assert!(
                message.len() <= MAX_CSV_MESSAGE_BYTES,
                "message of {} bytes",
                message.len()
            );
        }
    }
}

/// Longest partition key in bytes: 256 characters of up to four bytes.
const MAX_KEY_BYTES: usize = 256 * 4;
/// Longest explicit hash key: 39 decimal digits.
const MAX_HASH_KEY_BYTES: usize = 39;
/// Fewest input bytes one aggregated user record takes.
const MIN_USER_RECORD_BYTES: usize = 6;

/// KPL de-aggregation, with the promises of [`deaggregate`]: no panic; data bytes out never
/// exceed bytes in; a plain record is the input unchanged, under the record's own key; an
/// aggregate numbers its user records `0..n`, each taking at least six input bytes, with keys
/// within Kinesis' limits.
///
/// `data` is checked as a Kinesis record, then framed as the message of one (magic, `data`,
/// its MD5): a fuzzer would hardly ever forge the checksum, and the framed copy lets it reach
/// the protobuf decoding and key tables behind it.
pub fn check_kpl_deaggregate(data: &[u8]) {
    check_kinesis_record(data);
    let mut framed = Vec::with_capacity(MAGIC.len() + data.len() + 16);
    framed.extend_from_slice(&MAGIC);
    framed.extend_from_slice(data);
    framed.extend_from_slice(&Md5::digest(data));
    check_kinesis_record(&framed);
}

fn check_kinesis_record(data: &[u8]) {
    const KEY: &str = "fuzz-partition-key";
    let (records, reason) = deaggregate(data, KEY);
    let data_out: usize = records.iter().map(|r| r.data.len()).sum();
    assert!(
        data_out <= data.len(),
        "{data_out} data bytes out of {} in",
        data.len()
    );
    match reason {
        Some(reason) => {
            assert_eq!(
                reason == PlainReason::NoMagic,
                !data.starts_with(&MAGIC),
                "{reason:?}"
            );
            let [plain] = &records[..] else {
                panic!("{} records for a plain one", records.len());
            };
            assert_eq!(plain.sub_sequence_number, None);
            assert_eq!(plain.partition_key, KEY);
            assert_eq!(plain.explicit_hash_key, None);
            assert_eq!(plain.data, data);
        }
        None => {
            assert!(data.starts_with(&MAGIC));
            assert!(
                records.len() * MIN_USER_RECORD_BYTES <= data.len(),
                "{} user records from {} bytes",
                records.len(),
                data.len()
            );
            for (i, record) in (0u64..).zip(&records) {
                assert_eq!(record.sub_sequence_number, Some(i));
                assert!(record.partition_key.chars().count() <= 256);
                assert!(record.partition_key.len() <= MAX_KEY_BYTES);
                if let Some(key) = &record.explicit_hash_key {
                    assert!(key.len() <= MAX_HASH_KEY_BYTES, "hash key {key:?}");
                }
            }
        }
    }
}

/// Widest model whose predictions are checked: wider ones are only loaded, so that one input
/// cannot make an iteration allocate rows of millions of features.
const MAX_CHECKED_FEATURES: usize = 1024;
/// Rows scored per loaded model: more than one group of the batch walk, with a partial group.
const CHECKED_ROWS: usize = 11;

/// The XGBoost loader (JSON, UBJSON, gzip and tar): no panic; a loaded model is consistent
/// (feature names match the feature count) and scores any row without panicking, a batch bit
/// for bit as row by row, and a logistic model's scores lie in `[0, 1]`.
pub fn check_xgboost_load(data: &[u8]) {
    let model = match XgbModel::from_bytes(data) {
        Ok(model) => model,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let width = model.num_features();
    assert!(model.feature_names().is_empty() || model.feature_names().len() == width);
    let _ = format!("{model:?}");
    if width > MAX_CHECKED_FEATURES {
        return;
    }
    // Missing, zero, then values drawn from a fixed set by the input's bytes.
    const VALUES: [f32; 11] = [
        f32::NAN,
        -1e30,
        -1.0,
        -0.5,
        -0.0,
        0.0,
        f32::MIN_POSITIVE,
        0.5,
        1.0,
        2.5,
        1e30,
    ];
    let seed = data
        .iter()
        .fold(0usize, |h, &b| h.wrapping_mul(31) ^ usize::from(b));
    let mut rows = Vec::with_capacity(CHECKED_ROWS * width);
    for r in 0..CHECKED_ROWS {
        for f in 0..width {
            rows.push(match r {
                0 => f32::NAN,
                1 => 0.0,
                _ => VALUES[(seed ^ (r * 7919 + f * 104_729)) % VALUES.len()],
            });
        }
    }
    let mut batch = vec![0.0f32; CHECKED_ROWS];
    model.predict_batch(&rows, &mut batch);
    let logistic = matches!(
        model.objective(),
        Objective::BinaryLogistic | Objective::RegLogistic
    );
    for (r, &in_batch) in batch.iter().enumerate() {
        let row = rows.get(r * width..(r + 1) * width).unwrap_or(&[]);
        let alone = model.predict_row(row);
        assert_eq!(
            alone.to_bits(),
            in_batch.to_bits(),
            "row {r}: {alone} alone, {in_batch} in a batch"
        );
        if logistic {
            assert!(
                (0.0..=1.0).contains(&alone),
                "row {r}: logistic score {alone}"
            );
        }
    }
}

/// The SigV4 `Authorization` header parser (and, on the same text, the `X-Amz-Date` parser): no
/// panic; an accepted header names the one algorithm, has a five-part credential scope with a
/// `yyyymmdd` date, sorted lowercase signed headers covering `host` and `x-amz-date`, and the
/// signature it carries; a refusal never quotes the signature (no error message holds a run of
/// 16 or more hex digits from the input); an accepted date reads back as the same text.
pub fn check_sigv4_header(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    match parse_authorization(value) {
        Ok(claim) => {
            assert!(value.starts_with(ALGORITHM) && value[ALGORITHM.len()..].starts_with(' '));
            for part in [claim.access_key_id, claim.region, claim.service] {
                assert!(
                    !part.is_empty() && !part.contains('/'),
                    "scope part {part:?}"
                );
            }
            assert!(claim.scope_date.len() == 8);
            assert!(claim.scope_date.bytes().all(|b| b.is_ascii_digit()));
            let names = &claim.signed_headers;
            assert!(names.windows(2).all(|pair| pair[0] < pair[1]), "{names:?}");
            assert!(names.contains(&"host") && names.contains(&"x-amz-date"));
            assert!(!names.contains(&"authorization"));
            for name in names {
                assert!(!name.is_empty() && !name.bytes().any(|b| b.is_ascii_uppercase()));
            }
            let hex = hex::encode(claim.signature);
            assert!(value.to_ascii_lowercase().contains(&hex), "signature {hex}");
        }
        Err(error) => {
            assert!(
                matches!(
                    error,
                    SigV4Error::Malformed(_) | SigV4Error::UnsupportedAlgorithm
                ),
                "{error:?}"
            );
            let message = error.to_string();
            for run in hex_runs(value, 16) {
                assert!(!message.contains(run), "the error quotes {run:?}");
            }
        }
    }
    if let Ok(at) = parse_amz_date(value) {
        let secs = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let back = OffsetDateTime::from_unix_timestamp(secs.as_secs() as i64)
            .expect("a parsed date is in range");
        let format =
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        assert_eq!(back.format(&format).ok().as_deref(), Some(value));
    }
}

/// Runs of at least `min` hex digits in `text`.
fn hex_runs(text: &str, min: usize) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(move |run| run.len() >= min)
}
