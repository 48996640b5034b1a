//! The one place protocol errors are written to the wire, and logged.
//!
//! - RFC 6749 §5.2 JSON (`error`, `error_description`) with `Cache-Control: no-store` and
//!   `Pragma: no-cache`; 401 plus `WWW-Authenticate: Basic` for `invalid_client`.
//! - RFC 9457 `application/problem+json` for everything that is not an OAuth endpoint
//!   (unknown routes, health).
//!
//! Each error is logged once, here, with its internal cause; handlers never log-and-return.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::{ErrorCode, OAuthError};

/// An OAuth error on its way out, with what the log needs to know about it.
#[derive(Debug)]
pub struct ApiError {
    pub error: OAuthError,
    pub endpoint: &'static str,
    /// The client the request claimed to be, when known (never its secret).
    pub client_id: Option<String>,
    /// Overrides the status derived from the code (413 for an oversized body).
    pub status: Option<StatusCode>,
    /// A fresh `DPoP-Nonce` for the client's next proof (RFC 9449 §8).
    pub dpop_nonce: Option<String>,
    /// At a protected resource (userinfo): challenge with the `DPoP` scheme (RFC 9449
    /// §7.1) and these algorithms, instead of `Bearer`.
    pub dpop_challenge: Option<String>,
}

impl ApiError {
    #[must_use]
    pub fn new(endpoint: &'static str, error: OAuthError) -> Self {
        Self { error, endpoint, client_id: None, status: None, dpop_nonce: None, dpop_challenge: None }
    }

    #[must_use]
    pub fn dpop_nonce(mut self, nonce: String) -> Self {
        self.dpop_nonce = Some(nonce);
        self
    }

    /// Answer with a `DPoP` challenge offering `algs` (space-separated).
    #[must_use]
    pub fn dpop_challenge(mut self, algs: String) -> Self {
        self.dpop_challenge = Some(algs);
        self
    }

    #[must_use]
    pub fn client(mut self, client_id: Option<&str>) -> Self {
        self.client_id = client_id.map(|c| c.chars().take(128).collect());
        self
    }

    #[must_use]
    pub const fn status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }
}

/// RFC 6749 §5.2 status codes.
const fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::InvalidRequest
        | ErrorCode::InvalidGrant
        | ErrorCode::UnauthorizedClient
        | ErrorCode::UnsupportedGrantType
        | ErrorCode::InvalidScope
        | ErrorCode::UnsupportedTokenType
        | ErrorCode::AccessDenied
        | ErrorCode::UnsupportedResponseType
        | ErrorCode::LoginRequired
        | ErrorCode::ConsentRequired
        | ErrorCode::InteractionRequired
        | ErrorCode::RequestNotSupported
        | ErrorCode::RequestUriNotSupported
        | ErrorCode::InvalidDpopProof
        | ErrorCode::UseDpopNonce => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.error.code;
        let at_resource_dpop = self.dpop_challenge.is_some()
            && matches!(code, ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce | ErrorCode::InvalidToken);
        // RFC 9449 §7.1: at a protected resource, proof errors are 401 with a challenge.
        let status = self.status.unwrap_or(if at_resource_dpop { StatusCode::UNAUTHORIZED } else { status_for(code) });
        let cause = self.error.cause.as_deref().unwrap_or("");
        if status.is_server_error() {
            tracing::error!(
                target: "portcullis::audit",
                event = "request.failed",
                endpoint = self.endpoint,
                client_id = self.client_id.as_deref().unwrap_or(""),
                error = self.error.code.as_str(),
                cause,
                "request failed"
            );
        } else {
            tracing::warn!(
                target: "portcullis::audit",
                event = if self.endpoint == "token" { "token.refused" } else { "request.refused" },
                endpoint = self.endpoint,
                client_id = self.client_id.as_deref().unwrap_or(""),
                error = self.error.code.as_str(),
                cause,
                "request refused"
            );
        }
        let body = serde_json::json!({
            "error": self.error.code.as_str(),
            "error_description": sanitize(&self.error.description),
        });
        let mut response = (status, no_store_json(body.to_string())).into_response();
        let challenge = match self.error.code {
            ErrorCode::InvalidClient => Some(HeaderValue::from_static(r#"Basic realm="portcullis", charset="UTF-8""#)),
            // RFC 6750 §3.
            ErrorCode::InvalidToken => {
                Some(HeaderValue::from_static(r#"Bearer realm="portcullis", error="invalid_token""#))
            }
            ErrorCode::InsufficientScope => Some(HeaderValue::from_static(
                r#"Bearer realm="portcullis", error="insufficient_scope", scope="openid""#,
            )),
            _ => None,
        };
        let challenge = match (&self.dpop_challenge, at_resource_dpop) {
            (Some(algs), true) => {
                HeaderValue::from_str(&format!(r#"DPoP realm="portcullis", error="{code}", algs="{algs}""#)).ok()
            }
            _ => challenge,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(nonce) = self.dpop_nonce.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
            response.headers_mut().insert(domain::dpop::NONCE_HEADER, nonce);
        }
        response
    }
}

/// RFC 6749 §5.2: `error_description` is limited to %x20-21 / %x23-5B / %x5D-7E.
fn sanitize(description: &str) -> String {
    description
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if (' '..='~').contains(&c) => c,
            _ => '?',
        })
        .collect()
}

/// A JSON body with the headers RFC 6749 §5.1 requires on token responses.
pub fn no_store_json(body: String) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

/// An RFC 9457 problem document.
#[must_use]
pub fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_restricted_ascii() {
        assert_eq!(sanitize("a \"b\" \\ é\n"), "a 'b' ' ??");
    }
}
