//! The admin listener: operations endpoints that must never share the public listener:
//! `/metrics` (Prometheus text format), `/health`, and the admin API (`/admin/…`, bearer
//! tokens with the admin scope; see `admin_api`). Bind it to a private address (loopback
//! by default); it is plain HTTP, and `/metrics` and `/health` need no token.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// Serve the admin listener at all.
    pub enabled: bool,
    /// Its address: keep it private (loopback, or a network only operators reach).
    pub listen: SocketAddr,
    /// The admin API's tokens must carry this audience …
    pub audience: String,
    /// … and this scope (every operation) …
    pub scope: String,
    /// … or this one (GET only).
    pub read_scope: String,
    /// Let the Cedar policies of `authorization.policies_dir` decide every admin call
    /// instead of the two scopes: principal the token's subject (roles, scopes, groups),
    /// action the HTTP method, resource `Route::"portcullis-admin"` with the call's path
    /// and its parameters (`id`, `username`, `kid`, `ip`, `client_id`). Default deny.
    pub policies: bool,
    /// With this CA file the admin listener speaks TLS (the `[tls]` certificate) and
    /// requires a client certificate issued by this CA, besides the token.
    pub client_ca_file: Option<std::path::PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            audience: "portcullis-admin".into(),
            scope: "portcullis:admin".into(),
            read_scope: "portcullis:admin:read".into(),
            policies: false,
            client_ca_file: None,
        }
    }
}

impl AdminConfig {
    /// Problems `config check` reports.
    #[must_use]
    pub fn problems(&self, tls: bool, policies_dir: bool) -> Vec<String> {
        let mut problems = Vec::new();
        if self.policies && !policies_dir {
            problems.push("admin.policies needs authorization.policies_dir (the policies that decide)".to_owned());
        }
        if self.client_ca_file.is_some() && !tls {
            problems.push("admin.client_ca_file needs TLS ([tls] cert_file and key_file)".to_owned());
        }
        if self.scope.is_empty() || self.audience.is_empty() {
            problems.push("admin.scope and admin.audience must not be empty".to_owned());
        }
        problems
    }
}

/// The admin routes. `metrics` is `None` when another recorder already owns the process
/// (only in-process tests): `/metrics` then answers 404.
pub fn router(metrics: Option<PrometheusHandle>, api: std::sync::Arc<crate::admin_api::AdminApi>) -> Router {
    let router = Router::new().route("/health", get(|| async { "ok" })).merge(crate::admin_api::router(api));
    match metrics {
        Some(handle) => router.route(
            "/metrics",
            get(move || {
                let body = handle.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body) }
            }),
        ),
        None => router.route("/metrics", get(|| async { StatusCode::NOT_FOUND.into_response() })),
    }
}

/// The exporter keeps histogram samples until rendered; render (and so drain) them now and
/// then even when nobody scrapes, so memory stays bounded.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_policies_need_a_policy_directory() {
        let config = AdminConfig { policies: true, ..AdminConfig::default() };
        assert!(config.problems(false, false).iter().any(|p| p.contains("authorization.policies_dir")));
        assert!(config.problems(false, true).is_empty());
        assert!(AdminConfig::default().problems(false, false).is_empty());
    }
}
