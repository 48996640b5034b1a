//! The Portcullis API gateway: normalise → route → authenticate → authorize → forward →
//! respond. Tokens of this Portcullis are verified in-process with the domain's key ring
//! (no network hop); tokens of configured external issuers with their cached JWKS.
//! Every error is rendered in one place (`error`).

pub mod apikey;
pub mod auth;
pub mod authz;
pub mod bff;
pub mod cache;
pub mod config;
pub mod cors;
pub mod error;
pub mod h1pool;
pub mod jwks;
pub mod limits;
pub mod meters;
pub mod path;
pub mod proxy;
pub mod routes;
pub mod schema;

#[cfg(test)]
mod test_support;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use tracing::Instrument as _;

use crate::apikey::ApiKeyVerifier;
use crate::auth::{Authenticator, Credential, Identity};
use crate::config::{AuthMethod, IdentityHeaders};
use crate::error::{Downstream, GatewayError, Schemes};
use crate::routes::{Match, RouteTable};

/// The gateway: its routes and how it authenticates.
#[derive(Debug)]
pub struct Gateway {
    routes: RouteTable,
    auth: Authenticator,
    api_keys: ApiKeyVerifier,
    headers: IdentityHeaders,
    protection: Option<limits::Protection>,
    authz: authz::Authz,
    dpop: Option<DpopCheck>,
    bff: Option<Arc<bff::Bff>>,
    /// The BFF cookies, stripped from every upstream request.
    bff_cookies: Vec<String>,
}

/// DPoP at the gateway (RFC 9449 §7): the checker and what the proof's `htu` must be.
#[derive(Debug, Clone)]
pub struct DpopCheck {
    pub checker: domain::dpop::Dpop,
    /// Require a server nonce in every proof (RFC 9449 §9).
    pub require_nonce: bool,
    /// `scheme://host[:port]` clients use to reach the gateway, when a proxy in front
    /// changes it; otherwise the listener's scheme and the `Host` header.
    pub public_origin: Option<String>,
    /// The listener speaks TLS.
    pub https: bool,
}

impl Gateway {
    #[must_use]
    pub fn new(routes: RouteTable, auth: Authenticator, api_keys: ApiKeyVerifier, headers: IdentityHeaders) -> Self {
        Self {
            routes,
            auth,
            api_keys,
            headers,
            protection: None,
            authz: authz::Authz::default(),
            dpop: None,
            bff: None,
            bff_cookies: Vec::new(),
        }
    }

    /// Serves the backend-for-frontend apps (their `/bff/…` endpoints and `bff` routes).
    #[must_use]
    pub fn with_bff(mut self, bff: bff::Bff) -> Self {
        self.bff_cookies = bff.cookie_names();
        self.bff = Some(Arc::new(bff));
        self
    }

    /// Accepts DPoP-bound tokens (`Authorization: DPoP`), checking their proofs.
    #[must_use]
    pub fn with_dpop(mut self, dpop: DpopCheck) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// Sets role permissions and Cedar policies.
    #[must_use]
    pub fn with_authz(mut self, authz: authz::Authz) -> Self {
        self.authz = authz;
        self
    }

    /// Turns on rate limits and bans.
    #[must_use]
    pub fn with_protection(mut self, protection: limits::Protection) -> Self {
        self.protection = Some(protection);
        self
    }

    #[must_use]
    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    #[must_use]
    pub fn api_keys(&self) -> &ApiKeyVerifier {
        &self.api_keys
    }

    /// Routes the request, answers CORS preflights, and adds the route's CORS headers to
    /// whatever the route answers (errors included, so a browser app can read a 401).
    async fn process(&self, req: Request, peer: Option<std::net::IpAddr>) -> Response {
        if let Some(Err(e)) = self.protection.as_ref().map(|p| p.check_ban(peer)) {
            return e.into_response();
        }
        let (parts, body) = req.into_parts();
        if let Some(bff) = &self.bff
            && let Some((app, action)) = bff.endpoint(parts.uri.path())
        {
            return count("bff", bff.handle(app, action, &parts).await);
        }
        let preflight = cors::is_preflight(&parts.method, &parts.headers);
        let (route, path) = match self.select(&parts, preflight) {
            Ok(found) => found,
            Err(e) => return count("", e.into_response()),
        };
        tracing::Span::current().record("route", route.name.as_str());
        let started = std::time::Instant::now();
        let response = self.process_route(parts, body, route, &path, peer, preflight).await;
        route.meters.request_took(started.elapsed().as_secs_f64());
        route.meters.count(response.status());
        response
    }

