//! The card-transaction contract: the wire shape, its validation, and the model features derived
//! from it.
//!
//! Validation walks the raw JSON value instead of deserializing into a typed struct, because
//! serde stops at the first problem while callers are owed *every* problem at once (missing
//! fields, wrong types, out-of-range values and unknown fields together). The typed
//! [`Transaction`] exists for the OpenAPI document and for clients written in Rust; the only way
//! into the pipeline is [`ValidTransaction`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

/// Longest accepted identifier (transaction and card ids), in characters.
pub const MAX_ID_CHARS: usize = 128;

/// Largest accepted velocity count: far above any real card, low enough to be exact in f32.
pub const MAX_TX_COUNT: f64 = 1_000_000.0;

/// A card transaction as callers send it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "transaction_id": "tx-000123",
    "card_id": "card-42",
    "amount": 912.5,
    "currency": "EUR",
    "timestamp": "2026-11-26T03:12:45Z",
    "merchant_category": 5967,
    "card_present": false,
    "country": "BR",
    "home_country": "DE",
    "distance_from_home_km": 9500.0,
    "tx_count_1h": 4,
    "tx_count_24h": 11,
    "avg_amount_30d": 48.2,
    "source_ip": "203.0.113.7"
}))]
pub struct Transaction {
    /// Caller's id for this transaction, echoed in the score.
    #[schema(min_length = 1, max_length = 128)]
    pub transaction_id: String,
    /// Card (or account) id; the Kinesis partition key.
    #[schema(min_length = 1, max_length = 128)]
    pub card_id: String,
    /// Amount in the currency's major unit.
    #[schema(minimum = 0.0)]
    pub amount: f64,
    /// ISO 4217 code.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// RFC 3339 time of the transaction; default: the time it was received.
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// ISO 18245 merchant category code.
    #[schema(minimum = 0, maximum = 9999)]
    pub merchant_category: u16,
    /// Whether the card was physically present.
    pub card_present: bool,
    /// ISO 3166-1 alpha-2 country of the merchant.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: String,
    /// ISO 3166-1 alpha-2 country where the card was issued.
    #[schema(pattern = "^[A-Z]{2}$")]
    pub home_country: String,
    /// Distance between the merchant and the card holder's home.
    #[schema(minimum = 0.0)]
    pub distance_from_home_km: f64,
    /// Transactions on this card in the last hour.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub tx_count_1h: u32,
    /// Transactions on this card in the last 24 hours.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub tx_count_24h: u32,
    /// The card's average amount over 30 days.
    #[schema(minimum = 0.0)]
    pub avg_amount_30d: f64,
    /// IPv4 or IPv6 address of the buyer.
    #[schema(schema_with = ip_address_schema)]
    pub source_ip: Option<String>,
}

fn ip_address_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{
        KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
    };
    let ip = |format| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(format)))
    };
    let one_of = OneOfBuilder::new()
        .item(ip(KnownFormat::Ipv4))
        .item(ip(KnownFormat::Ipv6))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some("IPv4 or IPv6 address of the buyer."))
        .build();
    Schema::OneOf(one_of)
}

/// One problem with one field of the input. `field` is a JSON pointer-like path
/// (`amount`, `transactions[3].amount`); `code` is stable, `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    #[schema(example = "amount")]
    pub field: String,
    /// One of `missing`, `wrong_type`, `out_of_range`, `unknown_field`, `invalid_format`,
    /// `invalid_json`, `too_many`.
    #[schema(example = "out_of_range")]
    pub code: String,
    #[schema(example = "`amount` must be >= 0. Given: -3.5")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The same error for a field nested under `prefix` (a batch item, say).
    pub fn nested(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// A transaction that passed every check. Only the parts the gateway uses are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTransaction {
    pub transaction_id: String,
    pub card_id: String,
    pub features: FeatureRow,
}

// ===== features =====

