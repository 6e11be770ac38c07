//! De-aggregation of records written by the Kinesis Producer Library (KPL).
//!
//! The KPL (and compatible producers such as `aws-kinesis-agg`) pack many
//! *user records* into one Kinesis record to get past the per-record cost and
//! the per-shard records-per-second limit. The Kinesis record's data is then:
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)
//! ```
//!
//! with the proto2 messages
//!
//! ```text
//! message AggregatedRecord { repeated string partition_key_table = 1;
//!                            repeated string explicit_hash_key_table = 2;
//!                            repeated Record records = 3; }
//! message Record { required uint64 partition_key_index = 1;
//!                  optional uint64 explicit_hash_key_index = 2;
//!                  required bytes data = 3;
//!                  repeated Tag tags = 4; }
//! message Tag    { required string key = 1; optional string value = 2; }
//! ```
//!
//! A consumer cannot tell from Kinesis metadata whether a record is aggregated,
//! so every record goes through [`deaggregate`]; whatever does not pass every
//! check is handed on unchanged as one plain record, the rule the Java KCL
//! follows, so that a producer that happens to write the magic bytes loses no
//! data.
//!
//! The module is pure (no I/O, no global state) and safe on untrusted input:
//! it never panics, and it allocates nothing that is not backed by bytes
//! actually present in the input (see [`deaggregate`] for the bound).

use md5::{Digest, Md5};
use prost::Message;

/// The four bytes every KPL aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 trailer.
const DIGEST_LEN: usize = 16;

/// Kinesis caps a partition key at 256 Unicode characters. A key-table entry
/// is copied into every user record that refers to it, so an unbounded entry
/// would let one small record expand into gigabytes of copies; capping it at
/// the limit no real producer can exceed bounds that expansion.
const MAX_PARTITION_KEY_CHARS: usize = 256;

/// An explicit hash key is a decimal number in `0..2^128`: at most 39 digits.
/// Capped for the same reason as partition keys.
const MAX_EXPLICIT_HASH_KEY_LEN: usize = 39;

/// One user record inside a Kinesis record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Position inside the aggregated record (the KCL's sub-sequence number); `None` for a plain record.
    pub sub_sequence_number: Option<u64>,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// Why a record was treated as plain.
///
/// Every plain record carries a reason, [`PlainReason::NoMagic`] included, so that
/// `reason.is_none()` means exactly "this was a well-formed aggregated record"
/// and a metric labelled with [`PlainReason::code`] can show how much of a stream is
/// aggregated at all. [`PlainReason::is_corrupt`] separates the ordinary case from
/// records that looked aggregated but were damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainReason {
    /// The data does not start with [`MAGIC`]: an ordinary, non-aggregated record.
    #[error("no KPL magic prefix")]
    NoMagic,
    /// The magic is there but nothing, or only the checksum, follows it.
    #[error("KPL magic prefix, but too short for a message and its checksum")]
    TooShort,
    /// The MD5 trailer does not match the message.
    #[error("KPL checksum mismatch")]
    BadChecksum,
    /// The checksum matches but the message is not a valid `AggregatedRecord`
    /// (undecodable protobuf, a missing required field, or a key longer than
    /// Kinesis allows).
    #[error("invalid KPL message: {0}")]
    BadProtobuf(String),
    /// A user record refers past the end of a key table.
    #[error("KPL user record refers past the end of a key table")]
    BadIndex,
}

impl PlainReason {
    /// A stable, lower-case label for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PlainReason::NoMagic => "no_magic",
            PlainReason::TooShort => "too_short",
            PlainReason::BadChecksum => "bad_checksum",
            PlainReason::BadProtobuf(_) => "bad_protobuf",
            PlainReason::BadIndex => "bad_index",
        }
    }

    /// True when the record started with [`MAGIC`] but failed a later check:
    /// either a producer writes broken aggregates or its plain data happens to
    /// begin with the magic. Both deserve a warning; `NoMagic` is the normal
    /// case for a stream without aggregation.
    pub fn is_corrupt(&self) -> bool {
        !matches!(self, PlainReason::NoMagic)
    }
}

/// The user records of one Kinesis record. A record that fails any check is one plain record (as
/// the KCL does), and the reason is returned for metrics.
///
/// `partition_key` is the Kinesis record's own partition key; it is used only
/// for a plain record, since aggregated user records carry their own keys.
///
/// * Plain record: one [`UserRecord`] with `sub_sequence_number: None`,
///   `partition_key`, no explicit hash key and the whole of `data`, plus
///   `Some(reason)`. The magic is checked first, so the common non-aggregated
///   record costs a four-byte comparison and the copy of its data.
/// * Aggregated record: its user records in order, sub-sequence numbers
///   `0..n`, and `None`. A well-formed aggregated record with no user records
///   (only key tables) yields an empty `Vec`, as the KCL does: it is a valid
///   aggregate whose content happens to be empty, not plain data. Magic plus
///   checksum with an empty message is [`PlainReason::TooShort`], again as the KCL
///   decides it (it requires at least one byte of message).
/// * Departures from the KCL, deliberate: a key index past its table makes
///   the whole record plain ([`PlainReason::BadIndex`]), where the KCL logs an error,
///   keeps the user records before the bad one and drops the rest; key-table
///   entries longer than Kinesis accepts (256 characters for a partition key,
///   39 for an explicit hash key) make it [`PlainReason::BadProtobuf`], to bound
///   memory; and no user record is dropped for hashing outside the shard's
///   range (the KCL does that after a reshard, given the shard's hash range,
///   which this function does not have). Like the KCL (proto2 strings in
///   Java), keys that are not valid UTF-8 are not an error: invalid sequences
///   become U+FFFD.
///
/// Memory: user-record data is moved out of the decoded message, never
/// copied twice, so data bytes out never exceed bytes in. Keys are cloned
/// into each user record that names them; a user record takes at least six
/// input bytes and a capped key at most 1 KiB, so an adversarial record can
/// expand about 200-fold, while real traffic (keys far shorter than data)
/// stays near the input size.
pub fn deaggregate(data: &[u8], partition_key: &str) -> (Vec<UserRecord>, Option<PlainReason>) {
    match parse(data) {
        Ok(records) => (records, None),
        Err(reason) => {
            let plain = UserRecord {
                sub_sequence_number: None,
                partition_key: partition_key.to_owned(),
                explicit_hash_key: None,
                data: data.to_vec(),
            };
            (vec![plain], Some(reason))
        }
    }
}

