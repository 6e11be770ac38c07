//! Strict parsing of what a SigV4 client claims: the `Authorization` header, `X-Amz-Date`, the
//! request path and the signed headers. Nothing here checks a signature.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use time::PrimitiveDateTime;
use time::macros::format_description;

use super::{ALGORITHM, SCOPE_TERMINATOR, SigV4Error, X_AMZ_DATE, X_AMZ_SECURITY_TOKEN, malformed};

/// What the `Authorization` header claims. Borrowed from the header value.
pub(crate) struct Claim<'a> {
    pub(crate) access_key_id: &'a str,
    pub(crate) scope_date: &'a str,
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) signed_headers: Vec<&'a str>,
    pub(crate) signature: [u8; 32],
}

/// The value of a header that must appear at most once, as visible ASCII.
pub(super) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
) -> Result<Option<&'a str>, SigV4Error> {
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
pub(super) fn is_presigned(query: Option<&str>) -> bool {
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
pub(crate) fn parse_authorization(value: &str) -> Result<Claim<'_>, SigV4Error> {
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
pub(crate) fn parse_amz_date(value: &str) -> Result<SystemTime, SigV4Error> {
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
pub(super) fn is_normal_path(path: &str) -> bool {
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
pub(super) struct SignedHeaderValues<'a> {
    pub(super) headers: Vec<(&'a str, &'a str)>,
    pub(super) session_token: Option<&'a str>,
}

pub(super) fn collect_signed_headers<'a>(
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