/// The features the gateway can derive from a transaction, in canonical order. A model names
/// the subset it uses, in its own order; see [`FeatureLayout`].
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "amount",
    "amount_ratio_30d",
    "hour_of_day",
    "merchant_category",
    "card_present",
    "foreign",
    "distance_from_home_km",
    "tx_count_1h",
    "tx_count_24h",
];

/// Number of derivable features.
pub const N_FEATURES: usize = 9;

/// Every derivable feature of one transaction, in [`FEATURE_NAMES`] order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureRow(pub [f32; N_FEATURES]);

/// How a model's feature vector is gathered from a [`FeatureRow`]: `indices[i]` is the
/// canonical index of the model's i-th feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureLayout {
    names: Vec<String>,
    indices: Vec<usize>,
}

impl FeatureLayout {
    /// Matches a model's feature names against the derivable ones. A model without names gets
    /// the canonical order, but only if it has exactly that many features.
    pub fn from_model(model_names: &[String], num_features: usize) -> Result<Self, String> {
        let derivable = FEATURE_NAMES.join(", ");
        if model_names.is_empty() {
            if num_features == N_FEATURES {
                return Ok(Self::canonical());
            }
            return Err(format!(
                "the model stores no feature names and has {num_features} features; the gateway \
                 derives {N_FEATURES} ({derivable}). Save the model from a DMatrix with \
                 `feature_names` set"
            ));
        }
        let mut indices = Vec::with_capacity(model_names.len());
        let mut unknown = Vec::new();
        for name in model_names {
            match FEATURE_NAMES.iter().position(|f| f == name) {
                Some(i) => indices.push(i),
                None => unknown.push(name.as_str()),
            }
        }
        if !unknown.is_empty() {
            return Err(format!(
                "the model's features [{}] include [{}], which the gateway cannot derive from a \
                 transaction; derivable features: [{derivable}]",
                model_names.join(", "),
                unknown.join(", ")
            ));
        }
        Ok(Self {
            names: model_names.to_vec(),
            indices,
        })
    }

    pub fn canonical() -> Self {
        Self {
            names: FEATURE_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            indices: (0..N_FEATURES).collect(),
        }
    }

    /// A shared canonical layout, for models that read every feature in canonical order.
    pub fn canonical_ref() -> &'static Self {
        static CANONICAL: std::sync::LazyLock<FeatureLayout> =
            std::sync::LazyLock::new(FeatureLayout::canonical);
        &CANONICAL
    }

    /// The row whose model view is `values` (in the model's order); features the model does not
    /// read are missing (NaN).
    pub fn scatter(&self, values: &[f32]) -> FeatureRow {
        debug_assert_eq!(values.len(), self.indices.len());
        let mut row = FeatureRow([f32::NAN; N_FEATURES]);
        for (&i, &v) in self.indices.iter().zip(values) {
            row.0[i] = v;
        }
        row
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Appends the model's view of `row` to `out`.
    pub fn gather_into(&self, row: &FeatureRow, out: &mut Vec<f32>) {
        out.extend(self.indices.iter().map(|&i| row.0[i]));
    }
}

// ===== validation =====

