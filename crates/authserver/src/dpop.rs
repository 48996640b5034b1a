//! DPoP at the authorization server's own endpoints: token requests (RFC 9449 §5) and
//! userinfo, a protected resource (§7). Reads the one `DPoP` header, checks the proof, and
//! turns a refusal into the endpoint's error with a fresh `DPoP-Nonce` (§8).

use axum::http::{HeaderMap, HeaderValue};
use domain::dpop::{self, DpopError, Proof, ProofRequest};
use domain::{ErrorCode, OAuthError};

use crate::wire::ApiError;
use crate::{AppState, paths};

/// The checked proof of a token request, if it sent one.
///
/// # Errors
/// `invalid_dpop_proof`, or `use_dpop_nonce` with the nonce to use.
pub async fn token_proof(state: &AppState, headers: &HeaderMap) -> Result<Option<Proof>, ApiError> {
    let fail = |e| refusal(state, "token", e);
    let Some(proof) =
        dpop::single_proof(headers.get_all(dpop::DPOP_HEADER).iter().map(HeaderValue::as_bytes)).map_err(fail)?
    else {
        return Ok(None);
    };
    let url = state.tokens.settings().issuer.endpoint(paths::TOKEN);
    let request =
        ProofRequest { method: "POST", url: &url, access_token: None, require_nonce: state.sender.nonce_at_token };
    state.sender.checker.verify(proof, &request).await.map(Some).map_err(fail)
}

/// The checked proof of a userinfo request made with `Authorization: DPoP <token>`.
///
/// # Errors
/// A 401 with a `DPoP` challenge.
pub async fn userinfo_proof(
    state: &AppState,
    headers: &HeaderMap,
    method: &str,
    access_token: &str,
) -> Result<Proof, ApiError> {
    let fail = |e| refusal(state, "userinfo", e);
    let proof = dpop::single_proof(headers.get_all(dpop::DPOP_HEADER).iter().map(HeaderValue::as_bytes))
        .map_err(fail)?
        .ok_or_else(|| fail(DpopError::Missing))?;
    let url = state.tokens.settings().issuer.endpoint(paths::USERINFO);
    let request = ProofRequest {
        method,
        url: &url,
        access_token: Some(access_token),
        require_nonce: state.sender.nonce_at_userinfo,
    };
    state.sender.checker.verify(proof, &request).await.map_err(fail)
}

/// The `algs` a `DPoP` challenge offers.
#[must_use]
pub fn algs(state: &AppState) -> String {
    state.sender.checker.settings().algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" ")
}

/// A refused proof as the endpoint's error: `use_dpop_nonce` or `invalid_dpop_proof`
/// (`temporarily_unavailable` when the replay cache is down), with a fresh nonce.
pub fn refusal(state: &AppState, endpoint: &'static str, e: DpopError) -> ApiError {
    let code = match e {
        DpopError::UseNonce => ErrorCode::UseDpopNonce,
        DpopError::Unavailable => ErrorCode::TemporarilyUnavailable,
        _ => ErrorCode::InvalidDpopProof,
    };
    let error = ApiError::new(endpoint, OAuthError::new(code, e.describe()).with_cause(e.code()))
        .dpop_nonce(state.sender.checker.nonce());
    if endpoint == "userinfo" { error.dpop_challenge(algs(state)) } else { error }
}
