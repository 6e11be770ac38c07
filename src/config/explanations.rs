//! The `[explanations]` section: reason codes for scores (exact TreeSHAP on the embedded model).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{Reason, default_reasons};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExplanationsConfig {
    pub mode: ExplainMode,
    /// Reason codes per explanation: the features that pushed the score toward fraud most.
    pub top: usize,
    /// Feature → reason code and text; default: codes R01..R09 for the fraud model's features.
    pub reasons: BTreeMap<String, Reason>,
}

impl Default for ExplanationsConfig {
    fn default() -> Self {
        Self {
            mode: ExplainMode::OnRequest,
            top: 3,
            reasons: default_reasons(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainMode {
    /// Never (`?explain=true` is a 400).
    Off,
    /// When a request asks (`?explain=true`).
    OnRequest,
    /// When asked, and for every score at or above `model.review_threshold` unasked.
    DeclineAndReview,
}
