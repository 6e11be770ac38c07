//! Verification of AWS Signature Version 4 on inbound requests.
//!
//! Some callers cannot send a bearer token but can sign with SigV4: a Flink
//! job's AWS HTTP client, or boto3 / the AWS CLI pointed at the gateway's
//! SageMaker-compatible route with `--endpoint-url`. This module checks such
//! requests against a static table of access keys.
//!
//! The expected signature is recomputed with the `aws-sigv4` crate (the signer
//! of the AWS SDK for Rust) rather than with a hand-written canonicaliser, so
//! the subtle rules (path normalisation, double percent-encoding, query
//! sorting, header value trimming) stay those of a maintained signer. What this
//! module adds is the server's side: strict parsing of what the client claims,
//! freshness and scope checks, and a constant-time comparison.
//!
//! Only header-based signing (`Authorization: AWS4-HMAC-SHA256 ...`) is
//! supported. Presigned URLs (`X-Amz-Signature` in the query string), SigV4a,
//! unsigned and streaming (chunked) payloads are refused.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use http::HeaderMap;
use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};
use time::PrimitiveDateTime;
use time::macros::format_description;

/// The only signing algorithm accepted in the `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Clock skew tolerated between `X-Amz-Date` and the server clock, in either
/// direction. AWS services use the same five minutes, so SDK clients already
/// keep within it.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(5 * 60);

const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
const SCOPE_TERMINATOR: &str = "aws4_request";

/// Shows up only in `aws-sigv4`'s own redacted debug output.
const PROVIDER_NAME: &str = "infergate-sigv4";

/// Signing secret used when the access key id is unknown, so that a request
/// with an unknown key costs the same work as one with a wrong signature and
/// response timing does not tell which key ids exist.
const DECOY_SECRET: &str = "infergate-decoy-secret-for-unknown-access-keys";

/// Redaction marker for secrets in `Debug` output.
const REDACTED: &str = "**REDACTED**";

/// One configured caller: an access key id and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigV4Key {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Caller name reported on success (for logs, metrics and authorisation).
    pub name: String,
}

impl fmt::Debug for SigV4Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigV4Key")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &REDACTED)
            .field("name", &self.name)
            .finish()
    }
}

/// Why a request failed SigV4 verification.
///
/// The variants are distinct for metrics and logs; an HTTP layer should still
/// answer `UnknownAccessKey` and `SignatureMismatch` identically so a client
/// cannot probe which access key ids exist. Messages never contain the secret,
/// the signature or the `Authorization` header value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigV4Error {
    /// No `Authorization` header: the request is not SigV4-signed at all.
    #[error("no Authorization header")]
    Missing,
    /// The request claims to be SigV4-signed but does not follow the format.
    #[error("malformed SigV4 request: {0}")]
    Malformed(String),
    /// The `Authorization` scheme is not `AWS4-HMAC-SHA256`.
    #[error("unsupported Authorization scheme (only {ALGORITHM} is accepted)")]
    UnsupportedAlgorithm,
    /// The credential's access key id is not configured.
    #[error("unknown access key id")]
    UnknownAccessKey,
    /// `X-Amz-Date` is further from the server clock than the allowed skew.
    #[error("X-Amz-Date is {skew_secs}s away from the server clock")]
    StaleDate { skew_secs: u64 },
    /// `x-amz-content-sha256` does not hash the body that was received.
    #[error("x-amz-content-sha256 does not match the request body")]
    BodyHashMismatch,
    /// The signature does not match the request.
    #[error("signature does not match")]
    SignatureMismatch,
}

impl SigV4Error {
    /// Stable snake_case label, for metrics.
    pub fn code(&self) -> &'static str {
        match self {
            SigV4Error::Missing => "missing",
            SigV4Error::Malformed(_) => "malformed",
            SigV4Error::UnsupportedAlgorithm => "unsupported_algorithm",
            SigV4Error::UnknownAccessKey => "unknown_access_key",
            SigV4Error::StaleDate { .. } => "stale_date",
            SigV4Error::BodyHashMismatch => "body_hash_mismatch",
            SigV4Error::SignatureMismatch => "signature_mismatch",
        }
    }
}

fn malformed(reason: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed(reason.into())
}

/// A configured key as the verifier keeps it.
struct StoredKey {
    /// SHA-256 of the access key id: lookups compare fixed-length digests so
    /// the time taken does not depend on how much of a configured id matches.
    id_digest: [u8; 32],
    /// Kept inside `aws-sigv4`'s own credentials type, which zeroes the secret
    /// on drop and redacts it in `Debug`.
    credentials: Credentials,
    name: String,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigV4Key")
            .field("access_key_id", &self.credentials.access_key_id())
            .field("secret_access_key", &REDACTED)
            .field("name", &self.name)
            .finish()
    }
}

