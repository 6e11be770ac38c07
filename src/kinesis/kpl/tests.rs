use super::*;

use serde_json::Value;

/// Records built by `aws-kinesis-agg` (scripts/make_kpl_fixtures.py).
fn fixtures() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kpl/cases.json");
    let text = std::fs::read_to_string(path).expect("read KPL fixtures");
    let doc: Value = serde_json::from_str(&text).expect("parse KPL fixtures");
    doc["cases"].as_array().expect("cases").clone()
}

fn fixture(name: &str) -> Vec<u8> {
    let case = fixtures()
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    b64(case["aggregated"].as_str().unwrap())
}

/// Standard base64 with padding; the crate has no base64 dependency and the
/// tests need only decoding.
fn b64(text: &str) -> Vec<u8> {
    fn value(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c:#x}"),
        }
    }
    let bytes = text.as_bytes();
    assert_eq!(bytes.len() % 4, 0, "unpadded base64");
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        let n = chunk[..4 - pad]
            .iter()
            .fold(0u32, |acc, &c| (acc << 6) | value(c))
            << (6 * pad);
        out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
    }
    out
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Frames a protobuf message the way a producer does.
fn wrap(message: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(message);
    out.extend_from_slice(&Md5::digest(message));
    out
}

fn record(pk: u64, ehk: Option<u64>, data: &[u8]) -> Record {
    Record {
        partition_key_index: Some(pk),
        explicit_hash_key_index: ehk,
        data: Some(data.to_vec()),
        tags: vec![],
    }
}

fn encode(pks: &[&str], ehks: &[&str], records: Vec<Record>) -> Vec<u8> {
    let message = AggregatedRecord {
        partition_key_table: pks.iter().map(|k| k.as_bytes().to_vec()).collect(),
        explicit_hash_key_table: ehks.iter().map(|k| k.as_bytes().to_vec()).collect(),
        records,
    };
    wrap(&message.encode_to_vec())
}

/// Asserts the result is `data` handed on whole as one plain record.
fn assert_plain(data: &[u8], pk: &str, expected: &PlainReason) {
    let (records, reason) = deaggregate(data, pk);
    assert_eq!(reason.as_ref(), Some(expected));
    assert_eq!(
        records,
        vec![UserRecord {
            sub_sequence_number: None,
            partition_key: pk.to_owned(),
            explicit_hash_key: None,
            data: data.to_vec(),
        }]
    );
}

fn assert_bad_protobuf(data: &[u8]) {
    let (records, reason) = deaggregate(data, "pk");
    assert!(
        matches!(reason, Some(PlainReason::BadProtobuf(_))),
        "expected BadProtobuf, got {reason:?}"
    );
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].data, data);
}

#[test]
fn fixtures_match_aws_kinesis_agg() {
    let cases = fixtures();
    assert!(cases.len() >= 10, "fixture file looks truncated");
    let mut aggregated_user_records = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let blob = b64(case["aggregated"].as_str().unwrap());
        let pk = case["partition_key"].as_str().unwrap();
        let (records, reason) = deaggregate(&blob, pk);

        if let Some(code) = case["plain"].as_str() {
            assert_eq!(reason.as_ref().map(PlainReason::code), Some(code), "{name}");
            assert_eq!(records.len(), 1, "{name}");
            assert_eq!(
                records[0].data, blob,
                "{name}: plain data must be the whole record"
            );
            assert_eq!(records[0].partition_key, pk, "{name}");
            assert_eq!(records[0].sub_sequence_number, None, "{name}");
            continue;
        }

        assert_eq!(reason, None, "{name}");
        let expected = case["records"].as_array().unwrap();
        assert_eq!(records.len(), expected.len(), "{name}");
        for (i, (got, want)) in records.iter().zip(expected).enumerate() {
            assert_eq!(got.sub_sequence_number, Some(i as u64), "{name}[{i}]");
            assert_eq!(
                got.partition_key,
                want["partition_key"].as_str().unwrap(),
                "{name}[{i}]"
            );
            assert_eq!(
                got.explicit_hash_key.as_deref(),
                want["explicit_hash_key"].as_str(),
                "{name}[{i}]"
            );
            match want["data"].as_str() {
                Some(data) => assert_eq!(got.data, b64(data), "{name}[{i}]"),
                None => {
                    assert_eq!(got.data.len() as u64, want["data_len"].as_u64().unwrap());
                    assert_eq!(md5_hex(&got.data), want["data_md5"].as_str().unwrap());
                }
            }
        }
        aggregated_user_records += records.len();
    }
    // Guards against an edit to the generator silently emptying the cases.
    assert!(
        aggregated_user_records > 250,
        "only {aggregated_user_records} user records"
    );
}

