use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

use super::*;

fn valid() -> Value {
    json!({
        "transaction_id": "tx-1",
        "card_id": "card-1",
        "amount": 120.0,
        "currency": "EUR",
        "timestamp": "2026-11-26T03:12:45+02:00",
        "merchant_category": 5967,
        "card_present": false,
        "country": "BR",
        "home_country": "DE",
        "distance_from_home_km": 9500.5,
        "tx_count_1h": 4,
        "tx_count_24h": 11,
        "avg_amount_30d": 40.0,
        "source_ip": "2001:db8::1"
    })
}

const RECEIVED: OffsetDateTime = datetime!(2026-11-26 17:00 UTC);

fn errors_of(value: Value) -> Vec<FieldError> {
    ValidTransaction::from_json(&value, RECEIVED)
        .expect_err("must be rejected")
        .errors
}

#[test]
fn derives_features_in_canonical_order() {
    let tx = ValidTransaction::from_json(&valid(), RECEIVED).unwrap();
    assert_eq!(tx.transaction_id, "tx-1");
    assert_eq!(tx.card_id, "card-1");
    // 03:12 at +02:00 is 01:12 UTC.
    assert_eq!(
        tx.features.0,
        [120.0, 3.0, 1.0, 5967.0, 0.0, 1.0, 9500.5, 4.0, 11.0]
    );
}

#[test]
fn defaults_hour_to_time_received_and_floors_average_at_one() {
    let mut v = valid();
    v.as_object_mut().unwrap().remove("timestamp");
    v["avg_amount_30d"] = json!(0.25);
    v["country"] = json!("DE");
    let tx = ValidTransaction::from_json(&v, RECEIVED).unwrap();
    assert_eq!(tx.features.0[1], 120.0, "ratio divides by max(avg, 1)");
    assert_eq!(tx.features.0[2], 17.0);
    assert_eq!(tx.features.0[5], 0.0, "same country is not foreign");
}

#[test]
fn reports_every_problem_at_once() {
    let errors = errors_of(json!({
        "transaction_id": "",
        "amount": -1,
        "currency": "eur",
        "timestamp": "yesterday",
        "merchant_category": 10000,
        "card_present": "yes",
        "country": "BRA",
        "home_country": 7,
        "distance_from_home_km": 1.5,
        "tx_count_1h": 1.5,
        "tx_count_24h": -2,
        "avg_amount_30d": "12",
        "source_ip": "999.1.1.1",
        "pan": "4111111111111111"
    }));
    let got: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.code.as_str()))
        .collect();
    for expected in [
        ("pan", "unknown_field"),
        ("transaction_id", "out_of_range"),
        ("card_id", "missing"),
        ("amount", "out_of_range"),
        ("currency", "invalid_format"),
        ("timestamp", "invalid_format"),
        ("merchant_category", "out_of_range"),
        ("card_present", "wrong_type"),
        ("country", "invalid_format"),
        ("home_country", "wrong_type"),
        ("tx_count_1h", "wrong_type"),
        ("tx_count_24h", "out_of_range"),
        ("avg_amount_30d", "wrong_type"),
        ("source_ip", "invalid_format"),
    ] {
        assert!(got.contains(&expected), "{expected:?} not in {got:?}");
    }
    assert_eq!(errors.len(), 14, "{got:?}");
    // The unknown field's value (a card number) never appears in a message.
    assert!(errors.iter().all(|e| !e.message.contains("4111")));
}

#[test]
fn messages_name_field_limit_and_value() {
    let mut v = valid();
    v["amount"] = json!(-3.5);
    let errors = errors_of(v);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].message, "`amount` must be >= 0. Given: -3.5");
}

#[test]
fn hour_of_timestamps_whose_utc_date_is_past_year_9999_or_before_0000() {
    // Converting the first two to UTC leaves the years `time` represents: this panicked.
    for (timestamp, hour) in [
        ("9999-12-31T23:30:00-01:00", 0.0),
        ("9999-12-31T23:59:59-23:59", 23.0),
        ("0000-01-01T00:30:00+01:00", 23.0),
    ] {
        let mut v = valid();
        v["timestamp"] = json!(timestamp);
        let tx = ValidTransaction::from_json(&v, RECEIVED).unwrap();
        assert_eq!(tx.features.0[2], hour, "{timestamp}");
    }
}

#[test]
fn rejects_non_objects_and_null_required_fields() {
    assert_eq!(errors_of(json!([1, 2]))[0].code, "wrong_type");
    let mut v = valid();
    v["card_id"] = Value::Null;
    assert_eq!(errors_of(v)[0].code, "missing");
}

#[test]
fn accepts_json_schema_integers_and_null_optionals() {
    let mut v = valid();
    v["merchant_category"] = json!(5967.0);
    v["currency"] = Value::Null;
    v["source_ip"] = Value::Null;
    v["tx_count_24h"] = json!(1e6);
    assert!(ValidTransaction::from_json(&v, RECEIVED).is_ok());
    v["tx_count_24h"] = json!(9_223_372_036_854_775_808u64);
    assert_eq!(errors_of(v)[0].code, "out_of_range");
}

/// 1e300 used to be accepted and became an infinite feature (the CSV route refuses those).
#[test]
fn amounts_and_distances_past_a_quadrillion_are_out_of_range() {
    for field in ["amount", "distance_from_home_km", "avg_amount_30d"] {
        let mut v = valid();
        v[field] = json!(1e15);
        assert!(ValidTransaction::from_json(&v, RECEIVED).is_ok(), "{field}");
        v[field] = json!(1e300);
        let errors = errors_of(v);
        assert_eq!(
            (errors[0].field.as_str(), errors[0].code.as_str()),
            (field, "out_of_range")
        );
    }
}

#[test]
fn layout_maps_model_order_and_refuses_unknown_names() {
    let names = vec!["tx_count_1h".to_owned(), "amount".to_owned()];
    let layout = FeatureLayout::from_model(&names, 2).unwrap();
    let mut out = Vec::new();
    layout.gather_into(
        &FeatureRow([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
        &mut out,
    );
    assert_eq!(out, [8.0, 1.0]);

    let err = FeatureLayout::from_model(&["amount".into(), "zip_code".into()], 2).unwrap_err();
    assert!(err.contains("[amount, zip_code]"), "{err}");
    assert!(err.contains("[zip_code]"), "{err}");
    assert!(
        err.contains("tx_count_24h"),
        "lists the derivable ones: {err}"
    );

    assert_eq!(
        FeatureLayout::from_model(&[], 9).unwrap(),
        FeatureLayout::canonical()
    );
    assert!(FeatureLayout::from_model(&[], 4).is_err());
}
