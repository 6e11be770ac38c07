//! A SageMaker endpoint as the model: one `InvokeEndpoint` per batch (split to respect the
//! payload limit), retried with exponential backoff and full jitter within the rows' deadline,
//! behind a circuit breaker, with an optional fallback to the embedded model.
//!
//! This module owns retries: the SDK's own are off, so a throttled call is retried exactly as
//! this policy says and never past the deadline.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sagemakerruntime::Client;
use tokio::time::Instant;

use super::{BatchScores, Model, ModelError, PredictFuture, RawFuture, RawRequest};
use crate::config::SageMakerConfig;
use crate::domain::{FeatureLayout, FeatureRow};

mod breaker;
mod codec;
mod retry;

use breaker::Breaker;
pub use breaker::BreakerState;
pub use codec::Codec;
use codec::{encode, parse_scores};

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
        ) {
            let request = RawRequest {
                body: &body,
                content_type: media_type,
                accept: Some(media_type),
                enable_explanations: None,
            };
            let answer = self.invoke_with_retry(request, deadline).await?;
            metrics::histogram!("infergate_sagemaker_invocation_rows").record(n as f64);
            scores.extend(parse_scores(&answer.body, n, self.config.content_type)?);
        }
        Ok(scores)
    }
}

impl Model for SageMakerModel {
    fn predict<'a>(&'a self, rows: &'a [FeatureRow], deadline: Instant) -> PredictFuture<'a> {
        Box::pin(async move {
            let error = match self.breaker.call(self.invoke_all(rows, deadline)).await {
                Some(Ok(scores)) => {
                    return Ok(BatchScores {
                        scores,
                        model: Arc::clone(&self.label),
                    });
                }
                Some(Err(e)) => e,
                None => {
                    metrics::counter!("infergate_sagemaker_invocations_total", "outcome" => "breaker_open")
                        .increment(1);
                    ModelError::Unavailable(format!(
                        "endpoint {} is failing; calls are paused for up to {} ms (circuit breaker)",
                        self.config.endpoint_name, self.config.breaker_cooldown_ms
                    ))
                }
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
            self.breaker
                .call(self.invoke_with_retry(request, deadline))
                .await
                .unwrap_or_else(|| {
                    Err(ModelError::Unavailable(format!(
                        "endpoint {} is failing; calls are paused (circuit breaker)",
                        self.config.endpoint_name
                    )))
                })
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

#[cfg(test)]
mod tests;
