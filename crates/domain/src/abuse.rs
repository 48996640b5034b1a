//! Abuse protection shared by the gateway and the authorization server: rate limits
//! ([`crate::ratelimit`]) and temporary IP bans after repeated authentication failures.
//!
//! Bans: every failed authentication (bad token, bad API key, bad client secret, bad
//! password) is a check against a failure quota of the IP (through the same limiter, so
//! with Redis the count is shared by every instance). When that quota refuses, the IP is
//! banned for `base × 2^(strikes − 1)` (capped at `max`), where strikes counts the IP's
//! bans within `memory`. Failures against `distinct_accounts` different accounts within the
//! window (credential stuffing) ban at once. Bans are written to the [`BanStore`] (shared by
//! instances and the CLI) and mirrored in memory ([`BanList`]), so a request is checked
//! against them without a round trip.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::clock::{Clock, UnixTime};
use crate::error::StoreError;
use crate::ratelimit::{Caller, CompiledRule, Counter, Decision, LimiterError, Quota, RateLimiter};
use crate::settings::Seconds;

/// A stored ban.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub ip: IpAddr,
    pub created_at: UnixTime,
    pub until: UnixTime,
    /// How many bans this IP has had within the strike memory, this one included.
    pub strikes: u32,
    /// Why: `auth_failures`, `credential_stuffing` or `manual`.
    pub reason: String,
}

/// Bans, shared by instances and the CLI.
#[async_trait]
pub trait BanStore: Send + Sync + std::fmt::Debug {
    /// Inserts or replaces the ban of `ban.ip`.
    async fn put_ban(&self, ban: &Ban) -> Result<(), StoreError>;
    /// The IP's latest ban, expired or not (for counting strikes).
    async fn get_ban(&self, ip: IpAddr) -> Result<Option<Ban>, StoreError>;
    /// Bans still in force at `now`, newest first.
    async fn list_bans(&self, now: UnixTime) -> Result<Vec<Ban>, StoreError>;
    /// Returns whether there was one.
    async fn delete_ban(&self, ip: IpAddr) -> Result<bool, StoreError>;
    /// Forgets bans that ended before `before`; returns how many.
    async fn purge_bans(&self, before: UnixTime) -> Result<u64, StoreError>;
}

/// An in-memory mirror of the bans in force: filled from the store, updated at once by bans
/// made in this process, and replaced from the store periodically (so `ban remove` in the
/// CLI and bans made by other instances arrive).
#[derive(Debug, Default)]
pub struct BanList {
    entries: Mutex<HashMap<IpAddr, UnixTime>>,
}

impl BanList {
    /// When the ban of `ip` ends, if it is banned at `now`.
    #[must_use]
    pub fn banned_until(&self, ip: IpAddr, now: UnixTime) -> Option<UnixTime> {
        let map = self.entries.lock().ok()?;
        map.get(&ip).copied().filter(|until| *until > now)
    }

    pub fn insert(&self, ip: IpAddr, until: UnixTime) {
        if let Ok(mut map) = self.entries.lock() {
            map.insert(ip, until);
        }
    }

    pub fn replace(&self, bans: &[Ban]) {
        if let Ok(mut map) = self.entries.lock() {
            *map = bans.iter().map(|b| (b.ip, b.until)).collect();
        }
    }
}

/// Ban policy (the `[rate_limit.bans]` section).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BanPolicy {
    pub enabled: bool,
    /// This many failures from one IP within `window` ban it.
    pub failures: u32,
    pub window: Seconds,
    /// Failures against this many different accounts within `window` ban at once
    /// (0 turns the credential-stuffing check off).
    pub distinct_accounts: u32,
    /// The first ban's length; each further ban within `memory` doubles it.
    pub base: Seconds,
    pub max: Seconds,
    /// How long past bans count as strikes.
    pub memory: Seconds,
    /// Addresses or CIDR networks never banned (an office's egress, monitoring); they are
    /// still rate limited.
    pub exempt: Vec<String>,
}

impl Default for BanPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            failures: 30,
            window: Seconds(300),
            distinct_accounts: 10,
            base: Seconds(300),
            max: Seconds(86_400),
            memory: Seconds(86_400),
            exempt: Vec::new(),
        }
    }
}

impl BanPolicy {
    /// The length of a ban that is the IP's `strikes`-th.
    #[must_use]
    pub fn duration(&self, strikes: u32) -> i64 {
        let factor = 1i64.checked_shl(strikes.saturating_sub(1).min(30)).unwrap_or(i64::MAX);
        self.base.as_i64().saturating_mul(factor).min(self.max.as_i64())
    }
}

