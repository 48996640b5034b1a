//! The `[rate_limit]` section and the abuse guard built from it: which limiter (memory or
//! Redis), the default limits of the authorization server's endpoints and of gateway
//! routes, client plans, and the ban policy.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use domain::abuse::{AbuseGuard, BanPolicy};
use domain::ratelimit::{Applies, CompiledRule, KeyPart, LimitRule, RateLimiter};
use domain::settings::Seconds;
use serde::Deserialize;

/// Where counters live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// This process's memory (one node).
    #[default]
    Memory,
    /// Redis, shared by every instance (`redis_url`).
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Rate limits and bans on; turning this off is for benchmarks and trusted networks.
    pub enabled: bool,
    pub backend: Backend,
    /// `redis://host:port[/db]` for `backend = "redis"`.
    pub redis_url: Option<crate::config::SecretUrl>,
    /// Prefix of every Redis key (several deployments can share one Redis).
    pub key_prefix: String,
    /// When Redis cannot answer: `open` (limit in this instance's memory) or `closed` (503).
    pub fail: store::FailMode,
    /// How long one Redis check may take before Redis counts as down.
    pub redis_timeout_ms: u64,
    /// The most keys the in-memory limiter keeps (idle keys are forgotten first).
    pub max_keys: usize,
    /// Send `RateLimit-Policy` / `RateLimit` on allowed responses too (always on 429s).
    pub headers_on_success: bool,
    /// Limits of `POST /oauth2/token`.
    pub token: Vec<LimitRule>,
    /// Limits of the login form (`POST /oauth2/login`).
    pub login: Vec<LimitRule>,
    /// Limits of `POST /oauth2/introspect`.
    pub introspect: Vec<LimitRule>,
    /// Limits of every other endpoint of the authorization server (not the health checks).
    pub endpoints: Vec<LimitRule>,
    /// Limits of gateway routes that configure none of their own.
    pub gateway_defaults: Vec<LimitRule>,
    /// Plans: plan name → client ids and API key ids on it (rules may give plans other
    /// quotas).
    pub plans: BTreeMap<String, Vec<String>>,
    pub bans: BanPolicy,
}

fn rule(name: &str, by: KeyPart, requests: u32, per: u64, burst: u32, applies_to: Applies) -> LimitRule {
    LimitRule {
        name: name.into(),
        by: vec![by],
        requests,
        per: Seconds(per),
        burst: Some(burst),
        applies_to,
        plans: BTreeMap::new(),
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: Backend::Memory,
            redis_url: None,
            key_prefix: "portcullis:rl:".into(),
            fail: store::FailMode::Open,
            redis_timeout_ms: 250,
            max_keys: 200_000,
            headers_on_success: true,
            // Sustained 10/s per address with bursts of 60: a busy machine client renews
            // tokens far less often; a secret-guessing loop is slowed (and banned).
            token: vec![rule("token-per-ip", KeyPart::Ip, 600, 60, 60, Applies::All)],
            // Passwords: 30 a minute per address, 10 at once (the per-account lockout of
            // `[signin]` applies besides).
            login: vec![rule("login-per-ip", KeyPart::Ip, 30, 60, 10, Applies::All)],
            introspect: vec![rule("introspect-per-ip", KeyPart::Ip, 3000, 60, 200, Applies::All)],
            endpoints: vec![rule("per-ip", KeyPart::Ip, 1200, 60, 200, Applies::All)],
            // Anonymous callers per address, tighter than verified callers per subject.
            gateway_defaults: vec![
                rule("anonymous-per-ip", KeyPart::Ip, 100, 1, 200, Applies::Anonymous),
                rule("per-caller", KeyPart::Subject, 1000, 1, 2000, Applies::Authenticated),
            ],
            plans: BTreeMap::new(),
            bans: BanPolicy::default(),
        }
    }
}

/// Compiled endpoint limits for the authorization server.
#[derive(Debug)]
pub struct Compiled {
    pub endpoints: authserver::limits::EndpointLimits,
    pub gateway_defaults: Vec<CompiledRule>,
}

impl RateLimitConfig {
    /// Every problem of the section.
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = self.compile() {
            errors.push(e);
        }
        if self.backend == Backend::Redis && self.redis_url.as_deref().is_none_or(str::is_empty) {
            errors.push("rate_limit.redis_url is required with backend = \"redis\"".into());
        }
        if self.max_keys < 1000 {
            errors.push("rate_limit.max_keys must be at least 1000".into());
        }
        if self.redis_timeout_ms == 0 {
            errors.push("rate_limit.redis_timeout_ms must be positive".into());
        }
        let b = &self.bans;
        if b.enabled && (b.failures == 0 || b.window.0 == 0 || b.base.0 == 0 || b.base.0 > b.max.0) {
            errors.push("rate_limit.bans: failures, window and base must be positive, and base at most max".into());
        }
        if let Err(e) = domain::netaddr::TrustedProxies::parse(&b.exempt) {
            errors.push(format!("rate_limit.bans.exempt: {e}"));
        }
        let mut seen = HashMap::new();
        for (plan, ids) in &self.plans {
            for id in ids {
                if let Some(other) = seen.insert(id, plan) {
                    errors.push(format!("rate_limit.plans: {id:?} is on both {other:?} and {plan:?}"));
                }
            }
        }
        errors
    }

    /// # Errors
    /// The first list that does not compile, named.
    pub fn compile(&self) -> Result<Compiled, String> {
        let list = |name: &str, rules: &[LimitRule]| {
            gateway::config::compile_limits(rules).map_err(|e| format!("rate_limit.{name}: {e}"))
        };
        Ok(Compiled {
            endpoints: authserver::limits::EndpointLimits {
                token: list("token", &self.token)?,
                login: list("login", &self.login)?,
                introspect: list("introspect", &self.introspect)?,
                other: list("endpoints", &self.endpoints)?,
            },
            gateway_defaults: list("gateway_defaults", &self.gateway_defaults)?,
        })
    }

    /// The limiter this section asks for.
    ///
    /// # Errors
    /// A Redis URL that does not parse.
    pub fn limiter(&self) -> Result<Arc<dyn RateLimiter>, String> {
        Ok(match (self.backend, &self.redis_url) {
            (Backend::Redis, Some(url)) => Arc::new(store::RedisLimiter::new(
                url,
                &self.key_prefix,
                self.fail,
                Duration::from_millis(self.redis_timeout_ms),
                self.max_keys,
            )?),
            _ => Arc::new(store::MemoryLimiter::new(self.max_keys)),
        })
    }

    /// client or API key id → plan.
    #[must_use]
    pub fn plan_map(&self) -> HashMap<String, String> {
        self.plans.iter().flat_map(|(plan, ids)| ids.iter().map(move |id| (id.clone(), plan.clone()))).collect()
    }
}

/// The guard, or `None` when rate limiting is off.
///
/// # Errors
/// The limiter cannot be built (a bad Redis URL).
pub fn guard(runtime: &crate::app::Runtime) -> Result<Option<(Arc<AbuseGuard>, Compiled)>, String> {
    let c = &runtime.config.rate_limit;
    if !c.enabled {
        return Ok(None);
    }
    let guard =
        AbuseGuard::new(c.limiter()?, runtime.stores.bans.clone(), c.bans.clone(), c.plan_map(), runtime.clock.clone());
    Ok(Some((Arc::new(guard), c.compile()?)))
}
