//! Scoring: cache → admission → pipeline → decision. The one place the REST routes, the
//! SageMaker route and the stream consumer get scores from, so "where is the cache consulted"
//! has one answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cache::{Origin, RawCache, ScoreCache};
use crate::config::Config;
use crate::config::{ExplainMode, ExplanationsConfig};
use crate::domain::{Explanation, FeatureRow, Score, Thresholds};
use crate::fleet::Fleet;
use crate::middleware::rate_limit::RateLimits;
use crate::model::{Model, RawAnswer, RawRequest};
use crate::pipeline::{Admit, ModelScore, Pipeline, ScoreError};

/// Rows a stream page scores per pipeline call: well under the queue's bound, so a large
/// `GetRecords` page never asks for more room than the queue lets a stream have.
const STREAM_CHUNK: usize = 1000;

/// One transaction's outcome in a batch.
pub type Outcome = Result<Score, ScoreError>;

/// Cheap to clone: every part is a handle.
#[derive(Clone, Debug)]
pub struct Scoring {
    pipeline: Pipeline,
    cache: ScoreCache,
    raw_cache: RawCache,
    thresholds: Thresholds,
    /// The global limit, which stream pages wait for (REST requests are charged by the
    /// rate-limit middleware instead).
    rate_limits: Arc<RateLimits>,
    /// The cache's second level, shared with the other replicas (`fleet.shared_cache`), and
    /// its TTL.
    shared: Option<(Fleet, Duration)>,
    explanations: Arc<ExplanationsConfig>,
}

