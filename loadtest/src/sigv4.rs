//! SigV4 signing of the HTTP mode's requests, as a SigV4 caller (boto3, the AWS CLI, a Flink
//! job's signing client) signs them, so that the load includes the gateway's verification.
//!
//! Settings are botocore's for every service but S3, the ones the gateway verifies with: the
//! path is percent-encoded twice and normalised, and the payload's hash is part of the signature
//! (no `x-amz-content-sha256` header).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
    SigningSettings, UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;

pub struct Signer {
    credentials: Credentials,
    region: String,
    service: String,
    settings: SigningSettings,
}

impl Signer {
    pub fn new(access_key: &str, secret_key: &str, region: &str, service: &str) -> Self {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Double;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Enabled;
        settings.payload_checksum_kind = PayloadChecksumKind::NoHeader;
        settings.signature_location = SignatureLocation::Headers;
        Self {
            credentials: Credentials::new(access_key, secret_key, None, None, "loadtest"),
            region: region.to_owned(),
            service: service.to_owned(),
            settings,
        }
    }

    /// The headers that sign a POST of `body` to `url` with this `content_type`, made at `time`
    /// (`x-amz-date` and `authorization`). `host` must be the `Host` header the client sends.
    pub fn headers(
        &self,
        url: &str,
        host: &str,
        content_type: &str,
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, String> {
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(self.settings.clone())
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let headers = [("host", host), ("content-type", content_type)];
        let request =
            SignableRequest::new("POST", url, headers.into_iter(), SignableBody::Bytes(body))
                .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect())
    }
}

/// The `Host` header a client sends for `url`: the host, and the port unless it is the scheme's
/// default.
pub fn host_header(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use infergate::middleware::sigv4::{DEFAULT_MAX_SKEW, SigV4Error, SigV4Key, SigV4Verifier};

    const AKID: &str = "AKIDLOADTEST";
    const SECRET: &str = "loadtest-secret-0123456789";

    fn verifier() -> SigV4Verifier {
        SigV4Verifier::new(
            vec![SigV4Key {
                access_key_id: AKID.into(),
                secret_access_key: SECRET.into(),
                name: "loadtest".into(),
            }],
            DEFAULT_MAX_SKEW,
        )
    }

    /// The request as the gateway receives it: the headers reqwest would send, and the body.
    fn received(url: &str, signed: &[(String, String)]) -> http::request::Parts {
        let parsed = reqwest::Url::parse(url).unwrap();
        let mut request = http::Request::builder()
            .method("POST")
            .uri(parsed.path())
            .header("host", host_header(&parsed).unwrap())
            .header("content-type", "text/csv");
        for (name, value) in signed {
            request = request.header(name, value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_gateway_verifies_what_is_signed() {
        let url = "http://127.0.0.1:18080/endpoints/fraud-xgb/invocations";
        let host = host_header(&reqwest::Url::parse(url).unwrap()).unwrap();
        assert_eq!(host, "127.0.0.1:18080");
        let body = b"1500,30,2,6051,0,1,9000,5,9\n";
        let now = SystemTime::now();
        let signer = Signer::new(AKID, SECRET, "us-east-1", "sagemaker");
        let signed = signer.headers(url, &host, "text/csv", body, now).unwrap();
        let names: Vec<&str> = signed.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"authorization") && names.contains(&"x-amz-date"));
        assert!(
            !names.contains(&"x-amz-content-sha256"),
            "botocore signs the payload hash without sending it: {names:?}"
        );
        let parts = received(url, &signed);
        assert_eq!(verifier().verify(&parts, body, now), Ok("loadtest"));
        // A changed body, or another secret, is refused.
        assert_eq!(
            verifier().verify(&parts, b"1,2,3\n", now),
            Err(SigV4Error::SignatureMismatch)
        );
        let wrong = Signer::new(AKID, "not-the-secret", "us-east-1", "sagemaker")
            .headers(url, &host, "text/csv", body, now)
            .unwrap();
        assert_eq!(
            verifier().verify(&received(url, &wrong), body, now),
            Err(SigV4Error::SignatureMismatch)
        );
    }

    #[test]
    fn default_ports_are_left_out_of_the_host() {
        let host = |u: &str| host_header(&reqwest::Url::parse(u).unwrap()).unwrap();
        assert_eq!(host("http://gateway.internal/x"), "gateway.internal");
        assert_eq!(host("https://gateway.internal:443/x"), "gateway.internal");
        assert_eq!(host("http://[::1]:8080/x"), "[::1]:8080");
    }
}
