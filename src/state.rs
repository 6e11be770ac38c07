//! What every handler shares. Cheap to clone: everything heavy sits behind an `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::score::{Decision, Score};
use crate::cache::{RawCache, ScoreCache, Source};
use crate::config::{Config, LimitsConfig};
use crate::domain::FeatureRow;
use crate::middleware::auth::Auth;
use crate::middleware::rate_limit::RateLimits;
use crate::pipeline::{Admit, Pipeline, ScoreError, Scored};

#[derive(Clone, Debug)]
pub struct AppState {
    pub pipeline: Pipeline,
    pub cache: ScoreCache,
    pub raw_cache: RawCache,
    pub auth: Arc<Auth>,
    pub rate_limits: Arc<RateLimits>,
    pub thresholds: Thresholds,
    pub limits: Arc<LimitsConfig>,
    /// Set when shutdown begins, so that readiness fails and load balancers drain this instance.
    pub shutting_down: Arc<AtomicBool>,
    /// Cleared while the stream consumer cannot read its stream (readiness fails meanwhile).
    pub consumer_ok: Arc<AtomicBool>,
}

/// Score thresholds for the decision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub review: f32,
    pub decline: f32,
}

impl Thresholds {
    pub fn decide(self, score: f32) -> Decision {
        if score >= self.decline {
            Decision::Decline
        } else if score >= self.review {
            Decision::Review
        } else {
            Decision::Approve
        }
    }
}

impl AppState {
    pub fn new(config: &Config, pipeline: Pipeline, auth: Auth) -> Self {
        Self {
            pipeline,
            cache: ScoreCache::new(&config.cache),
            raw_cache: RawCache::new(&config.cache),
            auth: Arc::new(auth),
            rate_limits: Arc::new(RateLimits::from_config(config)),
            thresholds: Thresholds {
                review: config.model.review_threshold,
                decline: config.model.decline_threshold,
            },
            limits: Arc::new(config.limits.clone()),
            shutting_down: Arc::new(AtomicBool::new(false)),
            consumer_ok: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn score(&self, transaction_id: String, scored: Scored, source: Source) -> Score {
        Score {
            transaction_id,
            fraud_score: scored.score,
            decision: self.thresholds.decide(scored.score),
            model: scored.model.to_string(),
            cached: source == Source::Cache,
        }
    }

    /// Scores rows identified by `(id, features)` through the cache: cached scores answer at
    /// once (unless `refresh`), the misses go to the model together and are cached. Admission
    /// of the misses is all or nothing, as in [`Pipeline::score`].
    pub async fn score_many(
        &self,
        items: &[(String, FeatureRow)],
        refresh: bool,
        admit: Admit,
    ) -> Result<Vec<Result<(Scored, Source), ScoreError>>, ScoreError> {
        let version = self.pipeline.model().label().to_owned();
        let mut out: Vec<Option<Result<(Scored, Source), ScoreError>>> =
            Vec::with_capacity(items.len());
        let mut misses = Vec::new();
        for (i, (id, features)) in items.iter().enumerate() {
            let key = ScoreCache::key(&version, id, features);
            let hit = if refresh {
                None
            } else {
                self.cache.get(&key).await
            };
            match hit {
                Some(scored) => out.push(Some(Ok((scored, Source::Cache)))),
                None => {
                    out.push(None);
                    misses.push((i, key, *features));
                }
            }
        }
        let rows: Vec<FeatureRow> = misses.iter().map(|(_, _, row)| *row).collect();
        let outcomes = self.pipeline.score(&rows, admit).await?;
        for ((i, key, _), outcome) in misses.into_iter().zip(outcomes) {
            out[i] = Some(match outcome {
                Ok(scored) => {
                    self.cache.insert(key, scored.clone()).await;
                    Ok((scored, Source::Model))
                }
                Err(e) => Err(e),
            });
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every row gets an outcome. This is a bug."))
            .collect())
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}
