//! The one place AWS SDK configuration is built: the standard chain (credentials, region), the
//! configured region and endpoint override, and the SDK's own retries off, because each caller
//! owns its retries (the SageMaker backend's backoff, the consumer's loop).

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
