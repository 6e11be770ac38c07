//! A scripted model and a `Scoring` in front of it, for the tests of scoring and of what
//! calls it.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::Scoring;
use crate::config::Config;
use crate::domain::FeatureRow;
use crate::middleware::rate_limit::RateLimits;
use crate::model::{BatchScores, Model, ModelError, PredictFuture};
use crate::pipeline::Pipeline;

/// Fails its first `fail_first` calls, then scores a row `first feature / 100`; remembers the
/// first feature of every row, per call.
#[derive(Default)]
pub(crate) struct ScriptedModel {
    fail_first: Mutex<usize>,
    batches: Mutex<Vec<Vec<f32>>>,
}

impl ScriptedModel {
    pub(crate) fn failing_first(calls: usize) -> Self {
        Self {
            fail_first: Mutex::new(calls),
            ..Self::default()
        }
    }

    /// Each call's rows (their first feature), in call order.
    pub(crate) fn batches(&self) -> Vec<Vec<f32>> {
        self.batches.lock().unwrap().clone()
    }
}

impl Model for ScriptedModel {
    fn predict<'a>(&'a self, rows: &'a [FeatureRow], _deadline: Instant) -> PredictFuture<'a> {
        self.batches
            .lock()
            .unwrap()
            .push(rows.iter().map(|r| r.0[0]).collect());
        let fail = {
            let mut left = self.fail_first.lock().unwrap();
            let fail = *left > 0;
            *left = left.saturating_sub(1);
            fail
        };
        let scores = rows.iter().map(|r| r.0[0] / 100.0).collect();
        Box::pin(async move {
            if fail {
                return Err(ModelError::Unavailable("endpoint down".into()));
            }
            Ok(BatchScores {
                scores,
                model: Arc::from("scripted@1"),
            })
        })
    }

    fn label(&self) -> &str {
        "scripted@1"
    }

    fn ready(&self) -> bool {
        true
    }
}

/// `Scoring` with `config` in front of `model`.
pub(crate) fn scoring(config: &Config, model: ScriptedModel) -> (Scoring, Arc<ScriptedModel>) {
    let model = Arc::new(model);
    let pipeline = Pipeline::start(
        Arc::clone(&model) as Arc<dyn Model>,
        &config.batching,
        &TaskTracker::new(),
    );
    let limits = Arc::new(RateLimits::from_config(config));
    (Scoring::new(config, pipeline, limits, None), model)
}
