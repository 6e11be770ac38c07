//! What every handler shares. Cheap to clone: everything heavy sits behind an `Arc`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::score::{Decision, Score};
use crate::cache::{ScoreCache, Source};
use crate::config::{Config, LimitsConfig};
use crate::middleware::auth::Auth;
use crate::middleware::rate_limit::RateLimits;
use crate::pipeline::{Pipeline, Scored};

#[derive(Clone, Debug)]
pub struct AppState {
    pub pipeline: Pipeline,
    pub cache: ScoreCache,
    pub auth: Arc<Auth>,
    pub rate_limits: Arc<RateLimits>,
    pub thresholds: Thresholds,
    pub limits: Arc<LimitsConfig>,
    /// Set when shutdown begins, so that readiness fails and load balancers drain this instance.
    pub shutting_down: Arc<AtomicBool>,
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
            auth: Arc::new(auth),
            rate_limits: Arc::new(RateLimits::from_config(config)),
            thresholds: Thresholds {
                review: config.model.review_threshold,
                decline: config.model.decline_threshold,
            },
            limits: Arc::new(config.limits.clone()),
            shutting_down: Arc::new(AtomicBool::new(false)),
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

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}
