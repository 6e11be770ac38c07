//! The OpenAPI document: every path, the security schemes, and the document as committed in
//! `openapi/openapi.json`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{health, sagemaker, score};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "infergate",
        description = "Real-time fraud scoring gateway: REST in front of an XGBoost model. \
            Errors are RFC 9457 `application/problem+json` with a stable `type`.",
        license(name = "Apache-2.0")
    ),
    paths(
        score::score,
        score::score_batch,
        health::live,
        health::ready,
        health::metrics,
        sagemaker::invocations,
        sagemaker::ping,
    ),
    tags(
        (name = "scoring", description = "Score card transactions"),
        (name = "sagemaker", description = "SageMaker Runtime's wire API: point boto3 or the AWS CLI here with `--endpoint-url`"),
        (name = "operations", description = "Health and metrics"),
    ),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// The two ways callers authenticate. (With no credentials configured, a loopback gateway
/// serves anonymous callers.)
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "An API key configured in `[[auth.api_keys]]`; its usage plan applies.",
            ))),
        );
        components.add_security_scheme(
            "sigv4",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "AWS Signature Version 4 (`AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., \
                 Signature=...` with `X-Amz-Date`), as the AWS SDKs and botocore sign requests, \
                 for any region and service name, by an access key configured in \
                 `[[auth.sigv4]]`. The body is covered by the signature; `X-Amz-Date` may be at \
                 most 5 minutes off.",
            ))),
        );
    }
}

/// The OpenAPI document as pretty JSON, exactly as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes. This is a bug.");
    s.push('\n');
    s
}
