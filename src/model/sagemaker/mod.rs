//! A SageMaker endpoint as the model: one `InvokeEndpoint` per batch (split to respect the
//! payload limit), retried with exponential backoff and full jitter within the rows' deadline,
//! behind a circuit breaker, with an optional fallback to the embedded model.
//!
//! This module owns retries: the SDK's own are off, so a throttled call is retried exactly as
//! this policy says and never past the deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sagemakerruntime::Client;
use aws_sdk_sagemakerruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use tokio::time::Instant;

use super::{Answer, Model, ModelError, PredictFuture, RawAnswer, RawFuture, RawRequest};
use crate::config::{Codec, SageMakerConfig};
use crate::domain::{FeatureLayout, FeatureRow};

/// The SDK client for the endpoint (see [`crate::aws`]).
pub async fn client(config: &SageMakerConfig) -> Client {
    let sdk =
        crate::aws::sdk_config(config.region.as_deref(), config.endpoint_url.as_deref()).await;
    Client::new(&sdk)
}

/// A SageMaker endpoint behind the [`Model`] trait.
pub struct SageMakerModel {
    client: Client,
    config: SageMakerConfig,
    layout: FeatureLayout,
    label: Arc<str>,
    breaker: Breaker,
    fallback: Option<Arc<dyn Model>>,
}

impl std::fmt::Debug for SageMakerModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SageMakerModel")
            .field("endpoint", &self.config.endpoint_name)
            .field("features", &self.layout.names())
            .field(
                "fallback",
                &self.fallback.as_ref().map(|m| m.label().to_owned()),
            )
            .finish()
    }
}

impl SageMakerModel {
    /// `layout` is the endpoint's feature order (what its CSV rows hold).
    pub fn new(
        client: Client,
        config: SageMakerConfig,
        layout: FeatureLayout,
        fallback: Option<Arc<dyn Model>>,
    ) -> Self {
        let label = Arc::from(format!("{}@sagemaker", config.endpoint_name));
        let breaker = Breaker::new(
            config.breaker_failures,
            Duration::from_millis(config.breaker_cooldown_ms),
        );
        Self {
            client,
            config,
            layout,
            label,
            breaker,
            fallback,
        }
    }

    /// Splits rows into payloads under the size limit and invokes each.
    async fn invoke_all(
        &self,
        rows: &[FeatureRow],
        deadline: Instant,
    ) -> Result<Vec<f32>, ModelError> {
        let mut scores = Vec::with_capacity(rows.len());
        let media_type = self.config.content_type.media_type();
        for (body, n) in encode(
            rows,
            &self.layout,
            self.config.content_type,
            self.config.max_payload_bytes,
        )? {
            let request = RawRequest {
                body: &body,
                content_type: media_type,
                accept: Some(media_type),
            };
            let answer = self.invoke_with_retry(request, deadline).await?;
            metrics::histogram!("infergate_sagemaker_invocation_rows").record(n as f64);
            scores.extend(parse_scores(&answer.body, n, self.config.content_type)?);
        }
        Ok(scores)
    }

