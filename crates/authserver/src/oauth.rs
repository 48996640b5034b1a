//! Handlers of the token (RFC 6749 §3.2), introspection (RFC 7662 §2) and revocation
//! (RFC 7009 §2) endpoints. Each: extract → one domain call → response.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::request::{TokenReference, TokenRequest};
use domain::service::Introspection;
use domain::token::AccessTokenClaims;
use serde::Serialize;
use serde_json::json;

use crate::AppState;
use crate::extract::{INTROSPECT, OAuthForm, REVOKE, TOKEN};
use crate::wire::{ApiError, no_store_json};

/// `POST /oauth2/token`
pub async fn post_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: OAuthForm<TOKEN>,
) -> Result<Response, ApiError> {
    let client_id = form.credentials.client_id().to_owned();
    let fail = |e| ApiError::new("token", e).client(Some(&client_id));
    let request = TokenRequest::parse(&form.params).map_err(fail)?;
    // Client authentication first: only a known client's request spends a proof.
    let client = state.tokens.authenticate(&form.credentials, true).await.map_err(fail)?;
    let proof = crate::dpop::token_proof(&state, &headers).await.map_err(|e| e.client(Some(&client_id)))?;
    let issued = state.tokens.token_for(&client, &form.credentials, request, proof.as_ref()).await.map_err(|e| {
        let refused = fail(e);
        // A client that must use DPoP learns the nonce it may need along with the refusal.
        if refused.error.code == domain::ErrorCode::InvalidDpopProof {
            refused.dpop_nonce(state.sender.checker.nonce())
        } else {
            refused
        }
    })?;
    let body = TokenResponse {
        access_token: &issued.access_token,
        // RFC 9449 §5: a DPoP-bound access token has `token_type` DPoP.
        token_type: if proof.is_some() { "DPoP" } else { "Bearer" },
        expires_in: issued.expires_in,
        scope: (!issued.scope.is_empty()).then(|| issued.scope.to_string()),
        refresh_token: issued.refresh_token.as_deref(),
        id_token: issued.id_token.as_deref(),
    };
    Ok(no_store_json(to_json(&body)).into_response())
}

/// `POST /oauth2/introspect`
pub async fn post_introspect(
    State(state): State<Arc<AppState>>,
    form: OAuthForm<INTROSPECT>,
) -> Result<Response, ApiError> {
    let client_id = form.credentials.client_id().to_owned();
    let fail = |e| ApiError::new("introspect", e).client(Some(&client_id));
    let reference = TokenReference::parse(&form.params).map_err(fail)?;
    let result = state.tokens.introspect(&form.credentials, &reference.token).await.map_err(fail)?;
    let body = match result {
        // RFC 7662 §2.2: an inactive token answers `{"active": false}` and nothing else.
        Introspection::Inactive(_) => json!({ "active": false }).to_string(),
        Introspection::Active(claims) => {
            // RFC 9449 §6.2: a DPoP-bound token introspects as `token_type: DPoP`, with `cnf`.
            let dpop = claims.cnf.as_ref().is_some_and(|c| c.jkt.is_some());
            let token_type = if dpop { "DPoP" } else { "Bearer" };
            to_json(&ActiveIntrospection { active: true, token_type, claims: &claims })
        }
    };
    Ok(no_store_json(body).into_response())
}

/// `POST /oauth2/revoke`
pub async fn post_revoke(State(state): State<Arc<AppState>>, form: OAuthForm<REVOKE>) -> Result<Response, ApiError> {
    let client_id = form.credentials.client_id().to_owned();
    let fail = |e| ApiError::new("revoke", e).client(Some(&client_id));
    let reference = TokenReference::parse(&form.params).map_err(fail)?;
    state.tokens.revoke(&form.credentials, &reference.token).await.map_err(fail)?;
    // RFC 7009 §2.2: HTTP 200 whether or not the token was valid; the body is ignored.
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]).into_response())
}

/// RFC 6749 §5.1 successful token response.
#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
}

/// RFC 7662 §2.2 response for an active token: the token's claims plus `active` and
/// `token_type`.
#[derive(Serialize)]
struct ActiveIntrospection<'a> {
    active: bool,
    token_type: &'static str,
    #[serde(flatten)]
    claims: &'a AccessTokenClaims,
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serializing these plain structs cannot fail; an empty object is the safe fallback.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}