#[test]
fn aggregated_record_inside_data_is_not_recursed_into() {
    let (records, reason) = deaggregate(&fixture("binary_data"), "bin");
    assert_eq!(reason, None);
    let nested = &records[2].data;
    assert!(nested.starts_with(&MAGIC));
    let (inner, inner_reason) = deaggregate(nested, "bin");
    assert_eq!(inner_reason, None);
    assert_eq!(inner[0].data, b"inner payload");
}

#[test]
fn flipped_checksum_or_message_byte_is_bad_checksum() {
    for name in ["single", "fifty_mixed_keys", "unicode_keys", "large"] {
        let good = fixture(name);
        for at in [
            good.len() - 1,
            good.len() - DIGEST_LEN,
            MAGIC.len(),
            good.len() / 2,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert_plain(&bad, "outer-key", &PlainReason::BadChecksum);
        }
    }
}

#[test]
fn every_truncation_is_plain() {
    let good = fixture("fifty_mixed_keys");
    for len in 0..good.len() {
        let cut = &good[..len];
        let expected = if len < MAGIC.len() {
            PlainReason::NoMagic
        } else if len <= MAGIC.len() + DIGEST_LEN {
            PlainReason::TooShort
        } else {
            PlainReason::BadChecksum
        };
        assert_plain(cut, "outer-key", &expected);
    }
}

#[test]
fn records_without_magic_are_plain() {
    assert_plain(b"", "k", &PlainReason::NoMagic);
    assert_plain(&MAGIC[..3], "k", &PlainReason::NoMagic);
    assert_plain(br#"{"amount": 10}"#, "card-1", &PlainReason::NoMagic);
    // The magic must be a prefix, not merely present.
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&fixture("single"));
    assert_plain(&shifted, "k", &PlainReason::NoMagic);
}

#[test]
fn magic_with_empty_message_is_too_short() {
    // A valid checksum over an empty message: the KCL still does not count it
    // as an aggregate, because nothing lies between magic and checksum.
    assert_plain(&wrap(&[]), "k", &PlainReason::TooShort);
    assert_plain(&MAGIC, "k", &PlainReason::TooShort);
    let mut sixteen = MAGIC.to_vec();
    sixteen.extend_from_slice(&[0u8; DIGEST_LEN]);
    assert_plain(&sixteen, "k", &PlainReason::TooShort);
}

#[test]
fn garbage_with_valid_checksum_is_bad_protobuf() {
    // A varint tag that never ends.
    assert_bad_protobuf(&wrap(&[0xFF; 12]));
    // Wire type 7 does not exist.
    assert_bad_protobuf(&wrap(&[0x0F]));
    // A length prefix running past the end of the message.
    assert_bad_protobuf(&wrap(&[0x1A, 0x7F, 0x08]));
    // Field 1 (partition keys) sent as a varint instead of bytes.
    assert_bad_protobuf(&wrap(&[0x08, 0x01]));
    let (_, reason) = deaggregate(&wrap(&[0xFF; 12]), "k");
    assert_eq!(reason.unwrap().code(), "bad_protobuf");
}

#[test]
fn missing_required_fields_are_bad_protobuf() {
    let no_data = Record {
        data: None,
        ..record(0, None, b"")
    };
    assert_bad_protobuf(&encode(&["k"], &[], vec![record(0, None, b"a"), no_data]));
    let no_index = Record {
        partition_key_index: None,
        ..record(0, None, b"x")
    };
    assert_bad_protobuf(&encode(&["k"], &[], vec![no_index]));
    let keyless_tag = Record {
        tags: vec![Tag { key: None }],
        ..record(0, None, b"x")
    };
    assert_bad_protobuf(&encode(&["k"], &[], vec![keyless_tag]));
    // A missing field is reported even when an earlier record has a bad
    // index, as the Java parser fails before any index is looked at.
    let no_data = Record {
        data: None,
        ..record(0, None, b"")
    };
    assert_bad_protobuf(&encode(&["k"], &[], vec![record(9, None, b"a"), no_data]));
}