    async fn invoke_with_retry(
        &self,
        request: RawRequest<'_>,
        deadline: Instant,
    ) -> Result<RawAnswer, ModelError> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        let mut attempt = 1u32;
        loop {
            let started = Instant::now();
            let remaining = deadline.saturating_duration_since(started);
            if remaining.is_zero() {
                return Err(ModelError::Unavailable(format!(
                    "endpoint {}: the rows' deadline passed before the call",
                    self.config.endpoint_name
                )));
            }
            let outcome =
                tokio::time::timeout(timeout.min(remaining), self.invoke_once(request)).await;
            metrics::histogram!("infergate_sagemaker_invoke_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            let failure = match outcome {
                Ok(Ok(answer)) => {
                    metrics::counter!("infergate_sagemaker_invocations_total", "outcome" => "ok")
                        .increment(1);
                    return Ok(answer);
                }
                Ok(Err(failure)) => failure,
                Err(_) => Failure {
                    kind: "timeout",
                    retryable: true,
                    message: format!("no answer within {} ms", timeout.min(remaining).as_millis()),
                },
            };
            metrics::counter!("infergate_sagemaker_invocations_total", "outcome" => "error")
                .increment(1);
            metrics::counter!("infergate_sagemaker_errors_total", "kind" => failure.kind)
                .increment(1);
            let error = || {
                ModelError::Unavailable(format!(
                    "endpoint {} failed after {attempt} attempt(s): {} ({})",
                    self.config.endpoint_name, failure.message, failure.kind
                ))
            };
            if !failure.retryable || attempt >= self.config.max_attempts {
                return Err(error());
            }
            let delay = backoff(attempt, self.config.retry_base_ms, self.config.retry_max_ms);
            if Instant::now() + delay >= deadline {
                return Err(error());
            }
            metrics::counter!("infergate_sagemaker_retries_total", "kind" => failure.kind)
                .increment(1);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn invoke_once(&self, request: RawRequest<'_>) -> Result<RawAnswer, Failure> {
        let c = &self.config;
        let mut call = self
            .client
            .invoke_endpoint()
            .endpoint_name(&c.endpoint_name)
            .content_type(request.content_type)
            .body(Blob::new(request.body.to_vec()));
        if let Some(accept) = request.accept {
            call = call.accept(accept);
        }
        if let Some(v) = &c.target_model {
            call = call.target_model(v);
        }
        if let Some(v) = &c.target_variant {
            call = call.target_variant(v);
        }
        if let Some(v) = &c.custom_attributes {
            call = call.custom_attributes(v);
        }
        match call.send().await {
            Ok(output) => Ok(RawAnswer {
                content_type: output.content_type,
                body: output.body.map(Blob::into_inner).unwrap_or_default(),
            }),
            Err(e) => Err(classify(&e)),
        }
    }
}

impl Model for SageMakerModel {
    fn predict<'a>(&'a self, rows: &'a [FeatureRow], deadline: Instant) -> PredictFuture<'a> {
        Box::pin(async move {
            let error = if self.breaker.allow(Instant::now()) {
                match self.invoke_all(rows, deadline).await {
                    Ok(scores) => {
                        self.breaker.success();
                        return Ok(Answer {
                            scores,
                            model: Arc::clone(&self.label),
                        });
                    }
                    Err(e) => {
                        self.breaker.failure(Instant::now());
                        e
                    }
                }
            } else {
                metrics::counter!("infergate_sagemaker_invocations_total", "outcome" => "breaker_open")
                    .increment(1);
                ModelError::Unavailable(format!(
                    "endpoint {} is failing; calls are paused for up to {} ms (circuit breaker)",
                    self.config.endpoint_name, self.config.breaker_cooldown_ms
                ))
            };
            match &self.fallback {
                Some(fallback) => {
                    metrics::counter!("infergate_sagemaker_fallbacks_total").increment(1);
                    tracing::debug!(error = %error, "answering from the fallback model");
                    fallback.predict(rows, deadline).await
                }
                None => Err(error),
            }
        })
    }

    fn invoke_raw<'a>(
        &'a self,
        request: RawRequest<'a>,
        deadline: Instant,
    ) -> Option<RawFuture<'a>> {
        Some(Box::pin(async move {
            if !self.breaker.allow(Instant::now()) {
                return Err(ModelError::Unavailable(format!(
                    "endpoint {} is failing; calls are paused (circuit breaker)",
                    self.config.endpoint_name
                )));
            }
            let outcome = self.invoke_with_retry(request, deadline).await;
            match &outcome {
                Ok(_) => self.breaker.success(),
                Err(_) => self.breaker.failure(Instant::now()),
            }
            outcome
        }))
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn ready(&self) -> bool {
        // An open breaker with a fallback still answers.
        self.fallback.is_some() || self.breaker.state() != BreakerState::Open
    }

    fn layout(&self) -> &FeatureLayout {
        &self.layout
    }
}

// ===== wire format =====

/// The request bodies for `rows`, each under `max_bytes` (a single row over it still goes
/// alone), with their row counts.
fn encode(
    rows: &[FeatureRow],
    layout: &FeatureLayout,
    codec: Codec,
    max_bytes: usize,
) -> Result<Vec<(Vec<u8>, usize)>, ModelError> {
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
    Ok(bodies)
}

