use aws_sdk_kinesis::primitives::{Blob, DateTime};

use super::*;
use crate::domain::Score;

fn record(sequence: &str, key: &str, data: &[u8]) -> Record {
    Record::builder()
        .sequence_number(sequence)
        .partition_key(key)
        .data(Blob::new(data))
        .approximate_arrival_timestamp(DateTime::from_secs(0))
        .build()
        .unwrap()
}

fn transaction(id: &str, card: &str) -> Vec<u8> {
    serde_json::json!({
        "transaction_id": id, "card_id": card, "amount": 12.5, "merchant_category": 5411,
        "card_present": true, "country": "DE", "home_country": "DE",
        "distance_from_home_km": 3.0, "tx_count_1h": 1, "tx_count_24h": 2,
        "avg_amount_30d": 20.0, "timestamp": "2026-11-26T03:12:45Z"
    })
    .to_string()
    .into_bytes()
}

fn score(id: &str, fraud_score: f32) -> Score {
    Score {
        transaction_id: id.to_owned(),
        fraud_score,
        decision: Decision::Approve,
        model: "m@1".to_owned(),
        cached: false,
        explanation: None,
        timing: None,
    }
}

fn page() -> Page {
    Page::decode(
        &[
            record("100", "card-1", &transaction("tx-1", "card-1")),
            record("101", "pk-bad", b"{not json"),
            record("102", "pk-2", br#"{"transaction_id": "tx-2"}"#),
            record("103", "card-3", &transaction("tx-3", "card-3")),
        ],
        OffsetDateTime::UNIX_EPOCH,
    )
}

#[test]
fn decode_keeps_every_user_record_in_order_with_its_fate() {
    let page = page();
    assert_eq!(page.entries.len(), 4);
    let expected = transaction("tx-1", "card-1").len()
        + b"{not json".len()
        + br#"{"transaction_id": "tx-2"}"#.len()
        + transaction("tx-3", "card-3").len();
    assert_eq!(page.bytes, expected);
    let codes: Vec<Option<&str>> = page
        .entries
        .iter()
        .map(|(_, e)| e.as_ref().err().map(|r| r.code))
        .collect();
    assert_eq!(
        codes,
        [
            None,
            Some("invalid_json"),
            Some("invalid_transaction"),
            None
        ]
    );
    let items = page.items();
    assert_eq!(
        items.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["tx-1", "tx-3"]
    );
    assert!(page.corrupt_aggregates.is_empty());
}

#[test]
fn lines_in_record_order_with_keys_and_the_exact_wire_format() {
    let page = page();
    let lines = page.lines("shardId-0", vec![score("tx-1", 0.25), score("tx-3", 0.5)]);
    assert_eq!(lines.scored.len(), 2);
    assert_eq!(lines.scored[0].partition_key, "card-1");
    assert_eq!(
        lines.scored[0].line,
        r#"{"cached":false,"decision":"approve","fraud_score":0.25,"model":"m@1","sequence_number":"100","shard_id":"shardId-0","sub_sequence_number":null,"transaction_id":"tx-1"}"#
    );
    assert_eq!(lines.scored[1].partition_key, "card-3");
    let keys: Vec<&str> = lines
        .dead_letters
        .iter()
        .map(|r| r.partition_key.as_str())
        .collect();
    assert_eq!(keys, ["pk-bad", "pk-2"]);
    let dead: Vec<DeadLetterLine> = lines
        .dead_letters
        .iter()
        .map(|r| serde_json::from_str(&r.line).unwrap())
        .collect();
    assert_eq!(dead[0].error.code, "invalid_json");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&dead[0].data_base64)
            .unwrap(),
        b"{not json",
        "a dead letter keeps the record's bytes"
    );
    assert_eq!(dead[1].error.code, "invalid_transaction");
    assert!(
        dead[1].error.message.contains("amount"),
        "{}",
        dead[1].error.message
    );
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&dead[1].data_base64)
            .unwrap(),
        br#"{"transaction_id": "tx-2"}"#,
        "every dead letter keeps the record's bytes"
    );
    assert!(lines.dead_letters[0].line.starts_with(r#"{"data_base64":"#));
}

#[test]
fn result_lines_parse_back_as_either_kind() {
    let page = page();
    let lines = page.lines("s", vec![score("tx-1", 0.5), score("tx-3", 0.75)]);
    let parsed: Vec<ResultLine> = lines
        .scored
        .iter()
        .chain(&lines.dead_letters)
        .map(|r| serde_json::from_str(&r.line).unwrap())
        .collect();
    assert!(
        matches!(&parsed[0], ResultLine::Scored(l) if l.transaction_id == "tx-1" && l.fraud_score == 0.5)
    );
    assert!(matches!(&parsed[2], ResultLine::DeadLetter(l) if l.sequence_number == "101"));
    assert_eq!(parsed.len(), 4);
}

#[test]
fn the_checkpoint_is_the_last_record_even_without_user_records() {
    let page = page();
    assert_eq!(
        page.checkpoint(),
        Some(Checkpoint {
            sequence_number: Some("103".into()),
            sub_sequence_number: None,
            ended: false,
        })
    );
    assert_eq!(
        Page::decode(&[], OffsetDateTime::UNIX_EPOCH).checkpoint(),
        None
    );
}
