//! Who is calling: an API key (`x-api-key`), a SigV4 signature, or nobody (allowed only when
//! no credentials are configured). The result rides the request as a [`Caller`] extension.
//!
//! Keys are held as SHA-256 digests and compared in constant time against every configured
//! digest, so neither the keys nor which of them exist leak through timing, logs or errors.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::rate_limit::Plan;
use super::sigv4::{DEFAULT_MAX_SKEW, SigV4Error, SigV4Key, SigV4Verifier};
use crate::config::Config;
use crate::error::{ApiError, ErrorKind};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The configured name (never the key); `anonymous` without credentials.
    pub name: Arc<str>,
    /// `None` for anonymous callers: only the global limit applies.
    pub plan: Option<Plan>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self {
            name: Arc::from("anonymous"),
            plan: None,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.plan.is_none()
    }

    pub fn may_bypass_cache(&self) -> bool {
        self.plan.is_some_and(|p| p.allow_cache_bypass)
    }
}

struct ApiKey {
    digest: [u8; 32],
    caller: Caller,
}

/// Every configured credential.
pub struct Auth {
    api_keys: Vec<ApiKey>,
    sigv4: Option<SigV4Verifier>,
    sigv4_callers: Vec<(String, Caller)>,
    body_limit: usize,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.api_keys.iter().map(|k| &*k.caller.name).collect();
        f.debug_struct("Auth")
            .field("api_keys", &names)
            .field("sigv4_callers", &self.sigv4_callers.len())
            .finish()
    }
}

/// Why the credentials could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("invalid credentials configuration:\n  - {}", .0.join("\n  - "))]
pub struct AuthConfigError(pub Vec<String>);

