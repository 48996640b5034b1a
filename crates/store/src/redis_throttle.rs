//! The login throttle's counters in Redis ([`Throttle`]), so every instance counts one
//! attacker's failed logins together: five wrong passwords spread over three instances lock
//! the account as they would on one.
//!
//! Each call is one script (atomic in Redis), a transcription of `domain::throttle`'s
//! [`LoginThrottle`] state machine: a hash `{f: failures, l: last failure, u: locked until}`
//! per key, expiring once its lock and window have passed. Keys hold a SHA-256 of the
//! account name or address, never the name itself. The time is the caller's, as for the
//! limiter. When Redis cannot answer, the instance counts in its own memory until Redis is
//! back (a Redis outage must not stop every login), with one alert when Redis goes away;
//! a dead Redis is left alone for a second between tries, so logins do not each wait for
//! its timeouts.

use std::time::Duration;

use async_trait::async_trait;
use domain::clock::UnixTime;
use domain::throttle::{Failure, Gate, LoginThrottle, Throttle, ThrottleKey, ThrottlePolicy};
use redis::aio::ConnectionManager;

use crate::redis_limiter::{Change, Outage};

/// ARGV = now. Returns the seconds left of a lock, -1 when a lock has just run out
/// (reported once), 0 when open.
const CHECK: &str = r"
local now = tonumber(ARGV[1])
local u = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
if u > now then return u - now end
if u ~= 0 then
  redis.call('HSET', KEYS[1], 'u', '0')
  return -1
end
return 0
";

/// ARGV = now, free failures, base lock, max lock, window. Returns `{failures, lock}`,
/// lock -1 when this failure started none.
const FAIL: &str = r"
local now = tonumber(ARGV[1])
local free = tonumber(ARGV[2])
local base = tonumber(ARGV[3])
local max = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local v = redis.call('HMGET', KEYS[1], 'f', 'l', 'u')
local f = tonumber(v[1] or '0')
local l = tonumber(v[2] or ARGV[1])
local u = tonumber(v[3] or '0')
if now - l >= window and u <= now then f = 0 end
f = f + 1
local lock = -1
local over = f + 1 - free
if over > 0 then
  local e = over - 1
  if e > 30 then e = 30 end
  lock = base * (2 ^ e)
  if lock > max then lock = max end
  u = now + lock
end
redis.call('HSET', KEYS[1], 'f', string.format('%d', f), 'l', string.format('%d', now), 'u', string.format('%d', u))
local keep = now + window
if u > keep then keep = u end
redis.call('EXPIRE', KEYS[1], math.max(1, keep - now + 1))
return {f, lock}
";

#[derive(Debug)]
pub struct RedisThrottle {
    manager: ConnectionManager,
    check: redis::Script,
    fail: redis::Script,
    prefix: String,
    policy: ThrottlePolicy,
    /// Counts while Redis cannot answer.
    fallback: LoginThrottle,
    outage: Outage,
}

impl RedisThrottle {
    /// Connects lazily, like the limiter.
    ///
    /// # Errors
    /// A bad URL, or no Tokio runtime.
    pub fn new(url: &str, prefix: &str, timeout: Duration, policy: ThrottlePolicy) -> Result<Self, String> {
        tokio::runtime::Handle::try_current()
            .map_err(|_| "the Redis login throttle needs a Tokio runtime".to_owned())?;
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        Ok(Self {
            manager: crate::redis_limiter::lazy_manager(client, timeout)?,
            check: redis::Script::new(CHECK),
            fail: redis::Script::new(FAIL),
            prefix: format!("{prefix}login:"),
            policy,
            fallback: LoginThrottle::new(policy),
            outage: Outage::new(Duration::from_secs(1)),
        })
    }

    fn key(&self, key: ThrottleKey<'_>) -> String {
        format!("{}{}", self.prefix, domain::secret::hash_secret(&key.render()))
    }

    /// Records how Redis answered; logs when it goes away and when it is back.
    fn answered<T>(&self, op: &'static str, result: redis::RedisResult<T>) -> Option<T> {
        let change = self.outage.record(result.is_ok());
        match result {
            Ok(v) => {
                if change == Change::CameBack {
                    tracing::warn!(
                        target: "portcullis::audit", event = "throttle.backend_recovered",
                        "redis answers again; login failures are counted across instances"
                    );
                }
                Some(v)
            }
            Err(e) => {
                metrics::counter!("portcullis_redis_errors_total", "op" => op).increment(1);
                if change == Change::WentDown {
                    tracing::error!(
                        target: "portcullis::audit", event = "throttle.backend_down", alert = true, error = %e,
                        "redis is unreachable; login failures are counted per instance until it is back"
                    );
                }
                None
            }
        }
    }
}

#[async_trait]
impl Throttle for RedisThrottle {
    async fn check(&self, key: ThrottleKey<'_>, now: UnixTime) -> Gate {
        if !self.outage.worth_asking() {
            return self.fallback.check(key, now);
        }
        let mut conn = self.manager.clone();
        let asked: redis::RedisResult<i64> = self.check.key(self.key(key)).arg(now).invoke_async(&mut conn).await;
        match self.answered("login_throttle", asked) {
            Some(left) if left > 0 => Gate::Locked { retry_after: left },
            Some(-1) => Gate::Unlocked,
            Some(_) => Gate::Open,
            None => self.fallback.check(key, now),
        }
    }

    async fn fail(&self, key: ThrottleKey<'_>, now: UnixTime) -> Failure {
        if !self.outage.worth_asking() {
            return self.fallback.fail(key, now);
        }
        let mut conn = self.manager.clone();
        let asked: redis::RedisResult<(u32, i64)> = self
            .fail
            .key(self.key(key))
            .arg(now)
            .arg(self.policy.free_failures(key))
            .arg(self.policy.base_lock)
            .arg(self.policy.max_lock)
            .arg(self.policy.window)
            .invoke_async(&mut conn)
            .await;
        match self.answered("login_throttle", asked) {
            Some((failures, lock)) => Failure { failures, locked_for: (lock >= 0).then_some(lock) },
            None => self.fallback.fail(key, now),
        }
    }

    async fn succeed(&self, account: &str) -> bool {
        let local = self.fallback.succeed(account);
        if !self.outage.worth_asking() {
            return local;
        }
        let mut conn = self.manager.clone();
        let deleted: redis::RedisResult<i64> =
            redis::cmd("DEL").arg(self.key(ThrottleKey::Account(account))).query_async(&mut conn).await;
        self.answered("login_throttle", deleted).is_some_and(|n| n > 0) || local
    }
}
