//! Anomaly detectors over the audit-event stream: sliding windows that turn a pattern of
//! ordinary events into one alert. Pure and synchronous (time is passed in); the server
//! feeds them from its audit writer, off the request path.
//!
//! | detector | pattern | key |
//! |---|---|---|
//! | `auth_failure_spike` | ≥ N refused credentials (401/403, bad secrets, bad passwords) | source address |
//! | `account_attack` | ≥ N failed sign-ins | account (`username_fp`) |
//! | `token_replay` | a rotated refresh token or a used code presented again | grant family |
//! | `token_shared` | one access token used from ≥ N addresses | token `jti` |
//! | `upstream_errors` | ≥ N upstream failures (5xx, unreachable, timeout) | gateway route |
//!
//! After firing, a detector stays quiet for that key for one window, so a flood gives one
//! alert per window, not one per event. Memory is bounded: at most [`MAX_KEYS`] keys per
//! detector; beyond that, idle keys are swept and, if still full, new keys are not tracked.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::audit::EventFields;
use crate::clock::UnixTime;

/// Keys tracked per detector, at most.
pub const MAX_KEYS: usize = 100_000;

/// A threshold within a window (seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub count: u32,
    pub window: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnomalyRules {
    pub auth_failures_per_address: Rule,
    pub failed_logins_per_account: Rule,
    pub addresses_per_token: Rule,
    pub upstream_errors_per_route: Rule,
}

impl Default for AnomalyRules {
    fn default() -> Self {
        Self {
            auth_failures_per_address: Rule { count: 20, window: 60 },
            failed_logins_per_account: Rule { count: 10, window: 600 },
            addresses_per_token: Rule { count: 4, window: 300 },
            upstream_errors_per_route: Rule { count: 20, window: 60 },
        }
    }
}

/// What a detector found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The detector, e.g. `auth_failure_spike`; the audit event is `alert.<kind>`.
    pub kind: &'static str,
    /// What it is about (an address, an account fingerprint, a family, a jti, a route).
    pub key: String,
    /// Events (or distinct addresses) counted.
    pub count: u32,
    pub window: i64,
}

/// Timestamps of recent events per key (at most `count` kept), and when each key last
/// fired.
#[derive(Debug, Default)]
struct Window {
    seen: HashMap<String, VecDeque<UnixTime>>,
    fired: HashMap<String, UnixTime>,
    /// When a full map was last swept: at most once a second, so a flood of new keys
    /// cannot make every event pay for a sweep.
    swept_at: Option<UnixTime>,
}

impl Window {
    fn hit(&mut self, key: &str, rule: Rule, now: UnixTime) -> Option<u32> {
        if !self.seen.contains_key(key) && !self.make_room(rule, now) {
            return None;
        }
        let times = self.seen.entry(key.to_owned()).or_default();
        times.push_back(now);
        while times.front().is_some_and(|t| *t <= now - rule.window) || times.len() > rule.count as usize {
            times.pop_front();
        }
        let count = u32::try_from(times.len()).unwrap_or(u32::MAX);
        (count >= rule.count && self.cooled(key, rule, now)).then_some(count)
    }

    /// Whether `key` may fire now (not within a window of its last alert); records it.
    fn cooled(&mut self, key: &str, rule: Rule, now: UnixTime) -> bool {
        if self.fired.get(key).is_some_and(|at| *at > now - rule.window) {
            return false;
        }
        if self.fired.len() >= MAX_KEYS {
            self.fired.retain(|_, at| *at > now - rule.window);
        }
        self.fired.insert(key.to_owned(), now);
        true
    }

    /// Sweeps idle keys when full; whether a new key fits.
    fn make_room(&mut self, rule: Rule, now: UnixTime) -> bool {
        if self.seen.len() < MAX_KEYS {
            return true;
        }
        if self.swept_at.is_some_and(|at| at >= now) {
            return false;
        }
        self.swept_at = Some(now);
        self.seen.retain(|_, t| t.back().is_some_and(|last| *last > now - rule.window));
        self.seen.len() < MAX_KEYS
    }
}

/// Distinct addresses per token.
#[derive(Debug, Default)]
struct Spread {
    seen: HashMap<String, HashMap<String, UnixTime>>,
    fired: Window,
    swept_at: Option<UnixTime>,
}

