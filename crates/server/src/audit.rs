//! The audit pipeline. Code anywhere emits an audit event as a `tracing` event with target
//! `portcullis::audit`; the fmt layer prints it with the rest of the log, and
//! [`AuditLayer`] turns it into an [`AuditEntry`] (its fields plus those of the request
//! span: method, path, remote address, request id) and queues it. A writer task appends
//! the queue to the store's hash chain in batches and, when configured, to a JSON-lines
//! file. Events are never written synchronously on the request path.
//!
//! The queue is bounded: when the store is down for long, new events are dropped from the
//! stored trail (counted, and still in the log) rather than growing memory without limit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::audit::{AuditChain, AuditEntry, AuditStore, EventFields};
use domain::clock::{Clock as _, SystemClock};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, watch};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// The `tracing` target of audit events.
pub const TARGET: &str = "portcullis::audit";

/// Fields that say whom an event is about, in order of preference (the record's `subject`).
const SUBJECT_FIELDS: [&str; 9] =
    ["user_id", "subject", "principal", "client_id", "key_id", "kid", "ip", "username_fp", "remote_addr"];

/// Most entries per append (one transaction).
const BATCH: usize = 4096;
/// How long the writer gathers events after the first of a batch: under load one
/// transaction per this interval (or per [`BATCH`] events) instead of one per handful of
/// events; it also bounds how late a quiet period's event reaches the store.
const LINGER: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuditConfig {
    /// Append audit events to the database's hash chain (`portcullis audit verify`).
    pub store: bool,
    /// Also append them to this file, one JSON object per line.
    pub file: Option<PathBuf>,
    /// Events waiting to be written, at most; beyond that (a long store outage) new events
    /// reach only the log.
    pub queue: usize,
    /// Event names kept out of the stored trail and the file (still logged, counted and
    /// seen by the detectors), e.g. `gateway.allowed` on a busy gateway.
    pub exclude: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { store: true, file: None, queue: 10_000, exclude: Vec::new() }
    }
}

/// Collects audit events into the queue. Lives in the global subscriber.
#[derive(Debug)]
pub struct AuditLayer {
    tx: mpsc::Sender<Queued>,
    dropped: Arc<AtomicU64>,
    /// Who runs this process, for events of CLI commands (`cli:<os user>`).
    actor: Option<String>,
}

/// The receiving end of the queue, until a writer takes it.
#[derive(Debug)]
pub struct AuditInbox {
    rx: mpsc::Receiver<Queued>,
    dropped: Arc<AtomicU64>,
}

/// The queue the subscriber feeds; [`start`] takes its inbox once a store is open.
static INBOX: Mutex<Option<AuditInbox>> = Mutex::new(None);
/// The detectors and webhook, once `serve` sets them ([`set_alerting`]).
static ALERTING: Mutex<Option<crate::alerts::Alerting>> = Mutex::new(None);
/// The running writer, for [`finish`].
static WRITER: Mutex<Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>> = Mutex::new(None);

/// A layer for the subscriber, its inbox parked for [`start`].
#[must_use]
pub fn layer(queue: usize, actor: Option<String>) -> AuditLayer {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let dropped = Arc::new(AtomicU64::new(0));
    if let Ok(mut slot) = INBOX.lock() {
        *slot = Some(AuditInbox { rx, dropped: dropped.clone() });
    }
    AuditLayer { tx, dropped, actor }
}

