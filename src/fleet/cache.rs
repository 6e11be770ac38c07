//! The response cache's second level: scores shared by every replica, looked up on a local
//! miss and written when the model computes one, with the local TTL. A value is the score and
//! the model's label (`0.92125046 fraud-xgb@7d45695e223b`); an error is never stored. A Redis
//! failure is a miss, never a failed request.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::Fleet;
use crate::cache::CacheKey;
use crate::pipeline::ModelScore;

impl Fleet {
    fn score_key(&self, key: &CacheKey) -> String {
        let mut hex = String::with_capacity(64);
        for byte in key {
            let _ = write!(hex, "{byte:02x}");
        }
        self.key(&["score", &hex])
    }

    /// The shared scores of `keys` (one `MGET`), `None` for each one missing.
    pub async fn cached_scores(&self, keys: &[CacheKey]) -> Vec<Option<ModelScore>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = keys.iter().map(|k| self.score_key(k)).collect();
        let found: Vec<Option<String>> = self
            .call("cache_get", |mut connection| async move {
                // `MGET` of one key answers a bare value, not a list: ask for a list always.
                redis::cmd("MGET")
                    .arg(&names)
                    .query_async(&mut connection)
                    .await
            })
            .await
            .unwrap_or_else(|_| vec![None; keys.len()]);
        let scores: Vec<Option<ModelScore>> = found
            .into_iter()
            .map(|value| value.as_deref().and_then(parse))
            .chain(std::iter::repeat(None))
            .take(keys.len())
            .collect();
        for score in &scores {
            let result = if score.is_some() { "hit" } else { "miss" };
            metrics::counter!("infergate_cache_requests_total", "cache" => "shared", "result" => result)
                .increment(1);
        }
        scores
    }

    /// Stores computed scores for `ttl`, in the background (one pipelined round trip): the
    /// answer does not wait for it.
    pub fn store_scores(&self, scores: Vec<(CacheKey, ModelScore)>, ttl: Duration) {
        if scores.is_empty() || ttl.is_zero() {
            return;
        }
        let fleet = self.clone();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            for (key, score) in &scores {
                pipe.pset_ex(fleet.score_key(key), value(score), ttl_ms)
                    .ignore();
            }
            let _ = fleet
                .call("cache_set", |mut connection| async move {
                    pipe.query_async::<()>(&mut connection).await
                })
                .await;
        });
    }
}

fn value(score: &ModelScore) -> String {
    format!("{} {}", score.score, score.model)
}

fn parse(value: &str) -> Option<ModelScore> {
    let (score, model) = value.split_once(' ')?;
    let score: f32 = score.parse().ok()?;
    (score.is_finite() && !model.is_empty()).then(|| ModelScore {
        score,
        model: Arc::from(model),
        timing: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_score_reads_back_exactly_and_garbage_is_a_miss() {
        let score = ModelScore {
            score: 0.921_250_46,
            model: Arc::from("fraud-xgb@7d45695e223b"),
            timing: Default::default(),
        };
        let back = parse(&value(&score)).unwrap();
        assert_eq!(back.score.to_bits(), score.score.to_bits());
        assert_eq!(back.model, score.model);
        for garbage in ["", "0.5", "x fraud", "NaN m", "inf m", "0.5 "] {
            assert!(parse(garbage).is_none(), "{garbage:?}");
        }
    }
}
