//! Storage adapters for the Portcullis ports: SQLite (the embedded default), the in-memory
//! and Redis rate limiters; PostgreSQL to follow. Every adapter passes the same conformance
//! suite ([`conformance`], [`limiter_conformance`]).

pub mod conformance;
pub mod limiter_conformance;
pub mod memory_limiter;
pub mod redis_limiter;
pub mod sqlite;
mod sqlite_bans;
mod sqlite_users;

pub use memory_limiter::MemoryLimiter;
pub use redis_limiter::{FailMode, RedisLimiter};
pub use sqlite::SqliteStore;