/// Span fields, kept in the span's extensions for the events inside it, as a list keyed by
/// the fields' static names; an audit event copies them into its [`Fields`].
struct SpanFields(Vec<(&'static str, Value)>);

/// An audit event's fields (its own and those of the spans it happened in), sorted by name,
/// each name once. Built without a map: the names are the fields' static names, so an
/// event costs no key strings and no map, and its stored text is serialized straight from
/// this list, names in order.
#[derive(Debug, Default)]
struct Fields(Vec<(&'static str, Value)>);

impl Fields {
    /// `gathered` in the order a map would have been filled: a later entry of a name
    /// replaces an earlier one.
    fn new(mut gathered: Vec<(&'static str, Value)>) -> Self {
        // A stable sort of the reversed list puts the latest of each name first; dedup
        // keeps the first of each run.
        gathered.reverse();
        gathered.sort_by_key(|(name, _)| *name);
        gathered.dedup_by_key(|(name, _)| *name);
        Self(gathered)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.0.binary_search_by_key(&name, |(n, _)| *n).ok()
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        Some(self.0.remove(self.position(name)?).1)
    }
}

impl EventFields for Fields {
    fn field(&self, name: &str) -> Option<&Value> {
        self.0.get(self.position(name)?).map(|(_, v)| v)
    }
}

impl serde::Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Records a span's or an event's fields as (name, value) pairs.
struct JsonVisitor<'a>(&'a mut Vec<(&'static str, Value)>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), Value::from(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name(), Value::from(format!("{value:?}"))));
    }
}

impl<S> tracing_subscriber::Layer<S> for AuditLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Vec::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        span.extensions_mut().insert(SpanFields(fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        let mut gathered = Vec::with_capacity(16);
        if let Some(actor) = &self.actor {
            // First, so that a field of the event or its span named `actor` wins.
            gathered.push(("actor", Value::from(actor.as_str())));
        }
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(f)) = span.extensions().get::<SpanFields>() {
                    gathered.extend(f.iter().cloned());
                }
            }
        }
        event.record(&mut JsonVisitor(&mut gathered));
        gathered.push(("level", Value::from(event.metadata().level().as_str())));
        let mut fields = Fields::new(gathered);
        let entry = entry_from(&mut fields);
        crate::metrics::audit_event(&entry.event, &fields);
        if self.tx.try_send(Queued { entry, fields }).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An event on its way to the writer: the record to store, and its fields (for the
/// detectors, which would otherwise parse every record's JSON again).
#[derive(Debug)]
struct Queued {
    entry: AuditEntry,
    fields: Fields,
}

/// The record of an event; takes `event` out of `fields`.
fn entry_from(fields: &mut Fields) -> AuditEntry {
    let event = match fields.take("event") {
        Some(Value::String(s)) => s,
        _ => "unnamed".to_owned(),
    };
    let subject = SUBJECT_FIELDS
        .iter()
        .find_map(|k| fields.field(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned));
    let text = serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_owned());
    AuditEntry { at_ms: SystemClock.now_micros() / 1000, event, subject, fields: text }
}

/// Starts the writer on the store (once per process; later calls do nothing).
pub fn start(config: &AuditConfig, store: Arc<dyn AuditStore>, chain: AuditChain) {
    let Some(inbox) = INBOX.lock().ok().and_then(|mut slot| slot.take()) else { return };
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = Writer {
        store: config.store.then_some(store),
        chain,
        file: config.file.clone(),
        exclude: config.exclude.clone(),
        dropped: inbox.dropped,
    };
    let handle = tokio::spawn(writer.run(inbox.rx, stop_rx));
    if let Ok(mut slot) = WRITER.lock() {
        *slot = Some((stop_tx, handle));
    }
}

/// Runs the anomaly detectors and the alert webhook on every event the writer takes.
pub fn set_alerting(alerting: crate::alerts::Alerting) {
    if let Ok(mut slot) = ALERTING.lock() {
        *slot = Some(alerting);
    }
}

/// Writes what is queued and stops the writer (at the end of a command or of `serve`);
/// waits at most `grace`.
pub async fn finish(grace: Duration) {
    let Some((stop, handle)) = WRITER.lock().ok().and_then(|mut slot| slot.take()) else { return };
    let _ = stop.send(true);
    if tokio::time::timeout(grace, handle).await.is_err() {
        tracing::warn!("audit events still queued at exit were not stored (the store did not answer in time)");
    }
}

struct Writer {
    store: Option<Arc<dyn AuditStore>>,
    chain: AuditChain,
    file: Option<PathBuf>,
    exclude: Vec<String>,
    dropped: Arc<AtomicU64>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<Queued>, mut stop: watch::Receiver<bool>) {
        let mut batch = Vec::new();
        let mut reported_drops = 0;
        loop {
            let stopping = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n == 0 || gather(&mut rx, &mut batch, &mut stop).await,
                _ = stop.changed() => true,
            };
            if stopping {
                // Everything still queued (the queue holds at most its capacity), not one
                // more batch: events queued before the stop are not to be lost.
                let whole_queue = BATCH + rx.max_capacity();
                drain(&mut rx, &mut batch, whole_queue);
            }
            if let Ok(mut slot) = ALERTING.lock()
                && let Some(alerting) = slot.as_mut()
            {
                for q in &batch {
                    alerting.observe(&q.entry, &q.fields);
                }
            }
            let kept: Vec<AuditEntry> =
                batch.drain(..).map(|q| q.entry).filter(|e| !self.exclude.contains(&e.event)).collect();
            self.write(&kept, stopping).await;
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > reported_drops {
                tracing::warn!(dropped = dropped - reported_drops, "audit queue full: events reached only the log");
                crate::metrics::audit_dropped(dropped - reported_drops);
                reported_drops = dropped;
            }
            if stopping {
                return;
            }
        }
    }

    /// Appends a batch, retrying while the store is down (the queue fills meanwhile) —
    /// except when stopping, where one attempt is all there is time for.
    async fn write(&self, batch: &[AuditEntry], stopping: bool) {
        if let Some(store) = &self.store {
            let mut delay = Duration::from_millis(250);
            loop {
                match store.append_audit(batch, &self.chain).await {
                    Ok(()) => break,
                    Err(e) if !stopping => {
                        tracing::warn!(error = %e, events = batch.len(), "audit events not stored yet; retrying");
                        crate::metrics::audit_write_error();
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, events = batch.len(), "audit events not stored at exit");
                        break;
                    }
                }
            }
        }
        if let Some(path) = &self.file
            && let Err(e) = append_lines(path, batch).await
        {
            tracing::warn!(path = %path.display(), error = %e, "audit file not written");
        }
    }
}

