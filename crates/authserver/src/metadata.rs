//! Authorization server metadata (RFC 8414 §2, OpenID Connect Discovery 1.0 §3) and the
//! JWK Set (RFC 7517 §5). The metadata lists only what this server actually implements.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use domain::jose::Algorithm;
use domain::settings::Issuer;
use serde_json::{Value, json};

use crate::AppState;
use crate::paths;

/// Builds the metadata document once, at startup.
#[must_use]
pub fn document(issuer: &Issuer, algorithm: Algorithm, dpop: &crate::SenderConstraints) -> Value {
    let mut confidential = vec!["client_secret_basic", "client_secret_post"];
    if dpop.mtls {
        confidential.push("tls_client_auth");
    }
    let mut any = confidential.clone();
    any.push("none");
    let dpop_algs: Vec<&str> = dpop.checker.settings().algorithms.iter().map(|a| a.as_str()).collect();
    json!({
        "issuer": issuer.as_str(),
        "authorization_endpoint": issuer.endpoint(paths::AUTHORIZE),
        "token_endpoint": issuer.endpoint(paths::TOKEN),
        "userinfo_endpoint": issuer.endpoint(paths::USERINFO),
        "end_session_endpoint": issuer.endpoint(paths::LOGOUT),
        "jwks_uri": issuer.endpoint(paths::JWKS),
        "introspection_endpoint": issuer.endpoint(paths::INTROSPECT),
        "revocation_endpoint": issuer.endpoint(paths::REVOKE),
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [algorithm.as_str()],
        "scopes_supported": ["openid", "profile", "email"],
        "claims_supported": [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "amr", "azp",
            "name", "preferred_username", "updated_at", "email", "email_verified"
        ],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "token_endpoint_auth_methods_supported": any,
        "introspection_endpoint_auth_methods_supported": confidential,
        "revocation_endpoint_auth_methods_supported": any,
        // RFC 9449 §5.1.
        "dpop_signing_alg_values_supported": dpop_algs,
        // RFC 8705 §3.3: only with a listener that asks for client certificates.
        "tls_client_certificate_bound_access_tokens": dpop.mtls,
        "service_documentation": "https://github.com/portcullis/portcullis",
    })
}

/// `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`.
pub async fn get_metadata(State(state): State<Arc<AppState>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        state.metadata.as_str().to_owned(),
    )
        .into_response()
}

/// `GET /oauth2/jwks`: public keys of every announced, active and retired key. `max-age`
/// comes from the rotation schedule so that no verifier meets a key it has not cached.
pub async fn get_jwks(State(state): State<Arc<AppState>>) -> Response {
    let keys = state.tokens.keys().snapshot();
    let cache = format!("public, max-age={}", keys.jwks_max_age());
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_str(&cache).unwrap_or(HeaderValue::from_static("no-cache"))),
        ],
        keys.jwks_json().to_owned(),
    )
        .into_response()
}
