//! Logging: structured JSON (one object per event, request-span fields flattened in) or
//! pretty text on a terminal. Nothing logged anywhere may contain a secret or a full token;
//! the e2e suite captures a run's output and checks that.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Where the log goes: the server logs to stdout; CLI commands to stderr, so that their
/// own output (a client secret shown once) stays clean for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Stdout,
    Stderr,
}

pub fn init(config: &LogConfig, sink: Sink) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => match sink {
            Sink::Stdout => !std::io::stdout().is_terminal(),
            Sink::Stderr => !std::io::stderr().is_terminal(),
        },
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true);
    // A second init (tests calling in-process twice) is harmless: keep the first.
    let _ = match (json, sink) {
        (true, Sink::Stdout) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .try_init(),
        (true, Sink::Stderr) => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .try_init(),
        (false, Sink::Stdout) => builder.with_writer(std::io::stdout).try_init(),
        (false, Sink::Stderr) => builder.with_writer(std::io::stderr).try_init(),
    };
}
