//! Storage integration tests: the conformance suites on every backend available here.
//! SQLite and the in-memory limiter always; Redis when `PORTCULLIS_TEST_REDIS_URL` is set
//! and PostgreSQL when `PORTCULLIS_TEST_POSTGRES_URL` is.

#![allow(clippy::unwrap_used, reason = "tests: a failed set-up is the failure")]

mod abuse;
mod limiter;
mod postgres;
mod sqlite;
mod throttle;
