use super::*;

use std::path::{Path, PathBuf};

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use http::header::HOST;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const OTHER_AKID: &str = "AKIDBATCHSCORER";
const OTHER_SECRET: &str = "9drTJvcXLB89EXAMPLELB8923FB892xMFI";
const REGION: &str = "eu-west-1";
const HOST_NAME: &str = "gateway.example.test";
const SIGNED_AT: &str = "20261126T101530Z";
const SCORE_BODY: &[u8] = br#"{"transaction_id":"tx-0001","amount":42.0,"currency":"EUR"}"#;

fn verifier() -> SigV4Verifier {
    SigV4Verifier::new(
        vec![
            SigV4Key {
                access_key_id: AKID.into(),
                secret_access_key: SECRET.into(),
                name: "flink-scorer".into(),
            },
            SigV4Key {
                access_key_id: OTHER_AKID.into(),
                secret_access_key: OTHER_SECRET.into(),
                name: "batch-scorer".into(),
            },
        ],
        DEFAULT_MAX_SKEW,
    )
}

fn at(stamp: &str) -> SystemTime {
    parse_amz_date(stamp).expect("test timestamp")
}

/// A request as a client would build it, before signing.
struct Unsigned<'a> {
    method: &'a str,
    path_and_query: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
    service: &'a str,
    time: SystemTime,
    access_key_id: &'a str,
    secret: &'a str,
    session_token: Option<&'a str>,
    /// Sign every header, including those the SDK default leaves out
    /// (user-agent and friends), as some third-party signers do.
    sign_all_headers: bool,
}

fn score_request() -> Unsigned<'static> {
    Unsigned {
        method: "POST",
        path_and_query: "/v1/score",
        headers: vec![
            ("content-type", "application/json"),
            ("user-agent", "flink-http-client/1.0"),
        ],
        body: SCORE_BODY,
        service: "execute-api",
        time: at(SIGNED_AT),
        access_key_id: AKID,
        secret: SECRET,
        session_token: None,
        sign_all_headers: false,
    }
}

