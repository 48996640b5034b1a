//! Login throttling (OWASP Authentication Cheat Sheet, "account lockout"): failures are
//! counted per account name and per source IP; past a free allowance each further failure
//! locks the key for an exponentially growing time, capped. Keys are counted whether or not
//! the account exists, so a lockout never tells an attacker which accounts are real.
//! The counters live behind the [`Throttle`] port: in this process ([`LoginThrottle`],
//! bounded) or in Redis (`store::RedisThrottle`), so that several instances count one
//! attacker's failures together instead of each granting its own allowance.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::clock::UnixTime;

/// Throttle settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures per account that start the first lock.
    pub account_free_failures: u32,
    /// Failures per source IP that start the first lock (one IP may serve many people).
    pub ip_free_failures: u32,
    /// Length of the first lock, in seconds; doubles with every further failure.
    pub base_lock: i64,
    /// Longest lock.
    pub max_lock: i64,
    /// Failures older than this are forgotten.
    pub window: i64,
    /// Most keys tracked; beyond it the stalest entries are dropped.
    pub capacity: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            ip_free_failures: 20,
            base_lock: 30,
            max_lock: 15 * 60,
            window: 15 * 60,
            capacity: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: UnixTime,
    locked_until: UnixTime,
}

/// Which key a decision was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottleKey<'a> {
    Account(&'a str),
    Ip(&'a str),
}

impl ThrottleKey<'_> {
    /// The counter's name: `a:<account>` or `i:<address>`.
    #[must_use]
    pub fn render(self) -> String {
        match self {
            Self::Account(a) => format!("a:{a}"),
            Self::Ip(ip) => format!("i:{ip}"),
        }
    }
}

/// What the throttle says about an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// Open, and a lock on this key has just run out (reported once).
    Unlocked,
    /// Locked for this many more seconds.
    Locked {
        retry_after: i64,
    },
}

/// What recording a failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub failures: u32,
    /// Set when this failure started (or extended) a lock.
    pub locked_for: Option<i64>,
}

/// Where the failure counters live. Each call is one atomic step of the same state
/// machine ([`LoginThrottle`] is its reference); a backend that cannot answer falls back to
/// counting locally rather than refusing every login.
#[async_trait]
pub trait Throttle: Send + Sync + std::fmt::Debug {
    /// Whether an attempt on `key` may proceed now.
    async fn check(&self, key: ThrottleKey<'_>, now: UnixTime) -> Gate;
    /// Counts a failure on `key`.
    async fn fail(&self, key: ThrottleKey<'_>, now: UnixTime) -> Failure;
    /// A successful login clears the account's counter; whether it had failures.
    async fn succeed(&self, account: &str) -> bool;
}

/// The length of the lock the `failures`-th failure starts, if any: the `free`-th failure
/// starts the first lock (`base_lock`), each further one doubles it, up to `max_lock`.
#[must_use]
pub fn lock_for(policy: &ThrottlePolicy, free: u32, failures: u32) -> Option<i64> {
    let over = failures.saturating_add(1).saturating_sub(free);
    (over > 0).then(|| policy.base_lock.saturating_mul(1_i64 << (over - 1).min(30)).min(policy.max_lock))
}

impl ThrottlePolicy {
    /// The failures a key of this kind gets for free.
    #[must_use]
    pub const fn free_failures(&self, key: ThrottleKey<'_>) -> u32 {
        match key {
            ThrottleKey::Account(_) => self.account_free_failures,
            ThrottleKey::Ip(_) => self.ip_free_failures,
        }
    }
}

/// The counters, in this process.
#[derive(Debug)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    entries: Mutex<HashMap<String, Entry>>,
}

impl LoginThrottle {
    #[must_use]
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self { policy, entries: Mutex::new(HashMap::new()) }
    }

    #[must_use]
    pub const fn policy(&self) -> ThrottlePolicy {
        self.policy
    }

    /// Whether an attempt on `key` may proceed now.
    #[must_use]
    pub fn check(&self, key: ThrottleKey<'_>, now: UnixTime) -> Gate {
        let Ok(mut entries) = self.entries.lock() else { return Gate::Open };
        match entries.get_mut(&key.render()) {
            Some(e) if e.locked_until > now => Gate::Locked { retry_after: e.locked_until - now },
            Some(e) if e.locked_until != 0 => {
                e.locked_until = 0;
                Gate::Unlocked
            }
            _ => Gate::Open,
        }
    }