/// Scores from a response: CSV with one value per line or comma-joined (the XGBoost container
/// has answered both ways), or JSON predictions. A count other than `n` is an error, never a
/// silent misalignment.
fn parse_scores(body: &[u8], n: usize, codec: Codec) -> Result<Vec<f32>, ModelError> {
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

// ===== errors and retries =====

struct Failure {
    kind: &'static str,
    retryable: bool,
    message: String,
}

fn classify(e: &SdkError<InvokeEndpointError>) -> Failure {
    let failure = |kind, retryable, message: String| Failure {
        kind,
        retryable,
        message,
    };
    match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let message = err.message().unwrap_or("").to_owned();
            let status = service.raw().status().as_u16();
            match err {
                InvokeEndpointError::ValidationError(_) => {
                    failure("validation_error", false, message)
                }
                InvokeEndpointError::ModelError(m) => failure(
                    "model_error",
                    false,
                    format!(
                        "the container answered {}: {}",
                        m.original_status_code()
                            .map_or("an error".to_owned(), |s| s.to_string()),
                        m.original_message().unwrap_or(&message)
                    ),
                ),
                InvokeEndpointError::ModelNotReadyException(_) => {
                    failure("model_not_ready", true, message)
                }
                InvokeEndpointError::ServiceUnavailable(_) => {
                    failure("service_unavailable", true, message)
                }
                InvokeEndpointError::InternalFailure(_) => {
                    failure("internal_failure", true, message)
                }
                InvokeEndpointError::InternalDependencyException(_) => {
                    failure("internal_dependency", true, message)
                }
                other if other.code() == Some("ThrottlingException") || status == 429 => {
                    failure("throttling", true, message)
                }
                other => failure(
                    "other",
                    status >= 500,
                    format!(
                        "{} (HTTP {status}): {message}",
                        other.code().unwrap_or("unknown error")
                    ),
                ),
            }
        }
        SdkError::TimeoutError(_) => failure("timeout", true, "the call timed out".into()),
        SdkError::DispatchFailure(d) => failure(
            "connection",
            true,
            format!(
                "cannot reach the endpoint: {:?}",
                d.as_connector_error().map(|c| c.to_string())
            ),
        ),
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            failure(
                "bad_response",
                status >= 500,
                format!("unreadable response (HTTP {status})"),
            )
        }
        other => failure("request", false, other.to_string()),
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, base * 2^(attempt-1))]`.
fn backoff(attempt: u32, base_ms: u64, max_ms: u64) -> Duration {
    let ceiling = base_ms
        .saturating_mul(1u64 << (attempt - 1).min(20))
        .min(max_ms);
    Duration::from_millis(random_below(ceiling + 1))
}

/// A uniform draw below `n` from a process-wide xorshift generator: jitter only needs to
/// de-synchronise retries, not to be unpredictable.
fn random_below(n: u64) -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    if n == 0 { 0 } else { x % n }
}

// ===== circuit breaker =====

/// Closed: calls go through and consecutive failures are counted. Open: calls fail fast until
/// the cool-down ends. Half-open: one trial call; its outcome closes or re-opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    inner: Mutex<BreakerInner>,
    threshold: u32,
    cooldown: Duration,
}

#[derive(Debug)]
struct BreakerInner {
    state: BreakerState,
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                failures: 0,
                open_until: None,
            }),
            threshold: threshold.max(1),
            cooldown,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Whether a call may go out now.
    fn allow(&self, now: Instant) -> bool {
        let mut b = self.lock();
        match b.state {
            BreakerState::Closed => true,
            BreakerState::Open if b.open_until.is_some_and(|t| now >= t) => {
                set_state(&mut b, BreakerState::HalfOpen);
                true
            }
            // One trial at a time while half-open.
            BreakerState::Open | BreakerState::HalfOpen => false,
        }
    }

    fn success(&self) {
        let mut b = self.lock();
        b.failures = 0;
        set_state(&mut b, BreakerState::Closed);
    }

    fn failure(&self, now: Instant) {
        let mut b = self.lock();
        b.failures += 1;
        if b.state == BreakerState::HalfOpen || b.failures >= self.threshold {
            b.open_until = Some(now + self.cooldown);
            set_state(&mut b, BreakerState::Open);
        }
    }
}

fn set_state(b: &mut BreakerInner, state: BreakerState) {
    b.state = state;
    let value = match state {
        BreakerState::Closed => 0.0,
        BreakerState::Open => 1.0,
        BreakerState::HalfOpen => 2.0,
    };
    metrics::gauge!("infergate_sagemaker_breaker_state").set(value);
}

#[cfg(test)]
mod tests;
