//! End-to-end tests: the real `portcullis` binary on 127.0.0.1:0, driven over HTTP by
//! independent client libraries. One test binary (one link) with a module per area.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::too_many_lines,
    reason = "tests: long lists of cases read best in one place"
)]

mod admin_api;
mod alerts;
mod apikeys;
mod audit;
mod bad_input;
mod bff;
mod browser;
mod cli;
mod cluster;
mod dpop;
mod external_issuer;
mod flow;
mod gateway;
mod harness;
mod incident;
mod keys_cli;
mod logs;
mod mtls;
mod oidc;
mod policies;
mod ratelimit;
mod rotation;
mod signin_clock;
mod signin_rejections;
mod tls;
mod traces;
mod upstream;
mod webdriver;