#[test]
fn index_beyond_table_is_bad_index() {
    let pk_past = encode(
        &["a", "b"],
        &[],
        vec![record(0, None, b"ok"), record(2, None, b"x")],
    );
    assert_plain(&pk_past, "outer", &PlainReason::BadIndex);
    let ehk_past = encode(&["a"], &["1"], vec![record(0, Some(1), b"x")]);
    assert_plain(&ehk_past, "outer", &PlainReason::BadIndex);
    let ehk_no_table = encode(&["a"], &[], vec![record(0, Some(0), b"x")]);
    assert_plain(&ehk_no_table, "outer", &PlainReason::BadIndex);
    let huge = encode(&["a"], &[], vec![record(u64::MAX, None, b"x")]);
    assert_plain(&huge, "outer", &PlainReason::BadIndex);
    let no_table = encode(&[], &[], vec![record(0, None, b"x")]);
    assert_plain(&no_table, "outer", &PlainReason::BadIndex);
}

#[test]
fn zero_user_records_is_empty_not_plain() {
    let (records, reason) = deaggregate(&encode(&["unused"], &[], vec![]), "k");
    assert_eq!(reason, None);
    assert!(records.is_empty());
}

#[test]
fn hand_encoded_records_round_trip() {
    let data = encode(
        &["p0", "p1"],
        &["170141183460469231731687303715884105728"],
        vec![
            record(1, None, b"first"),
            record(0, Some(0), b""),
            record(1, Some(0), b"\x00"),
        ],
    );
    let (records, reason) = deaggregate(&data, "ignored");
    assert_eq!(reason, None);
    let ehk = Some("170141183460469231731687303715884105728".to_owned());
    assert_eq!(
        records,
        vec![
            UserRecord {
                sub_sequence_number: Some(0),
                partition_key: "p1".into(),
                explicit_hash_key: None,
                data: b"first".to_vec(),
            },
            UserRecord {
                sub_sequence_number: Some(1),
                partition_key: "p0".into(),
                explicit_hash_key: ehk.clone(),
                data: vec![],
            },
            UserRecord {
                sub_sequence_number: Some(2),
                partition_key: "p1".into(),
                explicit_hash_key: ehk,
                data: vec![0],
            },
        ]
    );
}

#[test]
fn unknown_fields_are_skipped() {
    // Field 15 (varint) at the top level and field 9 (bytes) inside a record:
    // newer producers may add fields, which proto2 parsers ignore.
    let mut message = AggregatedRecord {
        partition_key_table: vec![b"k".to_vec()],
        explicit_hash_key_table: vec![],
        records: vec![],
    }
    .encode_to_vec();
    message.extend_from_slice(&[0x78, 0x05]);
    let inner = [0x08, 0x00, 0x1A, 0x01, b'x', 0x4A, 0x02, b'h', b'i'];
    message.extend_from_slice(&[0x1A, inner.len() as u8]);
    message.extend_from_slice(&inner);
    let (records, reason) = deaggregate(&wrap(&message), "outer");
    assert_eq!(reason, None);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].data, b"x");
}

#[test]
fn invalid_utf8_key_is_replaced_like_the_kcl() {
    let message = AggregatedRecord {
        partition_key_table: vec![vec![b'a', 0xFF, b'b']],
        explicit_hash_key_table: vec![],
        records: vec![record(0, None, b"x")],
    };
    let (records, reason) = deaggregate(&wrap(&message.encode_to_vec()), "outer");
    assert_eq!(reason, None);
    assert_eq!(records[0].partition_key, "a\u{FFFD}b");
}

