//! The JSON body extractor: our own rejections (415, 413, 400 as problem+json) instead of
//! axum's plain-text ones.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde_json::Value;

use super::essence;
use crate::domain::{FieldError, clip};
use crate::error::{ApiError, ErrorKind};

/// A request body that is JSON, parsed but not yet validated.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if let Some(charset) = charset(content_type).filter(|c| !is_utf8(c)) {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                format!(
                    "JSON bodies are UTF-8; given charset {:?}",
                    clip(&charset, 32)
                ),
            ));
        }
        if !is_json(content_type) {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                format!(
                    "the body must be `application/json`. Given content type: {:?}",
                    clip(content_type, 64)
                ),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large()
            } else {
                ApiError::invalid(
                    format!("cannot read the body: {}", rejection.body_text()),
                    Vec::new(),
                )
            }
        })?;
        match serde_json::from_slice::<Strict>(&bytes) {
            Ok(Strict(value)) => Ok(JsonBody(value)),
            Err(e) if e.to_string().starts_with(DUPLICATE) => Err(ApiError::invalid(
                "the body has a duplicate field",
                vec![FieldError::new("", "duplicate_field", e.to_string())],
            )),
            Err(e) => Err(ApiError::invalid(
                "the body is not valid JSON",
                vec![FieldError::new("", "invalid_json", e.to_string())],
            )),
        }
    }
}

/// The start of the parse error for a key given twice in one object.
const DUPLICATE: &str = "duplicate field";

/// A JSON value parsed like `serde_json::Value`, except that an object naming a key twice is
/// an error: "last one wins" would let two readers of one body see two transactions.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "{DUPLICATE} `{}`",
                    clip(&key, 64)
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The `charset` parameter of a media type, lower-cased and unquoted.
fn charset(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    })
}

fn is_utf8(charset: &str) -> bool {
    matches!(charset, "utf-8" | "utf8")
}

/// `application/json` or an `application/*+json` type (`problem+json`, say), any parameters.
pub(crate) fn is_json(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_an_error_at_any_depth() {
        let parse = |s: &str| serde_json::from_str::<Strict>(s).map(|Strict(v)| v);
        assert_eq!(
            parse(r#"{"a": [1, {"b": null}], "c": 1.5}"#).unwrap(),
            serde_json::json!({"a": [1, {"b": null}], "c": 1.5})
        );
        let top = parse(r#"{"amount": 1, "amount": 2}"#).unwrap_err();
        assert!(
            top.to_string().starts_with("duplicate field `amount`"),
            "{top}"
        );
        let nested = parse(r#"{"transactions": [{"a": 1, "a": 1}]}"#).unwrap_err();
        assert!(nested.to_string().starts_with(DUPLICATE), "{nested}");
    }

    #[test]
    fn only_utf8_charsets_are_json() {
        assert_eq!(charset("application/json"), None);
        assert_eq!(
            charset("application/json; Charset=\"UTF-8\"").as_deref(),
            Some("utf-8")
        );
        assert_eq!(
            charset("application/json;charset=latin1").as_deref(),
            Some("latin1")
        );
        assert!(is_utf8("utf-8") && is_utf8("utf8") && !is_utf8("latin1"));
    }

    #[test]
    fn recognises_json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/problem+json"));
        assert!(!is_json(""));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/jsonp"));
    }
}
