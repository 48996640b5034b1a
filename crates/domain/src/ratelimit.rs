//! Rate limiting: the GCRA algorithm (generic cell rate algorithm, the "virtual scheduling"
//! form), the rules operators configure, and the [`RateLimiter`] port whose adapters (in
//! memory, Redis) all run [`step`] — the Redis adapter as a Lua transcription of it, checked
//! by the same conformance suite.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT). A quota of `requests`
//! per `per` with a `burst` lets `burst` requests through at once and then one every
//! `per / requests`; a key whose TAT is in the past is indistinguishable from a key never
//! seen, so idle keys can be forgotten without changing any answer.

use async_trait::async_trait;
use serde::Deserialize;

use crate::clock::{MICROS_PER_SECOND, UnixMicros};
use crate::settings::Seconds;

/// One quota: `requests` per `per`, of which up to `burst` may arrive at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Microseconds between two requests at the sustained rate.
    pub interval: i64,
    /// How many requests may arrive at once.
    pub burst: u32,
    /// As configured, for the `RateLimit-Policy` header.
    pub requests: u32,
    pub per_seconds: u64,
}

impl Quota {
    /// `None` when `requests` or `per` is zero.
    #[must_use]
    pub fn new(requests: u32, per: Seconds, burst: Option<u32>) -> Option<Self> {
        if requests == 0 || per.0 == 0 {
            return None;
        }
        let per_micros = i64::try_from(per.0).ok()?.checked_mul(MICROS_PER_SECOND)?;
        let interval = (per_micros / i64::from(requests)).max(1);
        Some(Self { interval, burst: burst.unwrap_or(requests).max(1), requests, per_seconds: per.0 })
    }

    /// How far ahead of now the TAT may run before requests are refused.
    #[must_use]
    pub fn tolerance(&self) -> i64 {
        self.interval.saturating_mul(i64::from(self.burst))
    }
}

/// What one quota says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    pub allowed: bool,
    /// Requests still allowed right now after this one.
    pub remaining: u32,
    /// Microseconds until the quota is whole again.
    pub reset: i64,
    /// Microseconds until a refused request would be allowed (0 when allowed).
    pub retry_after: i64,
}

/// One GCRA step: the key's stored TAT (or `None`), the time, the quota → the new TAT to
/// store when the request is allowed, and the quota's state.
#[must_use]
pub fn step(tat: Option<UnixMicros>, now: UnixMicros, quota: &Quota) -> (UnixMicros, QuotaState) {
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(quota.interval);
    let over = new_tat - now - quota.tolerance();
    if over > 0 {
        return (tat, QuotaState { allowed: false, remaining: 0, reset: tat - now, retry_after: over });
    }
    let remaining = (quota.tolerance() - (new_tat - now)) / quota.interval;
    let remaining = u32::try_from(remaining).unwrap_or(0);
    (new_tat, QuotaState { allowed: true, remaining, reset: new_tat - now, retry_after: 0 })
}

/// One counter to check: a key (already including the rule and quota it belongs to) and
/// its quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub key: String,
    pub quota: Quota,
}

/// The answer for one request: allowed only when every counter allows it, and then every
/// counter is charged; a refused request charges none (so a client that keeps retrying too
/// early is not pushed further back by its own refusals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// One state per counter, in the order given.
    pub states: Vec<QuotaState>,
}

impl Decision {
    /// Applies [`step`] to every counter; the TATs to store when allowed.
    #[must_use]
    pub fn evaluate(tats: &[Option<UnixMicros>], now: UnixMicros, counters: &[Counter]) -> (Self, Vec<UnixMicros>) {
        let mut states = Vec::with_capacity(counters.len());
        let mut new_tats = Vec::with_capacity(counters.len());
        for (tat, counter) in tats.iter().zip(counters) {
            let (new_tat, state) = step(*tat, now, &counter.quota);
            states.push(state);
            new_tats.push(new_tat);
        }
        let allowed = states.iter().all(|s| s.allowed);
        (Self { allowed, states }, new_tats)
    }

    /// An answer that allows everything (no counters).
    #[must_use]
    pub fn unlimited() -> Self {
        Self { allowed: true, states: Vec::new() }
    }

    /// Whole seconds until a refused request may be retried (at least 1).
    #[must_use]
    pub fn retry_after_seconds(&self) -> u64 {
        let micros = self.states.iter().map(|s| s.retry_after).max().unwrap_or(0);
        ceil_seconds(micros).max(1)
    }

    /// The state that binds: the refusing counter waiting longest, or the one with the
    /// fewest remaining requests.
    #[must_use]
    pub fn binding(&self) -> Option<(usize, &QuotaState)> {
        if self.allowed {
            self.states.iter().enumerate().min_by_key(|(_, s)| (s.remaining, std::cmp::Reverse(s.reset)))
        } else {
            self.states.iter().enumerate().filter(|(_, s)| !s.allowed).max_by_key(|(_, s)| s.retry_after)
        }
    }
}

