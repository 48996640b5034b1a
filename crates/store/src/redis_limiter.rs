//! The Redis [`RateLimiter`]: several Portcullis instances share one limit.
//!
//! One check is one `EVALSHA` of [`SCRIPT`] (one round trip; `redis::Script` loads the
//! script on a `NOSCRIPT` miss), atomic over all counters of the request because Redis runs
//! a script alone. The script is a line-by-line transcription of `domain::ratelimit::step`
//! and `Decision::evaluate` and passes the same conformance suite as the in-memory limiter.
//! Each key expires when its TAT passes, so Redis holds only busy keys.
//!
//! The time is the caller's (`now` argument), not Redis's `TIME`: tests drive it with a
//! fixed clock, and instances are expected to run NTP (a skew of δ shifts a limit by δ).
//!
//! When Redis cannot answer, the limiter either answers from a local in-memory limiter
//! (`FailMode::Open`) or refuses (`FailMode::Closed`, the caller answers 503). Either way it
//! logs one alert event when Redis goes away and one when it is back, and stops asking a
//! dead Redis for `retry_interval` so requests do not each wait for a timeout.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use domain::clock::UnixMicros;
use domain::ratelimit::{Counter, Decision, LimiterError, QuotaState, RateLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::memory_limiter::MemoryLimiter;

/// GCRA over all KEYS; ARGV = now, then (interval, tolerance) per key. Returns
/// `{allowed, s1_allowed, s1_remaining, s1_reset, s1_retry, s2_…}`.
pub const SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local n = #KEYS
local tats = {}
local out = {1}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local over = new_tat - now - tolerance
  if over > 0 then
    out[1] = 0
    tats[i] = tat
    table.insert(out, 0); table.insert(out, 0); table.insert(out, tat - now); table.insert(out, over)
  else
    tats[i] = new_tat
    local remaining = math.floor((tolerance - (new_tat - now)) / interval)
    table.insert(out, 1); table.insert(out, remaining); table.insert(out, new_tat - now); table.insert(out, 0)
  end
end
if out[1] == 1 then
  for i = 1, n do
    local ttl = math.ceil((tats[i] - now) / 1000)
    if ttl < 1 then ttl = 1 end
    redis.call('SET', KEYS[i], string.format('%d', tats[i]), 'PX', ttl)
  end
end
return out
";

/// What to do when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Limit each instance locally (in memory) until Redis is back.
    Open,
    /// Refuse requests (503) until Redis is back.
    Closed,
}

#[derive(Debug)]
pub struct RedisLimiter {
    manager: ConnectionManager,
    script: redis::Script,
    prefix: String,
    fail: FailMode,
    fallback: MemoryLimiter,
    outage: Outage,
}

/// A Redis that stopped answering, shared by the limiter and the login throttle: while it is
/// down it is asked at most once per `retry` (requests must not each wait for a timeout),
/// and each way of the change is reported once.
#[derive(Debug)]
pub(crate) struct Outage {
    /// `Some(t)` while Redis is considered down: not asked again before `t`.
    down_until: Mutex<Option<Instant>>,
    retry: Duration,
}

/// What an answer (or its absence) changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Same,
    WentDown,
    CameBack,
}

impl Outage {
    pub(crate) fn new(retry: Duration) -> Self {
        Self { down_until: Mutex::new(None), retry }
    }

    /// Whether Redis is worth asking now.
    pub(crate) fn worth_asking(&self) -> bool {
        self.down_until.lock().map_or(true, |d| d.is_none_or(|until| Instant::now() >= until))
    }

    /// Records whether Redis answered.
    pub(crate) fn record(&self, answered: bool) -> Change {
        let Ok(mut d) = self.down_until.lock() else { return Change::Same };
        match (answered, d.is_some()) {
            (true, true) => {
                *d = None;
                Change::CameBack
            }
            (false, was_down) => {
                *d = Some(Instant::now() + self.retry);
                if was_down { Change::Same } else { Change::WentDown }
            }
            (true, false) => Change::Same,
        }
    }
}

