//! Turning an HTTP request into typed OAuth input: the form body (RFC 6749 §3.2,
//! `application/x-www-form-urlencoded`, strict UTF-8, bounded size) and the client
//! credentials (§2.3.1, `client_secret_basic` or `client_secret_post`, never both).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use domain::OAuthError;
use domain::client::{ClientCertificate, ClientCredentials};
use domain::request::FormParams;

use crate::wire::ApiError;

/// The largest form body the token endpoint accepts.
pub const MAX_FORM_BYTES: usize = 64 * 1024;
/// Introspection and revocation take a token from anyone's hands; a megabyte of garbage
/// must come back "inactive" rather than as a transport error, so they allow more.
pub const MAX_TOKEN_FORM_BYTES: usize = 2 * 1024 * 1024;

/// The body limit of an endpoint.
#[must_use]
pub const fn body_limit(tag: u8) -> usize {
    if tag == TOKEN { MAX_FORM_BYTES } else { MAX_TOKEN_FORM_BYTES }
}

/// A parsed OAuth form request with the client's credentials.
#[derive(Debug)]
pub struct OAuthForm<const ENDPOINT: u8> {
    pub params: FormParams,
    pub credentials: ClientCredentials,
}

/// Endpoint tags for error context (const generics keep one extractor for all three).
pub const TOKEN: u8 = 0;
pub const INTROSPECT: u8 = 1;
pub const REVOKE: u8 = 2;

#[must_use]
pub const fn endpoint_name(tag: u8) -> &'static str {
    match tag {
        TOKEN => "token",
        INTROSPECT => "introspect",
        _ => "revoke",
    }
}

impl<S: Send + Sync, const E: u8> FromRequest<S> for OAuthForm<E> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let endpoint = endpoint_name(E);
        let err = |e: OAuthError| ApiError::new(endpoint, e);
        check_content_type(req.headers()).map_err(err)?;
        let headers = req.headers().clone();
        let certificate = req.extensions().get::<ClientCertificate>().cloned();
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            let too_large = rejection.status() == StatusCode::PAYLOAD_TOO_LARGE;
            let e = ApiError::new(
                endpoint,
                OAuthError::invalid_request(if too_large {
                    "the request body is too large"
                } else {
                    "the request body could not be read"
                })
                .with_cause(rejection.body_text()),
            );
            if too_large { e.status(StatusCode::PAYLOAD_TOO_LARGE) } else { e }
        })?;
        if body.len() > body_limit(E) {
            return Err(
                err(OAuthError::invalid_request("the request body is too large")).status(StatusCode::PAYLOAD_TOO_LARGE)
            );
        }
        let params = parse_form(&body).map_err(err)?;
        let claimed = params.optional("client_id").ok().flatten().map(str::to_owned);
        let credentials = match client_credentials(&headers, &params) {
            // RFC 8705 §2: a client_id alone over a connection with a verified client
            // certificate is `tls_client_auth` (a public client still passes as one).
            Ok(ClientCredentials::None { client_id }) if let Some(certificate) = certificate => {
                ClientCredentials::Certificate { client_id, certificate }
            }
            other => other.map_err(|e| err(e).client(claimed.as_deref()))?,
        };
        Ok(Self { params, credentials })
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), OAuthError> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut parts = value.split(';').map(str::trim);
    let mime = parts.next().unwrap_or("");
    let charset_ok = parts.all(|p| {
        p.split_once('=').is_none_or(|(k, v)| {
            !k.trim().eq_ignore_ascii_case("charset") || v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
    });
    if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") && charset_ok {
        Ok(())
    } else {
        Err(OAuthError::invalid_request("the request body must be application/x-www-form-urlencoded (UTF-8)"))
    }
}

/// Strict `application/x-www-form-urlencoded` parsing: percent-decoded bytes must be
/// valid UTF-8 (lossy replacement would let two different inputs look the same).
///
/// # Errors
/// `invalid_request` on invalid UTF-8 or a malformed escape.
pub fn parse_form(body: &[u8]) -> Result<FormParams, OAuthError> {
    let bad = || OAuthError::invalid_request("the request body is not valid UTF-8 form data");
    let mut pairs = Vec::new();
    for part in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (part.get(..i).unwrap_or_default(), part.get(i + 1..).unwrap_or_default()),
            None => (part, &[][..]),
        };
        pairs.push((decode(name).ok_or_else(bad)?, decode(value).ok_or_else(bad)?));
    }
    Ok(FormParams::new(pairs))
}

fn decode(raw: &[u8]) -> Option<String> {
    let plus_as_space: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus_as_space).collect();
    String::from_utf8(bytes).ok()
}

/// RFC 6749 §2.3.1: HTTP Basic with form-urlencoded id and secret, or both in the body.
/// "The client MUST NOT use more than one authentication method in each request."
fn client_credentials(headers: &HeaderMap, params: &FormParams) -> Result<ClientCredentials, OAuthError> {
    let body_id = params.optional("client_id")?;
    let body_secret = params.optional("client_secret")?;
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let (id, secret) = parse_basic(auth.to_str().unwrap_or(""))
            .ok_or_else(|| OAuthError::invalid_client().with_cause("malformed Authorization header"))?;
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request("use only one client authentication method"));
        }
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::invalid_request("client_id does not match the authenticated client"));
        }
        return Ok(ClientCredentials::Basic { client_id: id, client_secret: secret });
    }
    match (body_id, body_secret) {
        (Some(id), Some(secret)) => {
            Ok(ClientCredentials::Post { client_id: id.to_owned(), client_secret: secret.to_owned() })
        }
        (Some(id), None) => Ok(ClientCredentials::None { client_id: id.to_owned() }),
        (None, _) => Err(OAuthError::invalid_client().with_cause("no client credentials presented")),
    }
}

fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let id = decode(id.as_bytes())?;
    let secret = decode(secret.as_bytes())?;
    (!id.is_empty()).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn form_parsing_is_strict() {
        let p = parse_form(b"a=1&b=x+y%21&c=&d").unwrap();
        assert_eq!(p.optional("b").unwrap(), Some("x y!"));
        assert_eq!(p.optional("c").unwrap(), None);
        assert!(parse_form(b"a=%FF").is_err());
        assert!(parse_form(&[b'a', b'=', 0xC3]).is_err());
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut h = HeaderMap::new();
        let v = format!("Basic {}", STANDARD.encode("my%3Aid:s%2Bcret"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        let c = client_credentials(&h, &FormParams::default()).unwrap();
        assert_eq!(c, ClientCredentials::Basic { client_id: "my:id".into(), client_secret: "s+cret".into() });
    }

    #[test]
    fn two_methods_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("basic {}", STANDARD.encode("a:b"))).unwrap());
        let p = parse_form(b"client_id=a&client_secret=b").unwrap();
        assert_eq!(client_credentials(&h, &p).unwrap_err().code, domain::ErrorCode::InvalidRequest);
    }

    #[test]
    fn content_type_rules() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_err());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"));
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded; charset=latin1"));
        assert!(check_content_type(&h).is_err());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(check_content_type(&h).is_err());
    }
}
