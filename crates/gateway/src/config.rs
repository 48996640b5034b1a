//! The `[gateway]` configuration section, owned by this crate: the listener, the identity
//! header names, external token issuers and the routes. The server crate deserializes it
//! (reporting unknown keys) and calls [`GatewayConfig::validate`].

use std::net::SocketAddr;

use domain::jose::Algorithm;
use domain::settings::Seconds;
use serde::Deserialize;

/// The issuer name that means "tokens issued by this Portcullis" (verified in-process).
pub const SELF_ISSUER: &str = "self";

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// The gateway's listener; it starts when at least one route is configured.
    pub listen: SocketAddr,
    /// How many verified tokens to remember (keyed by SHA-256 of the token).
    pub token_cache_size: usize,
    /// How long an API-key lookup is reused; a revocation takes effect within this time.
    pub api_key_cache_ttl: Seconds,
    /// Names of the identity headers sent to upstreams (and always stripped from clients).
    pub headers: IdentityHeaders,
    /// Issuers other than this Portcullis whose tokens routes may accept.
    pub issuers: Vec<IssuerConfig>,
    pub routes: Vec<RouteConfig>,
    /// Browser apps for which the gateway is the backend-for-frontend (`[[gateway.bff]]`).
    pub bff: Vec<crate::bff::BffAppConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            token_cache_size: 10_000,
            api_key_cache_ttl: Seconds(5),
            headers: IdentityHeaders::default(),
            issuers: Vec::new(),
            routes: Vec::new(),
            bff: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IdentityHeaders {
    pub subject: String,
    pub client_id: String,
    pub scopes: String,
    pub roles: String,
    pub issuer: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            subject: "X-Portcullis-Subject".into(),
            client_id: "X-Portcullis-Client-Id".into(),
            scopes: "X-Portcullis-Scopes".into(),
            roles: "X-Portcullis-Roles".into(),
            issuer: "X-Portcullis-Issuer".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct IssuerConfig {
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    /// Where its public keys are published.
    pub jwks_uri: String,
    /// Algorithms accepted from this issuer (HMAC and `none` are not representable).
    pub algorithms: Vec<Algorithm>,
    /// Accepted `typ` header values; empty accepts any (many issuers send `JWT`).
    pub typ: Vec<String>,
    /// Background refresh of the key set.
    pub refresh_interval: Seconds,
    /// An unknown `kid` triggers a refetch at most this often (no JWKS storms).
    pub min_refetch_interval: Seconds,
    /// The claim holding roles (an array of strings, or a space-separated string).
    pub roles_claim: String,
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            jwks_uri: String::new(),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            typ: Vec::new(),
            refresh_interval: Seconds(300),
            min_refetch_interval: Seconds(30),
            roles_claim: "roles".into(),
        }
    }
}

