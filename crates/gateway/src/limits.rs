//! Rate limits and bans on the gateway: the [`domain::abuse::AbuseGuard`] decides, this
//! module builds the caller from the verified identity and turns the verdict into a
//! response (or headers on the upstream's response).

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use domain::abuse::{AbuseGuard, Verdict};
use domain::ratelimit::{Caller, CompiledRule};

use crate::auth::Identity;
use crate::error::{Downstream, GatewayError};

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The gateway's rate limits and bans.
#[derive(Debug)]
pub struct Protection {
    pub guard: Arc<AbuseGuard>,
    /// Limits of routes that configure none.
    pub defaults: Vec<CompiledRule>,
    /// Send `RateLimit-Policy` / `RateLimit` on allowed responses too.
    pub headers_on_success: bool,
}

impl Protection {
    /// Refuses a banned address before anything else is looked at.
    ///
    /// # Errors
    /// `Banned` with the seconds left.
    pub fn check_ban(&self, ip: Option<IpAddr>) -> Result<(), GatewayError> {
        match self.guard.banned(ip) {
            Some(retry_after) => Err(GatewayError::Downstream(Downstream::Banned { retry_after })),
            None => Ok(()),
        }
    }

    /// Checks `route`'s limits for the caller; the headers to add to the response.
    ///
    /// # Errors
    /// `RateLimited` over a limit, `LimiterUnavailable` when the limiter fails closed.
    pub async fn check(
        &self,
        route: &crate::routes::Route,
        identity: Option<&Identity>,
        ip: Option<IpAddr>,
    ) -> Result<Option<(String, String)>, GatewayError> {
        let rules = route.limits.as_deref().unwrap_or(&self.defaults);
        if rules.is_empty() {
            return Ok(None);
        }
        let client_id = identity.and_then(|i| i.client_id.as_deref());
        let api_key = identity
            .filter(|i| i.issuer == crate::apikey::API_KEY_ISSUER)
            .and_then(|i| i.subject.strip_prefix("apikey:"));
        let caller = Caller {
            ip,
            subject: identity.map(|i| i.subject.as_str()),
            client_id,
            api_key,
            // A plan is assigned to a client id or an API key id.
            plan: self.guard.plan_of(client_id.or(api_key)),
            authenticated: identity.is_some(),
        };
        match self.guard.check(&route.name, rules, &caller).await {
            Verdict::Allowed { headers } => Ok(headers.filter(|_| self.headers_on_success)),
            Verdict::Limited { retry_after, headers, rule } => {
                Err(GatewayError::Downstream(Downstream::RateLimited { retry_after, headers, rule }))
            }
            Verdict::Banned { retry_after } => Err(GatewayError::Downstream(Downstream::Banned { retry_after })),
            Verdict::Unavailable => Err(GatewayError::LimiterUnavailable),
        }
    }

    /// Counts a failed authentication towards a ban of `ip`.
    pub async fn failed(&self, ip: Option<IpAddr>) {
        self.guard.record_failure(ip, None).await;
    }
}

/// Adds `RateLimit-Policy` and `RateLimit` (values from `domain::ratelimit::headers`).
pub fn insert_headers(headers: &mut HeaderMap, (policy, current): &(String, String)) {
    if let (Ok(p), Ok(c)) = (HeaderValue::from_str(policy), HeaderValue::from_str(current)) {
        headers.insert(RATELIMIT_POLICY, p);
        headers.insert(RATELIMIT, c);
    }
}
