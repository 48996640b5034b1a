//! Rate limits and bans on the authorization server's own endpoints. One middleware:
//! refuses banned addresses, checks the endpoint's limits (stricter ones on the token,
//! login and introspection endpoints), and counts failed authentications (401 from a
//! client-authenticated endpoint — a wrong client secret — and a refused password) towards
//! a ban. A 401 from userinfo does not count: it is nearly always an expired access token.
//!
//! It also settles the client's address for everything after it: the transport's
//! [`ClientIp`] (behind trusted proxies, the forwarded address), else the socket peer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use domain::abuse::{AbuseGuard, Verdict};
use domain::netaddr::ClientIp;
use domain::ratelimit::{Caller, CompiledRule};

use crate::paths;

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The limits of each kind of endpoint.
#[derive(Debug, Default)]
pub struct EndpointLimits {
    /// `POST /oauth2/token`.
    pub token: Vec<CompiledRule>,
    /// `POST /oauth2/login` (the password form).
    pub login: Vec<CompiledRule>,
    /// `POST /oauth2/introspect`.
    pub introspect: Vec<CompiledRule>,
    /// Every other endpoint except the health checks.
    pub other: Vec<CompiledRule>,
}

#[derive(Debug)]
pub struct AuthProtection {
    pub guard: Arc<AbuseGuard>,
    pub limits: EndpointLimits,
    pub headers_on_success: bool,
}

/// A refused password, set on the login response so this layer can count it against the
/// account (credential stuffing: one address, many accounts).
#[derive(Debug, Clone)]
pub struct FailedLogin(pub String);

/// The client address of a request (see the module docs).
#[must_use]
pub fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ClientIp>()
        .map(|c| c.0)
        .or_else(|| req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip()))
}

pub async fn layer(State(protection): State<Option<Arc<AuthProtection>>>, mut req: Request, next: Next) -> Response {
    let ip = client_ip(&req);
    if let Some(ip) = ip {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let path = req.uri().path();
    let Some(p) = protection.filter(|_| path != paths::HEALTHZ && path != paths::READYZ) else {
        return next.run(req).await;
    };
    let (scope, rules, counts_401) = match (req.method(), path) {
        (&Method::POST, paths::TOKEN) => ("token", &p.limits.token, true),
        (&Method::POST, paths::LOGIN) => ("login", &p.limits.login, false),
        (&Method::POST, paths::INTROSPECT) => ("introspect", &p.limits.introspect, true),
        (&Method::POST, paths::REVOKE) => ("endpoints", &p.limits.other, true),
        _ => ("endpoints", &p.limits.other, false),
    };
    let caller = Caller { ip, ..Caller::default() };
    let headers = match p.guard.check(scope, rules, &caller).await {
        Verdict::Allowed { headers } => headers.filter(|_| p.headers_on_success),
        Verdict::Limited { retry_after, headers, rule } => {
            tracing::info!(target: "portcullis::audit", event = "ratelimit.limited", rule = %rule, retry_after, "rate limit exceeded");
            let mut r = too_many(retry_after, &format!("rate limit exceeded; retry after {retry_after} s"));
            if let Some(h) = &headers {
                insert(r.headers_mut(), h);
            }
            return r;
        }
        Verdict::Banned { retry_after } => {
            tracing::info!(target: "portcullis::audit", event = "ban.refused", retry_after, "request from a banned address");
            return too_many(retry_after, "too many failed authentication attempts from this address; try again later");
        }
        Verdict::Unavailable => {
            let mut r = crate::wire::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable",
                "the rate limiter is unavailable; retry shortly",
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    };
    let mut response = next.run(req).await;
    if let Some(FailedLogin(account)) = response.extensions_mut().remove::<FailedLogin>() {
        p.guard.record_failure(ip, Some(&account)).await;
    } else if counts_401 && response.status() == StatusCode::UNAUTHORIZED {
        p.guard.record_failure(ip, None).await;
    }
    if let Some(h) = &headers {
        insert(response.headers_mut(), h);
    }
    response
}

fn too_many(retry_after: u64, detail: &str) -> Response {
    let mut r = crate::wire::problem(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", detail);
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

fn insert(headers: &mut HeaderMap, (policy, current): &(String, String)) {
    if let (Ok(p), Ok(c)) = (HeaderValue::from_str(policy), HeaderValue::from_str(current)) {
        headers.insert(RATELIMIT_POLICY, p);
        headers.insert(RATELIMIT, c);
    }
}