fn parse(data: &[u8]) -> Result<Vec<UserRecord>, PlainReason> {
    let rest = data.strip_prefix(&MAGIC).ok_or(PlainReason::NoMagic)?;
    // The KCL requires strictly more than the digest after the magic, so an
    // empty message is never treated as an aggregate; match it exactly.
    if rest.len() <= DIGEST_LEN {
        return Err(PlainReason::TooShort);
    }
    let (message, digest) = rest.split_at(rest.len() - DIGEST_LEN);
    // An integrity check against corruption, not authentication, so a plain
    // (non-constant-time) comparison is fine.
    if Md5::digest(message).as_slice() != digest {
        return Err(PlainReason::BadChecksum);
    }

    let aggregated =
        AggregatedRecord::decode(message).map_err(|e| PlainReason::BadProtobuf(e.to_string()))?;
    // prost does not enforce proto2 `required`; the Java parser the KCL uses
    // rejects the whole message when one is missing, so check every record
    // before resolving any index (a missing field wins over a bad index, as
    // it does there).
    let records = aggregated
        .records
        .into_iter()
        .map(Required::try_from)
        .collect::<Result<Vec<_>, _>>()?;

    let partition_keys = key_table(
        aggregated.partition_key_table,
        |k| k.chars().count() <= MAX_PARTITION_KEY_CHARS,
        "partition key",
    )?;
    let explicit_hash_keys = key_table(
        aggregated.explicit_hash_key_table,
        |k| k.len() <= MAX_EXPLICIT_HASH_KEY_LEN,
        "explicit hash key",
    )?;

    let mut out = Vec::with_capacity(records.len());
    for (sub_sequence_number, record) in (0u64..).zip(records) {
        let partition_key = lookup(&partition_keys, record.partition_key_index)?.clone();
        let explicit_hash_key = match record.explicit_hash_key_index {
            Some(index) => Some(lookup(&explicit_hash_keys, index)?.clone()),
            None => None,
        };
        out.push(UserRecord {
            sub_sequence_number: Some(sub_sequence_number),
            partition_key,
            explicit_hash_key,
            data: record.data,
        });
    }
    Ok(out)
}

/// A [`Record`] whose required fields are known to be present.
struct Required {
    partition_key_index: u64,
    explicit_hash_key_index: Option<u64>,
    data: Vec<u8>,
}

impl TryFrom<Record> for Required {
    type Error = PlainReason;

    fn try_from(record: Record) -> Result<Self, PlainReason> {
        if record.tags.iter().any(|tag| tag.key.is_none()) {
            return Err(missing("Tag", "key"));
        }
        Ok(Required {
            partition_key_index: record
                .partition_key_index
                .ok_or_else(|| missing("Record", "partition_key_index"))?,
            explicit_hash_key_index: record.explicit_hash_key_index,
            data: record.data.ok_or_else(|| missing("Record", "data"))?,
        })
    }
}

fn missing(message: &str, field: &str) -> PlainReason {
    PlainReason::BadProtobuf(format!("{message}.{field} is required but missing"))
}

/// Turns a key table into strings, lossily as Java does for proto2 strings,
/// and enforces the length cap.
fn key_table(
    table: Vec<Vec<u8>>,
    within_limit: impl Fn(&str) -> bool,
    what: &str,
) -> Result<Vec<String>, PlainReason> {
    table
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let key = String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            if within_limit(&key) {
                Ok(key)
            } else {
                Err(PlainReason::BadProtobuf(format!(
                    "{what} table entry {i} is longer than Kinesis allows"
                )))
            }
        })
        .collect()
}

fn lookup(table: &[String], index: u64) -> Result<&String, PlainReason> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or(PlainReason::BadIndex)
}

// The wire schema, written out by hand so that no build script or protoc is
// needed. It departs from a literal translation of the .proto in two ways:
// required fields are `optional` so that their absence can be detected (prost
// would silently default them), and strings are `bytes` so that invalid UTF-8
// is replaced rather than failing the decode, as the KCL's Java parser does.

#[derive(Clone, PartialEq, prost::Message)]
struct AggregatedRecord {
    #[prost(bytes = "vec", repeated, tag = "1")]
    partition_key_table: Vec<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    explicit_hash_key_table: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<Record>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(uint64, optional, tag = "1")]
    partition_key_index: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "vec", optional, tag = "3")]
    data: Option<Vec<u8>>,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

/// Tags are unused by the KPL and KCL; only the presence of the required key
/// matters, for parity with the Java parser. `value` (field 2) is left out so
/// that prost skips it without allocating.
#[derive(Clone, PartialEq, prost::Message)]
struct Tag {
    #[prost(bytes = "vec", optional, tag = "1")]
    key: Option<Vec<u8>>,
}

#[cfg(test)]
#[path = "kpl/tests.rs"]
mod tests;