impl Auth {
    /// Resolves the configured credentials; `env` reads environment variables (secrets are
    /// only ever there, never in the file).
    pub fn from_config(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthConfigError> {
        let mut errors = Vec::new();
        let mut api_keys = Vec::new();
        for (i, key) in config.auth.api_keys.iter().enumerate() {
            let digest = match (&key.key_sha256, &key.key_env) {
                (Some(hex_digest), _) => {
                    let digest = parse_key_sha256(hex_digest);
                    if digest.is_none() {
                        errors.push(format!(
                            "`auth.api_keys[{i}].key_sha256` is not 64 hex digits"
                        ));
                    }
                    digest
                }
                (None, Some(var)) => match env(var).filter(|v| !v.is_empty()) {
                    Some(value) => Some(Sha256::digest(value.as_bytes()).into()),
                    None => {
                        errors.push(format!(
                            "`auth.api_keys[{i}].key_env`: environment variable {var} is not set"
                        ));
                        None
                    }
                },
                (None, None) => None,
            };
            if let Some(digest) = digest {
                api_keys.push(ApiKey {
                    digest,
                    caller: Caller {
                        name: Arc::from(key.name.as_str()),
                        plan: Some(key.plan()),
                    },
                });
            }
        }
        let mut sigv4_keys = Vec::new();
        let mut sigv4_callers = Vec::new();
        for (i, key) in config.auth.sigv4.iter().enumerate() {
            match env(&key.secret_env).filter(|v| !v.is_empty()) {
                Some(secret) => {
                    sigv4_keys.push(SigV4Key {
                        access_key_id: key.access_key_id.clone(),
                        secret_access_key: secret,
                        name: key.name().to_owned(),
                    });
                    sigv4_callers.push((
                        key.name().to_owned(),
                        Caller {
                            name: Arc::from(key.name()),
                            plan: Some(key.plan()),
                        },
                    ));
                }
                None => errors.push(format!(
                    "`auth.sigv4[{i}].secret_env`: environment variable {} is not set",
                    key.secret_env
                )),
            }
        }
        if !errors.is_empty() {
            return Err(AuthConfigError(errors));
        }
        let sigv4 =
            (!sigv4_keys.is_empty()).then(|| SigV4Verifier::new(sigv4_keys, DEFAULT_MAX_SKEW));
        Ok(Self {
            api_keys,
            sigv4,
            sigv4_callers,
            body_limit: config.limits.body_limit_bytes,
        })
    }

    /// No credentials configured: every request is anonymous.
    pub fn is_open(&self) -> bool {
        self.api_keys.is_empty() && self.sigv4.is_none()
    }

    /// The caller owning `presented`, comparing against every key in constant time.
    fn api_key_caller(&self, presented: &[u8]) -> Option<&Caller> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = None;
        for key in &self.api_keys {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(&key.caller);
            }
        }
        found
    }

    fn sigv4_caller(&self, name: &str) -> Option<&Caller> {
        self.sigv4_callers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, caller)| caller)
    }

    /// Authenticates a request. SigV4 needs the whole body, so the body is read (within the
    /// body limit) and put back.
    pub async fn authenticate(&self, request: Request) -> Result<(Request, Caller), ApiError> {
        let headers = request.headers();
        let mut keys = headers.get_all("x-api-key").iter();
        if let Some(key) = keys.next() {
            // Ambiguous credentials are refused rather than resolved one way or the other.
            if keys.next().is_some() {
                return Err(unauthorized("send one `x-api-key` header, not several"));
            }
            if headers.contains_key(header::AUTHORIZATION) {
                return Err(unauthorized(
                    "send an `x-api-key` or an `Authorization` header, not both",
                ));
            }
            return match self.api_key_caller(key.as_bytes()) {
                Some(caller) => Ok((request, caller.clone())),
                None => Err(unauthorized("the API key is not valid")),
            };
        }
        let signed = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().starts_with(b"AWS4-"));
        if signed {
            let Some(verifier) = &self.sigv4 else {
                // The AWS SDKs and CLI always sign: on a gateway without credentials, a
                // signature proves nothing and refuses nothing.
                if self.is_open() {
                    return Ok((request, Caller::anonymous()));
                }
                return Err(unauthorized("SigV4 signatures are not accepted here"));
            };
            let (parts, body) = request.into_parts();
            let bytes = axum::body::to_bytes(body, self.body_limit)
                .await
                .map_err(|_| ApiError::payload_too_large())?;
            let outcome = verifier.verify(&parts, &bytes, SystemTime::now());
            let caller = match outcome {
                Ok(name) => self
                    .sigv4_caller(name)
                    .cloned()
                    .ok_or_else(|| unauthorized("the signature's access key is not valid"))?,
                Err(e) => return Err(unauthorized(sigv4_detail(&e))),
            };
            return Ok((Request::from_parts(parts, Body::from(bytes)), caller));
        }
        if self.is_open() {
            return Ok((request, Caller::anonymous()));
        }
        Err(unauthorized(
            "credentials are required: an `x-api-key` header or a SigV4 `Authorization` header",
        ))
    }
}

/// A configured `key_sha256` as a digest: exactly 64 hex digits (either case), else `None`.
pub fn parse_key_sha256(hex_digest: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest).ok()?;
    Some(digest)
}

/// What a refused signature tells the caller. An unknown access key and a wrong signature read
/// the same, so that callers cannot probe which access keys exist.
fn sigv4_detail(e: &SigV4Error) -> String {
    metrics::counter!("infergate_sigv4_refused_total", "reason" => e.code()).increment(1);
    match e {
        SigV4Error::UnknownAccessKey | SigV4Error::SignatureMismatch => {
            "the SigV4 signature does not match".to_owned()
        }
        other => format!("the SigV4 signature was refused: {other}"),
    }
}

fn unauthorized(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Unauthorized, detail)
}

/// The authentication middleware.
pub async fn authenticate(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    match auth.authenticate(request).await {
        Ok((mut request, caller)) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => {
            if e.kind == ErrorKind::Unauthorized {
                metrics::counter!("infergate_auth_failures_total").increment(1);
            }
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests;
