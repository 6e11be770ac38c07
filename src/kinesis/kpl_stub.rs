// Temporary stand-in with the de-aggregator's interface while the real module is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub sub_sequence_number: Option<u64>,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plain {
    NoMagic,
}

impl Plain {
    pub fn code(&self) -> &'static str {
        "no_magic"
    }
}

pub fn deaggregate(data: &[u8], partition_key: &str) -> (Vec<UserRecord>, Option<Plain>) {
    (
        vec![UserRecord {
            sub_sequence_number: None,
            partition_key: partition_key.to_owned(),
            explicit_hash_key: None,
            data: data.to_vec(),
        }],
        Some(Plain::NoMagic),
    )
}
