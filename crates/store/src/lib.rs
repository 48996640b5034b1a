//! Storage adapters for the Portcullis ports: SQLite (the embedded default) and PostgreSQL
//! (many instances) — one port implementation for both, see [`sql`] — the in-memory and
//! Redis rate limiters, and the Redis bus that tells every instance about revocations.
//! Every adapter passes the same conformance suite ([`conformance`],
//! [`limiter_conformance`]).

pub mod conformance;
pub mod limiter_conformance;
pub mod memory_limiter;
pub mod postgres;
pub mod redis_bus;
pub mod redis_limiter;
pub mod redis_throttle;
pub mod replay;
pub mod sql;
pub mod sqlite;

pub use memory_limiter::MemoryLimiter;
pub use postgres::{PgSettings, PgStore};
pub use redis_bus::RedisBus;
pub use redis_limiter::{FailMode, RedisLimiter};
pub use redis_throttle::RedisThrottle;
pub use replay::{MemoryReplayCache, RedisReplayCache};
pub use sql::SqlStore;
pub use sqlite::SqliteStore;
