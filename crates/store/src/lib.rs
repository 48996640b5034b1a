//! Storage adapters for the Portcullis ports: SQLite (the embedded default) now, PostgreSQL
//! and Redis to follow. Every adapter passes the same conformance suite ([`conformance`]).

pub mod conformance;
pub mod sqlite;
mod sqlite_users;

pub use sqlite::SqliteStore;