    async fn process_route(
        &self,
        parts: axum::http::request::Parts,
        body: Body,
        route: &routes::Route,
        path: &str,
        peer: Option<std::net::IpAddr>,
        preflight: bool,
    ) -> Response {
        let Some(cors) = &route.cfg.cors else {
            return self.forward(parts, body, route, path, peer).await.unwrap_or_else(IntoResponse::into_response);
        };
        if preflight {
            return match cors.preflight(&parts.headers) {
                Some(headers) => (StatusCode::NO_CONTENT, headers).into_response(),
                None => GatewayError::Downstream(Downstream::CorsRefused).into_response(),
            };
        }
        let cors_headers = cors.response_headers(&parts.headers);
        let mut response =
            self.forward(parts, body, route, path, peer).await.unwrap_or_else(IntoResponse::into_response);
        if let Some(headers) = cors_headers {
            response.headers_mut().extend(headers);
        }
        response
    }

    /// The route for a request (for a preflight: the route of the method it asks about).
    fn select(
        &self,
        parts: &axum::http::request::Parts,
        preflight: bool,
    ) -> Result<(&routes::Route, String), GatewayError> {
        reject_smuggling(&parts.headers)?;
        let path = path::normalize(parts.uri.path())
            .map_err(|e| GatewayError::Downstream(Downstream::BadPath(e.describe())))?;
        let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| parts.uri.host());
        // A preflight is matched on the method it asks about, but only a route with CORS
        // answers it; anywhere else it is an ordinary OPTIONS request, matched as such (so
        // it cannot borrow another method's route and reach an upstream).
        let asked = parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .filter(|_| preflight);
        if let Some(asked) = asked
            && let Match::Found(r) = self.routes.find(host, &path, &asked)
            && r.cfg.cors.is_some()
        {
            return Ok((r, path));
        }
        match self.routes.find(host, &path, &parts.method) {
            Match::Found(r) => Ok((r, path)),
            Match::WrongMethod => Err(GatewayError::Downstream(Downstream::MethodNotAllowed)),
            Match::None => Err(GatewayError::Downstream(Downstream::NoRoute)),
        }
    }

    /// Authenticate → authorize → read the body → forward.
    async fn forward(
        &self,
        parts: axum::http::request::Parts,
        body: Body,
        route: &routes::Route,
        path: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Response, GatewayError> {
        let (identity, bearer) = match self.authenticate(&parts, route).await {
            Ok(found) => found,
            Err(e) => {
                if let (Some(p), GatewayError::Downstream(d)) = (&self.protection, &e)
                    && d.is_credential_guess()
                {
                    p.failed(peer).await;
                }
                return Err(e);
            }
        };
        let limit_headers = match &self.protection {
            Some(p) => p.check(route, identity.as_deref(), peer).await?,
            None => None,
        };
        if let Some(id) = &identity {
            auth::authorize(id, route, &|roles| self.authz.permissions_of(roles)).map_err(GatewayError::Downstream)?;
        }
        let facts = authz::Facts { method: parts.method.as_str(), path, ip: peer, now: self.auth.now() };
        self.authz.check(route, identity.as_deref(), &facts)?;
        if let Some(id) = &identity {
            // The allow half of the decision log (denials are logged by `error`); identity
            // only, never the credential.
            tracing::info!(
                target: "portcullis::audit", event = "gateway.allowed", subject = id.subject.as_str(),
                client_id = id.client_id.as_deref().unwrap_or(""), issuer = id.issuer.as_str(),
                jti = id.jti.as_deref().unwrap_or(""), "request allowed"
            );
        }

        let declared =
            parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > route.cfg.body_limit as u64) {
            return Err(GatewayError::Downstream(Downstream::PayloadTooLarge));
        }
        let bytes = read_body(body, route.cfg.body_limit).await?;
        if let Some(schema) = &route.schema {
            schema.check(&parts.method, &parts.headers, &bytes).map_err(GatewayError::Downstream)?;
        }
        let query = parts
            .uri
            .query()
            .map(|q| q.split('&').filter(|p| !p.starts_with("access_token=")).collect::<Vec<_>>().join("&"));
        let forward = proxy::Forward {
            traceparent: parts.extensions.get::<TraceParent>().map(|t| t.0.as_str()),
            meters: &route.meters,
            path,
            query,
            identity: identity.as_deref(),
            header_names: &self.headers,
            peer,
            forward_authorization: route.cfg.forward_authorization,
            bearer: bearer.as_deref(),
            strip_cookies: &self.bff_cookies,
        };
        let mut response = route.proxy.forward(&parts, bytes, forward).await?;
        if let Some(values) = &limit_headers {
            limits::insert_headers(response.headers_mut(), values);
        }
        Ok(response)
    }

    /// The caller's identity on `route` (`None` on a route that takes anonymous calls), and
    /// for a backend-for-frontend session the access token to send upstream.
    async fn authenticate(
        &self,
        parts: &axum::http::request::Parts,
        route: &routes::Route,
    ) -> Result<(Option<Arc<Identity>>, Option<String>), GatewayError> {
        let takes = |m| route.auth.contains(&m);
        let credential =
            auth::credentials(&parts.headers, parts.uri.query(), route).map_err(GatewayError::Downstream)?;
        if credential.is_none()
            && takes(AuthMethod::Bff)
            && let (Some(bff), Some(app)) = (&self.bff, route.cfg.bff_app.as_deref())
        {
            let token = bff.access_token(app, parts).await?;
            let identity = self.auth.verify(&token, route).await.map_err(GatewayError::Downstream)?;
            // A sender-constrained token is never usable without its key, session or not.
            check_binding(&identity, parts, None)?;
            return Ok((Some(identity), Some(token)));
        }
        self.authenticate_credential(parts, route, credential).await.map(|id| (id, None))
    }

    async fn authenticate_credential(
        &self,
        parts: &axum::http::request::Parts,
        route: &routes::Route,
        credential: Option<Credential>,
    ) -> Result<Option<Arc<Identity>>, GatewayError> {
        let takes = |m| route.auth.contains(&m);
        let certificate = parts.extensions.get::<auth::ClientCertificate>().filter(|_| takes(AuthMethod::Mtls));
        Ok(match credential {
            Some(Credential::Bearer(t)) if takes(AuthMethod::Jwt) => {
                let identity = self.auth.verify(&t, route).await.map_err(GatewayError::Downstream)?;
                check_binding(&identity, parts, None)?;
                Some(identity)
            }
            Some(Credential::Dpop(t))
                if takes(AuthMethod::Jwt)
                    && let Some(check) = &self.dpop =>
            {
                let identity = self.auth.verify(&t, route).await.map_err(GatewayError::Downstream)?;
                let proof = dpop_proof(check, parts, &t).await?;
                check_binding(&identity, parts, Some(&proof.jkt))?;
                Some(identity)
            }
            Some(Credential::ApiKey(k)) if takes(AuthMethod::ApiKey) => {
                Some(Arc::new(self.api_keys.verify(&k, self.auth.now()).await?))
            }
            // A verified client certificate, when no header credential was sent.
            None if certificate.is_some() => certificate.map(|c| Arc::new(auth::certificate_identity(c))),
            // Credentials on a route that takes none are neither checked nor forwarded.
            _ if takes(AuthMethod::None) => None,
            other => {
                let schemes = Schemes {
                    bearer: takes(AuthMethod::Jwt),
                    dpop: takes(AuthMethod::Jwt) && self.dpop.is_some(),
                    api_key: takes(AuthMethod::ApiKey),
                };
                let refusal = if other.is_some() {
                    Downstream::WrongCredentialKind(schemes)
                } else {
                    Downstream::MissingCredentials(schemes)
                };
                return Err(GatewayError::Downstream(refusal));
            }
        })
    }
}