    /// Counts a failure on `key`.
    pub fn fail(&self, key: ThrottleKey<'_>, now: UnixTime) -> Failure {
        let free = self.policy.free_failures(key);
        let Ok(mut entries) = self.entries.lock() else { return Failure { failures: 0, locked_for: None } };
        if entries.len() >= self.policy.capacity {
            let window = self.policy.window;
            entries.retain(|_, e| e.locked_until > now || now - e.last_failure < window);
            if entries.len() >= self.policy.capacity {
                // Still full of fresh entries: drop the oldest tenth.
                let mut ages: Vec<(UnixTime, String)> =
                    entries.iter().map(|(k, e)| (e.last_failure, k.clone())).collect();
                ages.sort_unstable();
                for (_, k) in ages.into_iter().take(self.policy.capacity / 10 + 1) {
                    entries.remove(&k);
                }
            }
        }
        let entry = entries.entry(key.render()).or_insert(Entry { failures: 0, last_failure: now, locked_until: 0 });
        if now - entry.last_failure >= self.policy.window && entry.locked_until <= now {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
        let locked_for = lock_for(&self.policy, free, entry.failures);
        if let Some(lock) = locked_for {
            entry.locked_until = now + lock;
        }
        Failure { failures: entry.failures, locked_for }
    }

    /// A successful login clears the account's counter (not the IP's: one good password
    /// must not reset a stuffing run). Returns whether the account had failures.
    pub fn succeed(&self, account: &str) -> bool {
        self.entries.lock().is_ok_and(|mut e| e.remove(&ThrottleKey::Account(account).render()).is_some())
    }

    /// Forgets an account's failures (operator unlock).
    pub fn clear(&self, key: ThrottleKey<'_>) -> bool {
        self.entries.lock().is_ok_and(|mut e| e.remove(&key.render()).is_some())
    }
}

#[async_trait]
impl Throttle for LoginThrottle {
    async fn check(&self, key: ThrottleKey<'_>, now: UnixTime) -> Gate {
        Self::check(self, key, now)
    }
    async fn fail(&self, key: ThrottleKey<'_>, now: UnixTime) -> Failure {
        Self::fail(self, key, now)
    }
    async fn succeed(&self, account: &str) -> bool {
        Self::succeed(self, account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            account_free_failures: 3,
            ip_free_failures: 5,
            base_lock: 10,
            max_lock: 60,
            window: 100,
            capacity: 10,
        }
    }

    #[test]
    fn locks_grow_exponentially_and_cap() {
        let t = LoginThrottle::new(policy());
        let a = ThrottleKey::Account("alice");
        for _ in 0..2 {
            assert_eq!(t.fail(a, 0).locked_for, None);
        }
        assert_eq!(t.check(a, 0), Gate::Open);
        assert_eq!(t.fail(a, 0).locked_for, Some(10));
        assert_eq!(t.check(a, 5), Gate::Locked { retry_after: 5 });
        assert_eq!(t.check(a, 10), Gate::Unlocked);
        assert_eq!(t.check(a, 10), Gate::Open);
        assert_eq!(t.fail(a, 10).locked_for, Some(20));
        assert_eq!(t.fail(a, 30).locked_for, Some(40));
        assert_eq!(t.fail(a, 70).locked_for, Some(60), "capped");
        assert!(t.succeed("alice"));
        assert_eq!(t.check(a, 71), Gate::Open);
        assert_eq!(t.fail(a, 71).failures, 1);
    }

    #[test]
    fn window_forgets_and_capacity_bounds() {
        let t = LoginThrottle::new(policy());
        let ip = ThrottleKey::Ip("10.0.0.1");
        t.fail(ip, 0);
        t.fail(ip, 0);
        assert_eq!(t.fail(ip, 200).failures, 1, "old failures forgotten");
        for i in 0..50 {
            t.fail(ThrottleKey::Account(&format!("u{i}")), 300 + i);
        }
        assert!(t.entries.lock().unwrap().len() <= 10);
    }
}
