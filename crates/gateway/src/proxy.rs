//! Forwarding to upstreams: pooled keep-alive connections per route (HTTP/1.1, HTTP/2 by
//! ALPN over TLS or prior-knowledge h2c; TLS via rustls with the web PKI roots plus an
//! optional private CA), round-robin; plain-`http` HTTP/1.1 upstreams through
//! [`H1Pool`], whose connections the request's own task drives,
//! connect and request timeouts (502 / 504, never a hang), and header hygiene in both
//! directions: hop-by-hop headers (RFC 9110 §7.6.1) and anything the client could use to
//! impersonate (identity headers, `Forwarded`, `X-Forwarded-*`) are removed, then the
//! verified identity and fresh forwarding headers are added.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{self, HeaderName};
use axum::http::{HeaderMap, HeaderValue, Request, Response, Uri, request};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::{RouteConfig, UpstreamProtocol};
use crate::h1pool::H1Pool;
use crate::meters::Outcome;

use crate::auth::Identity;
use crate::config::IdentityHeaders;
use crate::error::{GatewayError, Upstream as UpstreamError};

/// An upstream base: `http(s)://host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    https: bool,
    authority: String,
}

impl Upstream {
    #[must_use]
    pub fn parse(url: &str) -> Option<Self> {
        let uri: Uri = url.parse().ok()?;
        let path_ok = matches!(uri.path(), "" | "/");
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return None,
        };
        (uri.query().is_none() && path_ok)
            .then(|| uri.authority().map(|a| Self { https, authority: a.as_str().to_owned() }))
            .flatten()
    }
}

#[derive(Debug)]
pub struct RouteProxy {
    upstreams: Vec<Upstream>,
    next: AtomicUsize,
    /// Per upstream (same order): its [`H1Pool`] when it is plain `http` and HTTP/1.1.
    direct: Vec<Option<std::sync::Arc<H1Pool>>>,
    /// TLS and HTTP/2 upstreams.
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    request_timeout: Duration,
}

/// How long an unused keep-alive connection is kept, and how many per upstream.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const MAX_IDLE: usize = 256;

/// rustls for upstream connections: TLS 1.2/1.3, the web PKI roots plus `extra` (DER).
fn tls_config(extra: &[Vec<u8>]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    for der in extra {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| format!("upstream CA certificate: {e}"))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // ALPN is left to hyper-rustls, which offers what the connector enables.
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Everything about the request that forwarding needs, already verified.
#[derive(Debug)]
pub struct Forward<'a> {
    /// W3C `traceparent` for the upstream (replaces the client's: the gateway's span is the
    /// upstream's parent).
    pub traceparent: Option<&'a str>,
    /// The route's metrics.
    pub meters: &'a crate::meters::RouteMeters,
    pub path: &'a str,
    pub query: Option<String>,
    pub identity: Option<&'a Identity>,
    pub header_names: &'a IdentityHeaders,
    pub peer: Option<IpAddr>,
    pub forward_authorization: bool,
    /// A backend-for-frontend session's access token, sent as `Authorization: Bearer`.
    pub bearer: Option<&'a str>,
    /// Cookies the upstream must not see (backend-for-frontend session cookies).
    pub strip_cookies: &'a [String],
}

impl RouteProxy {
    /// # Errors
    /// An unusable upstream CA certificate.
    pub fn new(upstreams: Vec<Upstream>, route: &RouteConfig) -> Result<Self, String> {
        let connect_timeout = Duration::from_secs(route.connect_timeout.0.max(1));
        let direct = upstreams
            .iter()
            .map(|u| {
                (!u.https && route.upstream_protocol != UpstreamProtocol::Http2)
                    .then(|| H1Pool::new(u.authority.clone(), connect_timeout, IDLE_TIMEOUT, MAX_IDLE))
            })
            .collect();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(&route.upstream_roots)?)
            .https_or_http();
        // The ALPN offer over TLS: h2 and HTTP/1.1, or just the one asked for.
        let https = match route.upstream_protocol {
            UpstreamProtocol::Auto => tls.enable_all_versions().wrap_connector(connector),
            UpstreamProtocol::Http1 => tls.enable_http1().wrap_connector(connector),
            UpstreamProtocol::Http2 => tls.enable_http2().wrap_connector(connector),
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_idle_timeout(IDLE_TIMEOUT).pool_max_idle_per_host(MAX_IDLE);
        // Prior-knowledge h2c; over TLS the ALPN list above already decides.
        if route.upstream_protocol == UpstreamProtocol::Http2 {
            builder.http2_only(true);
        }
        Ok(Self {
            upstreams,
            direct,
            next: AtomicUsize::new(0),
            client: builder.build(https),
            request_timeout: Duration::from_secs(route.request_timeout.0.max(1)),
        })
    }

