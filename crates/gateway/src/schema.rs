//! Per-route JSON Schema validation of request bodies (any draft `jsonschema` detects from
//! `$schema`, 2020-12 by default): the content type is enforced (415), the body must be JSON
//! and satisfy the schema (400 naming each failing field by JSON pointer). Unknown fields
//! are refused where the schema says `additionalProperties: false`. Remote `$ref`s are not
//! fetched: a schema is self-contained.

use axum::http::{HeaderMap, Method, header};

use crate::error::Downstream;

/// At most this many failures are reported (one bad array can yield thousands).
const MAX_ERRORS: usize = 20;

/// A compiled schema.
#[derive(Debug)]
pub struct BodySchema(jsonschema::Validator);

impl BodySchema {
    /// # Errors
    /// The document is not a valid JSON Schema.
    pub fn compile(schema: &serde_json::Value) -> Result<Self, String> {
        jsonschema::validator_for(schema).map(Self).map_err(|e| format!("invalid JSON Schema: {e}"))
    }

    /// Checks a request; bodiless GET/HEAD/DELETE/OPTIONS pass.
    ///
    /// # Errors
    /// `UnsupportedMediaType` or `InvalidBody`.
    pub fn check(&self, method: &Method, headers: &HeaderMap, body: &[u8]) -> Result<(), Downstream> {
        let takes_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        if !takes_body && body.is_empty() {
            return Ok(());
        }
        if !is_json(headers) {
            return Err(Downstream::UnsupportedMediaType);
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Downstream::InvalidBody(vec![(String::new(), format!("not valid JSON ({e})"))]))?;
        let errors: Vec<(String, String)> = self
            .0
            .iter_errors(&value)
            .take(MAX_ERRORS)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(Downstream::InvalidBody(errors)) }
    }
}

/// `application/json` or `application/<something>+json`, any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn schema() -> BodySchema {
        BodySchema::compile(&serde_json::json!({
            "type": "object",
            "required": ["amount", "currency"],
            "additionalProperties": false,
            "properties": {
                "amount": { "type": "integer", "minimum": 1 },
                "currency": { "enum": ["EUR", "USD"] },
                "lines": { "type": "array", "items": { "type": "object", "required": ["sku"] } }
            }
        }))
        .unwrap()
    }

    fn json() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        h
    }

    #[test]
    fn valid_bodies_pass_and_failures_name_fields() {
        let s = schema();
        assert!(s.check(&Method::POST, &json(), br#"{"amount":5,"currency":"EUR"}"#).is_ok());
        let Err(Downstream::InvalidBody(errors)) =
            s.check(&Method::POST, &json(), br#"{"amount":0,"currency":"GBP","lines":[{}],"x":1}"#)
        else {
            panic!("expected InvalidBody")
        };
        let pointers: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        for expected in ["/amount", "/currency", "/lines/0", ""] {
            assert!(pointers.contains(&expected), "{expected} in {errors:?}");
        }
    }

    #[test]
    fn content_type_json_and_bodiless_methods() {
        let s = schema();
        let mut text = HeaderMap::new();
        text.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(s.check(&Method::POST, &text, b"{}"), Err(Downstream::UnsupportedMediaType));
        assert_eq!(s.check(&Method::PUT, &HeaderMap::new(), b""), Err(Downstream::UnsupportedMediaType));
        assert!(matches!(s.check(&Method::POST, &json(), b"{not json"), Err(Downstream::InvalidBody(_))));
        assert!(matches!(s.check(&Method::POST, &json(), b""), Err(Downstream::InvalidBody(_))));
        assert!(s.check(&Method::GET, &HeaderMap::new(), b"").is_ok());
        let mut problem = HeaderMap::new();
        problem.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/merge-patch+json"));
        assert!(s.check(&Method::PATCH, &problem, br#"{"amount":1,"currency":"USD"}"#).is_ok());
        assert!(BodySchema::compile(&serde_json::json!({"type": 12})).is_err());
    }
}