/// Verifies SigV4-signed requests against a fixed set of keys.
///
/// Immutable after construction, so it is `Send + Sync` and meant to be shared
/// behind an `Arc`.
pub struct SigV4Verifier {
    keys: Vec<StoredKey>,
    decoy: Credentials,
    max_skew: Duration,
    settings: SigningSettings,
}

impl fmt::Debug for SigV4Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigV4Verifier")
            .field("keys", &self.keys)
            .field("max_skew", &self.max_skew)
            .finish_non_exhaustive()
    }
}

/// What the `Authorization` header claims. Borrowed from the header value.
struct Claim<'a> {
    access_key_id: &'a str,
    scope_date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: [u8; 32],
}

impl SigV4Verifier {
    /// Builds a verifier. If an access key id is listed twice, the later entry
    /// wins; configuration loading should reject duplicates before this.
    pub fn new(keys: Vec<SigV4Key>, max_skew: Duration) -> Self {
        let keys = keys
            .into_iter()
            .map(|key| StoredKey {
                id_digest: Sha256::digest(key.access_key_id.as_bytes()).into(),
                credentials: Credentials::new(
                    key.access_key_id,
                    key.secret_access_key,
                    None,
                    None,
                    PROVIDER_NAME,
                ),
                name: key.name,
            })
            .collect();
        Self {
            keys,
            decoy: Credentials::new("", DECOY_SECRET, None, None, PROVIDER_NAME),
            max_skew,
            settings: signing_settings(),
        }
    }

    /// Verifies a request whose complete body is `body`. On success returns the
    /// matched key's `name`.
    ///
    /// `now` is the server clock, passed in so tests can pin it.
    pub fn verify(&self, parts: &Parts, body: &[u8], now: SystemTime) -> Result<&str, SigV4Error> {
        let headers = &parts.headers;
        let Some(authorization) = single_header(headers, AUTHORIZATION.as_str())? else {
            if is_presigned(parts.uri.query()) {
                return Err(malformed(
                    "query-string (presigned) SigV4 authentication is not supported",
                ));
            }
            return Err(SigV4Error::Missing);
        };
        let claim = parse_authorization(authorization)?;

        let amz_date = single_header(headers, X_AMZ_DATE)?
            .ok_or_else(|| malformed("missing X-Amz-Date header"))?;
        let signed_at = parse_amz_date(amz_date)?;
        // Both dates come from the client; a mismatch means a hand-made or
        // corrupted header, and the signing key would be derived from the
        // wrong day anyway.
        if claim.scope_date != &amz_date[..8] {
            return Err(malformed("credential scope date does not match X-Amz-Date"));
        }
        self.check_skew(signed_at, now)?;

        let path_and_query = parts
            .uri
            .path_and_query()
            .ok_or_else(|| malformed("request target has no path"))?;
        // The signature covers the normalised path while the router sees the
        // raw one; refusing non-normal paths keeps the two the same, so a
        // signature for `/a/b` cannot be replayed as `/a/./b` or `/x/../a/b`.
        if !is_normal_path(path_and_query.path()) {
            return Err(malformed("request path has empty or dot segments"));
        }

        let signed = collect_signed_headers(parts, &claim.signed_headers)?;

        if let Some(claimed) = single_header(headers, X_AMZ_CONTENT_SHA256)? {
            if claimed == "UNSIGNED-PAYLOAD" || claimed.starts_with("STREAMING-") {
                return Err(malformed(
                    "unsigned and streaming payloads are not accepted",
                ));
            }
            // Not secret, so a plain comparison is fine.
            if claimed != hex::encode(Sha256::digest(body)) {
                return Err(SigV4Error::BodyHashMismatch);
            }
        }

        let key = self.find_key(claim.access_key_id);
        let base = key.map_or(&self.decoy, |key| &key.credentials);
        let credentials = match signed.session_token {
            None => base.clone(),
            Some(token) => Credentials::new(
                base.access_key_id(),
                base.secret_access_key(),
                Some(token.to_owned()),
                None,
                PROVIDER_NAME,
            ),
        };
        // The URI goes to the signer exactly as received (already
        // percent-encoded); the signer applies SigV4's own re-encoding.
        let request = SignableRequest::new(
            parts.method.as_str(),
            path_and_query.as_str(),
            signed.headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|_| malformed("request cannot be canonicalised"))?;
        let expected = self.expected_signature(request, &claim, signed_at, credentials)?;
        let matches: bool = expected.ct_eq(&claim.signature).into();

        match key {
            None => Err(SigV4Error::UnknownAccessKey),
            Some(key) if matches => Ok(&key.name),
            Some(_) => Err(SigV4Error::SignatureMismatch),
        }
    }

