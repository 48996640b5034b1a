//! Prometheus metrics, served at `/metrics` on the admin listener. Security counters are
//! derived from the audit events in one place ([`audit_event`]), so a metric and the audit
//! trail can never disagree about what happened; HTTP, upstream and JWKS metrics are
//! recorded where the work is done (the gateway crate records its own through the
//! `metrics` facade). Names follow the Prometheus conventions: `portcullis_` prefix,
//! `_total` counters, `_seconds` histograms, base units.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use domain::audit::EventFields;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::Value;

/// Latency buckets (seconds): 0.5 ms … 10 s.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Installs the process-wide recorder (the first call; later ones return `None`).
#[must_use]
pub fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    describe();
    Some(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_histogram};
    describe_counter!("portcullis_http_requests_total", "Authorization-server requests by route and status");
    describe_histogram!("portcullis_http_request_duration_seconds", "Authorization-server request latency");
    describe_counter!("portcullis_gateway_requests_total", "Gateway requests by route and status");
    describe_histogram!("portcullis_gateway_request_duration_seconds", "Gateway request latency, upstream included");
    describe_histogram!("portcullis_upstream_duration_seconds", "Upstream latency by route and outcome");
    describe_counter!("portcullis_jwks_refreshes_total", "JWKS fetches of external issuers by result");
    describe_counter!("portcullis_tokens_issued_total", "Access tokens issued, by grant");
    describe_counter!("portcullis_auth_failures_total", "Authentication failures by kind and reason");
    describe_counter!("portcullis_authz_denied_total", "Requests denied by scope, role or policy");
    describe_counter!("portcullis_rate_limited_total", "Requests refused by a rate limit, by rule");
    describe_counter!("portcullis_bans_total", "IP bans imposed");
    describe_counter!("portcullis_banned_requests_total", "Requests refused because their address is banned");
    describe_counter!("portcullis_refresh_token_reuse_total", "Refresh tokens presented again (family revoked)");
    describe_counter!("portcullis_alerts_total", "Alert events by event name");
    describe_counter!("portcullis_audit_events_total", "Audit events by event name");
    describe_counter!("portcullis_audit_dropped_total", "Audit events that reached only the log (queue full)");
    describe_counter!("portcullis_store_errors_total", "Store errors by kind (conflicts decide races)");
    describe_histogram!("portcullis_store_ping_seconds", "Latency of the store probe, every 5 s");
    metrics::describe_gauge!("portcullis_store_up", "1 when the last store probe answered, else 0");
    describe_histogram!("portcullis_redis_duration_seconds", "Redis round trips by operation and outcome");
    describe_counter!("portcullis_redis_errors_total", "Redis operations that failed, by operation");
    describe_counter!("portcullis_audit_write_errors_total", "Audit batches the store refused (retried)");
}

fn field(fields: &dyn EventFields, name: &str) -> String {
    match fields.field(name) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// The counters one audit event moves.
pub fn audit_event(event: &str, fields: &dyn EventFields) {
    use metrics::counter;
    counter!("portcullis_audit_events_total", "event" => event.to_owned()).increment(1);
    if fields.is_alert() {
        counter!("portcullis_alerts_total", "event" => event.to_owned()).increment(1);
    }
    match event {
        "token.issued" | "token.refreshed" => {
            counter!("portcullis_tokens_issued_total", "grant" => field(fields, "grant")).increment(1);
        }
        "login.failed" => {
            counter!("portcullis_auth_failures_total", "kind" => "password", "reason" => field(fields, "reason"))
                .increment(1);
        }
        "token.refused" | "request.refused" if field(fields, "error") == "invalid_client" => {
            counter!("portcullis_auth_failures_total", "kind" => "client", "reason" => "invalid_client").increment(1);
        }
        "token.refused" if fields.field("reason").is_some() => {
            counter!("portcullis_auth_failures_total", "kind" => "token", "reason" => field(fields, "reason"))
                .increment(1);
        }
        "gateway.denied" if field(fields, "status") == "403" => {
            counter!("portcullis_authz_denied_total", "reason" => field(fields, "reason")).increment(1);
        }
        "gateway.denied" => {
            counter!("portcullis_auth_failures_total", "kind" => "gateway", "reason" => field(fields, "reason"))
                .increment(1);
        }
        "authz.denied" => counter!("portcullis_authz_denied_total", "reason" => "policy").increment(1),
        "ratelimit.limited" => counter!("portcullis_rate_limited_total", "rule" => field(fields, "rule")).increment(1),
        "ban.created" => counter!("portcullis_bans_total", "reason" => field(fields, "reason")).increment(1),
        "ban.refused" => counter!("portcullis_banned_requests_total").increment(1),
        "token.refresh_reuse" => counter!("portcullis_refresh_token_reuse_total").increment(1),
        _ => {}
    }
}

pub fn audit_dropped(n: u64) {
    metrics::counter!("portcullis_audit_dropped_total").increment(n);
}

pub fn audit_write_error() {
    metrics::counter!("portcullis_audit_write_errors_total").increment(1);
}

/// Middleware for the authorization server's router: requests by matched route (never the
/// raw path, which an attacker could vary without limit) and status, and latency.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics::histogram!("portcullis_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "portcullis_http_requests_total",
        "route" => route,
        "status" => response.status().as_str().to_owned()
    )
    .increment(1);
    response
}