/// How a route authenticates its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// No credentials required (identity headers are still stripped).
    None,
    /// A bearer JWT from this Portcullis or a configured issuer.
    Jwt,
    /// An API key made with `portcullis apikey create`.
    ApiKey,
    /// A client certificate verified by the gateway listener against `tls.client_ca_file`.
    Mtls,
    /// The session cookie of a backend-for-frontend app (`bff_app`): the gateway uses the
    /// session's access token, verified like `jwt`, and sends it to the upstream.
    Bff,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RouteConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// Matches this path and everything below it (segment-wise, ASCII case-insensitive).
    pub path_prefix: String,
    /// Optional `Host` to match (case-insensitive, port ignored).
    pub host: Option<String>,
    /// Methods allowed; empty allows any.
    pub methods: Vec<String>,
    /// Upstream base URLs (`http://host:port`), used round-robin.
    pub upstreams: Vec<String>,
    /// Required: `"none"`, `"jwt"`, `"api_key"`, or a list meaning "any of".
    pub auth: Option<AuthSpec>,
    /// Issuers accepted on this route: `"self"` and/or configured issuer URLs.
    pub issuers: Vec<String>,
    /// For `auth = "bff"`: the `[[gateway.bff]]` app whose session cookie authenticates.
    pub bff_app: Option<String>,
    /// The token's `aud` must contain one of these (required for `jwt`).
    pub audiences: Vec<String>,
    /// Every one of these scopes is required.
    pub scopes_all: Vec<String>,
    /// At least one of these scopes is required.
    pub scopes_any: Vec<String>,
    pub roles_all: Vec<String>,
    pub roles_any: Vec<String>,
    /// Permissions (granted by roles through `[authorization.roles]`) all required.
    pub permissions_all: Vec<String>,
    /// At least one of these permissions is required.
    pub permissions_any: Vec<String>,
    /// With `[authorization] policies_dir`, Cedar decides every request of the route
    /// (default deny); `false` exempts the route.
    pub policies: bool,
    /// `/users/{id}/invoices/{invoice}`: the parameters become attributes of the Cedar
    /// resource (`resource.id`).
    pub path_pattern: Option<String>,
    /// Cedar action per method (`{ GET = "readProfile" }`); otherwise the method name.
    pub actions: std::collections::BTreeMap<String, String>,
    /// Send the client's credentials (`Authorization`, `X-API-Key`, a `DPoP` proof) on to the upstream.
    pub forward_authorization: bool,
    /// Accept `?access_token=` (RFC 6750 §2.3; discouraged, off by default).
    pub allow_query_token: bool,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    pub connect_timeout: Seconds,
    pub request_timeout: Seconds,
    /// Cross-origin rules for browser callers; none means no CORS headers at all.
    pub cors: Option<crate::cors::CorsConfig>,
    /// For `mtls`: the certificate subjects (SAN URI, SAN DNS name or CN) allowed on this
    /// route; empty allows any certificate the listener's CA verified.
    pub mtls_subjects: Vec<String>,
    /// HTTP version towards the upstreams: `auto` (HTTP/1.1 over `http://`, ALPN h2 or
    /// HTTP/1.1 over `https://`), `http1`, or `http2` (prior-knowledge h2c over `http://`).
    pub upstream_protocol: UpstreamProtocol,
    /// PEM CA bundle for `https://` upstreams with a private CA (the public web roots are
    /// always trusted).
    pub upstream_ca_file: Option<std::path::PathBuf>,
    /// The DER certificates of `upstream_ca_file`, read by the server crate at startup.
    #[serde(skip)]
    pub upstream_roots: Vec<Vec<u8>>,
    /// A JSON Schema (file) request bodies of POST, PUT and PATCH (and any other request
    /// with a body) must satisfy; such bodies must be `application/json`.
    pub json_schema: Option<std::path::PathBuf>,
    /// The parsed `json_schema`, read by the server crate at startup.
    #[serde(skip)]
    pub json_schema_doc: Option<serde_json::Value>,
    /// Rate limits of this route (`[[gateway.routes.rate_limits]]`); none configured means
    /// `[rate_limit].gateway_defaults`; an empty list (`rate_limits = []`) means none.
    pub rate_limits: Option<Vec<domain::ratelimit::LimitRule>>,
}

/// See [`RouteConfig::upstream_protocol`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Auto,
    Http1,
    Http2,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            path_prefix: String::new(),
            host: None,
            methods: Vec::new(),
            upstreams: Vec::new(),
            auth: None,
            issuers: vec![SELF_ISSUER.into()],
            bff_app: None,
            audiences: Vec::new(),
            scopes_all: Vec::new(),
            scopes_any: Vec::new(),
            roles_all: Vec::new(),
            roles_any: Vec::new(),
            permissions_all: Vec::new(),
            permissions_any: Vec::new(),
            policies: true,
            path_pattern: None,
            actions: std::collections::BTreeMap::new(),
            forward_authorization: false,
            allow_query_token: false,
            body_limit: 1024 * 1024,
            connect_timeout: Seconds(2),
            request_timeout: Seconds(30),
            cors: None,
            mtls_subjects: Vec::new(),
            upstream_protocol: UpstreamProtocol::Auto,
            upstream_ca_file: None,
            upstream_roots: Vec::new(),
            json_schema: None,
            json_schema_doc: None,
            rate_limits: None,
        }
    }
}

