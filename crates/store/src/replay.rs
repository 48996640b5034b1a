//! The DPoP proof-replay cache (RFC 9449 §11.1): in memory for one instance, in Redis
//! (`SET key 1 NX EXAT until`) when several instances must refuse each other's replays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use domain::StoreError;
use domain::clock::{Clock, UnixTime};
use domain::dpop::ReplayCache;
use redis::aio::ConnectionManager;

/// One process's memory of the proofs it has seen. Entries leave when their proof could
/// no longer be accepted anyway; past `max_entries` live ones, new proofs are refused
/// (fail closed: a cache that forgot would accept a replay).
#[derive(Debug)]
pub struct MemoryReplayCache {
    seen: Mutex<Seen>,
    max_entries: usize,
    clock: Arc<dyn Clock>,
}

impl MemoryReplayCache {
    #[must_use]
    pub fn new(max_entries: usize, clock: Arc<dyn Clock>) -> Self {
        Self { seen: Mutex::new(Seen::default()), max_entries: max_entries.max(1), clock }
    }
}

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn first_use(&self, key: &str, until: UnixTime) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut seen = self.seen.lock().map_err(|_| StoreError::Unavailable("replay cache lock poisoned".into()))?;
        if seen.until.get(key).is_some_and(|t| *t >= now) {
            return Ok(false);
        }
        if seen.until.len() >= self.max_entries {
            // A full sweep at most once a second: when the cache is full of live proofs,
            // refusing must not cost a scan of a million entries per request.
            if now > seen.swept_at {
                seen.until.retain(|_, t| *t >= now);
                seen.swept_at = now;
            }
            if seen.until.len() >= self.max_entries {
                return Err(StoreError::Unavailable("replay cache full".into()));
            }
        }
        seen.until.insert(key.to_owned(), until);
        Ok(true)
    }
}

/// Proofs seen, each until its proof could no longer be accepted, and when expired entries
/// were last swept out.
#[derive(Debug, Default)]
struct Seen {
    until: HashMap<String, UnixTime>,
    swept_at: UnixTime,
}

/// The replay cache every instance shares through Redis.
#[derive(Debug)]
pub struct RedisReplayCache {
    manager: ConnectionManager,
    prefix: String,
}

impl RedisReplayCache {
    /// Connects lazily, like the limiter.
    ///
    /// # Errors
    /// A bad URL, or no Tokio runtime.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        tokio::runtime::Handle::try_current().map_err(|_| "the Redis replay cache needs a Tokio runtime".to_owned())?;
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        let manager = crate::redis_limiter::lazy_manager(client, timeout)?;
        Ok(Self { manager, prefix: format!("{prefix}dpop:") })
    }
}

#[async_trait]
impl ReplayCache for RedisReplayCache {
    async fn first_use(&self, key: &str, until: UnixTime) -> Result<bool, StoreError> {
        let started = std::time::Instant::now();
        let mut conn = self.manager.clone();
        let stored: Result<Option<String>, _> = redis::cmd("SET")
            .arg(format!("{}{key}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("EXAT")
            .arg(until.max(1))
            .query_async(&mut conn)
            .await;
        let outcome = if stored.is_ok() { "ok" } else { "error" };
        metrics::histogram!("portcullis_redis_duration_seconds", "op" => "dpop_replay", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        stored.map(|s| s.is_some()).map_err(|e| StoreError::Unavailable(format!("redis: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::clock::FixedClock;

    #[tokio::test]
    async fn once_until_expiry_and_full_fails_closed() {
        let clock = Arc::new(FixedClock::new(1_000));
        let cache = MemoryReplayCache::new(2, clock.clone());
        assert!(cache.first_use("a", 1_060).await.unwrap());
        assert!(!cache.first_use("a", 1_060).await.unwrap());
        assert!(cache.first_use("b", 1_010).await.unwrap());
        // Full of live entries: refuse rather than forget one.
        assert!(cache.first_use("c", 1_060).await.is_err());
        clock.set(1_011);
        // One sweep a second at most; this one (a new second) frees "b".
        // "b" expired and makes room; "a" is still remembered.
        assert!(cache.first_use("c", 1_060).await.unwrap());
        assert!(!cache.first_use("a", 1_060).await.unwrap());
    }
}