/// Checks the request's `DPoP` proof for `token` (RFC 9449 §7.1).
async fn dpop_proof(
    check: &DpopCheck,
    parts: &axum::http::request::Parts,
    token: &str,
) -> Result<domain::dpop::Proof, GatewayError> {
    use domain::dpop::{self, DpopError};
    let refused = |e: DpopError| match e {
        DpopError::UseNonce => GatewayError::Downstream(Downstream::UseDpopNonce(check.checker.nonce())),
        DpopError::Unavailable => GatewayError::Unavailable(e.to_string()),
        other => GatewayError::Downstream(Downstream::InvalidDpopProof(other.code())),
    };
    let values = parts.headers.get_all(dpop::DPOP_HEADER).iter().map(axum::http::HeaderValue::as_bytes);
    let proof = dpop::single_proof(values).map_err(refused)?.ok_or(DpopError::Missing).map_err(refused)?;
    let url = match &check.public_origin {
        Some(origin) => format!("{origin}{}", parts.uri.path()),
        None => {
            let host = parts.headers.get(header::HOST).and_then(|h| h.to_str().ok());
            let host = host.or_else(|| parts.uri.authority().map(axum::http::uri::Authority::as_str));
            let scheme = if check.https { "https" } else { "http" };
            format!("{scheme}://{}{}", host.unwrap_or_default(), parts.uri.path())
        }
    };
    let request = dpop::ProofRequest {
        method: parts.method.as_str(),
        url: &url,
        access_token: Some(token),
        require_nonce: check.require_nonce,
    };
    check.checker.verify(proof, &request).await.map_err(refused)
}