    /// The next upstream, round-robin, with its [`H1Pool`] if it has one.
    fn pick(&self) -> Option<(&Upstream, Option<&std::sync::Arc<H1Pool>>)> {
        let n = self.upstreams.len();
        let i = (n > 0).then(|| self.next.fetch_add(1, Ordering::Relaxed) % n)?;
        Some((self.upstreams.get(i)?, self.direct.get(i).and_then(Option::as_ref)))
    }

    /// Sends the request upstream and returns its response (body streamed).
    ///
    /// # Errors
    /// 502 when the upstream cannot be reached, 504 when it does not answer in time.
    pub async fn forward(
        &self,
        parts: &request::Parts,
        body: Bytes,
        f: Forward<'_>,
    ) -> Result<Response<Body>, GatewayError> {
        let (upstream, direct) = self.pick().ok_or_else(|| GatewayError::Internal("route has no upstream".into()))?;
        let path_and_query = match &f.query {
            Some(q) if !q.is_empty() => format!("{}?{q}", f.path),
            _ => f.path.to_owned(),
        };
        // Origin-form over a connection of our own; absolute for the pooled client, which
        // picks the connection by it and rewrites it.
        let uri = match direct {
            Some(_) => Uri::builder().path_and_query(path_and_query).build(),
            None => Uri::builder()
                .scheme(if upstream.https { "https" } else { "http" })
                .authority(upstream.authority.as_str())
                .path_and_query(path_and_query)
                .build(),
        }
        .map_err(|e| GatewayError::Internal(format!("upstream uri: {e}")))?;
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| GatewayError::Internal(format!("upstream request: {e}")))?;
        *request.headers_mut() = upstream_headers(&parts.headers, &f);
        let started = std::time::Instant::now();
        let sent = match direct {
            Some(pool) => {
                let sent = tokio::time::timeout(self.request_timeout, pool.send(request)).await;
                sent.map(|r| r.map(|r| r.map(Body::new)).map_err(|e| e.to_string()))
            }
            None => {
                let sent = tokio::time::timeout(self.request_timeout, self.client.request(request)).await;
                sent.map(|r| r.map(|r| r.map(Body::new)).map_err(|e| e.to_string()))
            }
        };
        let outcome = match &sent {
            Err(_) => Outcome::Timeout,
            Ok(Err(_)) => Outcome::Unreachable,
            Ok(Ok(r)) if r.status().is_server_error() => Outcome::ServerError,
            Ok(Ok(_)) => Outcome::Ok,
        };
        f.meters.upstream_took(outcome, started.elapsed().as_secs_f64());
        if let Ok(Ok(r)) = &sent
            && r.status().is_server_error()
        {
            // Passed through to the client as it is; recorded for the upstream-errors detector.
            tracing::warn!(
                target: "portcullis::audit", event = "upstream.failed", status = r.status().as_u16(),
                "upstream answered with a server error"
            );
        }
        let response = match sent {
            Err(_) => return Err(GatewayError::Upstream(UpstreamError::Timeout)),
            Ok(Err(e)) => return Err(GatewayError::Upstream(UpstreamError::Unreachable(e))),
            Ok(Ok(r)) => r,
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }
}

/// RFC 9110 §7.6.1 hop-by-hop headers, plus `Proxy-*`.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a client could use to lie about where it comes from.
const FORWARDING: [&str; 5] = ["forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip"];