impl ValidTransaction {
    /// Checks a JSON value against the contract, collecting every problem. `received_at`
    /// supplies the hour of day when the transaction has no timestamp.
    pub fn from_json(value: &Value, received_at: OffsetDateTime) -> Result<Self, Vec<FieldError>> {
        let Some(obj) = value.as_object() else {
            return Err(vec![FieldError::new(
                "",
                "wrong_type",
                format!(
                    "a transaction must be a JSON object. Given: {}",
                    json_type(value)
                ),
            )]);
        };
        let mut v = Validator {
            obj,
            errors: Vec::new(),
        };
        for key in obj.keys() {
            if !KNOWN_FIELDS.contains(&key.as_str()) {
                v.errors.push(FieldError::new(
                    key.as_str(),
                    "unknown_field",
                    format!("unknown field `{key}`"),
                ));
            }
        }
        let transaction_id = v.id("transaction_id");
        let card_id = v.id("card_id");
        let amount = v.non_negative("amount");
        v.optional_pattern("currency", 3, "an ISO 4217 code of 3 upper-case letters");
        let timestamp = v.timestamp("timestamp");
        let merchant_category = v.integer("merchant_category", 9999.0);
        let card_present = v.boolean("card_present");
        let country = v.country("country");
        let home_country = v.country("home_country");
        let distance = v.non_negative("distance_from_home_km");
        let tx_1h = v.integer("tx_count_1h", MAX_TX_COUNT);
        let tx_24h = v.integer("tx_count_24h", MAX_TX_COUNT);
        let avg_30d = v.non_negative("avg_amount_30d");
        v.ip("source_ip");

        if !v.errors.is_empty() {
            return Err(v.errors);
        }
        // Every `None` above pushed an error, so the unwraps below cannot fail.
        let (Some(transaction_id), Some(card_id), Some(amount), Some(timestamp)) =
            (transaction_id, card_id, amount, timestamp)
        else {
            unreachable!("a missing field was not reported. This is a bug.")
        };
        let hour = timestamp.map_or(received_at.hour(), |t| t.hour());
        let country = country.unwrap_or_default();
        let home_country = home_country.unwrap_or_default();
        let avg = avg_30d.unwrap_or_default();
        let features = FeatureRow([
            amount as f32,
            (amount / avg.max(1.0)) as f32,
            f32::from(hour),
            merchant_category.unwrap_or_default() as f32,
            f32::from(u8::from(card_present.unwrap_or_default())),
            f32::from(u8::from(country != home_country)),
            distance.unwrap_or_default() as f32,
            tx_1h.unwrap_or_default() as f32,
            tx_24h.unwrap_or_default() as f32,
        ]);
        Ok(Self {
            transaction_id,
            card_id,
            features,
        })
    }
}

const KNOWN_FIELDS: [&str; 14] = [
    "transaction_id",
    "card_id",
    "amount",
    "currency",
    "timestamp",
    "merchant_category",
    "card_present",
    "country",
    "home_country",
    "distance_from_home_km",
    "tx_count_1h",
    "tx_count_24h",
    "avg_amount_30d",
    "source_ip",
];

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

