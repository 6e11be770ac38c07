//! The payload codec: feature rows into `InvokeEndpoint` bodies (CSV rows or JSON instances, split
//! under the payload limit) and the endpoint's answers back into scores.

use serde::{Deserialize, Serialize};

use crate::domain::{FeatureLayout, FeatureRow};
use crate::model::ModelError;

/// The request and answer format of an endpoint (`model.sagemaker.content_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Codec {
    #[serde(rename = "text/csv")]
    Csv,
    #[serde(rename = "application/json")]
    Json,
}

impl Codec {
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv",
            Self::Json => "application/json",
        }
    }
}

/// The request bodies for `rows`, each under `max_bytes` (a single row over it still goes
/// alone), with their row counts.
pub(super) fn encode(
    rows: &[FeatureRow],
    layout: &FeatureLayout,
    codec: Codec,
    max_bytes: usize,
) -> Vec<(Vec<u8>, usize)> {
    let mut lines = Vec::with_capacity(rows.len());
    let mut values = Vec::with_capacity(layout.len());
    for row in rows {
        values.clear();
        layout.gather_into(row, &mut values);
        let line = match codec {
            Codec::Csv => values
                .iter()
                .map(|v| {
                    if v.is_nan() {
                        String::new()
                    } else {
                        v.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(","),
            Codec::Json => {
                let cells: Vec<String> = values
                    .iter()
                    .map(|v| {
                        if v.is_finite() {
                            v.to_string()
                        } else {
                            "null".to_owned()
                        }
                    })
                    .collect();
                format!("[{}]", cells.join(","))
            }
        };
        lines.push(line);
    }
    let (open, sep, close) = match codec {
        Codec::Csv => ("", "\n", "\n"),
        Codec::Json => ("{\"instances\":[", ",", "]}"),
    };
    let mut bodies = Vec::new();
    let mut current = String::from(open);
    let mut n = 0;
    for line in lines {
        let grown = current.len() + line.len() + sep.len() + close.len();
        if n > 0 && grown > max_bytes {
            current.push_str(close);
            bodies.push((std::mem::take(&mut current).into_bytes(), n));
            current.push_str(open);
            n = 0;
        }
        if n > 0 {
            current.push_str(sep);
        }
        current.push_str(&line);
        n += 1;
    }
    if n > 0 {
        current.push_str(close);
        bodies.push((current.into_bytes(), n));
    }
    bodies
}

/// Scores from a response: CSV with one value per line or comma-joined (the XGBoost container
/// has answered both ways), or JSON predictions. A count other than `n` is an error, never a
/// silent misalignment.
pub(super) fn parse_scores(body: &[u8], n: usize, codec: Codec) -> Result<Vec<f32>, ModelError> {
    let bad = |what: String| ModelError::Unavailable(format!("unreadable endpoint answer: {what}"));
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8".into()))?;
    let trimmed = text.trim_start();
    let scores: Vec<f32> =
        if codec == Codec::Json || trimmed.starts_with('{') || trimmed.starts_with('[') {
            let value: serde_json::Value =
                serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON ({e})")))?;
            let items = match &value {
                serde_json::Value::Array(items) => items,
                other => other
                    .get("predictions")
                    .and_then(|p| p.as_array())
                    .ok_or_else(|| bad("JSON without `predictions`".into()))?,
            };
            items
                .iter()
                .map(|item| {
                    item.as_f64()
                        .or_else(|| item.get("score").and_then(serde_json::Value::as_f64))
                        .map(|x| x as f32)
                        .ok_or_else(|| bad(format!("prediction {item} has no score")))
                })
                .collect::<Result<_, _>>()?
        } else {
            text.split(['\n', ','])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<f32>().map_err(|_| {
                        bad(format!("{:?} is not a number", crate::domain::clip(t, 32)))
                    })
                })
                .collect::<Result<_, _>>()?
        };
    if scores.len() != n {
        return Err(ModelError::CountMismatch {
            expected: n,
            got: scores.len(),
        });
    }
    Ok(scores)
}
