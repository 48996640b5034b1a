//! The gateway's one error type and its one renderer. Each error knows which side failed
//! (downstream client, upstream service, or us) — pingora's `ErrorSource` idea — and is
//! answered in the protocol's format: RFC 6750 §3 `WWW-Authenticate` for credentials,
//! RFC 9457 problem+json bodies for everything. Logged once, here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The realm in every `WWW-Authenticate` challenge.
pub const REALM: &str = "portcullis";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// The client's request is at fault.
    Downstream(Downstream),
    /// The upstream service failed.
    Upstream(Upstream),
    /// A store we depend on is down (503; the cause is for the log).
    Unavailable(String),
    /// The shared rate limiter is down and configured to fail closed (503).
    LimiterUnavailable,
    /// We failed.
    Internal(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Downstream {
    BadPath(&'static str),
    BadRequest(&'static str),
    NoRoute,
    MethodNotAllowed,
    /// No credentials at all (RFC 6750 §3.1: no error code in the challenge); the route's
    /// accepted schemes are offered.
    MissingCredentials(Schemes),
    /// Malformed credentials (`invalid_request`).
    MalformedCredentials(&'static str),
    /// A token that did not verify; the reason is for the log only.
    InvalidToken(&'static str),
    /// An API key that did not verify; the reason is for the log only.
    InvalidApiKey(&'static str),
    /// Credentials of a kind the route does not take (a bearer token on an API-key route);
    /// the challenge offers the kinds it does take.
    WrongCredentialKind(Schemes),
    /// Verified, but lacks what the route requires.
    InsufficientScope {
        required: String,
        reason: &'static str,
    },
    PayloadTooLarge,
    /// A route with a JSON Schema got a body that is not `application/json`.
    UnsupportedMediaType,
    /// The body is not JSON, or breaks the route's schema: `(JSON pointer, message)` pairs.
    InvalidBody(Vec<(String, String)>),
    /// A CORS preflight for an origin, method or header the route does not allow.
    CorsRefused,
    /// Over a rate limit (`rule` is for the log).
    RateLimited {
        retry_after: u64,
        headers: Option<(String, String)>,
        rule: String,
    },
    /// The client's address is banned after repeated authentication failures.
    Banned {
        retry_after: u64,
    },
    /// A Cedar policy (or default deny) refused the request; the decision log has the ids.
    PolicyDenied,
    /// A DPoP proof that failed a check of RFC 9449 §4.3 (the reason is for the log).
    InvalidDpopProof(&'static str),
    /// The route wants a server nonce in the proof (RFC 9449 §9): this one.
    UseDpopNonce(String),
    /// A backend-for-frontend route or endpoint without a live session (401, no challenge:
    /// the app sends the browser to `/bff/login`).
    NoSession,
    /// A state-changing browser call without the CSRF header or from a foreign origin.
    CsrfRefused(&'static str),
}

impl Downstream {
    /// Whether this refusal looks like guessing or forging a credential, and so counts
    /// towards a ban of the address. A credential that was once valid — expired, not yet
    /// valid, revoked, for another audience or route — is what honest clients send every
    /// day (every client behind one office NAT), so it does not count.
    #[must_use]
    pub fn is_credential_guess(&self) -> bool {
        match self {
            Self::InvalidToken(reason) => !matches!(
                *reason,
                "expired"
                    | "not_yet_valid"
                    | "issued_in_future"
                    | "revoked"
                    | "wrong_audience"
                    | "issuer_not_accepted_on_route"
            ),
            Self::InvalidApiKey(reason) => !matches!(*reason, "expired" | "revoked"),
            _ => false,
        }
    }
}

/// The credential schemes a route accepts, offered in its `WWW-Authenticate` challenge
/// (RFC 6750 §3.1: no error code when no usable credential was sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schemes {
    pub bearer: bool,
    /// RFC 9449 §7.1: DPoP-bound tokens are accepted too.
    pub dpop: bool,
    pub api_key: bool,
}

impl Schemes {
    fn challenge(self) -> String {
        let offered = [
            self.bearer.then(|| format!("Bearer realm=\"{REALM}\"")),
            self.dpop.then(|| format!("DPoP realm=\"{REALM}\"")),
            self.api_key.then(|| format!("ApiKey realm=\"{REALM}\"")),
        ];
        offered.into_iter().flatten().collect::<Vec<_>>().join(", ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Unreachable(String),
    Timeout,
}

/// Status, title, detail and challenge of a client-side failure.
#[expect(clippy::too_many_lines, reason = "one arm per refusal: the one place they are rendered")]
fn downstream_parts(d: &Downstream) -> (StatusCode, &'static str, String, Option<String>) {
    let bearer = |extra: &str| Some(format!("Bearer realm=\"{REALM}\"{extra}"));
    match d {
        Downstream::BadPath(why) | Downstream::BadRequest(why) => {
            (StatusCode::BAD_REQUEST, "Bad Request", (*why).to_owned(), None)
        }
        Downstream::NoRoute => (StatusCode::NOT_FOUND, "Not Found", "no route matches this request".into(), None),
        Downstream::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "this route does not accept that method".into(),
            None,
        ),
        Downstream::MissingCredentials(schemes) => {
            (StatusCode::UNAUTHORIZED, "Unauthorized", "credentials are required".into(), Some(schemes.challenge()))
        }
        Downstream::MalformedCredentials(why) => (
            StatusCode::BAD_REQUEST,
            "Bad Request",
            (*why).to_owned(),
            bearer(&format!(", error=\"invalid_request\", error_description=\"{why}\"")),
        ),
        Downstream::InvalidToken(_) => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the access token is invalid".into(),
            bearer(", error=\"invalid_token\", error_description=\"the access token is invalid\""),
        ),
        Downstream::InvalidApiKey(_) => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the API key is invalid".into(),
            Some(format!("ApiKey realm=\"{REALM}\"")),
        ),
        Downstream::WrongCredentialKind(schemes) => (
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "this route does not accept that kind of credential".into(),
            Some(schemes.challenge()),
        ),
        Downstream::InsufficientScope { required, .. } => (
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the access token does not grant access to this route".into(),
            bearer(&format!(", error=\"insufficient_scope\", scope=\"{required}\"")),
        ),
        Downstream::InvalidBody(errors) => (
            StatusCode::BAD_REQUEST,
            "Bad Request",
            match errors.first() {
                Some((pointer, message)) if pointer.is_empty() => format!("the request body is invalid: {message}"),
                Some((pointer, message)) => format!("the request body is invalid at {pointer}: {message}"),
                None => "the request body is invalid".into(),
            },
            None,
        ),
        Downstream::RateLimited { retry_after, .. } => {
            too_many(format!("rate limit exceeded; retry after {retry_after} s"))
        }
        Downstream::InvalidDpopProof(_) | Downstream::UseDpopNonce(_) => dpop_parts(d),
        Downstream::Banned { .. } => {
            too_many("too many failed authentication attempts from this address; try again later".into())
        }
        Downstream::CorsRefused => {
            (StatusCode::FORBIDDEN, "Forbidden", "this cross-origin request is not allowed".into(), None)
        }
        Downstream::UnsupportedMediaType => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "this route takes application/json request bodies".into(),
            None,
        ),
        Downstream::PayloadTooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload Too Large",
            "the request body is too large for this route".into(),
            None,
        ),
        Downstream::PolicyDenied => {
            (StatusCode::FORBIDDEN, "Forbidden", "the authorization policy does not allow this request".into(), None)
        }
        Downstream::NoSession => {
            (StatusCode::UNAUTHORIZED, "Unauthorized", "no session: sign in at /bff/login".into(), None)
        }
        Downstream::CsrfRefused(why) => (StatusCode::FORBIDDEN, "Forbidden", (*why).to_owned(), None),
    }
}

/// RFC 9449 §7.1: proof failures are answered in the `DPoP` scheme.
fn dpop_parts(d: &Downstream) -> (StatusCode, &'static str, String, Option<String>) {
    let (error, detail) = match d {
        Downstream::UseDpopNonce(_) => {
            ("use_dpop_nonce", "a DPoP nonce is required; use the one in the DPoP-Nonce header")
        }
        _ => ("invalid_dpop_proof", "the DPoP proof is invalid"),
    };
    (
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        detail.to_owned(),
        Some(format!("DPoP realm=\"{REALM}\", error=\"{error}\", error_description=\"{detail}\"")),
    )
}

fn too_many(detail: String) -> (StatusCode, &'static str, String, Option<String>) {
    (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", detail, None)
}

impl GatewayError {
    fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        match self {
            Self::Downstream(d) => downstream_parts(d),
            Self::Upstream(Upstream::Unreachable(_)) => {
                (StatusCode::BAD_GATEWAY, "Bad Gateway", "the upstream service could not be reached".into(), None)
            }
            Self::Upstream(Upstream::Timeout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway Timeout",
                "the upstream service did not answer in time".into(),
                None,
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "the gateway cannot check credentials right now".into(),
                None,
            ),
            Self::LimiterUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "the rate limiter is unavailable; retry shortly".into(),
                None,
            ),
            Self::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error", "the gateway failed".into(), None)
            }
        }
    }

    fn log(&self, status: StatusCode) {
        match self {
            Self::Downstream(Downstream::InvalidToken(reason)) => {
                tracing::warn!(target: "portcullis::audit", event = "gateway.denied", status = status.as_u16(), reason, "invalid token");
            }
            Self::Downstream(Downstream::InvalidDpopProof(reason)) => {
                tracing::warn!(target: "portcullis::audit", event = "gateway.denied", status = status.as_u16(), reason, "invalid DPoP proof");
            }
            Self::Downstream(Downstream::InvalidApiKey(reason)) => {
                tracing::warn!(target: "portcullis::audit", event = "gateway.denied", status = status.as_u16(), reason, "invalid API key");
            }
            Self::Downstream(Downstream::InsufficientScope { reason, .. }) => {
                tracing::warn!(target: "portcullis::audit", event = "gateway.denied", status = status.as_u16(), reason, "insufficient scope");
            }
            Self::Downstream(Downstream::MissingCredentials(_) | Downstream::MalformedCredentials(_)) => {
                tracing::info!(target: "portcullis::audit", event = "gateway.denied", status = status.as_u16(), reason = "no_credentials", "missing credentials");
            }
            Self::Downstream(Downstream::WrongCredentialKind(_)) => {
                tracing::info!(target: "portcullis::audit", event = "gateway.denied", status = status.as_u16(), reason = "wrong_credential_kind", "credential kind not accepted");
            }
            Self::Downstream(Downstream::RateLimited { rule, retry_after, .. }) => {
                tracing::info!(target: "portcullis::audit", event = "ratelimit.limited", status = status.as_u16(), rule = %rule, retry_after, "rate limit exceeded");
            }
            Self::Downstream(Downstream::Banned { retry_after }) => {
                tracing::info!(target: "portcullis::audit", event = "ban.refused", status = status.as_u16(), retry_after, "request from a banned address");
            }
            Self::Downstream(d) => {
                tracing::info!(event = "gateway.rejected", status = status.as_u16(), detail = ?d, "request rejected")
            }
            Self::Upstream(u) => {
                tracing::warn!(
                    target: "portcullis::audit", event = "upstream.failed", status = status.as_u16(), cause = ?u,
                    "upstream failed"
                )
            }
            Self::Unavailable(cause) => {
                tracing::error!(event = "gateway.unavailable", cause = %cause, "a backing store is unavailable")
            }
            Self::LimiterUnavailable => {
                tracing::warn!(event = "gateway.limiter_unavailable", "the rate limiter is down (fail closed)")
            }
            Self::Internal(cause) => {
                tracing::error!(event = "gateway.internal_error", cause = %cause, "gateway failed")
            }
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let (status, title, detail, challenge) = self.parts();
        self.log(status);
        let mut body =
            serde_json::json!({ "type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail });
        if let (Self::Downstream(Downstream::PolicyDenied), Some(obj)) = (&self, body.as_object_mut()) {
            // A short reason code, never the policy text.
            obj.insert("reason".into(), serde_json::Value::from("policy_denied"));
        }
        // RFC 9457 §3.2 extension member: every failing field, by JSON pointer.
        if let (Self::Downstream(Downstream::InvalidBody(errors)), Some(obj)) = (&self, body.as_object_mut()) {
            let list: Vec<_> = errors.iter().map(|(p, m)| serde_json::json!({ "pointer": p, "message": m })).collect();
            obj.insert("errors".into(), serde_json::Value::Array(list));
        }
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if let Some(challenge) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        match &self {
            Self::Downstream(Downstream::RateLimited { retry_after, headers: limits, .. }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                if let Some(limits) = limits {
                    crate::limits::insert_headers(headers, limits);
                }
            }
            Self::Downstream(Downstream::Banned { retry_after }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::Downstream(Downstream::UseDpopNonce(nonce)) => {
                if let Ok(v) = HeaderValue::from_str(nonce) {
                    headers.insert(domain::dpop::NONCE_HEADER, v);
                }
            }
            Self::LimiterUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_guessed_or_forged_credentials_count_towards_bans() {
        for reason in ["malformed", "bad_signature", "unknown_key", "wrong_issuer", "too_long"] {
            assert!(Downstream::InvalidToken(reason).is_credential_guess(), "{reason}");
        }
        for reason in ["expired", "revoked", "wrong_audience", "not_yet_valid"] {
            assert!(!Downstream::InvalidToken(reason).is_credential_guess(), "{reason}");
        }
        assert!(Downstream::InvalidApiKey("wrong_secret").is_credential_guess());
        assert!(!Downstream::InvalidApiKey("expired").is_credential_guess());
        assert!(
            !Downstream::MissingCredentials(Schemes { bearer: true, dpop: false, api_key: false })
                .is_credential_guess()
        );
    }
}
