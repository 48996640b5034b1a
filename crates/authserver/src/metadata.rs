//! Authorization server metadata (RFC 8414 §2, OpenID Connect Discovery 1.0 §3) and the
//! JWK Set (RFC 7517 §5). The metadata lists only what this server actually implements.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use domain::settings::Issuer;
use serde_json::{Value, json};

use crate::AppState;
use crate::paths;

/// Builds the metadata document once, at startup.
#[must_use]
pub fn document(issuer: &Issuer) -> Value {
    let auth_methods = json!(["client_secret_basic", "client_secret_post"]);
    json!({
        "issuer": issuer.as_str(),
        "token_endpoint": issuer.endpoint(paths::TOKEN),
        "jwks_uri": issuer.endpoint(paths::JWKS),
        "introspection_endpoint": issuer.endpoint(paths::INTROSPECT),
        "revocation_endpoint": issuer.endpoint(paths::REVOKE),
        "grant_types_supported": ["client_credentials"],
        // No authorization endpoint yet: no response type is supported.
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "service_documentation": "https://github.com/portcullis/portcullis",
    })
}

/// `GET /.well-known/oauth-authorization-server` and `/.well-known/openid-configuration`.
pub async fn get_metadata(State(state): State<AppState>) -> Response {
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
pub async fn get_jwks(State(state): State<AppState>) -> Response {
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