/// What a request may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on; `headers` are the `RateLimit-Policy`/`RateLimit` values when limits applied.
    Allowed { headers: Option<(String, String)> },
    /// Over a limit: 429 with `Retry-After`.
    Limited { retry_after: u64, headers: Option<(String, String)>, rule: String },
    /// The IP is banned: 429 with `Retry-After` until the ban ends.
    Banned { retry_after: u64 },
    /// The shared limiter is down and fails closed: 503.
    Unavailable,
}

/// Rate limits and bans, as one service both front doors call.
#[derive(Debug)]
pub struct AbuseGuard {
    limiter: Arc<dyn RateLimiter>,
    bans: Arc<dyn BanStore>,
    list: BanList,
    policy: BanPolicy,
    failure_quota: Option<Quota>,
    exempt: crate::netaddr::TrustedProxies,
    /// client id → plan.
    plans: HashMap<String, String>,
    /// Accounts recently failed per IP (fingerprints), for credential stuffing.
    accounts: Mutex<HashMap<IpAddr, (UnixTime, Vec<String>)>>,
    clock: Arc<dyn Clock>,
}

/// At most this many IPs are tracked for credential stuffing (oldest windows dropped).
const MAX_TRACKED_IPS: usize = 50_000;

impl AbuseGuard {
    #[must_use]
    pub fn new(
        limiter: Arc<dyn RateLimiter>,
        bans: Arc<dyn BanStore>,
        policy: BanPolicy,
        plans: HashMap<String, String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let failure_quota = Quota::new(policy.failures, policy.window, None).filter(|_| policy.enabled);
        // Validated with the configuration; an entry that does not parse exempts nothing.
        let exempt = crate::netaddr::TrustedProxies::parse(&policy.exempt).unwrap_or_default();
        Self {
            limiter,
            bans,
            list: BanList::default(),
            policy,
            failure_quota,
            exempt,
            plans,
            accounts: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// The plan of a client, if configured.
    #[must_use]
    pub fn plan_of(&self, client_id: Option<&str>) -> Option<&str> {
        client_id.and_then(|c| self.plans.get(c)).map(String::as_str)
    }

    /// Whether `ip` is banned: `Some(seconds left)`.
    #[must_use]
    pub fn banned(&self, ip: Option<IpAddr>) -> Option<u64> {
        let now = self.clock.now();
        let until = self.list.banned_until(crate::netaddr::bucket(ip?), now)?;
        Some(u64::try_from(until - now).unwrap_or(1).max(1))
    }

    /// Checks the ban list, then `rules` for `caller` under `scope`.
    pub async fn check(&self, scope: &str, rules: &[CompiledRule], caller: &Caller<'_>) -> Verdict {
        if let Some(retry_after) = self.banned(caller.ip) {
            return Verdict::Banned { retry_after };
        }
        if rules.is_empty() {
            return Verdict::Allowed { headers: None };
        }
        let mut used: Vec<&CompiledRule> = Vec::with_capacity(rules.len());
        let mut counters: Vec<Counter> = Vec::with_capacity(rules.len());
        for rule in rules {
            if let Some(c) = rule.counter(scope, caller) {
                used.push(rule);
                counters.push(c);
            }
        }
        let decision = match self.limiter.check(self.clock.now_micros(), &counters).await {
            Ok(d) => d,
            Err(LimiterError::Unavailable(_)) => return Verdict::Unavailable,
        };
        let names: Vec<&str> = used.iter().map(|r| r.name.as_str()).collect();
        let headers = crate::ratelimit::headers(&decision, &counters, &names);
        if decision.allowed {
            return Verdict::Allowed { headers };
        }
        let rule = decision.binding().and_then(|(i, _)| names.get(i)).map_or_else(String::new, |n| (*n).to_owned());
        Verdict::Limited { retry_after: decision.retry_after_seconds(), headers, rule }
    }

    /// Records a failed authentication from `ip` (against `account`, when one was named);
    /// bans the IP when the policy says so. Returns the ban made, if any.
    pub async fn record_failure(&self, ip: Option<IpAddr>, account: Option<&str>) -> Option<Ban> {
        let ip = crate::netaddr::bucket(ip?);
        let quota = self.failure_quota?;
        if self.exempt.contains(ip) {
            return None;
        }
        let now = self.clock.now();
        if self.list.banned_until(ip, now).is_some() {
            return None;
        }
        let stuffing = account.is_some_and(|a| self.note_account(ip, a, now));
        let counters = [Counter { key: format!("auth-failures/ip={ip}"), quota }];
        // The failure that uses up the quota is the Nth: it bans.
        let over = match self.limiter.check(self.clock.now_micros(), &counters).await {
            Ok(Decision { allowed, states }) => !allowed || states.first().is_some_and(|s| s.remaining == 0),
            // No shared counter: the stuffing detector (local) still works.
            Err(_) => false,
        };
        if !over && !stuffing {
            return None;
        }
        let reason = if stuffing { "credential_stuffing" } else { "auth_failures" };
        self.ban(ip, reason, None).await
    }

    /// Bans `ip` (IPv6: its /64) now: for `length`, or by the policy's doubling. Returns
    /// the ban, or `None` when the store failed (logged).
    pub async fn ban(&self, ip: IpAddr, reason: &str, length: Option<Seconds>) -> Option<Ban> {
        let now = self.clock.now();
        let ban = new_ban(&*self.bans, &self.policy, ip, reason, length, now).await?;
        self.list.insert(ban.ip, ban.until);
        Some(ban)
    }

    /// Replaces the mirror with the store's bans (the periodic sync).
    ///
    /// # Errors
    /// The store failed; the mirror is left as it was.
    pub async fn sync(&self) -> Result<usize, StoreError> {
        let bans = self.bans.list_bans(self.clock.now()).await?;
        self.list.replace(&bans);
        let before = self.clock.now() - self.policy.memory.as_i64();
        self.bans.purge_bans(before).await?;
        Ok(bans.len())
    }

    /// Notes a failure against `account`; true when the IP has now failed against
    /// `distinct_accounts` different accounts within the window.
    fn note_account(&self, ip: IpAddr, account: &str, now: UnixTime) -> bool {
        if self.policy.distinct_accounts == 0 {
            return false;
        }
        let Ok(mut map) = self.accounts.lock() else { return false };
        if map.len() >= MAX_TRACKED_IPS && !map.contains_key(&ip) {
            let window = self.policy.window.as_i64();
            map.retain(|_, (start, _)| now - *start < window);
            if map.len() >= MAX_TRACKED_IPS {
                map.clear();
            }
        }
        let entry = map.entry(ip).or_insert((now, Vec::new()));
        if now - entry.0 >= self.policy.window.as_i64() {
            *entry = (now, Vec::new());
        }
        let tag = crate::secret::fingerprint(account);
        if !entry.1.contains(&tag) && entry.1.len() < 1000 {
            entry.1.push(tag);
        }
        let distinct = entry.1.len();
        distinct >= usize::try_from(self.policy.distinct_accounts).unwrap_or(usize::MAX)
    }
}

/// Makes and stores the next ban of `ip` (strikes counted from its previous ban).
///
/// The CLI's `ban add` shares this with the running guard.
pub async fn new_ban(
    store: &dyn BanStore,
    policy: &BanPolicy,
    ip: IpAddr,
    reason: &str,
    length: Option<Seconds>,
    now: UnixTime,
) -> Option<Ban> {
    let ip = crate::netaddr::bucket(ip);
    let previous = match store.get_ban(ip).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, %ip, "could not read the previous ban; banning as a first strike");
            None
        }
    };
    let strikes =
        previous.filter(|p| p.until > now - policy.memory.as_i64()).map_or(1, |p| p.strikes.saturating_add(1));
    let until = now.saturating_add(length.map_or_else(|| policy.duration(strikes), Seconds::as_i64));
    let ban = Ban { ip, created_at: now, until, strikes, reason: reason.to_owned() };
    if let Err(e) = store.put_ban(&ban).await {
        tracing::error!(error = %e, %ip, "could not store a ban");
        return None;
    }
    tracing::warn!(
        target: "portcullis::audit", event = "ban.created", alert = true, ip = %ip, reason,
        strikes, seconds = until - now, "IP banned"
    );
    Some(ban)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_double_up_to_the_cap() {
        let p = BanPolicy { base: Seconds(60), max: Seconds(600), ..BanPolicy::default() };
        assert_eq!(p.duration(1), 60);
        assert_eq!(p.duration(2), 120);
        assert_eq!(p.duration(4), 480);
        assert_eq!(p.duration(5), 600);
        assert_eq!(p.duration(99), 600);
    }
}