/// Signs with `aws-sigv4` and its default settings, as the AWS SDK for Rust
/// does, and returns the request head the server would see.
fn sign_with_aws_sigv4(request: &Unsigned<'_>) -> Parts {
    let identity = Credentials::new(
        request.access_key_id,
        request.secret,
        request.session_token.map(str::to_owned),
        None,
        "test",
    )
    .into();
    let mut settings = SigningSettings::default();
    if request.sign_all_headers {
        settings.excluded_headers = None;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name(request.service)
        .time(request.time)
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let url = format!("https://{HOST_NAME}{}", request.path_and_query);
    let signable = SignableRequest::new(
        request.method,
        url.as_str(),
        request.headers.iter().copied(),
        SignableBody::Bytes(request.body),
    )
    .expect("signable request");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();

    let mut builder = http::Request::builder()
        .method(request.method)
        .uri(request.path_and_query)
        .header("host", HOST_NAME);
    for (name, value) in request
        .headers
        .iter()
        .copied()
        .chain(instructions.headers())
    {
        builder = builder.header(name, value);
    }
    builder.body(()).expect("request").into_parts().0
}

fn authorization(parts: &Parts) -> String {
    parts.headers[AUTHORIZATION].to_str().unwrap().to_owned()
}

fn set_authorization(parts: &mut Parts, value: &str) {
    parts
        .headers
        .insert(AUTHORIZATION, value.parse().expect("header value"));
}

fn edit_authorization(parts: &mut Parts, edit: impl FnOnce(&str) -> String) {
    let edited = edit(&authorization(parts));
    set_authorization(parts, &edited);
}

fn signature_of(parts: &Parts) -> String {
    let value = authorization(parts);
    value.rsplit_once("Signature=").unwrap().1.to_owned()
}

fn with_uri(parts: &mut Parts, uri: &str) {
    parts.uri = uri.parse().expect("uri");
}

// ---------------------------------------------------------------------------
// Round trips with aws-sigv4 as the signer

#[test]
fn execute_api_post_signed_by_aws_sigv4_verifies() {
    let parts = sign_with_aws_sigv4(&score_request());
    assert_eq!(
        verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Ok("flink-scorer")
    );
}

#[test]
fn sagemaker_invocation_with_query_signed_by_aws_sigv4_verifies() {
    let body = br#"{"instances":[{"amount":129.5,"merchant":"m-77"}]}"#;
    let request = Unsigned {
        path_and_query: "/endpoints/fraud-xgb/invocations?variant=blue&explain=true&tag=a%20b",
        headers: vec![
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        body,
        service: "sagemaker",
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    assert!(authorization(&parts).contains("/eu-west-1/sagemaker/aws4_request"));
    let verifier = verifier();
    assert_eq!(
        verifier.verify(&parts, body, at(SIGNED_AT)),
        Ok("flink-scorer")
    );

    // The query is covered by the signature.
    let mut tampered = parts.clone();
    with_uri(
        &mut tampered,
        "/endpoints/fraud-xgb/invocations?variant=green&explain=true&tag=a%20b",
    );
    assert_eq!(
        verifier.verify(&tampered, body, at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn percent_encoded_path_signed_by_aws_sigv4_verifies() {
    let request = Unsigned {
        path_and_query: "/endpoints/fraud%20xgb%2Fv2/invocations",
        service: "sagemaker",
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    let verifier = verifier();
    assert_eq!(
        verifier.verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Ok("flink-scorer")
    );

    // An encoded slash is not the same path as a real one.
    let mut decoded = parts.clone();
    with_uri(&mut decoded, "/endpoints/fraud%20xgb/v2/invocations");
    assert_eq!(
        verifier.verify(&decoded, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn empty_body_get_signed_by_aws_sigv4_verifies() {
    let request = Unsigned {
        method: "GET",
        path_and_query: "/v1/models?format=json",
        headers: vec![("accept", "application/json")],
        body: b"",
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    let verifier = verifier();
    assert_eq!(
        verifier.verify(&parts, b"", at(SIGNED_AT)),
        Ok("flink-scorer")
    );
    assert_eq!(
        verifier.verify(&parts, b"{}", at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn session_token_is_part_of_the_signature() {
    let request = Unsigned {
        session_token: Some("FQoGZXIvYXdzEXAMPLETOKEN"),
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    assert!(authorization(&parts).contains("x-amz-security-token"));
    let verifier = verifier();
    assert_eq!(
        verifier.verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Ok("flink-scorer")
    );

    let mut tampered = parts.clone();
    tampered.headers.insert(
        X_AMZ_SECURITY_TOKEN,
        "FQoGZXIvYXdzEXAMPLETOKEM".parse().unwrap(),
    );
    assert_eq!(
        verifier.verify(&tampered, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );

    let mut dropped = parts;
    dropped.headers.remove(X_AMZ_SECURITY_TOKEN);
    assert!(matches!(
        verifier.verify(&dropped, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn repeated_signed_header_values_are_all_covered() {
    let request = Unsigned {
        headers: vec![
            ("content-type", "application/json"),
            ("x-fraud-tag", "first"),
            ("x-fraud-tag", "second"),
        ],
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    let verifier = verifier();
    assert_eq!(
        verifier.verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Ok("flink-scorer")
    );

    let mut tampered = parts;
    tampered.headers.remove("x-fraud-tag");
    tampered
        .headers
        .append("x-fraud-tag", "first".parse().unwrap());
    assert_eq!(
        verifier.verify(&tampered, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn second_configured_key_is_matched_by_its_id() {
    let request = Unsigned {
        access_key_id: OTHER_AKID,
        secret: OTHER_SECRET,
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    assert_eq!(
        verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Ok("batch-scorer")
    );
}

#[test]
fn host_may_come_from_the_uri_authority_as_in_http2() {
    let mut parts = sign_with_aws_sigv4(&score_request());
    parts.headers.remove(HOST);
    with_uri(&mut parts, &format!("https://{HOST_NAME}/v1/score"));
    assert_eq!(
        verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Ok("flink-scorer")
    );
}

#[test]
fn authorization_layout_variants_are_tolerated() {
    let parts = sign_with_aws_sigv4(&score_request());
    let value = authorization(&parts);
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ").unwrap();
    let components: Vec<&str> = rest.split(", ").collect();
    assert_eq!(components.len(), 3);
    let verifier = verifier();

    let layouts = [
        format!("AWS4-HMAC-SHA256 {}", components.join(",")),
        format!(
            "AWS4-HMAC-SHA256 {}, {},{}",
            components[2], components[0], components[1]
        ),
        format!(
            "AWS4-HMAC-SHA256 {},  {},   {}",
            components[1], components[2], components[0]
        ),
        // Uppercase hex digits decode to the same bytes.
        value.replace(
            &signature_of(&parts),
            &signature_of(&parts).to_ascii_uppercase(),
        ),
    ];
    for layout in layouts {
        let mut variant = parts.clone();
        set_authorization(&mut variant, &layout);
        assert_eq!(
            verifier.verify(&variant, SCORE_BODY, at(SIGNED_AT)),
            Ok("flink-scorer"),
            "layout {layout:?}"
        );
    }
}

#[test]
fn signed_user_agent_is_verified_too() {
    let request = Unsigned {
        sign_all_headers: true,
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    assert!(authorization(&parts).contains("user-agent"));
    let verifier = verifier();
    assert_eq!(
        verifier.verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Ok("flink-scorer")
    );

    let mut tampered = parts;
    tampered
        .headers
        .insert("user-agent", "rewritten-by-proxy".parse().unwrap());
    assert_eq!(
        verifier.verify(&tampered, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn unsigned_headers_may_change() {
    let mut parts = sign_with_aws_sigv4(&score_request());
    assert!(!authorization(&parts).contains("user-agent"));
    parts
        .headers
        .insert("user-agent", "rewritten-by-proxy".parse().unwrap());
    parts.headers.insert("x-request-id", "abc".parse().unwrap());
    assert_eq!(
        verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Ok("flink-scorer")
    );
}

// ---------------------------------------------------------------------------
// Tampering and refusal

#[test]
fn changed_body_is_a_signature_mismatch() {
    let parts = sign_with_aws_sigv4(&score_request());
    let tampered = br#"{"transaction_id":"tx-0001","amount":4200.0,"currency":"EUR"}"#;
    assert_eq!(
        verifier().verify(&parts, tampered, at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn changed_body_with_content_sha256_is_a_body_hash_mismatch() {
    let digest = hex::encode(Sha256::digest(SCORE_BODY));
    let request = Unsigned {
        headers: vec![
            ("content-type", "application/json"),
            ("x-amz-content-sha256", digest.as_str()),
        ],
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    assert!(authorization(&parts).contains("x-amz-content-sha256"));
    let verifier = verifier();
    assert_eq!(
        verifier.verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Ok("flink-scorer")
    );
    assert_eq!(
        verifier.verify(&parts, b"{}", at(SIGNED_AT)),
        Err(SigV4Error::BodyHashMismatch)
    );
}

#[test]
fn unsigned_payload_is_refused() {
    for marker in ["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"] {
        let request = Unsigned {
            headers: vec![
                ("content-type", "application/json"),
                ("x-amz-content-sha256", marker),
            ],
            ..score_request()
        };
        let parts = sign_with_aws_sigv4(&request);
        assert!(matches!(
            verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
            Err(SigV4Error::Malformed(_))
        ));
    }
}

#[test]
fn changed_signed_header_is_a_signature_mismatch() {
    let mut parts = sign_with_aws_sigv4(&score_request());
    parts
        .headers
        .insert("content-type", "text/plain".parse().unwrap());
    assert_eq!(
        verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn changed_method_path_or_host_is_a_signature_mismatch() {
    let parts = sign_with_aws_sigv4(&score_request());
    let verifier = verifier();

    let mut method = parts.clone();
    method.method = http::Method::PUT;
    let mut path = parts.clone();
    with_uri(&mut path, "/v1/score/batch");
    let mut host = parts.clone();
    host.headers
        .insert(HOST, "other.example.test".parse().unwrap());
    let mut region = parts.clone();
    edit_authorization(&mut region, |value| {
        value.replace("/eu-west-1/", "/us-east-1/")
    });

    for tampered in [method, path, host, region] {
        assert_eq!(
            verifier.verify(&tampered, SCORE_BODY, at(SIGNED_AT)),
            Err(SigV4Error::SignatureMismatch)
        );
    }
}

#[test]
fn wrong_secret_is_a_signature_mismatch() {
    let request = Unsigned {
        secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ",
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    assert_eq!(
        verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn unknown_access_key_is_reported() {
    let request = Unsigned {
        access_key_id: "AKIDNOTCONFIGURED",
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    assert_eq!(
        verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::UnknownAccessKey)
    );
    // A key id that is a prefix of a configured one is still unknown.
    let request = Unsigned {
        access_key_id: "AKIDEXAMPL",
        ..score_request()
    };
    let parts = sign_with_aws_sigv4(&request);
    assert_eq!(
        verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::UnknownAccessKey)
    );
}

#[test]
fn date_outside_the_skew_is_stale_in_both_directions() {
    let parts = sign_with_aws_sigv4(&score_request());
    let verifier = verifier();
    let signed = at(SIGNED_AT);
    let six_minutes = Duration::from_secs(6 * 60);
    assert_eq!(
        verifier.verify(&parts, SCORE_BODY, signed + six_minutes),
        Err(SigV4Error::StaleDate { skew_secs: 360 })
    );
    assert_eq!(
        verifier.verify(&parts, SCORE_BODY, signed - six_minutes),
        Err(SigV4Error::StaleDate { skew_secs: 360 })
    );
    // The bound itself is inclusive.
    for now in [signed + DEFAULT_MAX_SKEW, signed - DEFAULT_MAX_SKEW] {
        assert_eq!(verifier.verify(&parts, SCORE_BODY, now), Ok("flink-scorer"));
    }
}

#[test]
fn signed_x_amz_date_cannot_be_moved() {
    let mut parts = sign_with_aws_sigv4(&score_request());
    parts
        .headers
        .insert(X_AMZ_DATE, "20261126T101630Z".parse().unwrap());
    assert_eq!(
        verifier().verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::SignatureMismatch)
    );
}

/// Asserts the request is refused as malformed for the expected reason, so a
/// case cannot pass by tripping over an unrelated check.
fn assert_malformed(parts: &Parts, reason: &str) {
    match verifier().verify(parts, SCORE_BODY, at(SIGNED_AT)) {
        Err(SigV4Error::Malformed(actual)) if actual.contains(reason) => {}
        other => panic!("expected Malformed({reason:?}), got {other:?}"),
    }
}

#[test]
fn malformed_authorization_headers_are_refused() {
    let parts = sign_with_aws_sigv4(&score_request());
    let signature = signature_of(&parts);
    // (fragment of the expected reason, edit of the Authorization value)
    type Edit = Box<dyn Fn(&str) -> String>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "no Signature",
            Box::new(|v| v.rsplit_once(", Signature=").unwrap().0.to_owned()),
        ),
        (
            "no Credential",
            Box::new(|v| {
                let (_, rest) = v.split_once(", ").unwrap();
                format!("AWS4-HMAC-SHA256 {rest}")
            }),
        ),
        (
            "64 hex digits",
            Box::new(move |v| v.replace(&signature, &"zz".repeat(32))),
        ),
        (
            "64 hex digits",
            Box::new(|v| {
                let (head, sig) = v.rsplit_once("Signature=").unwrap();
                format!("{head}Signature={}", &sig[..62])
            }),
        ),
        (
            "does not include host",
            Box::new(|v| v.replace("content-type;host;x-amz-date", "content-type;x-amz-date")),
        ),
        (
            "does not include x-amz-date",
            Box::new(|v| v.replace("content-type;host;x-amz-date", "content-type;host")),
        ),
        (
            "not sorted",
            Box::new(|v| {
                v.replace(
                    "content-type;host;x-amz-date",
                    "host;content-type;x-amz-date",
                )
            }),
        ),
        (
            "invalid header name",
            Box::new(|v| {
                v.replace(
                    "content-type;host;x-amz-date",
                    "Content-Type;host;x-amz-date",
                )
            }),
        ),
        (
            "invalid header name",
            Box::new(|v| {
                v.replace(
                    "content-type;host;x-amz-date",
                    "content-type;;host;x-amz-date",
                )
            }),
        ),
        (
            "signed header accept is not in the request",
            Box::new(|v| {
                v.replace(
                    "content-type;host;x-amz-date",
                    "accept;content-type;host;x-amz-date",
                )
            }),
        ),
        (
            "duplicate Authorization component",
            Box::new(|v| {
                let (head, _) = v.split_once(", SignedHeaders=").unwrap();
                let credential = head.strip_prefix("AWS4-HMAC-SHA256 ").unwrap().to_owned();
                format!("{v}, {credential}")
            }),
        ),
        (
            "unknown Authorization component",
            Box::new(|v| format!("{v}, Expires=300")),
        ),
        ("without '='", Box::new(|v| format!("{v},"))),
        (
            "Credential is not",
            Box::new(|v| v.replace("/eu-west-1/execute-api/", "/execute-api/")),
        ),
        (
            "does not end in aws4_request",
            Box::new(|v| v.replace("/aws4_request", "/aws4_requests")),
        ),
        (
            "does not match X-Amz-Date",
            Box::new(|v| v.replace("/20261126/", "/20261125/")),
        ),
        (
            "scope date is not yyyymmdd",
            Box::new(|v| v.replace("/20261126/", "/2026-11-26/")),
        ),
        (
            "empty field",
            Box::new(|v| v.replace("Credential=AKIDEXAMPLE/", "Credential=/")),
        ),
        ("without '='", Box::new(|_| "AWS4-HMAC-SHA256".to_owned())),
    ];
    for (reason, edit) in edits {
        let mut tampered = parts.clone();
        edit_authorization(&mut tampered, |v| edit(v));
        assert_ne!(
            authorization(&tampered),
            authorization(&parts),
            "edit for {reason:?} did nothing"
        );
        assert_malformed(&tampered, reason);
    }
}

#[test]
fn other_algorithms_are_unsupported() {
    let parts = sign_with_aws_sigv4(&score_request());
    let verifier = verifier();
    let value = authorization(&parts);
    let variants = [
        value.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
        value.replace("AWS4-HMAC-SHA256", "aws4-hmac-sha256"),
        "AWS AKIDEXAMPLE:c2lnbmF0dXJl".to_owned(),
        "Bearer some-token".to_owned(),
    ];
    for variant in variants {
        let mut tampered = parts.clone();
        set_authorization(&mut tampered, &variant);
        assert_eq!(
            verifier.verify(&tampered, SCORE_BODY, at(SIGNED_AT)),
            Err(SigV4Error::UnsupportedAlgorithm)
        );
    }
}

#[test]
fn malformed_request_heads_are_refused() {
    let parts = sign_with_aws_sigv4(&score_request());

    let mut no_date = parts.clone();
    no_date.headers.remove(X_AMZ_DATE);
    assert_malformed(&no_date, "missing X-Amz-Date");

    for bad in [
        "2026-11-26T10:15:30Z",
        "20261126T101530",
        "20261326T101530Z",
        "20261126 101530Z",
    ] {
        let mut bad_date = parts.clone();
        bad_date.headers.insert(X_AMZ_DATE, bad.parse().unwrap());
        assert_malformed(&bad_date, "not yyyymmddThhmmssZ");
    }

    let mut two_dates = parts.clone();
    two_dates
        .headers
        .append(X_AMZ_DATE, SIGNED_AT.parse().unwrap());
    assert_malformed(&two_dates, "more than one x-amz-date");

    let mut two_authorizations = parts.clone();
    let value = parts.headers[AUTHORIZATION].clone();
    two_authorizations.headers.append(AUTHORIZATION, value);
    assert_malformed(&two_authorizations, "more than one authorization");

    let mut no_host = parts.clone();
    no_host.headers.remove(HOST);
    assert_malformed(&no_host, "signed header host is not in the request");

    let mut missing_signed = parts.clone();
    missing_signed.headers.remove("content-type");
    assert_malformed(
        &missing_signed,
        "signed header content-type is not in the request",
    );

    for path in ["/v1/./score", "/x/../v1/score", "/v1//score"] {
        let mut dotted = parts.clone();
        with_uri(&mut dotted, path);
        assert_malformed(&dotted, "empty or dot segments");
    }
}

#[test]
fn no_authorization_is_missing_and_presigned_urls_are_refused() {
    let mut parts = sign_with_aws_sigv4(&score_request());
    parts.headers.remove(AUTHORIZATION);
    let verifier = verifier();
    assert_eq!(
        verifier.verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::Missing)
    );

    with_uri(
        &mut parts,
        "/v1/score?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261126%2Feu-west-1%2Fexecute-api%2Faws4_request&X-Amz-Signature=00",
    );
    assert!(matches!(
        verifier.verify(&parts, SCORE_BODY, at(SIGNED_AT)),
        Err(SigV4Error::Malformed(reason)) if reason.contains("presigned")
    ));
}

#[test]
fn path_normal_form() {
    for path in [
        "/",
        "/v1/score",
        "/v1/score/",
        "/endpoints/a%2E%2E/invocations",
    ] {
        assert!(is_normal_path(path), "{path}");
    }
    for path in [
        "",
        "v1",
        "//",
        "/v1//score",
        "/./v1",
        "/v1/..",
        "/v1/../",
        "/v1/.",
    ] {
        assert!(!is_normal_path(path), "{path}");
    }
}

// ---------------------------------------------------------------------------
// Requests signed by botocore (boto3 / AWS CLI), see scripts/sign_request.py

struct Fixture {
    file: String,
    parts: Parts,
    body: Vec<u8>,
    now: SystemTime,
    key: SigV4Key,
    session_token: Option<String>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigv4")
}

fn load_fixture(path: &Path) -> Fixture {
    let text = std::fs::read_to_string(path).expect("read fixture");
    let json: serde_json::Value = serde_json::from_str(&text).expect("fixture is JSON");
    let field = |name: &str| {
        json[name]
            .as_str()
            .unwrap_or_else(|| panic!("{}: missing {name}", path.display()))
            .to_owned()
    };
    let mut builder = http::Request::builder()
        .method(field("method").as_str())
        .uri(field("uri"));
    for pair in json["headers"].as_array().expect("headers") {
        let name = pair[0].as_str().expect("header name");
        let value = pair[1].as_str().expect("header value");
        builder = builder.header(name, value);
    }
    Fixture {
        file: path.file_name().unwrap().to_string_lossy().into_owned(),
        parts: builder.body(()).expect("fixture request").into_parts().0,
        body: field("body").into_bytes(),
        now: at(&field("date")),
        key: SigV4Key {
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            name: "botocore-client".into(),
        },
        session_token: json["session_token"].as_str().map(str::to_owned),
    }
}

fn botocore_fixtures() -> Vec<Fixture> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    let fixtures: Vec<Fixture> = paths.iter().map(|path| load_fixture(path)).collect();
    let mut names: Vec<&str> = fixtures.iter().map(|f| f.file.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "botocore_execute_api_content_sha256.json",
            "botocore_execute_api_get_empty_body.json",
            "botocore_execute_api_post_query.json",
            "botocore_execute_api_session_token.json",
            "botocore_sagemaker_invoke_endpoint.json",
            "botocore_sagemaker_invoke_endpoint_escaped_path.json",
        ]
    );
    fixtures
}

fn fixture_verifier(fixture: &Fixture, secret: &str) -> SigV4Verifier {
    SigV4Verifier::new(
        vec![SigV4Key {
            secret_access_key: secret.to_owned(),
            ..fixture.key.clone()
        }],
        DEFAULT_MAX_SKEW,
    )
}

#[test]
fn botocore_signed_requests_verify() {
    for fixture in botocore_fixtures() {
        let verifier = fixture_verifier(&fixture, &fixture.key.secret_access_key);
        assert_eq!(
            verifier.verify(&fixture.parts, &fixture.body, fixture.now),
            Ok("botocore-client"),
            "{}",
            fixture.file
        );
    }
}

#[test]
fn botocore_fixtures_cover_the_tricky_shapes() {
    let fixtures = botocore_fixtures();
    let find = |name: &str| fixtures.iter().find(|f| f.file.contains(name)).unwrap();

    let escaped = &find("escaped_path").parts;
    assert_eq!(
        escaped.uri.path(),
        "/endpoints/fraud%20xgb%2Fv2/invocations"
    );
    assert!(authorization(escaped).contains("/sagemaker/aws4_request"));

    let invoke = &find("sagemaker_invoke_endpoint.json").parts;
    assert_eq!(invoke.headers[HOST], "127.0.0.1:8080");

    let query = &find("post_query").parts;
    assert_eq!(
        query.uri.query(),
        Some("model=fraud-xgb&explain=true&tag=a%20b")
    );
    assert!(authorization(query).contains("/execute-api/aws4_request"));

    let empty = find("empty_body");
    assert!(empty.body.is_empty());
    assert_eq!(empty.parts.method, http::Method::GET);

    assert!(find("session_token").session_token.is_some());
    assert!(
        find("content_sha256")
            .parts
            .headers
            .contains_key(X_AMZ_CONTENT_SHA256)
    );
}

#[test]
fn tampered_botocore_requests_are_refused() {
    for fixture in botocore_fixtures() {
        let file = fixture.file.as_str();
        let verifier = fixture_verifier(&fixture, &fixture.key.secret_access_key);

        let mut body = fixture.body.clone();
        body.extend_from_slice(b" ");
        let expected = if fixture.parts.headers.contains_key(X_AMZ_CONTENT_SHA256) {
            SigV4Error::BodyHashMismatch
        } else {
            SigV4Error::SignatureMismatch
        };
        assert_eq!(
            verifier.verify(&fixture.parts, &body, fixture.now),
            Err(expected),
            "{file}: body"
        );

        let mut header = fixture.parts.clone();
        header
            .headers
            .insert(HOST, "elsewhere.example.test".parse().unwrap());
        assert_eq!(
            verifier.verify(&header, &fixture.body, fixture.now),
            Err(SigV4Error::SignatureMismatch),
            "{file}: host"
        );

        let wrong_secret = fixture_verifier(&fixture, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEZ");
        assert_eq!(
            wrong_secret.verify(&fixture.parts, &fixture.body, fixture.now),
            Err(SigV4Error::SignatureMismatch),
            "{file}: secret"
        );

        let six_minutes = Duration::from_secs(360);
        for now in [fixture.now + six_minutes, fixture.now - six_minutes] {
            assert_eq!(
                verifier.verify(&fixture.parts, &fixture.body, now),
                Err(SigV4Error::StaleDate { skew_secs: 360 }),
                "{file}: clock"
            );
        }

        let mut unknown = fixture.parts.clone();
        edit_authorization(&mut unknown, |v| {
            v.replace("Credential=AKIDEXAMPLE/", "Credential=AKIDOTHER/")
        });
        assert_eq!(
            verifier.verify(&unknown, &fixture.body, fixture.now),
            Err(SigV4Error::UnknownAccessKey),
            "{file}: key id"
        );

        if let Some(token) = &fixture.session_token {
            let mut swapped = fixture.parts.clone();
            let other = format!("{token}x");
            swapped
                .headers
                .insert(X_AMZ_SECURITY_TOKEN, other.parse().unwrap());
            assert_eq!(
                verifier.verify(&swapped, &fixture.body, fixture.now),
                Err(SigV4Error::SignatureMismatch),
                "{file}: token"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Secrets stay out of diagnostics

#[test]
fn debug_output_redacts_secrets() {
    let key = SigV4Key {
        access_key_id: AKID.into(),
        secret_access_key: SECRET.into(),
        name: "flink-scorer".into(),
    };
    let key_debug = format!("{key:?}");
    assert!(!key_debug.contains(SECRET), "{key_debug}");
    assert!(key_debug.contains("**REDACTED**"), "{key_debug}");
    assert!(key_debug.contains(AKID) && key_debug.contains("flink-scorer"));

    let verifier_debug = format!("{:?} {:#?}", verifier(), verifier());
    for secret in [SECRET, OTHER_SECRET, DECOY_SECRET] {
        assert!(!verifier_debug.contains(secret), "{verifier_debug}");
    }
    assert!(verifier_debug.contains("**REDACTED**"));
    assert!(verifier_debug.contains("batch-scorer"));
}

#[test]
fn errors_do_not_echo_the_authorization_header() {
    let parts = sign_with_aws_sigv4(&score_request());
    let authorization_value = authorization(&parts);
    let signature = signature_of(&parts);
    let verifier = verifier();

    let mut cases = Vec::new();
    cases.push(verifier.verify(&parts, b"tampered", at(SIGNED_AT)));
    cases.push(verifier.verify(
        &parts,
        SCORE_BODY,
        at(SIGNED_AT) + Duration::from_secs(3600),
    ));
    for edit in [
        authorization_value.replace("Signature=", "Signature=zz"),
        authorization_value.replace("host;", ""),
        authorization_value.replace("AWS4-HMAC-SHA256", "AWS4-X"),
        format!("{authorization_value}, Extra={signature}"),
    ] {
        let mut tampered = parts.clone();
        set_authorization(&mut tampered, &edit);
        cases.push(verifier.verify(&tampered, SCORE_BODY, at(SIGNED_AT)));
    }
    assert_eq!(cases.len(), 6);
    for case in cases {
        let error = case.expect_err("every case fails");
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(&signature), "{text}");
            assert!(!text.contains(SECRET), "{text}");
            assert!(!text.contains("Credential="), "{text}");
        }
    }
}

#[test]
fn error_codes_are_stable() {
    let codes = [
        (SigV4Error::Missing, "missing"),
        (SigV4Error::Malformed("x".into()), "malformed"),
        (SigV4Error::UnsupportedAlgorithm, "unsupported_algorithm"),
        (SigV4Error::UnknownAccessKey, "unknown_access_key"),
        (SigV4Error::StaleDate { skew_secs: 1 }, "stale_date"),
        (SigV4Error::BodyHashMismatch, "body_hash_mismatch"),
        (SigV4Error::SignatureMismatch, "signature_mismatch"),
    ];
    for (error, code) in codes {
        assert_eq!(error.code(), code);
    }
}

#[test]
fn verifier_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<SigV4Verifier>();
    assert_send_sync::<SigV4Error>();
}
