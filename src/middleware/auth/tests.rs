use std::collections::HashMap;

use axum::http::Request as HttpRequest;

use super::*;
use crate::config::{ApiKeyConfig, SigV4Config};

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn api_key(name: &str, sha: Option<String>, env: Option<&str>) -> ApiKeyConfig {
    ApiKeyConfig {
        name: name.to_owned(),
        key_sha256: sha,
        key_env: env.map(str::to_owned),
        rate: 10,
        burst: None,
        quota_per_day: None,
        allow_cache_bypass: name == "ops",
    }
}

fn auth_with(keys: Vec<ApiKeyConfig>, env: &[(&str, &str)]) -> Result<Auth, AuthConfigError> {
    let mut config = Config::default();
    config.auth.api_keys = keys;
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Auth::from_config(&config, |name| env.get(name).cloned())
}

fn request(headers: &[(&str, &str)]) -> Request {
    let mut builder = HttpRequest::builder()
        .method("POST")
        .uri("/v1/transactions/score");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn api_keys_from_a_digest_or_the_environment_identify_their_caller() {
    let auth = auth_with(
        vec![
            api_key("checkout", Some(sha256_hex("k-checkout")), None),
            api_key("ops", None, Some("OPS_KEY")),
        ],
        &[("OPS_KEY", "k-ops")],
    )
    .unwrap();
    assert!(!auth.is_open());
    let (_, caller) = auth
        .authenticate(request(&[("x-api-key", "k-checkout")]))
        .await
        .unwrap();
    assert_eq!(&*caller.name, "checkout");
    assert!(!caller.may_bypass_cache());
    let (_, caller) = auth
        .authenticate(request(&[("x-api-key", "k-ops")]))
        .await
        .unwrap();
    assert_eq!(&*caller.name, "ops");
    assert!(caller.may_bypass_cache());
}

#[tokio::test]
async fn unknown_or_missing_credentials_are_401_without_echoing_the_key() {
    let auth = auth_with(vec![api_key("a", Some(sha256_hex("right")), None)], &[]).unwrap();
    let err = auth
        .authenticate(request(&[("x-api-key", "wrong-key-value")]))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(!err.detail.contains("wrong-key-value"));
    let err = auth.authenticate(request(&[])).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(err.detail.contains("x-api-key"), "{}", err.detail);
    let err = auth
        .authenticate(request(&[(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00",
        )]))
        .await
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Unauthorized,
        "no SigV4 keys configured"
    );
}

#[tokio::test]
async fn without_credentials_everyone_is_anonymous() {
    let auth = auth_with(vec![], &[]).unwrap();
    assert!(auth.is_open());
    let (_, caller) = auth.authenticate(request(&[])).await.unwrap();
    assert!(caller.is_anonymous());
    assert!(!caller.may_bypass_cache());
    // The AWS SDKs always sign; with nothing to check a signature against, it is anonymous.
    let (_, caller) = auth
        .authenticate(request(&[("authorization", SIGNED)]))
        .await
        .unwrap();
    assert!(caller.is_anonymous());
}

/// A SigV4 `Authorization` header (its signature is never checked in these tests).
const SIGNED: &str = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00";

#[tokio::test]
async fn ambiguous_credentials_are_401() {
    let auth = auth_with(vec![api_key("a", Some(sha256_hex("right")), None)], &[]).unwrap();
    let mut twice = request(&[("x-api-key", "right")]);
    twice
        .headers_mut()
        .append("x-api-key", "other".parse().unwrap());
    let err = auth.authenticate(twice).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unauthorized);
    assert!(err.detail.contains("one `x-api-key`"), "{}", err.detail);
    let beside = request(&[
        ("x-api-key", "right"),
        ("authorization", "AWS4-HMAC-SHA256 oops"),
    ]);
    let err = auth.authenticate(beside).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Unauthorized,
        "a valid key beside a signature"
    );
    // The valid key alone still passes.
    assert!(
        auth.authenticate(request(&[("x-api-key", "right")]))
            .await
            .is_ok()
    );
}

#[test]
fn unset_secrets_are_reported_by_variable_name() {
    let mut config = Config::default();
    config.auth.api_keys = vec![api_key("a", None, Some("MISSING_KEY"))];
    config.auth.sigv4 = vec![SigV4Config {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_env: "MISSING_SECRET".into(),
        name: None,
        rate: 1,
        burst: None,
        quota_per_day: None,
        allow_cache_bypass: false,
    }];
    let err = Auth::from_config(&config, |_| None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("MISSING_KEY"), "{err}");
    assert!(err.contains("MISSING_SECRET"), "{err}");
}

#[test]
fn debug_shows_names_not_keys() {
    let auth = auth_with(
        vec![api_key("checkout", None, Some("K"))],
        &[("K", "super-secret-key")],
    )
    .unwrap();
    let shown = format!("{auth:?}");
    assert!(shown.contains("checkout"));
    assert!(!shown.contains("super-secret-key"));
    assert!(!shown.contains(&sha256_hex("super-secret-key")));
}

#[test]
fn key_digests_are_exactly_64_hex_digits_in_either_case() {
    let hex = sha256_hex("k");
    assert_eq!(parse_key_sha256(&hex), Some(Sha256::digest(b"k").into()));
    assert_eq!(
        parse_key_sha256(&hex.to_ascii_uppercase()),
        parse_key_sha256(&hex)
    );
    for bad in [
        &hex[..63],
        &format!("{hex}0"),
        &format!("{}g", &hex[..63]),
        "",
    ] {
        assert_eq!(parse_key_sha256(bad), None, "{bad:?}");
    }
}