/// A token's `cnf` against how it came: RFC 9449 §7 for DPoP, RFC 8705 §3 for a client
/// certificate (present only on a listener that verified one).
fn check_binding(
    identity: &Identity,
    parts: &axum::http::request::Parts,
    dpop_jkt: Option<&str>,
) -> Result<(), GatewayError> {
    use domain::dpop::{BindingError, Presentation, check_confirmation};
    let certificate = parts.extensions.get::<auth::ClientCertificate>().map(|c| c.thumbprint.as_str());
    check_confirmation(identity.cnf.as_ref(), &Presentation { dpop_jkt, certificate }).map_err(|e| {
        GatewayError::Downstream(match e {
            // §4.3 check 12 is part of proof validation.
            BindingError::KeyMismatch => Downstream::InvalidDpopProof(e.code()),
            _ => Downstream::InvalidToken(e.code()),
        })
    })
}

/// RFC 9112 §6.1 / §6.3: a message with both `Transfer-Encoding` and `Content-Length`, or
/// several `Content-Length`s, is how requests get smuggled past a proxy. Refuse both.
fn reject_smuggling(headers: &axum::http::HeaderMap) -> Result<(), GatewayError> {
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 1 || (lengths == 1 && headers.contains_key(header::TRANSFER_ENCODING)) {
        return Err(GatewayError::Downstream(Downstream::BadRequest("ambiguous message framing")));
    }
    Ok(())
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(GatewayError::Downstream(Downstream::PayloadTooLarge))
        }
        Err(_) => Err(GatewayError::Downstream(Downstream::BadRequest("the request body could not be read"))),
    }
}

/// Counts a response that no route's meters count: by `route` (empty: no route matched)
/// and status.
fn count(route: &str, response: Response) -> Response {
    meters::requests(route, response.status()).increment(1);
    response
}

/// The gateway's router: every request goes through [`Gateway::process`].
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new().fallback(handle).with_state(gateway)
}

/// A request's client address in its span, formatted only when the span is recorded.
struct Peer(Option<std::net::IpAddr>);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.map_or(Ok(()), |ip| ip.fmt(f))
    }
}

/// The `traceparent` the upstream gets: this request's span as its parent.
#[derive(Debug, Clone)]
struct TraceParent(String);

async fn handle(State(gateway): State<Arc<Gateway>>, mut req: Request) -> Response {
    // The client's address as the transport resolved it (behind trusted proxies, the
    // forwarded one), else the socket peer.
    let peer = req
        .extensions()
        .get::<domain::netaddr::ClientIp>()
        .map(|c| c.0)
        .or_else(|| req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip()));
    let incoming = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
    let trace = domain::trace::TraceContext::from_header(incoming);
    req.extensions_mut().insert(TraceParent(trace.child_header()));
    let span = tracing::info_span!(
        "gateway",
        // `&str` fields where there is one: recorded as they are, not through a formatter.
        method = req.method().as_str(),
        path = req.uri().path(),
        remote_addr = %Peer(peer),
        route = tracing::field::Empty,
        trace_id = trace.trace_id.as_str(),
        span_id = trace.span_id.as_str(),
        parent_id = trace.parent_id.as_deref().unwrap_or_default(),
        status = tracing::field::Empty,
    );
    let response = gateway.process(req, peer).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    response
}
