//! The in-memory [`RateLimiter`]: the default on one node, and the local fallback of the
//! Redis limiter when it fails open.
//!
//! Keys are spread over shards, each a mutex around a map key → TAT. A check locks the
//! shards of its counters in ascending order (no deadlock), so it is atomic over all of
//! them. Memory is bounded: a shard that reaches its share of `max_keys` first forgets its
//! idle keys (TAT in the past — forgetting them changes no answer), and if every key is
//! busy, the tenth whose TAT is nearest (the least state lost). A flood of distinct IPs
//! therefore costs a bounded map, never all of RAM.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use domain::clock::UnixMicros;
use domain::ratelimit::{Counter, Decision, LimiterError, RateLimiter};

const SHARDS: usize = 64;

type Shard = HashMap<Box<str>, UnixMicros>;

#[derive(Debug)]
pub struct MemoryLimiter {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: RandomState,
}

impl MemoryLimiter {
    /// A limiter that remembers at most about `max_keys` keys.
    #[must_use]
    pub fn new(max_keys: usize) -> Self {
        let per_shard = max_keys.div_ceil(SHARDS).max(16);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard,
            hasher: RandomState::new(),
        }
    }

    /// Keys currently remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map_or(0, |m| m.len())).sum()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys this limiter keeps.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    fn shard_of(&self, key: &str) -> usize {
        // `usize` from `u64` keeps the low bits, which is all the modulo needs.
        #[expect(clippy::cast_possible_truncation, reason = "only the low bits select a shard")]
        let h = self.hasher.hash_one(key) as usize;
        h % SHARDS
    }

    /// The synchronous check (the port's `check` only wraps it).
    ///
    /// # Errors
    /// Never in practice; a poisoned shard answers `Unavailable` rather than guessing.
    pub fn check_now(&self, now: UnixMicros, counters: &[Counter]) -> Result<Decision, LimiterError> {
        let poisoned = || LimiterError::Unavailable("an in-memory limiter shard is poisoned".into());
        let indices: Vec<usize> = counters.iter().map(|c| self.shard_of(&c.key)).collect();
        let mut order = indices.clone();
        order.sort_unstable();
        order.dedup();
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> = Vec::with_capacity(order.len());
        for i in order {
            let shard = self.shards.get(i).ok_or_else(poisoned)?;
            guards.push((i, shard.lock().map_err(|_| poisoned())?));
        }
        let find = |guards: &Vec<(usize, MutexGuard<'_, _>)>, i: usize| guards.iter().position(|(j, _)| *j == i);
        let tats: Vec<Option<UnixMicros>> = counters
            .iter()
            .zip(&indices)
            .map(|(c, i)| {
                find(&guards, *i).and_then(|g| guards.get(g)).and_then(|(_, map)| map.get(c.key.as_str()).copied())
            })
            .collect();
        let (decision, new_tats) = Decision::evaluate(&tats, now, counters);
        if decision.allowed {
            for ((counter, i), tat) in counters.iter().zip(&indices).zip(new_tats) {
                let Some((_, map)) = find(&guards, *i).and_then(|g| guards.get_mut(g)) else {
                    return Err(poisoned());
                };
                if let Some(slot) = map.get_mut(counter.key.as_str()) {
                    *slot = tat;
                } else {
                    if map.len() >= self.per_shard {
                        evict(map, now);
                    }
                    map.insert(counter.key.as_str().into(), tat);
                }
            }
        }
        Ok(decision)
    }
}

/// Makes room in a full shard: idle keys first, then the tenth with the nearest TAT.
fn evict(map: &mut Shard, now: UnixMicros) {
    let before = map.len();
    map.retain(|_, tat| *tat > now);
    if !map.is_empty() && map.len() * 10 > before * 9 {
        let mut tats: Vec<UnixMicros> = map.values().copied().collect();
        let cut = tats.len() / 10;
        let threshold = *tats.select_nth_unstable(cut).1;
        {
            let mut budget = cut.max(1);
            map.retain(|_, tat| {
                if budget > 0 && *tat <= threshold {
                    budget -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryLimiter {
    async fn check(&self, now: UnixMicros, counters: &[Counter]) -> Result<Decision, LimiterError> {
        self.check_now(now, counters)
    }
}