/// `auth = "jwt"` or `auth = ["jwt", "none"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSpec {
    One(AuthMethod),
    AnyOf(Vec<AuthMethod>),
}

impl<'de> Deserialize<'de> for AuthSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let method = |name: &str| match name {
            "none" => Ok(AuthMethod::None),
            "jwt" => Ok(AuthMethod::Jwt),
            "api_key" => Ok(AuthMethod::ApiKey),
            "mtls" => Ok(AuthMethod::Mtls),
            "bff" => Ok(AuthMethod::Bff),
            other => Err(serde::de::Error::custom(format!(
                "unknown auth method {other:?}; expected \"none\", \"jwt\", \"api_key\", \"mtls\" or \"bff\" (or a list of them)"
            ))),
        };
        match Raw::deserialize(d).map_err(|_| serde::de::Error::custom("auth must be a string or a list of strings"))? {
            Raw::One(name) => method(&name).map(Self::One),
            Raw::Many(names) => names.iter().map(|n| method(n)).collect::<Result<_, _>>().map(Self::AnyOf),
        }
    }
}

impl AuthSpec {
    #[must_use]
    pub fn methods(&self) -> Vec<AuthMethod> {
        match self {
            Self::One(m) => vec![*m],
            Self::AnyOf(list) => list.clone(),
        }
    }
}

