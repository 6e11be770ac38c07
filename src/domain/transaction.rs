//! The transaction contract as callers send it, and what is left of it once valid.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::FeatureRow;

/// Longest accepted identifier (transaction and card ids), in characters.
pub const MAX_ID_CHARS: usize = 128;

/// Largest accepted velocity count: far above any real card, low enough to be exact in f32.
pub const MAX_TX_COUNT: f64 = 1_000_000.0;
/// Largest amount or distance accepted (a quadrillion): far above any real one, and far below
/// what overflows the model's 32-bit features to infinity (3.4e38), which the CSV route refuses
/// as not finite.
pub const MAX_MAGNITUDE: f64 = 1e15;

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
    #[schema(minimum = 0.0, maximum = 1e15)]
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
    #[schema(minimum = 0.0, maximum = 1e15)]
    pub distance_from_home_km: f64,
    /// Transactions on this card in the last hour.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub tx_count_1h: u32,
    /// Transactions on this card in the last 24 hours.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub tx_count_24h: u32,
    /// The card's average amount over 30 days.
    #[schema(minimum = 0.0, maximum = 1e15)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// Most field problems listed for one transaction; the rest are counted.
pub const MAX_FIELD_ERRORS: usize = 100;

/// Why a transaction is invalid: its first problems, and how many more there were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub errors: Vec<FieldError>,
    /// Problems found but not listed (past [`MAX_FIELD_ERRORS`]).
    pub omitted: usize,
}

impl Invalid {
    /// Every problem found, listed or not.
    pub fn total(&self) -> usize {
        self.errors.len() + self.omitted
    }
}

/// A transaction that passed every check. Only the parts the gateway uses are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTransaction {
    pub transaction_id: String,
    pub card_id: String,
    pub features: FeatureRow,
}
