//! One `GetRecords` page, without I/O: its records decoded into user records (KPL
//! de-aggregated) and validated, then, given the scores, turned into typed result and
//! dead-letter lines in record order, and the checkpoint that covers the page.
//!
//! The line types are the stream's output contract: the load tool and any downstream reader
//! parse them back with [`ResultLine`].

use aws_sdk_kinesis::types::Record;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::checkpoint::Checkpoint;
use super::kpl;
use crate::domain::{Decision, Explanation, FeatureRow, Score, ValidTransaction};

/// A line to put on a sink, with the partition key it is put with on a Kinesis sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRecord {
    pub partition_key: String,
    pub line: String,
}

/// A scored transaction, as written to the result sink. Fields are in alphabetical order, the
/// order the lines have always had.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredLine {
    pub cached: bool,
    pub decision: Decision,
    /// With `explanations.mode = "decline_and_review"`, for every flagged score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
    /// The score widened to f64, as it has always been written.
    pub fraud_score: f64,
    pub model: String,
    pub sequence_number: String,
    pub shard_id: String,
    pub sub_sequence_number: Option<u64>,
    pub transaction_id: String,
}

/// A record that is not a transaction, with its bytes and why, as written to the dead-letter
/// sink. (A transaction whose scoring fails is scored again, never dead-lettered.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterLine {
    /// The user record's bytes, as read from the stream.
    pub data_base64: String,
    pub error: LineError,
    pub sequence_number: String,
    pub shard_id: String,
    pub sub_sequence_number: Option<u64>,
}

/// Why a record became a dead letter: a stable code (`invalid_json` or `invalid_transaction`)
/// and a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    pub code: String,
    pub message: String,
}

/// Either kind of line, for readers of a sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ResultLine {
    Scored(ScoredLine),
    DeadLetter(DeadLetterLine),
}

/// Where a user record sits in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub sequence_number: String,
    pub sub_sequence_number: Option<u64>,
    /// The user record's partition key: the key its dead letter is put with.
    pub partition_key: String,
}

/// A user record that is not a transaction: the code, message and bytes of its dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub code: &'static str,
    pub message: String,
    pub data: Vec<u8>,
}

/// A decoded page: every user record, in order, with its transaction or why it has none.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<(Position, Result<ValidTransaction, Rejected>)>,
    /// The page's last Kinesis record, which it is checkpointed at.
    pub last_sequence_number: Option<String>,
    /// Bytes of record data on the page.
    pub bytes: usize,
    /// Records that looked KPL-aggregated but were damaged (read as plain records).
    pub corrupt_aggregates: Vec<kpl::PlainReason>,
}

/// The page's lines, in record order.
#[derive(Debug, Default)]
pub struct Lines {
    pub scored: Vec<OutputRecord>,
    pub dead_letters: Vec<OutputRecord>,
}

impl Page {
    /// De-aggregates and validates `records`; a transaction without a timestamp gets its hour
    /// of day from `received_at`.
    pub fn decode(records: &[Record], received_at: OffsetDateTime) -> Self {
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut corrupt_aggregates = Vec::new();
        for record in records {
            let data = record.data().as_ref();
            bytes += data.len();
            let (users, plain) = kpl::deaggregate(data, record.partition_key().unwrap_or(""));
            corrupt_aggregates.extend(plain.filter(kpl::PlainReason::is_corrupt));
            for user in users {
                let position = Position {
                    sequence_number: record.sequence_number().to_owned(),
                    sub_sequence_number: user.sub_sequence_number,
                    partition_key: user.partition_key,
                };
                entries.push((position, validate(user.data, received_at)));
            }
        }
        Self {
            entries,
            last_sequence_number: records.last().map(|r| r.sequence_number().to_owned()),
            bytes,
            corrupt_aggregates,
        }
    }

    /// The valid transactions to score, in order, as `(transaction id, features)`.
    pub fn items(&self) -> Vec<(String, FeatureRow)> {
        self.entries
            .iter()
            .filter_map(|(_, entry)| entry.as_ref().ok())
            .map(|tx| (tx.transaction_id.clone(), tx.features))
            .collect()
    }

    /// The result and dead-letter lines, given one score per item of [`Page::items`], in
    /// order. Only records that are not transactions are dead letters, with their bytes: a
    /// transaction waits for its score (see [`super::retry`]). A scored line is put with the
    /// card id as partition key (a card's results stay in order on an output stream); a dead
    /// letter with its record's own key.
    pub fn lines(&self, shard_id: &str, scores: Vec<Score>) -> Lines {
        let mut lines = Lines::default();
        let mut scores = scores.into_iter();
        for (position, entry) in &self.entries {
            match entry {
                Ok(tx) => {
                    let score = scores
                        .next()
                        .expect("one score per valid record. This is a bug.");
                    let line = ScoredLine::new(score, position, shard_id);
                    lines.scored.push(OutputRecord {
                        partition_key: tx.card_id.clone(),
                        line: to_line(&line),
                    });
                }
                Err(rejected) => {
                    let line = DeadLetterLine {
                        data_base64: base64::engine::general_purpose::STANDARD
                            .encode(&rejected.data),
                        error: LineError {
                            code: rejected.code.to_owned(),
                            message: rejected.message.clone(),
                        },
                        sequence_number: position.sequence_number.clone(),
                        shard_id: shard_id.to_owned(),
                        sub_sequence_number: position.sub_sequence_number,
                    };
                    lines.dead_letters.push(OutputRecord {
                        partition_key: position.partition_key.clone(),
                        line: to_line(&line),
                    });
                }
            }
        }
        lines
    }

    /// Where the shard resumes after this page: its last record, even one that held no user
    /// record (with the last user record's sub-sequence number when it came from that record).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let sequence_number = self.last_sequence_number.clone()?;
        let sub_sequence_number = self
            .entries
            .last()
            .filter(|(p, _)| p.sequence_number == sequence_number)
            .and_then(|(p, _)| p.sub_sequence_number);
        Some(Checkpoint {
            sequence_number: Some(sequence_number),
            sub_sequence_number,
            ended: false,
        })
    }
}

impl ScoredLine {
    fn new(score: Score, position: &Position, shard_id: &str) -> Self {
        Self {
            cached: score.cached,
            decision: score.decision,
            explanation: score.explanation,
            fraud_score: f64::from(score.fraud_score),
            model: score.model,
            sequence_number: position.sequence_number.clone(),
            shard_id: shard_id.to_owned(),
            sub_sequence_number: position.sub_sequence_number,
            transaction_id: score.transaction_id,
        }
    }
}

fn validate(data: Vec<u8>, received_at: OffsetDateTime) -> Result<ValidTransaction, Rejected> {
    match serde_json::from_slice::<Value>(&data) {
        Err(e) => Err(Rejected {
            code: "invalid_json",
            message: e.to_string(),
            data,
        }),
        Ok(value) => ValidTransaction::from_json(&value, received_at).map_err(|invalid| {
            let mut message = invalid
                .errors
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            if invalid.omitted > 0 {
                message.push_str(&format!("; and {} more", invalid.omitted));
            }
            Rejected {
                code: "invalid_transaction",
                message,
                data,
            }
        }),
    }
}

fn to_line(line: &impl Serialize) -> String {
    serde_json::to_string(line).expect("lines serialize. This is a bug.")
}

#[cfg(test)]
mod tests;