impl GatewayConfig {
    /// Every semantic problem of the section.
    /// Whether any route takes client certificates (the listener must then ask for them).
    #[must_use]
    pub fn uses_mtls(&self) -> bool {
        self.routes.iter().any(|r| r.auth.as_ref().is_some_and(|a| a.methods().contains(&AuthMethod::Mtls)))
    }

    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let h = &self.headers;
        for (key, name) in [
            ("subject", &h.subject),
            ("client_id", &h.client_id),
            ("scopes", &h.scopes),
            ("roles", &h.roles),
            ("issuer", &h.issuer),
        ] {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(format!("gateway.headers.{key} = {name:?} is not a valid HTTP header name"));
            }
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let at = format!("gateway.issuers[{i}]");
            if issuer.issuer.is_empty() || issuer.issuer == SELF_ISSUER {
                errors.push(format!("{at}.issuer must be the issuer's URL"));
            }
            if !(issuer.jwks_uri.starts_with("https://") || is_loopback_http(&issuer.jwks_uri)) {
                errors.push(format!("{at}.jwks_uri must be an https URL (http only on loopback)"));
            }
            if issuer.algorithms.is_empty() {
                errors.push(format!("{at}.algorithms must not be empty"));
            }
            if issuer.min_refetch_interval.0 == 0 || issuer.refresh_interval.0 == 0 {
                errors.push(format!("{at}: refresh intervals must be positive"));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            errors.extend(self.validate_route(i, route));
        }
        for (i, app) in self.bff.iter().enumerate() {
            errors.extend(app.problems(i));
            if self.bff.iter().take(i).any(|a| a.name == app.name || a.path_prefix == app.path_prefix) {
                errors.push(format!("gateway.bff[{i}]: name and path_prefix must be unique"));
            }
        }
        errors
    }

    fn validate_bff_route(&self, at: &str, route: &RouteConfig, methods: &[AuthMethod]) -> Vec<String> {
        let mut errors = Vec::new();
        let bff_app = route.bff_app.as_deref();
        if methods.contains(&AuthMethod::Bff) != bff_app.is_some() {
            errors.push(format!("{at}: auth \"bff\" and bff_app go together"));
        }
        if let Some(app) = bff_app
            && !self.bff.iter().any(|a| a.name == app)
        {
            errors.push(format!("{at}: bff_app {app:?} is not configured in [[gateway.bff]]"));
        }
        errors
    }

    fn validate_route(&self, i: usize, route: &RouteConfig) -> Vec<String> {
        let mut errors = Vec::new();
        let at = if route.name.is_empty() {
            format!("gateway.routes[{i}]")
        } else {
            format!("gateway.routes[{i}] ({})", route.name)
        };
        if !route.path_prefix.starts_with('/') || crate::path::normalize(&route.path_prefix).is_err() {
            errors.push(format!("{at}: path_prefix must be an absolute, normalised path"));
        }
        if route.upstreams.is_empty() {
            errors.push(format!("{at}: at least one upstream is required"));
        }
        for u in &route.upstreams {
            if crate::proxy::Upstream::parse(u).is_none() {
                errors.push(format!("{at}: upstream {u:?} must be http(s)://host[:port] with no path or query"));
            }
        }
        let methods = match &route.auth {
            None => {
                errors.push(format!(
                    "{at}: auth is required (\"none\", \"jwt\", \"api_key\", \"mtls\" or a list of them)"
                ));
                Vec::new()
            }
            Some(spec) => spec.methods(),
        };
        if methods.is_empty() && route.auth.is_some() {
            errors.push(format!("{at}: auth list must not be empty"));
        }
        errors.extend(self.validate_bff_route(&at, route, &methods));
        if methods.contains(&AuthMethod::Jwt) || methods.contains(&AuthMethod::Bff) {
            if route.audiences.is_empty() {
                errors.push(format!("{at}: jwt routes need audiences (RFC 9068 §4: the audience MUST be checked)"));
            }
            for iss in &route.issuers {
                if iss != SELF_ISSUER && !self.issuers.iter().any(|c| &c.issuer == iss) {
                    errors.push(format!("{at}: issuer {iss:?} is not configured in [[gateway.issuers]]"));
                }
            }
            if route.issuers.is_empty() {
                errors.push(format!("{at}: jwt routes need at least one issuer"));
            }
        }
        let needs_identity = !(route.scopes_all.is_empty()
            && route.scopes_any.is_empty()
            && route.roles_all.is_empty()
            && route.roles_any.is_empty()
            && route.permissions_all.is_empty()
            && route.permissions_any.is_empty());
        if needs_identity && methods.contains(&AuthMethod::None) {
            errors.push(format!("{at}: a route that requires scopes or roles cannot allow auth \"none\""));
        }
        if !route.mtls_subjects.is_empty() && !methods.contains(&AuthMethod::Mtls) {
            errors.push(format!("{at}: mtls_subjects needs auth \"mtls\""));
        }
        if let Some(cors) = &route.cors {
            errors.extend(cors.validate(&at));
        }
        for m in &route.methods {
            if axum::http::Method::from_bytes(m.as_bytes()).is_err() {
                errors.push(format!("{at}: {m:?} is not an HTTP method"));
            }
        }
        if let Some(pattern) = &route.path_pattern {
            let prefix_ok =
                pattern.to_ascii_lowercase().starts_with(&route.path_prefix.trim_end_matches('/').to_ascii_lowercase());
            if !pattern.starts_with('/') || !prefix_ok {
                errors.push(format!("{at}: path_pattern must be an absolute path under path_prefix"));
            }
        }
        if let Err(e) = compile_limits(route.rate_limits.as_deref().unwrap_or_default()) {
            errors.push(format!("{at}: {e}"));
        }
        errors
    }
}

pub(crate) fn is_loopback_http(url: &str) -> bool {
    ["http://127.0.0.1", "http://localhost", "http://[::1]"].iter().any(|p| {
        url.strip_prefix(p).is_some_and(|rest| rest.is_empty() || rest.starts_with(':') || rest.starts_with('/'))
    })
}

/// Compiles a list of rate-limit rules; names must be unique within the list.
///
/// # Errors
/// The first rule that does not compile, or a repeated name.
pub fn compile_limits(rules: &[domain::ratelimit::LimitRule]) -> Result<Vec<domain::ratelimit::CompiledRule>, String> {
    let mut out: Vec<domain::ratelimit::CompiledRule> = Vec::with_capacity(rules.len());
    for rule in rules {
        let compiled = domain::ratelimit::CompiledRule::compile(rule)?;
        if out.iter().any(|r| r.name == compiled.name) {
            return Err(format!("rate limit name {:?} is used twice", compiled.name));
        }
        out.push(compiled);
    }
    Ok(out)
}
