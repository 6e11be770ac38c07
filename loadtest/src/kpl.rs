//! KPL aggregation: many user records packed into one Kinesis record, as the Kinesis Producer
//! Library writes them, so that the load includes the consumer's de-aggregation:
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)
//! ```
//!
//! The messages (proto2) are written out by hand below, as the gateway's decoder does: no build
//! script or protoc.

use md5::{Digest, Md5};
use prost::Message;

/// The four bytes every KPL aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

#[derive(Clone, PartialEq, prost::Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<Record>,
}

/// `required` fields, so that an index of 0 is written: a proto2 reader (the KCL's) refuses a
/// record without one.
#[derive(Clone, PartialEq, prost::Message)]
struct Record {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(bytes = "vec", required, tag = "3")]
    data: Vec<u8>,
}

/// One aggregated record's data from user records `(partition key, data)`, in order; each
/// distinct key is written once in the key table.
pub fn aggregate<'a>(records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut message = AggregatedRecord::default();
    for (key, data) in records {
        let index = match message.partition_key_table.iter().position(|k| k == key) {
            Some(i) => i,
            None => {
                message.partition_key_table.push(key.to_owned());
                message.partition_key_table.len() - 1
            }
        };
        message.records.push(Record {
            partition_key_index: index as u64,
            data: data.to_vec(),
        });
    }
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + 16);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate::kinesis::kpl::{UserRecord, deaggregate};

    #[test]
    fn the_gateway_deaggregates_what_is_aggregated() {
        // The first key at index 0 (the value prost would leave out were it not required), a
        // repeated key, and an empty record.
        let records: [(&str, &[u8]); 4] = [
            ("card-1", br#"{"transaction_id":"a"}"#),
            ("card-2", b"second"),
            ("card-1", b"third"),
            ("card-3", b""),
        ];
        let data = aggregate(records);
        assert_eq!(data[..4], MAGIC);
        let (users, plain) = deaggregate(&data, "outer-key");
        assert_eq!(plain, None, "read as an aggregate");
        let expected: Vec<UserRecord> = (0u64..)
            .zip(records)
            .map(|(i, (key, data))| UserRecord {
                sub_sequence_number: Some(i),
                partition_key: key.to_owned(),
                explicit_hash_key: None,
                data: data.to_vec(),
            })
            .collect();
        assert_eq!(users, expected);
    }

    #[test]
    fn a_damaged_aggregate_is_read_as_plain() {
        let mut data = aggregate([("card-1", &b"x"[..])]);
        let last = data.len() - 1;
        data[last] ^= 1;
        let (users, plain) = deaggregate(&data, "k");
        assert!(plain.is_some_and(|p| p.is_corrupt()));
        assert_eq!(users.len(), 1);
    }
}