/// Shortens a received value for an error message: enough to recognise it, never a whole
/// payload.
fn shown(value: &Value) -> String {
    let mut s = value.to_string();
    if s.len() > 64 {
        let mut cut = 61;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

struct Validator<'a> {
    obj: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Validator<'a> {
    /// The field's value; `None` (with an error) when it is absent or null and required.
    fn required(&mut self, field: &str, expected: &str) -> Option<&'a Value> {
        let obj: &'a Map<String, Value> = self.obj;
        match obj.get(field) {
            None | Some(Value::Null) => {
                self.errors.push(FieldError::new(
                    field,
                    "missing",
                    format!("`{field}` is required ({expected})"),
                ));
                None
            }
            Some(v) => Some(v),
        }
    }

    fn wrong_type(&mut self, field: &str, expected: &str, value: &Value) {
        self.errors.push(FieldError::new(
            field,
            "wrong_type",
            format!(
                "`{field}` must be {expected}. Given: {} {}",
                json_type(value),
                shown(value)
            ),
        ));
    }

    fn string(&mut self, field: &str, expected: &str) -> Option<&'a str> {
        let value = self.required(field, expected)?;
        match value {
            Value::String(s) => Some(s.as_str()),
            other => {
                self.wrong_type(field, expected, other);
                None
            }
        }
    }

    fn id(&mut self, field: &str) -> Option<String> {
        let s = self.string(field, "a string of 1 to 128 characters")?;
        let chars = s.chars().count();
        if chars == 0 || chars > MAX_ID_CHARS {
            self.errors.push(FieldError::new(
                field,
                "out_of_range",
                format!("`{field}` must have 1 to {MAX_ID_CHARS} characters. Given: {chars}"),
            ));
            return None;
        }
        Some(s.to_owned())
    }

    fn upper_letters(
        &mut self,
        field: &str,
        value: &Value,
        len: usize,
        expected: &str,
    ) -> Option<String> {
        let Value::String(s) = value else {
            self.wrong_type(field, expected, value);
            return None;
        };
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_uppercase()) {
            self.errors.push(FieldError::new(
                field,
                "invalid_format",
                format!("`{field}` must be {expected}. Given: {}", shown(value)),
            ));
            return None;
        }
        Some(s.clone())
    }

    fn country(&mut self, field: &str) -> Option<String> {
        const EXPECTED: &str = "an ISO 3166-1 alpha-2 code of 2 upper-case letters";
        let value = self.required(field, EXPECTED)?;
        self.upper_letters(field, value, 2, EXPECTED)
    }

    fn optional_pattern(&mut self, field: &str, len: usize, expected: &str) {
        if let Some(value) = self.obj.get(field).filter(|v| !v.is_null()) {
            self.upper_letters(field, value, len, expected);
        }
    }

    fn number(&mut self, field: &str, expected: &str) -> Option<f64> {
        let value = self.required(field, expected)?;
        match value.as_f64() {
            Some(x) if value.is_number() && x.is_finite() => Some(x),
            Some(_) => {
                self.errors.push(FieldError::new(
                    field,
                    "out_of_range",
                    format!("`{field}` must be a finite number"),
                ));
                None
            }
            None => {
                self.wrong_type(field, expected, value);
                None
            }
        }
    }

    fn non_negative(&mut self, field: &str) -> Option<f64> {
        let x = self.number(field, "a number >= 0")?;
        if x < 0.0 {
            self.errors.push(FieldError::new(
                field,
                "out_of_range",
                format!("`{field}` must be >= 0. Given: {x}"),
            ));
            return None;
        }
        Some(x)
    }

    /// A non-negative integer (JSON Schema's notion: `12.0` counts), at most `max`.
    fn integer(&mut self, field: &str, max: f64) -> Option<f64> {
        let expected = format!("an integer from 0 to {max}");
        let x = self.number(field, &expected)?;
        if x.fract() != 0.0 {
            let value = &self.obj[field];
            self.wrong_type(field, &expected, value);
            return None;
        }
        if x < 0.0 || x > max {
            self.errors.push(FieldError::new(
                field,
                "out_of_range",
                format!("`{field}` must be {expected}. Given: {x}"),
            ));
            return None;
        }
        Some(x)
    }

    fn boolean(&mut self, field: &str) -> Option<bool> {
        let value = self.required(field, "true or false")?;
        match value {
            Value::Bool(b) => Some(*b),
            other => {
                self.wrong_type(field, "true or false", other);
                None
            }
        }
    }

    /// `Some(None)` when absent: the caller then uses the time received.
    fn timestamp(&mut self, field: &str) -> Option<Option<OffsetDateTime>> {
        const EXPECTED: &str = "an RFC 3339 date-time such as 2026-11-26T03:12:45Z";
        let Some(value) = self.obj.get(field).filter(|v| !v.is_null()) else {
            return Some(None);
        };
        let Value::String(s) = value else {
            self.wrong_type(field, EXPECTED, value);
            return None;
        };
        match OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => Some(Some(t.to_offset(time::UtcOffset::UTC))),
            Err(e) => {
                self.errors.push(FieldError::new(
                    field,
                    "invalid_format",
                    format!(
                        "`{field}` must be {EXPECTED}. Given: {} ({e})",
                        shown(value)
                    ),
                ));
                None
            }
        }
    }

    fn ip(&mut self, field: &str) {
        const EXPECTED: &str = "an IPv4 or IPv6 address";
        let Some(value) = self.obj.get(field).filter(|v| !v.is_null()) else {
            return;
        };
        let Value::String(s) = value else {
            self.wrong_type(field, EXPECTED, value);
            return;
        };
        if s.parse::<IpAddr>().is_err() {
            self.errors.push(FieldError::new(
                field,
                "invalid_format",
                format!("`{field}` must be {EXPECTED}. Given: {}", shown(value)),
            ));
        }
    }
}

#[cfg(test)]
mod tests;