impl RedisLimiter {
    /// Connects lazily: a Redis that is down at start is treated like one that goes down
    /// later (the fail mode applies, the alert is logged).
    ///
    /// # Errors
    /// When `url` is not a Redis URL, or when called outside a Tokio runtime (the
    /// connection manager needs one).
    pub fn new(
        url: &str,
        prefix: &str,
        fail: FailMode,
        timeout: Duration,
        fallback_max_keys: usize,
    ) -> Result<Self, String> {
        tokio::runtime::Handle::try_current().map_err(|_| "the Redis limiter needs a Tokio runtime".to_owned())?;
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        let manager = lazy_manager(client, timeout)?;
        Ok(Self {
            manager,
            script: redis::Script::new(SCRIPT),
            prefix: prefix.to_owned(),
            fail,
            fallback: MemoryLimiter::new(fallback_max_keys),
            outage: Outage::new(Duration::from_secs(1)),
        })
    }

    /// Sets how long a dead Redis is left alone before it is asked again (tests shorten it).
    #[must_use]
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.outage = Outage::new(interval);
        self
    }

    async fn ask(&self, now: UnixMicros, counters: &[Counter]) -> Result<Decision, redis::RedisError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(now);
        for counter in counters {
            invocation.key(format!("{}{}", self.prefix, counter.key));
            invocation.arg(counter.quota.interval).arg(counter.quota.tolerance());
        }
        let mut conn = self.manager.clone();
        let out: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        let mut values = out.into_iter();
        let allowed = values.next() == Some(1);
        let mut states = Vec::with_capacity(counters.len());
        for _ in counters {
            let mut next = || values.next().unwrap_or(0);
            let (ok, remaining, reset, retry_after) = (next(), next(), next(), next());
            states.push(QuotaState {
                allowed: ok == 1,
                remaining: u32::try_from(remaining).unwrap_or(0),
                reset,
                retry_after,
            });
        }
        Ok(Decision { allowed, states })
    }

    fn degraded(&self, now: UnixMicros, counters: &[Counter]) -> Result<Decision, LimiterError> {
        match self.fail {
            FailMode::Open => self.fallback.check_now(now, counters),
            FailMode::Closed => Err(LimiterError::Unavailable("redis is unreachable".into())),
        }
    }
}

/// A connection that is made on first use and re-made after failures, with `timeout` on
/// connecting and on every answer, one retry, and short back-off (a dead Redis must cost
/// requests little).
pub(crate) fn lazy_manager(client: redis::Client, timeout: Duration) -> Result<ConnectionManager, String> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client, config).map_err(|e| format!("redis: {e}"))
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn check(&self, now: UnixMicros, counters: &[Counter]) -> Result<Decision, LimiterError> {
        if counters.is_empty() {
            return Ok(Decision::unlimited());
        }
        if !self.outage.worth_asking() {
            return self.degraded(now, counters);
        }
        let started = Instant::now();
        let asked = self.ask(now, counters).await;
        let outcome = if asked.is_ok() { "ok" } else { "error" };
        metrics::histogram!("portcullis_redis_duration_seconds", "op" => "ratelimit", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        let change = self.outage.record(asked.is_ok());
        match asked {
            Ok(decision) => {
                if change == Change::CameBack {
                    tracing::warn!(
                        target: "portcullis::audit", event = "ratelimit.backend_recovered",
                        "redis answers again; shared rate limits are back"
                    );
                }
                Ok(decision)
            }
            Err(e) => {
                metrics::counter!("portcullis_redis_errors_total", "op" => "ratelimit").increment(1);
                if change == Change::WentDown {
                    tracing::error!(
                        target: "portcullis::audit", event = "ratelimit.backend_down", alert = true,
                        error = %e, fail_mode = ?self.fail,
                        "redis is unreachable; rate limits {}",
                        if self.fail == FailMode::Open { "fall back to this instance's memory" } else { "refuse requests" }
                    );
                }
                self.degraded(now, counters)
            }
        }
    }
}