/// The header names `Connection` lists (RFC 9110 §7.6.1: hop-by-hop for this message).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether a header name is one of ours: never accepted from a client.
#[must_use]
pub fn is_identity_header(name: &str, names: &IdentityHeaders) -> bool {
    const PREFIX: &str = "x-portcullis-";
    name.get(..PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
        || [&names.subject, &names.client_id, &names.scopes, &names.roles, &names.issuer]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
}

/// The upstream's headers: the client's, minus everything hop-by-hop, spoofable or (per
/// route) the credential, plus the verified identity and fresh forwarding headers. One pass
/// over the client's headers into a new map (cloning the map and removing names one by one
/// costs a hash lookup per name removed, on every request).
fn upstream_headers(incoming: &HeaderMap, f: &Forward<'_>) -> HeaderMap {
    let listed = connection_listed(incoming);
    let credential = |name: &HeaderName| {
        name == header::AUTHORIZATION
            || name.as_str() == crate::auth::API_KEY_HEADER
            || name.as_str() == domain::dpop::DPOP_HEADER
    };
    let dropped = |name: &HeaderName| {
        name == header::HOST
            || name == header::CONTENT_LENGTH
            || HOP_BY_HOP.contains(&name.as_str())
            || FORWARDING.contains(&name.as_str())
            || listed.contains(name)
            || is_identity_header(name.as_str(), f.header_names)
            // A DPoP proof goes with the token: it names the gateway's URL and is spent here.
            || (!f.forward_authorization && credential(name))
    };
    let mut headers = HeaderMap::with_capacity(incoming.keys_len() + 9);
    for (name, value) in incoming {
        if !dropped(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let original_host = incoming.get(header::HOST);
    if !f.strip_cookies.is_empty() {
        let kept: Vec<String> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| crate::bff::strip_cookies(v, f.strip_cookies))
            .filter(|v| !v.is_empty())
            .collect();
        headers.remove(header::COOKIE);
        for v in kept {
            if let Ok(v) = HeaderValue::from_str(&v) {
                headers.append(header::COOKIE, v);
            }
        }
    }
    if let Some(token) = f.bearer
        && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        headers.insert(header::AUTHORIZATION, v);
    }
    let mut put = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if let Some(tp) = f.traceparent {
        put(HeaderName::from_static("traceparent"), tp);
    }
    // Configured names (checked at start-up, so parsing cannot fail here).
    let mut set = |name: &str, value: &str| {
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            put(n, value);
        }
    };
    if let Some(id) = f.identity {
        set(&f.header_names.subject, &id.subject);
        if let Some(client) = &id.client_id {
            set(&f.header_names.client_id, client);
        }
        set(&f.header_names.scopes, &id.scopes.join(" "));
        set(&f.header_names.roles, &id.roles.join(" "));
        set(&f.header_names.issuer, &id.issuer);
    }
    let host = original_host.and_then(|h| h.to_str().ok()).unwrap_or("");
    forwarding(&mut headers, host, f.peer);
    headers
}

/// `Forwarded`, `X-Forwarded-For/Proto/Host` as this hop saw the request.
fn forwarding(headers: &mut HeaderMap, host: &str, peer: Option<IpAddr>) {
    let mut put = |name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if let Some(ip) = peer {
        let ip_text = ip.to_string();
        let forwarded = match (ip, host.is_empty()) {
            (IpAddr::V4(_), true) => format!("for={ip_text};proto=http"),
            (IpAddr::V4(_), false) => format!("for={ip_text};proto=http;host=\"{host}\""),
            (IpAddr::V6(_), true) => format!("for=\"[{ip_text}]\";proto=http"),
            (IpAddr::V6(_), false) => format!("for=\"[{ip_text}]\";proto=http;host=\"{host}\""),
        };
        put(HeaderName::from_static("forwarded"), &forwarded);
        put(HeaderName::from_static("x-forwarded-for"), &ip_text);
    }
    put(HeaderName::from_static("x-forwarded-proto"), "http");
    if !host.is_empty() {
        put(HeaderName::from_static("x-forwarded-host"), host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        assert!(Upstream::parse("http://127.0.0.1:9000").is_some());
        assert!(Upstream::parse("http://svc.internal").is_some());
        assert!(Upstream::parse("http://svc/").is_some());
        assert!(Upstream::parse("http://svc/path").is_none());
        assert!(Upstream::parse("ftp://svc").is_none());
        assert!(Upstream::parse("svc:80").is_none());
    }

    #[test]
    fn spoofed_and_hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-portcullis-subject", "admin"),
            ("X-Portcullis-Anything", "x"),
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("authorization", "Bearer abc"),
            ("x-api-key", "pcs_x"),
            ("host", "api.example.com"),
            ("accept", "application/json"),
        ] {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_static(v));
        }
        let names = IdentityHeaders::default();
        let id = Identity { subject: "alice".into(), scopes: vec!["a".into()], ..Identity::default() };
        let f = Forward {
            traceparent: None,
            meters: &crate::meters::RouteMeters::new("test"),
            path: "/",
            query: None,
            identity: Some(&id),
            header_names: &names,
            peer: Some("10.0.0.9".parse().unwrap()),
            forward_authorization: false,
            bearer: None,
            strip_cookies: &[],
        };
        let out = upstream_headers(&h, &f);
        assert_eq!(out["x-portcullis-subject"], "alice");
        assert!(out.get("x-portcullis-anything").is_none());
        assert_eq!(out["x-forwarded-for"], "10.0.0.9");
        assert_eq!(out["forwarded"], "for=10.0.0.9;proto=http;host=\"api.example.com\"");
        assert_eq!(out["x-forwarded-host"], "api.example.com");
        for gone in ["connection", "x-secret", "te", "authorization", "x-api-key", "host"] {
            assert!(out.get(gone).is_none(), "{gone} forwarded");
        }
        assert_eq!(out["accept"], "application/json");
    }
}
