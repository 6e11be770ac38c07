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
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody, SignableRequest,
    SignatureLocation, SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use http::header::AUTHORIZATION;
use http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

// The same path form as `tests` below, for the same reason.
#[path = "sigv4/parse.rs"]
mod parse;

use parse::{Claim, collect_signed_headers, is_normal_path, is_presigned, single_header};
// For the fuzz targets (`crate::fuzzing`) as well as the verifier below.
pub(crate) use parse::{parse_amz_date, parse_authorization};

/// The only signing algorithm accepted in the `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Clock skew tolerated between `X-Amz-Date` and the server clock, in either
/// direction (the gateway's verifier uses it). AWS services use the same five
/// minutes, so SDK clients already keep within it.
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

#[cfg(test)]
// A plain `mod tests;` would resolve differently depending on whether this
// file is reached through a `#[path]` attribute; this form resolves relative
// to this file's directory in every case.
#[path = "sigv4/tests.rs"]
mod tests;
