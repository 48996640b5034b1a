//! Optional OpenTelemetry trace export (`log.otlp_endpoint`): each request span — `request`
//! on the authorization server, `gateway` on the gateway — is sent as an OTLP span over
//! HTTP/JSON (`POST …/v1/traces`), with the W3C trace context the span was opened with
//! (continued from the caller's `traceparent`; the gateway passes its own span to the
//! upstream as parent, so one trace spans client → gateway → upstream). Spans are queued
//! (bounded; full → dropped and counted) and sent in batches once a second by a task; the
//! request path never waits for the collector.

use std::sync::Mutex;
use std::time::Duration;

use domain::clock::{Clock as _, SystemClock};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Spans waiting for the exporter, at most.
const QUEUE: usize = 8192;
/// Spans per POST, at most.
const BATCH: usize = 512;
/// The spans exported: one per request.
const EXPORTED: [&str; 2] = ["request", "gateway"];

/// Collects finished request spans. Lives in the global subscriber.
#[derive(Debug)]
pub struct OtlpLayer {
    tx: mpsc::Sender<Value>,
}

/// The queue's receiving end until `start` takes it.
static INBOX: Mutex<Option<mpsc::Receiver<Value>>> = Mutex::new(None);

#[must_use]
pub fn layer() -> OtlpLayer {
    let (tx, rx) = mpsc::channel(QUEUE);
    if let Ok(mut slot) = INBOX.lock() {
        *slot = Some(rx);
    }
    OtlpLayer { tx }
}

/// Starts the exporter (once; `serve` calls it when `log.otlp_endpoint` is set).
pub fn start(endpoint: String, service: String) -> Option<tokio::task::JoinHandle<()>> {
    let rx = INBOX.lock().ok().and_then(|mut slot| slot.take())?;
    Some(tokio::spawn(export(rx, endpoint, service)))
}

/// A span being recorded: its start and its fields.
struct Open {
    start_ns: i64,
    fields: Vec<(String, String)>,
}

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.retain(|(k, _)| k != field.name());
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

fn now_ns() -> i64 {
    SystemClock.now_micros().saturating_mul(1000)
}

impl<S> tracing_subscriber::Layer<S> for OtlpLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !EXPORTED.contains(&attrs.metadata().name()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Vec::new();
        attrs.record(&mut Fields(&mut fields));
        span.extensions_mut().insert(Open { start_ns: now_ns(), fields });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(open) = span.extensions_mut().get_mut::<Open>() {
            values.record(&mut Fields(&mut open.fields));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(open) = span.extensions_mut().remove::<Open>() else { return };
        if let Some(otlp) = to_otlp(span.name(), open, now_ns()) {
            let _ = self.tx.try_send(otlp);
        }
    }
}

/// The OTLP/JSON form of a closed span; `None` without trace ids.
fn to_otlp(name: &str, open: Open, end_ns: i64) -> Option<Value> {
    let get = |k: &str| open.fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
    let (trace_id, span_id) = (get("trace_id")?.to_owned(), get("span_id")?.to_owned());
    let parent = get("parent_id").unwrap_or_default().to_owned();
    // Semantic-convention names where one exists.
    let attributes: Vec<Value> = open
        .fields
        .iter()
        .filter(|(k, v)| !matches!(k.as_str(), "trace_id" | "span_id" | "parent_id") && !v.is_empty())
        .map(|(k, v)| {
            let key = match k.as_str() {
                "method" => "http.request.method",
                "path" => "url.path",
                "remote_addr" => "client.address",
                "route" => "http.route",
                "status" => "http.response.status_code",
                other => other,
            };
            json!({ "key": key, "value": { "stringValue": v } })
        })
        .collect();
    let error = get("status").and_then(|s| s.parse::<u16>().ok()).is_some_and(|s| s >= 500);
    Some(json!({
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 2,
        "startTimeUnixNano": open.start_ns.to_string(),
        "endTimeUnixNano": end_ns.to_string(),
        "attributes": attributes,
        "status": { "code": if error { 2 } else { 0 } },
    }))
}

async fn export(mut rx: mpsc::Receiver<Value>, endpoint: String, service: String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut spans = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut spans, BATCH).await > 0 {
        let body = json!({ "resourceSpans": [{
            "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service } }] },
            "scopeSpans": [{ "scope": { "name": "portcullis", "version": env!("CARGO_PKG_VERSION") }, "spans": spans }]
        }]});
        let sent = http.post(&endpoint).json(&body).send().await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = r.status().as_u16(), "trace export refused by the collector"),
            Err(e) => tracing::warn!(cause = %e, "trace export failed"),
        }
        spans.clear();
        // At most one POST a second: batches fill while we wait.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_becomes_an_otlp_span_with_its_trace_context() {
        let open = Open {
            start_ns: 10,
            fields: vec![
                ("trace_id".into(), "4bf92f3577b34da6a3ce929d0e0e4736".into()),
                ("span_id".into(), "00f067aa0ba902b7".into()),
                ("parent_id".into(), String::new()),
                ("route".into(), "invoices".into()),
                ("status".into(), "502".into()),
            ],
        };
        let span = to_otlp("gateway", open, 20).unwrap();
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["parentSpanId"], "");
        assert_eq!(span["status"]["code"], 2, "a 5xx is an error span");
        assert_eq!(span["attributes"][0]["key"], "http.route");
        assert!(to_otlp("gateway", Open { start_ns: 0, fields: Vec::new() }, 1).is_none());
    }
}
