//! Handlers of the token (RFC 6749 §3.2), introspection (RFC 7662 §2) and revocation
//! (RFC 7009 §2) endpoints. Each: extract → one domain call → response.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::request::{TokenReference, TokenRequest};
use domain::service::Introspection;
use serde_json::json;

use crate::AppState;
use crate::extract::{INTROSPECT, OAuthForm, REVOKE, TOKEN};
use crate::wire::{ApiError, no_store_json};

/// `POST /oauth2/token`
pub async fn post_token(State(state): State<AppState>, form: OAuthForm<TOKEN>) -> Result<Response, ApiError> {
    let client_id = form.credentials.client_id().to_owned();
    let fail = |e| ApiError::new("token", e).client(Some(&client_id));
    let request = TokenRequest::parse(&form.params).map_err(fail)?;
    let issued = state.tokens.token(&form.credentials, request).await.map_err(fail)?;
    // RFC 6749 §5.1 successful response.
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
    });
    if !issued.scope.is_empty() {
        body["scope"] = json!(issued.scope.to_string());
    }
    Ok(no_store_json(body.to_string()).into_response())
}

/// `POST /oauth2/introspect`
pub async fn post_introspect(
    State(state): State<AppState>,
    form: OAuthForm<INTROSPECT>,
) -> Result<Response, ApiError> {
    let client_id = form.credentials.client_id().to_owned();
    let fail = |e| ApiError::new("introspect", e).client(Some(&client_id));
    let reference = TokenReference::parse(&form.params).map_err(fail)?;
    let result = state.tokens.introspect(&form.credentials, &reference.token).await.map_err(fail)?;
    let body = match result {
        // RFC 7662 §2.2: an inactive token answers `{"active": false}` and nothing else.
        Introspection::Inactive(_) => json!({ "active": false }),
        Introspection::Active(claims) => {
            let mut body = json!({
                "active": true,
                "token_type": "Bearer",
                "client_id": claims.client_id,
                "sub": claims.sub,
                "aud": claims.aud,
                "iss": claims.iss,
                "exp": claims.exp,
                "iat": claims.iat,
                "jti": claims.jti,
            });
            if let Some(nbf) = claims.nbf {
                body["nbf"] = json!(nbf);
            }
            if let Some(scope) = claims.scope {
                body["scope"] = json!(scope);
            }
            body
        }
    };
    Ok(no_store_json(body.to_string()).into_response())
}

/// `POST /oauth2/revoke`
pub async fn post_revoke(State(state): State<AppState>, form: OAuthForm<REVOKE>) -> Result<Response, ApiError> {
    let client_id = form.credentials.client_id().to_owned();
    let fail = |e| ApiError::new("revoke", e).client(Some(&client_id));
    let reference = TokenReference::parse(&form.params).map_err(fail)?;
    state.tokens.revoke(&form.credentials, &reference.token).await.map_err(fail)?;
    // RFC 7009 §2.2: HTTP 200 whether or not the token was valid; the body is ignored.
    Ok((
        StatusCode::OK,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
    )
        .into_response())
}
