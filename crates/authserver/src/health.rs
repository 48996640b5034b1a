//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the store answers
//! and a signing key is loaded).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::wire::problem;

pub async fn get_healthz() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))).into_response()
}

pub async fn get_readyz(State(state): State<Arc<AppState>>) -> Response {
    if let Err(err) = state.health.ping().await {
        tracing::warn!(event = "readiness.failed", cause = %err, "store is not reachable");
        return problem(StatusCode::SERVICE_UNAVAILABLE, "Not ready", "the store is not reachable");
    }
    if state.tokens.keys().snapshot().signing().is_none() {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "Not ready", "no signing key is loaded");
    }
    (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"}))).into_response()
}
