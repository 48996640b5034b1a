//! Logging: structured JSON (one object per event, request-span fields flattened in) or
//! pretty text on a terminal, filtered by `log.level`; and, beside it with a filter of its
//! own, the audit layer that queues every `portcullis::audit` event for the stored trail
//! (so `log.level = "warn"` quiets the log, never the audit trail). Nothing logged anywhere
//! may contain a secret or a full token; the e2e suite captures a run's output and checks.

use std::io::IsTerminal as _;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, Registry};

use crate::audit::AuditLayer;
use crate::config::{LogConfig, LogFormat};

/// Where the log goes: the server logs to stdout; CLI commands to stderr, so that their
/// own output (a client secret shown once) stays clean for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
}

type BoxedLayer = Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>;

pub fn init(config: &LogConfig, sink: Sink, audit: Option<AuditLayer>, otlp: Option<crate::otlp::OtlpLayer>) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => match sink {
            Sink::Stdout => !std::io::stdout().is_terminal(),
            Sink::Stderr => !std::io::stderr().is_terminal(),
        },
    };
    let builder = tracing_subscriber::fmt::layer().with_target(true);
    let log: BoxedLayer = match (json, sink) {
        (true, Sink::Stdout) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .boxed(),
        (true, Sink::Stderr) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        (false, Sink::Stdout) => builder.with_writer(std::io::stdout).boxed(),
        (false, Sink::Stderr) => builder.with_writer(std::io::stderr).boxed(),
    };
    // Audit events, and the info-level spans around them (request id, remote address).
    let audit = audit.map(|a| {
        a.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            if m.is_span() { *m.level() <= tracing::Level::INFO } else { m.target() == crate::audit::TARGET }
        }))
    });
    // Trace export: the request spans only.
    let otlp = otlp.map(|o| {
        o.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.is_span() && matches!(m.name(), "request" | "gateway")
        }))
    });
    // A second init (tests calling in-process twice) is harmless: keep the first.
    let _ = tracing_subscriber::registry().with(log.with_filter(filter)).with(audit).with(otlp).try_init();
}
