//! The [`Validator`] that checks a raw JSON value against the contract and reports every
//! problem at once.

use std::net::IpAddr;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    FeatureRow, FieldError, Invalid, MAX_FIELD_ERRORS, MAX_ID_CHARS, MAX_MAGNITUDE, MAX_TX_COUNT,
    ValidTransaction, clip, json_type,
};

impl ValidTransaction {
    /// Checks a JSON value against the contract, collecting every problem (the first
    /// [`MAX_FIELD_ERRORS`] listed, the rest counted). `received_at` supplies the hour of day
    /// when the transaction has no timestamp.
    pub fn from_json(value: &Value, received_at: OffsetDateTime) -> Result<Self, Invalid> {
        let Some(obj) = value.as_object() else {
            return Err(Invalid {
                errors: vec![FieldError::new(
                    "",
                    "wrong_type",
                    format!(
                        "a transaction must be a JSON object. Given: {}",
                        json_type(value)
                    ),
                )],
                omitted: 0,
            });
        };
        let mut v = Validator {
            obj,
            errors: Vec::new(),
            omitted: 0,
        };
        for key in obj.keys() {
            if !KNOWN_FIELDS.contains(&key.as_str()) {
                // Keys are the caller's: quoted clipped, so an error never echoes a payload.
                let key = clip(key, 64);
                v.push(FieldError::new(
                    key,
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
            return Err(Invalid {
                errors: v.errors,
                omitted: v.omitted,
            });
        }
        // Every `None` above pushed an error, so the unwraps below cannot fail.
        let (Some(transaction_id), Some(card_id), Some(amount), Some(timestamp)) =
            (transaction_id, card_id, amount, timestamp)
        else {
            unreachable!("a missing field was not reported. This is a bug.")
        };
        let hour = timestamp.map_or(received_at.hour(), utc_hour);
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

/// The hour of day of `t` in UTC, for any date RFC 3339 can write (the conversion of the whole
/// date can fall outside the years `time` supports, the hour never does).
fn utc_hour(t: OffsetDateTime) -> u8 {
    const DAY: i32 = 24 * 3600;
    let local = i32::from(t.hour()) * 3600 + i32::from(t.minute()) * 60 + i32::from(t.second());
    let utc = (local - t.offset().whole_seconds()).rem_euclid(DAY);
    (utc / 3600) as u8
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
    /// Problems found past the first [`MAX_FIELD_ERRORS`].
    omitted: usize,
}

impl<'a> Validator<'a> {
    /// Lists a problem, or only counts it once [`MAX_FIELD_ERRORS`] are listed: a body of many
    /// bad fields must not get a response (and a memory bill) many times its size.
    fn push(&mut self, error: FieldError) {
        if self.errors.len() < MAX_FIELD_ERRORS {
            self.errors.push(error);
        } else {
            self.omitted += 1;
        }
    }

    /// The field's value; `None` (with an error) when it is absent or null and required.
    fn required(&mut self, field: &str, expected: &str) -> Option<&'a Value> {
        let obj: &'a Map<String, Value> = self.obj;
        match obj.get(field) {
            None | Some(Value::Null) => {
                self.push(FieldError::new(
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
        self.push(FieldError::new(
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
            self.push(FieldError::new(
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
            self.push(FieldError::new(
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
                self.push(FieldError::new(
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
        let wrong = if x < 0.0 {
            ">= 0"
        } else if x > MAX_MAGNITUDE {
            "<= 1e15"
        } else {
            return Some(x);
        };
        self.push(FieldError::new(
            field,
            "out_of_range",
            format!("`{field}` must be {wrong}. Given: {x}"),
        ));
        None
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
            self.push(FieldError::new(
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
            // Kept in its own offset: converting 9999-12-31T23:30:00-01:00 to UTC would leave
            // the range of dates `time` represents (and panic); only the hour is needed.
            Ok(t) => Some(Some(t)),
            Err(e) => {
                self.push(FieldError::new(
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
            self.push(FieldError::new(
                field,
                "invalid_format",
                format!("`{field}` must be {EXPECTED}. Given: {}", shown(value)),
            ));
        }
    }
}
