//! The `portcullis` binary's library half: CLI, configuration loading, wiring, listeners,
//! telemetry and graceful shutdown. The only crate that reads files, the environment or argv.

pub mod admin;
pub mod admin_api;
pub mod admin_openapi;
pub mod admin_writes;
pub mod alerts;
pub mod apikey_cli;
pub mod app;
pub mod audit;
pub mod audit_cli;
pub mod authz;
pub mod background;
pub mod ban_cli;
pub mod cli;
pub mod config;
pub mod database;
pub mod dpop;
pub mod incident_cli;
pub mod master_key;
pub mod metrics;
pub mod ops;
pub mod otlp;
pub mod protection;
pub mod telemetry;
pub mod transport;
pub mod user_cli;
