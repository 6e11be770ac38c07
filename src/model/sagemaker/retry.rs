//! Calls and retries: one `InvokeEndpoint` attempt, the SDK's errors mapped to a kind (for metrics)
//! and whether retrying can help, and exponential backoff with full jitter within the deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_sagemakerruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sagemakerruntime::operation::invoke_endpoint::InvokeEndpointError;
use aws_sdk_sagemakerruntime::primitives::Blob;
use tokio::time::Instant;

use super::SageMakerModel;
use crate::model::{ModelError, RawAnswer, RawRequest};

impl SageMakerModel {
    /// One call, attempted again while its failure is retryable, attempts remain and the
    /// backoff ends before the rows' deadline.
    pub(super) async fn invoke_with_retry(
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
        if let Some(expression) = request.enable_explanations {
            call = call.enable_explanations(expression);
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
                other if crate::aws::is_throttling(other.code(), Some(status)) => {
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
pub(super) fn backoff(attempt: u32, base_ms: u64, max_ms: u64) -> Duration {
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
