//! The card-transaction contract: the wire shape, its validation, and the model features derived
//! from it.
//!
//! Validation walks the raw JSON value instead of deserializing into a typed struct, because
//! serde stops at the first problem while callers are owed *every* problem at once (missing
//! fields, wrong types, out-of-range values and unknown fields together). The typed
//! [`Transaction`] exists for the OpenAPI document and for clients written in Rust; the only way
//! into the pipeline is [`ValidTransaction`].

mod explanation;
mod features;
mod score;
mod transaction;
mod validate;

pub use explanation::{
    Contribution, Explanation, RawExplanation, Reason, ReasonCode, default_reasons,
};
pub use features::{FEATURE_NAMES, FeatureLayout, FeatureRow, N_FEATURES};
pub use score::{Decision, Score, Thresholds};
pub use transaction::{
    FieldError, Invalid, MAX_FIELD_ERRORS, MAX_ID_CHARS, MAX_MAGNITUDE, MAX_TX_COUNT, Transaction,
    ValidTransaction,
};

use serde_json::Value;

/// Names a JSON value's type the way the OpenAPI document does.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// At most the first `max_chars` characters of `s`: what error messages and logs quote of
/// caller-controlled text.
pub fn clip(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;