impl Scoring {
    pub fn new(
        config: &Config,
        pipeline: Pipeline,
        rate_limits: Arc<RateLimits>,
        fleet: Option<&Fleet>,
    ) -> Self {
        let cached = config.cache.max_entries > 0 && config.cache.ttl_s > 0;
        let shared = fleet
            .filter(|f| f.shares_cache() && cached)
            .map(|f| (f.clone(), Duration::from_secs(config.cache.ttl_s)));
        Self {
            shared,
            explanations: Arc::new(config.explanations.clone()),
            pipeline,
            cache: ScoreCache::new(&config.cache),
            raw_cache: RawCache::new(&config.cache),
            thresholds: Thresholds {
                review: config.model.review_threshold,
                decline: config.model.decline_threshold,
            },
            rate_limits,
        }
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn model(&self) -> &Arc<dyn Model> {
        self.pipeline.model()
    }

    /// Scores one transaction through the cache: a cached score answers at once (unless
    /// `refresh`), and concurrent identical requests share one model call. A full queue fails
    /// at once (`Overloaded`).
    pub async fn one(
        &self,
        transaction_id: String,
        features: FeatureRow,
        refresh: bool,
    ) -> Result<Score, ScoreError> {
        let key = ScoreCache::key(self.model().label(), &transaction_id, &features);
        let shared_hit = AtomicBool::new(false);
        let compute = async {
            if let Some((fleet, _)) = &self.shared
                && !refresh
                && let Some(Some(scored)) = fleet.cached_scores(&[key]).await.pop()
            {
                shared_hit.store(true, Ordering::Relaxed);
                return Ok::<_, ScoreError>(scored);
            }
            let scored = self
                .pipeline
                .score(&[features], Admit::TryNow)
                .await?
                .pop()
                .expect("the pipeline answers one outcome per row. This is a bug.")?;
            if let Some((fleet, ttl)) = &self.shared {
                fleet.store_scores(vec![(key, scored.clone())], *ttl);
            }
            Ok(scored)
        };
        let (scored, mut origin) = self.cache.get_or_compute(key, refresh, compute).await?;
        if shared_hit.load(Ordering::Relaxed) {
            origin = Origin::Cache;
        }
        Ok(self.decide(transaction_id, scored, origin))
    }

    /// Scores transactions identified by `(id, features)` through the cache: cached scores
    /// answer at once (unless `refresh`), the misses go to the model together and are cached.
    /// Admission of the misses is all or nothing, as in [`Pipeline::score`]; each admitted row
    /// then gets its own outcome, in order.
    pub async fn many(
        &self,
        items: Vec<(String, FeatureRow)>,
        refresh: bool,
        admit: Admit,
    ) -> Result<Vec<Outcome>, ScoreError> {
        let version = self.model().label();
        let mut out: Vec<Option<Outcome>> = Vec::with_capacity(items.len());
        let mut misses = Vec::new();
        for (i, (id, features)) in items.into_iter().enumerate() {
            let key = ScoreCache::key(version, &id, &features);
            let hit = if refresh {
                None
            } else {
                self.cache.get(&key).await
            };
            match hit {
                Some(scored) => out.push(Some(Ok(self.decide(id, scored, Origin::Cache)))),
                None => {
                    out.push(None);
                    misses.push((i, key, id, features));
                }
            }
        }
        if let Some((fleet, _)) = &self.shared
            && !refresh
            && !misses.is_empty()
        {
            let keys: Vec<_> = misses.iter().map(|(_, key, ..)| *key).collect();
            let found = fleet.cached_scores(&keys).await;
            let mut still = Vec::with_capacity(misses.len());
            for (miss, hit) in misses.into_iter().zip(found) {
                match hit {
                    Some(scored) => {
                        let (i, key, id, _) = miss;
                        self.cache.insert(key, scored.clone()).await;
                        out[i] = Some(Ok(self.decide(id, scored, Origin::Cache)));
                    }
                    None => still.push(miss),
                }
            }
            misses = still;
        }
        let rows: Vec<FeatureRow> = misses.iter().map(|(.., row)| *row).collect();
        let computed = self.pipeline.score(&rows, admit).await?;
        let mut shared = Vec::new();
        for ((i, key, id, _), outcome) in misses.into_iter().zip(computed) {
            out[i] = Some(match outcome {
                Ok(scored) => {
                    self.cache.insert(key, scored.clone()).await;
                    if self.shared.is_some() {
                        shared.push((key, scored.clone()));
                    }
                    Ok(self.decide(id, scored, Origin::Model))
                }
                Err(e) => Err(e),
            });
        }
        if let Some((fleet, ttl)) = &self.shared {
            fleet.store_scores(shared, *ttl);
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every row gets an outcome. This is a bug."))
            .collect())
    }

    /// Scores a stream page: in chunks the queue can hold, each waiting for the global limit
    /// and then for room in the queue (a stream slows down; it is never shed). A row given up
    /// by shutdown fails the whole page with `ShuttingDown`, so that the page is neither
    /// written nor checkpointed, and is read again after a restart.
    pub async fn paced(
        &self,
        mut items: Vec<(String, FeatureRow)>,
    ) -> Result<Vec<Outcome>, ScoreError> {
        let chunk = STREAM_CHUNK.min(self.pipeline.max_wait_rows()).max(1);
        let mut outcomes = Vec::with_capacity(items.len());
        while !items.is_empty() {
            let part: Vec<_> = items.drain(..chunk.min(items.len())).collect();
            self.rate_limits.wait_global(part.len() as u32).await;
            let part = self.many(part, false, Admit::Wait).await?;
            if part
                .iter()
                .any(|o| matches!(o, Err(ScoreError::ShuttingDown)))
            {
                return Err(ScoreError::ShuttingDown);
            }
            outcomes.extend(part);
        }
        Ok(outcomes)
    }

    /// Passes a body through to the model, through the pass-through cache (not read with
    /// `refresh`); `Ok(None)` when the model only scores feature rows.
    pub async fn raw(
        &self,
        request: RawRequest<'_>,
        refresh: bool,
    ) -> Result<Option<Arc<RawAnswer>>, ScoreError> {
        let model = self.model();
        let key = RawCache::key(model.label(), &request);
        if !refresh && let Some(answer) = self.raw_cache.get(&key).await {
            return Ok(Some(answer));
        }
        let deadline = tokio::time::Instant::now() + self.pipeline.deadline();
        let Some(call) = model.invoke_raw(request, deadline) else {
            return Ok(None);
        };
        let answer = Arc::new(call.await.map_err(ScoreError::Model)?);
        self.raw_cache.insert(key, Arc::clone(&answer)).await;
        Ok(Some(answer))
    }

    /// Whether a request may ask for explanations (not when they are off), checked before
    /// anything is scored.
    pub fn may_explain(&self, asked: bool) -> Result<(), String> {
        if asked && self.explanations.mode == ExplainMode::Off {
            return Err(
                "explanations are off on this gateway (`explanations.mode = \"off\"`)".into(),
            );
        }
        Ok(())
    }

    /// Whether flagged scores are explained unasked (`decline_and_review`).
    pub fn explains_flagged(&self) -> bool {
        self.explanations.mode == ExplainMode::DeclineAndReview
    }

    /// Adds the explanations owed to `items` (asked for, or unasked for flagged scores with
    /// `decline_and_review`), computed together on a blocking thread: an explanation takes a
    /// fraction of a millisecond, too long for an async worker. A model that cannot explain is
    /// an error only when asked.
    pub async fn add_explanations(
        &self,
        asked: bool,
        mut items: Vec<(&mut Score, FeatureRow)>,
    ) -> Result<(), String> {
        let mode = self.explanations.mode;
        let wanted: Vec<usize> = (0..items.len())
            .filter(|&i| match mode {
                ExplainMode::Off => false,
                ExplainMode::OnRequest => asked,
                ExplainMode::DeclineAndReview => {
                    asked || items[i].0.decision != crate::domain::Decision::Approve
                }
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let rows = wanted.iter().map(|&i| items[i].1).collect();
        for (i, explained) in wanted.into_iter().zip(self.explain_all(rows).await) {
            match explained {
                Ok(explanation) => items[i].0.explanation = Some(explanation),
                Err(why) if asked => return Err(why),
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// The explanations of `rows`, in order, computed on a blocking thread.
    pub async fn explain_all(&self, rows: Vec<FeatureRow>) -> Vec<Result<Explanation, String>> {
        let n = rows.len();
        let scoring = self.clone();
        tokio::task::spawn_blocking(move || rows.iter().map(|row| scoring.explain(row)).collect())
            .await
            .unwrap_or_else(|e| vec![Err(format!("the explanation task failed: {e}")); n])
    }

    /// The explanation of `features` (exact TreeSHAP, computed now, not cached: a fraction of
    /// a millisecond), with the configured reason codes.
    fn explain(&self, features: &FeatureRow) -> Result<Explanation, String> {
        let started = std::time::Instant::now();
        let raw = self.model().explain(features)?;
        let e = &self.explanations;
        let explanation = Explanation::new(raw, e.top, &e.reasons);
        metrics::histogram!("infergate_explanation_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("infergate_explanations_total").increment(1);
        Ok(explanation)
    }

    /// Sets the cache size gauges (read when scraped rather than tracked on every insert and
    /// eviction).
    pub fn record_cache_sizes(&self) {
        metrics::gauge!("infergate_cache_entries").set(self.cache.entry_count() as f64);
        metrics::gauge!("infergate_raw_cache_bytes").set(self.raw_cache.weighted_size() as f64);
    }

    fn decide(&self, transaction_id: String, scored: ModelScore, origin: Origin) -> Score {
        Score {
            transaction_id,
            fraud_score: scored.score,
            decision: self.thresholds.decide(scored.score),
            model: scored.model.to_string(),
            cached: origin == Origin::Cache,
            explanation: None,
            timing: (origin == Origin::Model).then_some(scored.timing),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
