//! Per-request tracing span: every event logged while handling a request carries the
//! remote address, method, path and a request id, so audit events need not repeat them;
//! and W3C trace context (continued from the caller's `traceparent`) for trace export.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

pub async fn request_span(req: Request, next: Next) -> Response {
    let remote = crate::limits::client_ip(&req).map(|ip| ip.to_string()).unwrap_or_default();
    let trace =
        domain::trace::TraceContext::from_header(req.headers().get("traceparent").and_then(|v| v.to_str().ok()));
    let request_id = domain::secret::random_token(8);
    // `&str` fields: recorded as they are, not through a formatter.
    let span = tracing::info_span!(
        "request",
        method = req.method().as_str(),
        path = req.uri().path(),
        remote_addr = remote.as_str(),
        request_id = request_id.as_str(),
        trace_id = trace.trace_id.as_str(),
        span_id = trace.span_id.as_str(),
        parent_id = trace.parent_id.as_deref().unwrap_or_default(),
        status = tracing::field::Empty,
    );
    let response = async move { next.run(req).await }.instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    tracing::debug!(parent: &span, status = response.status().as_u16(), "request finished");
    response
}