/// Waits out [`LINGER`] (or the stop signal), then adds what is queued to `batch`, up to
/// [`BATCH`]; whether to stop. Sleeping through the linger rather than receiving as
/// events arrive: a task waiting on the queue is woken by every send, which at thousands of
/// events a second is one task wake-up (and often a thread wake-up) per event. The queue
/// holds what arrives meanwhile (10,000 by default: 20 ms at 500k events/s).
async fn gather(rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>, stop: &mut watch::Receiver<bool>) -> bool {
    let stopped = tokio::select! {
        _ = stop.changed() => true,
        () = tokio::time::sleep(LINGER) => false,
    };
    drain(rx, batch, BATCH) || stopped
}

/// Moves what is queued now into `batch`, until it holds `up_to`; whether the queue is
/// closed (every sender gone).
fn drain(rx: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>, up_to: usize) -> bool {
    while batch.len() < up_to {
        match rx.try_recv() {
            Ok(e) => batch.push(e),
            Err(mpsc::error::TryRecvError::Empty) => return false,
            Err(mpsc::error::TryRecvError::Disconnected) => return true,
        }
    }
    false
}

async fn append_lines(path: &std::path::Path, batch: &[AuditEntry]) -> std::io::Result<()> {
    let mut text = String::new();
    for e in batch {
        let fields: Value = serde_json::from_str(&e.fields).unwrap_or(Value::Null);
        let line = serde_json::json!({ "at_ms": e.at_ms, "event": e.event, "subject": e.subject, "fields": fields });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
    file.write_all(text.as_bytes()).await?;
    file.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&'static str, &str)]) -> Fields {
        Fields::new(pairs.iter().map(|(k, v)| (*k, Value::from(*v))).collect())
    }

    #[test]
    fn the_subject_is_the_most_specific_identity_field() {
        let base = [("event", "login.failed"), ("remote_addr", "10.0.0.1"), ("username_fp", "ab12")];
        let e = entry_from(&mut fields(&base));
        assert_eq!((e.event.as_str(), e.subject.as_deref()), ("login.failed", Some("ab12")));
        let mut f = fields(&[base.as_slice(), &[("user_id", "u-1"), ("client_id", "c-1")]].concat());
        assert_eq!(entry_from(&mut f).subject.as_deref(), Some("u-1"));
        assert!(f.field("event").is_none(), "the name is the record's, not a field");
        let e = entry_from(&mut Fields::default());
        assert_eq!((e.event.as_str(), e.subject, e.fields.as_str()), ("unnamed", None, "{}"));
    }

    fn queued(n: i64) -> Queued {
        let entry = AuditEntry { at_ms: n, event: "token.issued".into(), subject: None, fields: "{}".into() };
        Queued { entry, fields: Fields::default() }
    }

    #[tokio::test]
    async fn the_writer_takes_what_queued_during_its_linger_and_stops_on_the_signal() {
        let (tx, mut rx) = mpsc::channel(16);
        let (stop_tx, mut stop) = watch::channel(false);
        for n in 0..5 {
            tx.try_send(queued(n)).unwrap();
        }
        let mut batch = Vec::new();
        assert!(!gather(&mut rx, &mut batch, &mut stop).await, "the linger ended, not the writer");
        assert_eq!(batch.iter().map(|q| q.entry.at_ms).collect::<Vec<_>>(), [0, 1, 2, 3, 4], "all, in order");
        for n in 5..10 {
            tx.try_send(queued(n)).unwrap();
        }
        let mut two = Vec::new();
        assert!(!drain(&mut rx, &mut two, 2));
        assert_eq!(two.len(), 2, "a batch holds at most what it is given room for");
        stop_tx.send(true).unwrap();
        assert!(gather(&mut rx, &mut batch, &mut stop).await, "the stop signal ends the linger");
        assert_eq!(batch.len(), 8, "what was queued is still taken");
        drop(tx);
        assert!(drain(&mut rx, &mut Vec::new(), 10), "a closed queue is reported");
    }

    /// At the stop, a queue fuller than any fixed batch multiple is written whole.
    #[tokio::test]
    async fn the_writer_stores_the_whole_queue_when_stopped() {
        const QUEUED: usize = 20_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let writer = Writer {
            store: None,
            chain: AuditChain::from_secret(b"test"),
            file: Some(path.clone()),
            exclude: Vec::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        let (tx, rx) = mpsc::channel(QUEUED);
        for n in 0..QUEUED {
            tx.try_send(queued(i64::try_from(n).unwrap())).unwrap();
        }
        let (stop_tx, stop) = watch::channel(false);
        stop_tx.send(true).unwrap();
        writer.run(rx, stop).await;
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, QUEUED, "every queued event written before the writer ends");
    }

    #[test]
    fn the_stored_text_is_what_a_json_map_would_hold() {
        // Span fields, then the event's: a later name replaces an earlier one, as in a
        // `serde_json::Map` filled the same way; the text lists the names in order.
        let gathered = [
            ("actor", "cli:root"),
            ("path", "/api"),
            ("method", "GET"),
            ("event", "gateway.allowed"),
            ("subject", "svc"),
            ("path", "/api/items"),
            ("actor", "admin"),
            ("level", "INFO"),
        ];
        let mut map = serde_json::Map::new();
        for (k, v) in gathered {
            map.insert(k.to_owned(), Value::from(v));
        }
        map.remove("event");
        let mut f = fields(&gathered);
        assert_eq!(f.field("path"), Some(&Value::from("/api/items")));
        assert_eq!(f.field("actor"), Some(&Value::from("admin")));
        assert_eq!(f.field("nothing"), None);
        let e = entry_from(&mut f);
        assert_eq!(serde_json::from_str::<Value>(&e.fields).unwrap(), Value::Object(map));
        assert_eq!(e.fields, r#"{"actor":"admin","level":"INFO","method":"GET","path":"/api/items","subject":"svc"}"#);
    }
}