/// Microseconds rounded up to whole seconds.
#[must_use]
pub fn ceil_seconds(micros: i64) -> u64 {
    u64::try_from(micros.max(0)).unwrap_or(0).div_ceil(1_000_000)
}

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// The shared backend cannot answer and the limiter is configured to fail closed.
    #[error("the rate-limit backend is unavailable: {0}")]
    Unavailable(String),
}

/// The limiter port. `check` is atomic over all its counters: two concurrent checks never
/// both take the last request of a quota.
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// # Errors
    /// `Unavailable` when a shared backend is down and the limiter fails closed.
    async fn check(&self, now: UnixMicros, counters: &[Counter]) -> Result<Decision, LimiterError>;
}

/// What a rate-limit key is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    /// The client's IP address (behind trusted proxies, the forwarded one); IPv6 by /64.
    Ip,
    /// The verified subject; for anonymous requests, the IP address.
    Subject,
    /// The verified OAuth client id; for anonymous requests, the IP address.
    ClientId,
    /// The API key's id; for other requests, the IP address.
    ApiKey,
    /// The route (or endpoint) itself: one counter shared by every caller.
    Route,
}

/// A configured limit: a name, what it counts by, and its quota.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    /// Shown in `RateLimit-Policy` and logs; unique within a route.
    pub name: String,
    /// The key; several parts make a combined key (e.g. `["client_id", "ip"]`).
    pub by: Vec<KeyPart>,
    pub requests: u32,
    pub per: Seconds,
    /// Requests allowed at once (default: `requests`).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Applies only to requests without verified credentials (anonymous), or only to
    /// authenticated ones; default both.
    #[serde(default)]
    pub applies_to: Applies,
    /// Larger (or smaller) quotas for named plans; a client's plan is set in
    /// `[rate_limit.plans]`.
    #[serde(default)]
    pub plans: std::collections::BTreeMap<String, PlanQuota>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Applies {
    #[default]
    All,
    Anonymous,
    Authenticated,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanQuota {
    pub requests: u32,
    pub per: Option<Seconds>,
    pub burst: Option<u32>,
}

/// A rule made ready for requests: quotas built, names checked.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub name: String,
    pub by: Vec<KeyPart>,
    pub quota: Quota,
    pub applies_to: Applies,
    pub plans: Vec<(String, Quota)>,
}

/// Who is asking, for building keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub ip: Option<std::net::IpAddr>,
    pub subject: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub api_key: Option<&'a str>,
    /// The client's plan, when it has one.
    pub plan: Option<&'a str>,
    pub authenticated: bool,
}

