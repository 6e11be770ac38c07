//! The one place AWS SDK configuration is built: the standard chain (credentials, region), the
//! configured region and endpoint override, and the SDK's own retries off, because each caller
//! owns its retries (the SageMaker backend's backoff, the consumer's loop); and the one test
//! both use for "slow down" answers.

/// Shared SDK configuration for a client of one AWS service.
pub async fn sdk_config(region: Option<&str>, endpoint_url: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::disabled());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// The error codes AWS services answer "slow down" with: SageMaker's and the common
/// `ThrottlingException`, and Kinesis' per-shard and per-account limits.
const THROTTLING_CODES: [&str; 3] = [
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
];

/// Whether a service error asks the caller to slow down (and so to retry after a back-off),
/// from its error code and HTTP status.
pub fn is_throttling(code: Option<&str>, status: Option<u16>) -> bool {
    code.is_some_and(|code| THROTTLING_CODES.contains(&code)) || status == Some(429)
}

#[cfg(test)]
mod tests {
    use super::is_throttling;

    #[test]
    fn throttling_by_code_or_status() {
        assert!(is_throttling(Some("ThrottlingException"), Some(400)));
        assert!(is_throttling(
            Some("ProvisionedThroughputExceededException"),
            None
        ));
        assert!(is_throttling(Some("LimitExceededException"), Some(400)));
        assert!(is_throttling(None, Some(429)));
        assert!(!is_throttling(Some("ExpiredIteratorException"), Some(400)));
        assert!(!is_throttling(Some("ValidationError"), Some(400)));
        assert!(!is_throttling(None, None));
    }
}
