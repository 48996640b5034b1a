//! Per-request tracing span: every event logged while handling a request carries the
//! remote address, method, path and a request id, so audit events need not repeat them.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;

pub async fn request_span(req: Request, next: Next) -> Response {
    let remote = crate::limits::client_ip(&req).map(|ip| ip.to_string()).unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        remote_addr = %remote,
        request_id = %domain::secret::random_token(8),
    );
    async move {
        let response = next.run(req).await;
        tracing::debug!(status = response.status().as_u16(), "request finished");
        response
    }
    .instrument(span)
    .await
}