impl Spread {
    fn hit(&mut self, key: &str, address: &str, rule: Rule, now: UnixTime) -> Option<u32> {
        if !self.seen.contains_key(key) && self.seen.len() >= MAX_KEYS {
            if self.swept_at.is_some_and(|at| at >= now) {
                return None;
            }
            self.swept_at = Some(now);
            self.seen.retain(|_, a| a.values().any(|t| *t > now - rule.window));
            if self.seen.len() >= MAX_KEYS {
                return None;
            }
        }
        let addresses = self.seen.entry(key.to_owned()).or_default();
        addresses.retain(|_, t| *t > now - rule.window);
        // Bounded per token too: one more than the threshold is all a decision needs.
        if addresses.len() <= rule.count as usize || addresses.contains_key(address) {
            addresses.insert(address.to_owned(), now);
        }
        let count = u32::try_from(addresses.len()).unwrap_or(u32::MAX);
        (count >= rule.count && self.fired.cooled(key, rule, now)).then_some(count)
    }
}

#[derive(Debug, Default)]
pub struct Detectors {
    rules: AnomalyRules,
    auth_failures: Window,
    logins: Window,
    replays: Window,
    tokens: Spread,
    upstream: Window,
}

fn text<'a>(fields: &'a dyn EventFields, name: &str) -> Option<&'a str> {
    fields.field(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn status(fields: &dyn EventFields) -> Option<u64> {
    fields.field("status").and_then(|s| s.as_u64().or_else(|| s.as_str().and_then(|s| s.parse().ok())))
}

impl Detectors {
    #[must_use]
    pub fn new(rules: AnomalyRules) -> Self {
        Self { rules, ..Self::default() }
    }

    /// Feeds one audit event (its name and fields); returns the alerts it completes.
    pub fn observe(&mut self, event: &str, fields: &dyn EventFields, now: UnixTime) -> Option<Alert> {
        let r = self.rules;
        let address = text(fields, "remote_addr").or_else(|| text(fields, "ip"));
        let alert =
            |kind, key: &str, count, rule: Rule| Alert { kind, key: key.to_owned(), count, window: rule.window };
        match event {
            "token.refresh_reuse" | "token.code_replay" => {
                let family = text(fields, "family").unwrap_or("unknown");
                let once = Rule { count: 1, window: 60 };
                self.replays.hit(family, once, now).map(|n| alert("token_replay", family, n, once))
            }
            "login.failed" => {
                let account = text(fields, "username_fp");
                let on_account = account.and_then(|a| {
                    let rule = r.failed_logins_per_account;
                    self.logins.hit(a, rule, now).map(|n| alert("account_attack", a, n, rule))
                });
                on_account.or_else(|| self.failure(address, now))
            }
            "gateway.denied" | "token.refused" | "request.refused" => {
                let refused_credential = match event {
                    "gateway.denied" => status(fields).is_some_and(|s| s == 401 || s == 403),
                    _ => text(fields, "error").is_some_and(|e| e == "invalid_client" || e == "invalid_grant"),
                };
                if refused_credential { self.failure(address, now) } else { None }
            }
            "gateway.allowed" => {
                let (jti, address) = (text(fields, "jti")?, address?);
                let rule = r.addresses_per_token;
                self.tokens.hit(jti, address, rule, now).map(|n| alert("token_shared", jti, n, rule))
            }
            "upstream.failed" => {
                let route = text(fields, "route").unwrap_or("unknown");
                let rule = r.upstream_errors_per_route;
                self.upstream.hit(route, rule, now).map(|n| alert("upstream_errors", route, n, rule))
            }
            _ => None,
        }
    }

    fn failure(&mut self, address: Option<&str>, now: UnixTime) -> Option<Alert> {
        let address = address?;
        let rule = self.rules.auth_failures_per_address;
        self.auth_failures.hit(address, rule, now).map(|count| Alert {
            kind: "auth_failure_spike",
            key: address.to_owned(),
            count,
            window: rule.window,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), Value::from(*v))).collect()
    }

    fn small() -> AnomalyRules {
        AnomalyRules {
            auth_failures_per_address: Rule { count: 5, window: 60 },
            failed_logins_per_account: Rule { count: 3, window: 600 },
            addresses_per_token: Rule { count: 3, window: 300 },
            upstream_errors_per_route: Rule { count: 4, window: 60 },
        }
    }

    /// Feeds `n` events one second apart from `start`; returns the alerts.
    fn feed(d: &mut Detectors, event: &str, f: &Map<String, Value>, start: i64, n: i64) -> Vec<Alert> {
        (0..n).filter_map(|i| d.observe(event, f, start + i)).collect()
    }

    #[test]
    fn a_burst_of_refused_credentials_from_one_address_fires_once_per_window() {
        let mut d = Detectors::new(small());
        let bad = fields(&[("remote_addr", "203.0.113.9"), ("status", "401")]);
        let alerts = feed(&mut d, "gateway.denied", &bad, 0, 30);
        assert_eq!(alerts.len(), 1, "one alert, then quiet for the window: {alerts:?}");
        assert_eq!((alerts[0].kind, alerts[0].key.as_str(), alerts[0].count), ("auth_failure_spike", "203.0.113.9", 5));
        assert_eq!(feed(&mut d, "gateway.denied", &bad, 100, 5).len(), 1, "fires again in a later window");
        let secret = fields(&[("remote_addr", "203.0.113.10"), ("error", "invalid_client")]);
        assert_eq!(feed(&mut d, "token.refused", &secret, 0, 5).len(), 1, "bad client secrets count too");
    }

    #[test]
    fn normal_traffic_stays_quiet() {
        let mut d = Detectors::new(small());
        // Failures spread over time and addresses, a 404 and a scope error, successes.
        for i in 0..200 {
            let addr = format!("198.51.100.{}", i % 50);
            assert_eq!(
                d.observe("gateway.denied", &fields(&[("remote_addr", &addr), ("status", "401")]), i * 20),
                None
            );
            assert_eq!(
                d.observe("token.refused", &fields(&[("remote_addr", "10.0.0.1"), ("error", "invalid_scope")]), i),
                None
            );
            let ok = fields(&[("remote_addr", "10.0.0.2"), ("jti", "same-token")]);
            assert_eq!(d.observe("gateway.allowed", &ok, i), None, "one token from one address");
            assert_eq!(d.observe("token.issued", &ok, i), None);
            let own = format!("token-{i}");
            let moving = fields(&[("remote_addr", &addr), ("jti", &own)]);
            assert_eq!(d.observe("gateway.allowed", &moving, i), None, "many tokens, one address each");
        }
        let slow = fields(&[("username_fp", "abc"), ("remote_addr", "10.0.0.3")]);
        assert!(feed(&mut d, "login.failed", &slow, 0, 1).is_empty());
        assert_eq!(d.observe("login.failed", &slow, 700), None, "two failures 700 s apart");
        let route = fields(&[("route", "invoices")]);
        assert!((0..10).all(|i| d.observe("upstream.failed", &route, i * 30).is_none()), "sporadic 5xx");
    }

    #[test]
    fn an_account_under_attack_fires_whatever_the_addresses() {
        let mut d = Detectors::new(small());
        let alerts: Vec<Alert> = (0..3)
            .filter_map(|i| {
                let addr = format!("192.0.2.{i}");
                d.observe("login.failed", &fields(&[("username_fp", "f00d"), ("remote_addr", &addr)]), i)
            })
            .collect();
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].kind, alerts[0].key.as_str()), ("account_attack", "f00d"));
    }

    #[test]
    fn replayed_refresh_tokens_fire_at_once() {
        let mut d = Detectors::new(small());
        let a = d.observe("token.refresh_reuse", &fields(&[("family", "fam-1")]), 0).unwrap();
        assert_eq!((a.kind, a.key.as_str()), ("token_replay", "fam-1"));
        assert_eq!(d.observe("token.refresh_reuse", &fields(&[("family", "fam-1")]), 1), None, "once per family");
        assert!(d.observe("token.code_replay", &fields(&[("family", "fam-2")]), 1).is_some());
    }

    #[test]
    fn one_token_from_many_addresses_fires() {
        let mut d = Detectors::new(small());
        let alerts: Vec<Alert> = (0..10)
            .filter_map(|i| {
                let addr = format!("192.0.2.{}", i % 3);
                d.observe("gateway.allowed", &fields(&[("jti", "stolen"), ("remote_addr", &addr)]), i)
            })
            .collect();
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].kind, alerts[0].key.as_str(), alerts[0].count), ("token_shared", "stolen", 3));
    }

    #[test]
    fn a_rise_of_upstream_errors_fires_per_route() {
        let mut d = Detectors::new(small());
        let alerts = feed(&mut d, "upstream.failed", &fields(&[("route", "invoices")]), 0, 10);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].kind, alerts[0].key.as_str()), ("upstream_errors", "invoices"));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_addresses() {
        let mut d = Detectors::new(small());
        for i in 0..(MAX_KEYS as i64 + 1000) {
            let addr = format!("a{i}");
            d.observe("gateway.denied", &fields(&[("remote_addr", &addr), ("status", "401")]), 0);
        }
        assert!(d.auth_failures.seen.len() <= MAX_KEYS);
        // Once the window has passed, idle keys are swept and new ones tracked again.
        let bad = fields(&[("remote_addr", "late"), ("status", "401")]);
        assert_eq!(feed(&mut d, "gateway.denied", &bad, 100, 5).len(), 1);
    }
}