#[test]
fn keys_longer_than_kinesis_allows_are_bad_protobuf() {
    let at_limit = "é".repeat(MAX_PARTITION_KEY_CHARS);
    let (records, reason) =
        deaggregate(&encode(&[&at_limit], &[], vec![record(0, None, b"x")]), "k");
    assert_eq!(reason, None);
    assert_eq!(records[0].partition_key, at_limit);

    let over = "a".repeat(MAX_PARTITION_KEY_CHARS + 1);
    assert_bad_protobuf(&encode(&[&over], &[], vec![record(0, None, b"x")]));
    // Checked even when no record refers to the entry.
    assert_bad_protobuf(&encode(&["k", &over], &[], vec![record(0, None, b"x")]));

    let max_hash_key = "340282366920938463463374607431768211455";
    assert_eq!(max_hash_key.len(), MAX_EXPLICIT_HASH_KEY_LEN);
    let ok = encode(&["k"], &[max_hash_key], vec![record(0, Some(0), b"x")]);
    assert_eq!(deaggregate(&ok, "k").1, None);
    let long_hash_key = "1".repeat(MAX_EXPLICIT_HASH_KEY_LEN + 1);
    assert_bad_protobuf(&encode(
        &["k"],
        &[&long_hash_key],
        vec![record(0, Some(0), b"x")],
    ));
}

#[test]
fn plain_codes_are_distinct_and_only_no_magic_is_benign() {
    let all = [
        PlainReason::NoMagic,
        PlainReason::TooShort,
        PlainReason::BadChecksum,
        PlainReason::BadProtobuf("x".into()),
        PlainReason::BadIndex,
    ];
    let codes: std::collections::BTreeSet<_> = all.iter().map(PlainReason::code).collect();
    assert_eq!(codes.len(), all.len());
    assert!(!PlainReason::NoMagic.is_corrupt());
    assert!(all[1..].iter().all(PlainReason::is_corrupt));
    assert!(
        PlainReason::BadProtobuf("detail".into())
            .to_string()
            .contains("detail")
    );
}

/// xorshift64*: a fixed, dependency-free generator so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The invariants every result must keep, whatever the input.
fn check_invariants(input: &[u8]) {
    let (records, reason) = deaggregate(input, "outer");
    match reason {
        Some(_) => {
            assert_eq!(records.len(), 1);
            assert_eq!(records[0].data, input);
            assert_eq!(records[0].sub_sequence_number, None);
        }
        None => {
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.sub_sequence_number, Some(i as u64));
                assert!(r.partition_key.chars().count() <= MAX_PARTITION_KEY_CHARS);
            }
            // User data is carved out of the input, never duplicated.
            let data: usize = records.iter().map(|r| r.data.len()).sum();
            assert!(data <= input.len());
        }
    }
}

#[test]
fn random_input_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let body = {
            let n = rng.below(200);
            rng.bytes(n)
        };
        // Plain random bytes, with the magic in front, and with the magic and
        // a valid checksum so that the protobuf decoder sees the garbage.
        check_invariants(&body);
        let mut magic = MAGIC.to_vec();
        magic.extend_from_slice(&body);
        check_invariants(&magic);
        check_invariants(&wrap(&body));
    }
}

#[test]
fn mutated_messages_with_fixed_checksums_never_panic() {
    // Flipping bytes of real messages and re-sealing them reaches the deeper
    // paths (lengths, indices, required fields) that random bytes rarely do.
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let sources: Vec<Vec<u8>> = [
        "fifty_mixed_keys",
        "unicode_keys",
        "binary_data",
        "tags_ignored",
    ]
    .into_iter()
    .map(|name| {
        let blob = fixture(name);
        blob[MAGIC.len()..blob.len() - DIGEST_LEN].to_vec()
    })
    .collect();
    let mut outcomes = std::collections::BTreeMap::new();
    for _ in 0..3000 {
        let mut message = sources[rng.below(sources.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(message.len());
            message[at] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            message.truncate(rng.below(message.len()) + 1);
        }
        let sealed = wrap(&message);
        check_invariants(&sealed);
        let code = deaggregate(&sealed, "outer")
            .1
            .map_or("aggregated", |p| p.code());
        *outcomes.entry(code).or_insert(0) += 1;
    }
    // The mutations should exercise more than one outcome.
    assert!(outcomes.len() >= 3, "{outcomes:?}");
}