    fn check_skew(&self, signed_at: SystemTime, now: SystemTime) -> Result<(), SigV4Error> {
        let skew = match now.duration_since(signed_at) {
            Ok(behind) => behind,
            Err(ahead) => ahead.duration(),
        };
        if skew > self.max_skew {
            return Err(SigV4Error::StaleDate {
                skew_secs: skew.as_secs(),
            });
        }
        Ok(())
    }

    /// Scans every key and selects the match with constant-time operations, so
    /// neither the position of a key nor a near miss shows in the timing.
    fn find_key(&self, access_key_id: &str) -> Option<&StoredKey> {
        let probe: [u8; 32] = Sha256::digest(access_key_id.as_bytes()).into();
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, key) in self.keys.iter().enumerate() {
            let hit = key.id_digest.ct_eq(&probe);
            index.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        bool::from(found).then(|| &self.keys[index as usize])
    }

    /// The signature `aws-sigv4` computes for `request` with these credentials
    /// and the region, service and time the client claimed.
    fn expected_signature(
        &self,
        request: SignableRequest<'_>,
        claim: &Claim<'_>,
        signed_at: SystemTime,
        credentials: Credentials,
    ) -> Result<[u8; 32], SigV4Error> {
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(claim.region)
            .name(claim.service)
            .time(signed_at)
            .settings(self.settings.clone())
            .build()
            .map_err(|_| malformed("incomplete signing parameters"))?
            .into();
        let output =
            sign(request, &params).map_err(|_| malformed("request cannot be canonicalised"))?;
        let mut expected = [0u8; 32];
        hex::decode_to_slice(output.signature(), &mut expected)
            .map_err(|_| malformed("signer returned a non-hex signature"))?;
        Ok(expected)
    }
}

/// Settings matching what botocore (for every service but S3) and the AWS SDKs
/// do by default: the already-encoded path is encoded once more and dot
/// segments are resolved before signing, and the payload hash is only part of
/// the canonical request, not an extra header.
fn signing_settings() -> SigningSettings {
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Double;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Enabled;
    settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
    settings.signature_location = SignatureLocation::Headers;
    settings.session_token_mode = SessionTokenMode::Include;
    // The default list drops headers like user-agent that proxies rewrite.
    // A verifier must sign exactly what the client listed in SignedHeaders,
    // and only those headers are handed to the signer.
    settings.excluded_headers = None;
    settings
}

/// The value of a header that must appear at most once, as visible ASCII.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, SigV4Error> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed(format!("more than one {name} header")));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| malformed(format!("{name} header is not visible ASCII")))
}

/// Whether the query string carries presigned-URL parameters, so such a
/// request is reported as unsupported rather than as unsigned.
fn is_presigned(query: Option<&str>) -> bool {
    query.is_some_and(|query| {
        query.split('&').any(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            name.eq_ignore_ascii_case("X-Amz-Signature")
                || name.eq_ignore_ascii_case("X-Amz-Algorithm")
                || name.eq_ignore_ascii_case("X-Amz-Credential")
        })
    })
}

/// Parses `AWS4-HMAC-SHA256 Credential=<akid>/<date>/<region>/<service>/aws4_request,
/// SignedHeaders=a;b;c, Signature=<hex>`. The three components may come in any
/// order, separated by commas with optional spaces; each must appear once.
fn parse_authorization(value: &str) -> Result<Claim<'_>, SigV4Error> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme != ALGORITHM {
        return Err(SigV4Error::UnsupportedAlgorithm);
    }

    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for component in rest.trim_start_matches(' ').split(',') {
        let component = component.trim_start_matches(' ');
        let (name, value) = component
            .split_once('=')
            .ok_or_else(|| malformed("Authorization component without '='"))?;
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => return Err(malformed("unknown Authorization component")),
        };
        if slot.replace(value).is_some() {
            return Err(malformed("duplicate Authorization component"));
        }
    }
    let credential = credential.ok_or_else(|| malformed("Authorization has no Credential"))?;
    let signed_headers =
        signed_headers.ok_or_else(|| malformed("Authorization has no SignedHeaders"))?;
    let signature = signature.ok_or_else(|| malformed("Authorization has no Signature"))?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, scope_date, region, service, terminator] = scope[..] else {
        return Err(malformed(
            "Credential is not <key>/<date>/<region>/<service>/aws4_request",
        ));
    };
    if access_key_id.is_empty() || region.is_empty() || service.is_empty() {
        return Err(malformed("Credential has an empty field"));
    }
    if scope_date.len() != 8 || !scope_date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("Credential scope date is not yyyymmdd"));
    }
    if terminator != SCOPE_TERMINATOR {
        return Err(malformed("Credential scope does not end in aws4_request"));
    }

    let signed_headers = parse_signed_headers(signed_headers)?;

    // Exactly 64 hex digits; any case is accepted since only the bytes matter.
    let mut decoded = [0u8; 32];
    if signature.len() != 64 || hex::decode_to_slice(signature, &mut decoded).is_err() {
        return Err(malformed("Signature is not 64 hex digits"));
    }

    Ok(Claim {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers,
        signature: decoded,
    })
}