impl CompiledRule {
    /// # Errors
    /// A message naming the rule when a quota is zero or the key is empty.
    pub fn compile(rule: &LimitRule) -> Result<Self, String> {
        let name = &rule.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(format!("rate limit name {name:?} must be non-empty letters, digits, '-', '_' or '.'"));
        }
        if rule.by.is_empty() {
            return Err(format!("rate limit {name:?}: `by` names no key part"));
        }
        let quota = Quota::new(rule.requests, rule.per, rule.burst)
            .ok_or_else(|| format!("rate limit {name:?}: requests and per must be positive"))?;
        let plans = rule
            .plans
            .iter()
            .map(|(plan, q)| {
                Quota::new(q.requests, q.per.unwrap_or(rule.per), q.burst.or(rule.burst.map(|_| q.requests)))
                    .map(|quota| (plan.clone(), quota))
                    .ok_or_else(|| format!("rate limit {name:?}, plan {plan:?}: requests and per must be positive"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { name: name.clone(), by: rule.by.clone(), quota, applies_to: rule.applies_to, plans })
    }

    /// The counter for `caller` under `scope` (the route or endpoint name), or `None` when
    /// the rule does not apply to this caller.
    #[must_use]
    pub fn counter(&self, scope: &str, caller: &Caller<'_>) -> Option<Counter> {
        match self.applies_to {
            Applies::Anonymous if caller.authenticated => return None,
            Applies::Authenticated if !caller.authenticated => return None,
            _ => {}
        }
        let quota =
            caller.plan.and_then(|plan| self.plans.iter().find(|(p, _)| p == plan)).map_or(self.quota, |(_, q)| *q);
        let mut key = format!("{scope}/{}", self.name);
        for part in &self.by {
            let ip =
                || caller.ip.map(|ip| format!("ip={}", crate::netaddr::bucket(ip))).unwrap_or_else(|| "ip=?".into());
            let value = match part {
                KeyPart::Ip => ip(),
                KeyPart::Subject => caller.subject.map_or_else(ip, |s| format!("sub={s}")),
                KeyPart::ClientId => caller.client_id.map_or_else(ip, |c| format!("client={c}")),
                KeyPart::ApiKey => caller.api_key.map_or_else(ip, |k| format!("key={k}")),
                KeyPart::Route => "route".into(),
            };
            key.push('/');
            key.push_str(&value);
        }
        Some(Counter { key, quota })
    }
}

/// The counters of `rules` for one request.
#[must_use]
pub fn counters(rules: &[CompiledRule], scope: &str, caller: &Caller<'_>) -> Vec<Counter> {
    rules.iter().filter_map(|r| r.counter(scope, caller)).collect()
}

/// `RateLimit-Policy` and `RateLimit` header values (draft-ietf-httpapi-ratelimit-headers,
/// structured-field form) for a decision over `counters` built from `rules`.
#[must_use]
pub fn headers(decision: &Decision, counters: &[Counter], names: &[&str]) -> Option<(String, String)> {
    let (i, state) = decision.binding()?;
    let name = names.get(i)?;
    let quota = counters.get(i)?.quota;
    let policy = format!("\"{name}\";q={};w={}", quota.requests, quota.per_seconds);
    let current = format!("\"{name}\";r={};t={}", state.remaining, ceil_seconds(state.reset));
    Some((policy, current))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = MICROS_PER_SECOND;

    fn quota(requests: u32, per: u64, burst: Option<u32>) -> Quota {
        Quota::new(requests, Seconds(per), burst).unwrap_or_else(|| unreachable!())
    }

    #[test]
    fn the_burst_passes_the_next_is_refused_until_one_interval_passes() {
        let q = quota(10, 1, None);
        let mut tat = None;
        let now = 1_000 * S;
        for i in 0..10 {
            let (t, s) = step(tat, now, &q);
            assert!(s.allowed, "request {i}");
            assert_eq!(s.remaining, 9 - i);
            tat = Some(t);
        }
        let (_, refused) = step(tat, now, &q);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, S / 10);
        let (_, early) = step(tat, now + S / 10 - 1, &q);
        assert!(!early.allowed, "one microsecond early");
        let (_, on_time) = step(tat, now + S / 10, &q);
        assert!(on_time.allowed);
        // After the whole window the full burst is back.
        let mut later = tat;
        for _ in 0..10 {
            let (t, s) = step(later, now + S, &q);
            assert!(s.allowed);
            later = Some(t);
        }
    }

    #[test]
    fn a_refusal_charges_no_counter() {
        let tight = Counter { key: "a".into(), quota: quota(1, 60, None) };
        let loose = Counter { key: "b".into(), quota: quota(100, 60, None) };
        let counters = [loose, tight];
        let (first, tats) = Decision::evaluate(&[None, None], 0, &counters);
        assert!(first.allowed);
        let stored: Vec<_> = tats.into_iter().map(Some).collect();
        let (second, _) = Decision::evaluate(&stored, 0, &counters);
        assert!(!second.allowed);
        assert_eq!(second.binding().map(|(i, _)| i), Some(1));
        assert_eq!(second.retry_after_seconds(), 60);
        assert_eq!(second.states.first().map(|s| s.remaining), Some(98), "the loose one would allow");
    }

    #[test]
    fn burst_and_sustained_rate_differ() {
        let q = quota(1, 1, Some(5));
        let mut tat = None;
        for _ in 0..5 {
            let (t, s) = step(tat, 0, &q);
            assert!(s.allowed);
            tat = Some(t);
        }
        assert!(!step(tat, 0, &q).1.allowed);
        assert!(step(tat, S, &q).1.allowed, "one more each second");
    }

    #[test]
    fn keys_name_rule_scope_and_caller() {
        let rule = CompiledRule::compile(&LimitRule {
            name: "per-client".into(),
            by: vec![KeyPart::ClientId, KeyPart::Ip],
            requests: 10,
            per: Seconds(1),
            burst: None,
            applies_to: Applies::All,
            plans: [("gold".to_owned(), PlanQuota { requests: 100, per: None, burst: None })].into(),
        })
        .unwrap_or_else(|e| unreachable!("{e}"));
        let ip = Some(std::net::IpAddr::from([10, 0, 0, 1]));
        let anon = Caller { ip, ..Caller::default() };
        let c = rule.counter("api", &anon).unwrap_or_else(|| unreachable!());
        assert_eq!(c.key, "api/per-client/ip=10.0.0.1/ip=10.0.0.1");
        let gold = Caller { ip, client_id: Some("abc"), plan: Some("gold"), authenticated: true, ..Caller::default() };
        let c = rule.counter("api", &gold).unwrap_or_else(|| unreachable!());
        assert_eq!(c.key, "api/per-client/client=abc/ip=10.0.0.1");
        assert_eq!(c.quota.requests, 100);
    }

    #[test]
    fn zero_quotas_and_bad_names_are_refused() {
        let mut rule = LimitRule {
            name: "x".into(),
            by: vec![KeyPart::Ip],
            requests: 0,
            per: Seconds(1),
            burst: None,
            applies_to: Applies::All,
            plans: std::collections::BTreeMap::new(),
        };
        assert!(CompiledRule::compile(&rule).is_err());
        rule.requests = 1;
        rule.name = "a b".into();
        assert!(CompiledRule::compile(&rule).is_err());
    }

    #[test]
    fn header_values_follow_the_draft() {
        let counters = [Counter { key: "k".into(), quota: quota(100, 60, None) }];
        let (d, _) = Decision::evaluate(&[None], 0, &counters);
        let (policy, current) = headers(&d, &counters, &["default"]).unwrap_or_else(|| unreachable!());
        assert_eq!(policy, "\"default\";q=100;w=60");
        assert_eq!(current, "\"default\";r=99;t=1");
    }
}