/// `SignedHeaders` must be lowercase header names, sorted and without
/// duplicates (as every signer emits them), and must cover `host` and
/// `x-amz-date` so a signature cannot be moved to another host or time.
fn parse_signed_headers(value: &str) -> Result<Vec<&str>, SigV4Error> {
    let names: Vec<&str> = value.split(';').collect();
    for name in &names {
        if name.is_empty() || !name.bytes().all(is_lowercase_token_byte) {
            return Err(malformed("SignedHeaders has an invalid header name"));
        }
        if name.eq_ignore_ascii_case(AUTHORIZATION.as_str()) {
            return Err(malformed("SignedHeaders lists authorization"));
        }
    }
    if !names.windows(2).all(|pair| pair[0] < pair[1]) {
        return Err(malformed("SignedHeaders is not sorted or has duplicates"));
    }
    for required in [HOST.as_str(), X_AMZ_DATE] {
        if !names.contains(&required) {
            return Err(malformed(format!(
                "SignedHeaders does not include {required}"
            )));
        }
    }
    Ok(names)
}

/// RFC 9110 token characters, minus uppercase letters.
fn is_lowercase_token_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses the basic ISO 8601 form `yyyymmddThhmmssZ` that SigV4 mandates.
fn parse_amz_date(value: &str) -> Result<SystemTime, SigV4Error> {
    let bytes = value.as_bytes();
    let shaped = bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8]
            .iter()
            .chain(&bytes[9..15])
            .all(u8::is_ascii_digit);
    let parsed = shaped
        .then(|| {
            PrimitiveDateTime::parse(
                value,
                format_description!("[year][month][day]T[hour][minute][second]Z"),
            )
            .ok()
        })
        .flatten()
        .ok_or_else(|| malformed("X-Amz-Date is not yyyymmddThhmmssZ"))?;
    let seconds = u64::try_from(parsed.assume_utc().unix_timestamp())
        .map_err(|_| malformed("X-Amz-Date is before 1970"))?;
    Ok(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// True when the path has no `.`/`..` segments and no empty segment other
/// than a trailing slash, i.e. when SigV4 path normalisation leaves it alone.
fn is_normal_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    segments.iter().enumerate().all(|(i, segment)| {
        *segment != "." && *segment != ".." && (i == last || !segment.is_empty())
    })
}

/// The signed headers as handed to the signer, and the session token if one
/// is signed.
struct SignedHeaderValues<'a> {
    headers: Vec<(&'a str, &'a str)>,
    session_token: Option<&'a str>,
}

fn collect_signed_headers<'a>(
    parts: &'a Parts,
    names: &[&'a str],
) -> Result<SignedHeaderValues<'a>, SigV4Error> {
    let mut headers = Vec::with_capacity(names.len());
    let mut session_token = None;
    for &name in names {
        match name {
            // Supplied to the signer as the signing time; it was parsed
            // strictly, so the signer reproduces it byte for byte.
            X_AMZ_DATE => {}
            // The signer inserts the session token itself from the credentials.
            X_AMZ_SECURITY_TOKEN => {
                session_token = Some(
                    single_header(&parts.headers, name)?
                        .ok_or_else(|| missing_signed_header(name))?,
                );
            }
            // HTTP/2 carries the host in the :authority pseudo-header, which
            // ends up in the URI rather than in a Host header.
            "host" => {
                let host = match single_header(&parts.headers, name)? {
                    Some(host) => host,
                    None => parts
                        .uri
                        .authority()
                        .map(|authority| authority.as_str())
                        .ok_or_else(|| missing_signed_header(name))?,
                };
                headers.push((name, host));
            }
            _ => {
                let mut any = false;
                for value in parts.headers.get_all(name) {
                    let value = value.to_str().map_err(|_| {
                        malformed(format!("signed header {name} is not visible ASCII"))
                    })?;
                    headers.push((name, value));
                    any = true;
                }
                if !any {
                    return Err(missing_signed_header(name));
                }
            }
        }
    }
    Ok(SignedHeaderValues {
        headers,
        session_token,
    })
}

fn missing_signed_header(name: &str) -> SigV4Error {
    malformed(format!("signed header {name} is not in the request"))
}

#[cfg(test)]
// A plain `mod tests;` would resolve differently depending on whether this
// file is reached through a `#[path]` attribute; this form resolves relative
// to this file's directory in every case.
#[path = "sigv4/tests.rs"]
mod tests;
