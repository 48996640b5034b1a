//! Backend-for-frontend: the gateway is an OpenID Connect relying party for browser apps,
//! so tokens never reach JavaScript. Per app (`[[gateway.bff]]`):
//!
//! - `GET {prefix}/bff/login` starts authorization code + PKCE S256 (state, nonce and
//!   verifier ride in a sealed, short-lived cookie), `GET {prefix}/bff/callback` finishes it
//!   (state checked, code exchanged, ID token claims checked) and sets the session cookie;
//! - `GET {prefix}/bff/user` answers the user's public claims;
//! - `POST {prefix}/bff/logout` ends the session, revokes the refresh token and answers the
//!   provider's logout URL (RP-initiated logout ends its SSO session too).
//!
//! The session cookie is `__Host-`, `HttpOnly`, `Secure`, `SameSite=Strict` (or `Lax`) and
//! opaque; the tokens stay server-side, sealed ([`domain::bff`]), and are refreshed (with
//! rotation) shortly before the access token expires. Routes with `auth = "bff"` use the
//! session's access token; state-changing requests must carry `X-Portcullis-CSRF: 1` and,
//! when the browser sends one, an allowed `Origin` (a cross-site page can do neither).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::bff::{BffSealer, BffSession, BffSessionStore, LoginState, SessionTokens};
use domain::clock::{Clock, UnixTime};
use domain::keyring::KeyRing;
use domain::secret;
use domain::settings::Seconds;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Downstream, GatewayError, Upstream};

/// The header state-changing requests must carry (a cross-origin page cannot add it
/// without a CORS preflight, which BFF routes never grant).
pub const CSRF_HEADER: &str = "x-portcullis-csrf";
/// How long one back-channel call to the provider may take (discovery, token, userinfo).
const BACKCHANNEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The claims `/bff/user` may show (never tokens, never internal ids of other parties).
const PUBLIC_CLAIMS: [&str; 9] = [
    "sub",
    "name",
    "preferred_username",
    "email",
    "email_verified",
    "given_name",
    "family_name",
    "picture",
    "updated_at",
];

#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BffAppConfig {
    /// Names the app for routes (`bff_app`) and its cookie.
    pub name: String,
    /// The BFF endpoints live at `{path_prefix}/bff/…` (empty: `/bff/…`).
    pub path_prefix: String,
    /// The OpenID provider: `"self"` (this Portcullis) or an issuer URL (discovered).
    pub issuer: String,
    pub client_id: String,
    /// The client's secret (a confidential client; recommended). Never logged.
    pub client_secret: Option<String>,
    /// The callback URL registered with the provider: `https://app.example.com/bff/callback`.
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    /// Where the browser lands after signing in, unless the login asked for a path.
    pub post_login_redirect: String,
    /// Where the provider sends the browser after logout (registered with it).
    pub post_logout_redirect: Option<String>,
    /// `strict` (default) or `lax` for the session cookie.
    pub same_site: SameSite,
    pub session_idle_ttl: Seconds,
    pub session_absolute_ttl: Seconds,
    /// Refresh the access token when it expires within this time.
    pub refresh_before: Seconds,
    /// Origins allowed to make state-changing calls (default: the origin of `redirect_uri`).
    pub allowed_origins: Vec<String>,
}

impl std::fmt::Debug for BffAppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BffAppConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    #[default]
    Strict,
    Lax,
}

impl Default for BffAppConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            path_prefix: String::new(),
            issuer: crate::config::SELF_ISSUER.into(),
            client_id: String::new(),
            client_secret: None,
            redirect_uri: String::new(),
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            post_login_redirect: "/".into(),
            post_logout_redirect: None,
            same_site: SameSite::Strict,
            session_idle_ttl: Seconds(30 * 60),
            session_absolute_ttl: Seconds(12 * 3600),
            refresh_before: Seconds(30),
            allowed_origins: Vec::new(),
        }
    }
}

impl BffAppConfig {
    /// Every problem of `[[gateway.bff]]` entry `i`.
    #[must_use]
    pub fn problems(&self, i: usize) -> Vec<String> {
        let at = format!("gateway.bff[{i}]");
        let mut errors = Vec::new();
        if self.name.is_empty() || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            errors.push(format!("{at}.name must be letters, digits, - or _"));
        }
        if !self.path_prefix.is_empty() && (!self.path_prefix.starts_with('/') || self.path_prefix.ends_with('/')) {
            errors.push(format!("{at}.path_prefix must start with / and not end with one"));
        }
        if self.client_id.is_empty() {
            errors.push(format!("{at}.client_id is required"));
        }
        if origin_of(&self.redirect_uri).is_none() {
            errors.push(format!("{at}.redirect_uri must be an absolute http(s) URL"));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            errors.push(format!("{at}.scopes must include openid"));
        }
        if !is_local_path(&self.post_login_redirect) {
            errors.push(format!("{at}.post_login_redirect must be a path on the app's origin"));
        }
        let issuer_ok = self.issuer == crate::config::SELF_ISSUER
            || self.issuer.starts_with("https://")
            || crate::config::is_loopback_http(&self.issuer);
        if !issuer_ok {
            errors.push(format!("{at}.issuer must be \"self\" or an https URL (http only on loopback)"));
        }
        if self.session_idle_ttl.0 == 0 || self.session_absolute_ttl.0 < self.session_idle_ttl.0 {
            errors.push(format!("{at}: session_idle_ttl must be positive and at most session_absolute_ttl"));
        }
        errors
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    matches!(u.scheme(), "http" | "https").then(|| u.origin().ascii_serialization()).filter(|o| o != "null")
}

/// A same-origin path: `/x`, never `//host` or `/\host` (open redirects).
fn is_local_path(p: &str) -> bool {
    p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/\\") && !p.chars().any(char::is_control)
}

/// The provider's endpoints, from its discovery document.
#[derive(Debug)]
struct Endpoints {
    authorization: String,
    token: String,
    userinfo: Option<String>,
    end_session: Option<String>,
    revocation: Option<String>,
}

#[derive(Debug)]
pub struct App {
    cfg: BffAppConfig,
    issuer: String,
    origins: Vec<String>,
    cookie: String,
    login_cookie: String,
    endpoints: ArcSwapOption<Endpoints>,
}

/// The four BFF endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Login,
    Callback,
    User,
    Logout,
}

/// Every BFF app of the gateway, their session store and how tokens are sealed.
#[derive(Debug)]
pub struct Bff {
    apps: Vec<App>,
    sessions: Arc<dyn BffSessionStore>,
    sealer: Arc<BffSealer>,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    keys: Arc<KeyRing>,
    /// Issuers of `[[gateway.issuers]]`: an external provider listed there has its ID
    /// tokens' signatures checked through its JWKS too.
    external: Vec<Arc<crate::jwks::ExternalIssuer>>,
    leeway: i64,
}

impl Bff {
    #[must_use]
    pub fn new(
        configs: &[BffAppConfig],
        self_issuer: &str,
        sessions: Arc<dyn BffSessionStore>,
        sealer: Arc<BffSealer>,
        keys: Arc<KeyRing>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let apps = configs
            .iter()
            .map(|cfg| {
                let issuer =
                    if cfg.issuer == crate::config::SELF_ISSUER { self_issuer.to_owned() } else { cfg.issuer.clone() };
                let origins = if cfg.allowed_origins.is_empty() {
                    origin_of(&cfg.redirect_uri).into_iter().collect()
                } else {
                    cfg.allowed_origins.clone()
                };
                App {
                    cookie: format!("__Host-portcullis-{}", cfg.name),
                    login_cookie: format!("__Host-portcullis-login-{}", cfg.name),
                    cfg: cfg.clone(),
                    issuer,
                    origins,
                    endpoints: ArcSwapOption::empty(),
                }
            })
            .collect();
        Self { apps, sessions, sealer, clock, http: reqwest::Client::new(), keys, external: Vec::new(), leeway: 30 }
    }

    /// The gateway's HTTP client (the one that fetches JWKS: no redirects followed); each
    /// call to the provider still has its own timeout.
    #[must_use]
    pub fn with_http(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// A POST to the provider with the app's client authentication (RFC 6749 §2.3.1:
    /// `client_secret_basic`, or `client_id` alone for a public client).
    fn client_post(&self, app: &App, url: &str, mut form: Vec<(&'static str, String)>) -> reqwest::RequestBuilder {
        let req = self.http.post(url).timeout(BACKCHANNEL_TIMEOUT);
        let req = match &app.cfg.client_secret {
            Some(secret) => req.basic_auth(&app.cfg.client_id, Some(secret)),
            None => {
                form.push(("client_id", app.cfg.client_id.clone()));
                req
            }
        };
        req.form(&form)
    }

    /// The external issuers whose JWKS the gateway already follows.
    #[must_use]
    pub fn with_external(mut self, external: Vec<Arc<crate::jwks::ExternalIssuer>>) -> Self {
        self.external = external;
        self
    }

    /// The app and endpoint a request path names, if any.
    #[must_use]
    pub fn endpoint(&self, path: &str) -> Option<(&App, Action)> {
        self.apps.iter().find_map(|app| {
            let rest = path.strip_prefix(app.cfg.path_prefix.as_str())?.strip_prefix("/bff/")?;
            let action = match rest {
                "login" => Action::Login,
                "callback" => Action::Callback,
                "user" => Action::User,
                "logout" => Action::Logout,
                _ => return None,
            };
            Some((app, action))
        })
    }

    /// Answers one BFF endpoint.
    pub async fn handle(&self, app: &App, action: Action, parts: &Parts) -> Response {
        let result = match (action, &parts.method) {
            (Action::Login, &Method::GET) => self.login(app, parts).await,
            (Action::Callback, &Method::GET) => self.callback(app, parts).await,
            (Action::User, &Method::GET) => self.user(app, &parts.headers).await,
            (Action::Logout, &Method::POST) => self.logout(app, parts).await,
            _ => Err(GatewayError::Downstream(Downstream::MethodNotAllowed)),
        };
        let mut response = result.unwrap_or_else(IntoResponse::into_response);
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    async fn endpoints(&self, app: &App) -> Result<Arc<Endpoints>, GatewayError> {
        if let Some(e) = app.endpoints.load_full() {
            return Ok(e);
        }
        let url = format!("{}/.well-known/openid-configuration", app.issuer.trim_end_matches('/'));
        let down = |e: &dyn std::fmt::Display| GatewayError::Upstream(Upstream::Unreachable(format!("discovery: {e}")));
        let doc: Value = self
            .http
            .get(&url)
            .timeout(BACKCHANNEL_TIMEOUT)
            .send()
            .await
            .map_err(|e| down(&e))?
            .json()
            .await
            .map_err(|e| down(&e))?;
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        if text("issuer").as_deref() != Some(app.issuer.as_str()) {
            return Err(down(&"the discovery document names another issuer"));
        }
        let endpoints = Arc::new(Endpoints {
            authorization: text("authorization_endpoint").ok_or_else(|| down(&"no authorization_endpoint"))?,
            token: text("token_endpoint").ok_or_else(|| down(&"no token_endpoint"))?,
            userinfo: text("userinfo_endpoint"),
            end_session: text("end_session_endpoint"),
            revocation: text("revocation_endpoint"),
        });
        app.endpoints.store(Some(endpoints.clone()));
        Ok(endpoints)
    }

    async fn login(&self, app: &App, parts: &Parts) -> Result<Response, GatewayError> {
        let endpoints = self.endpoints(app).await?;
        // Only a same-origin path that fits in a Location header as it is.
        let return_to = query_param(parts.uri.query(), "return_to")
            .filter(|p| is_local_path(p) && HeaderValue::from_str(p).is_ok())
            .unwrap_or_else(|| app.cfg.post_login_redirect.clone());
        let state = LoginState {
            state: secret::random_token(16),
            nonce: secret::random_token(16),
            verifier: secret::random_token(32),
            return_to,
            expires_at: self.clock.now() + 600,
        };
        let sealed =
            self.sealer.seal_login(&app.cfg.name, &state).ok_or_else(|| GatewayError::Internal("seal".into()))?;
        let challenge = domain::pkce::CodeChallenge::s256_of(&state.verifier);
        let mut url = url::Url::parse(&endpoints.authorization)
            .map_err(|e| GatewayError::Upstream(Upstream::Unreachable(format!("authorization_endpoint: {e}"))))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &app.cfg.client_id)
            .append_pair("redirect_uri", &app.cfg.redirect_uri)
            .append_pair("scope", &app.cfg.scopes.join(" "))
            .append_pair("state", &state.state)
            .append_pair("nonce", &state.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        // Lax: the provider's redirect back is a cross-site top-level navigation.
        let cookie = set_cookie(&app.login_cookie, &sealed, SameSite::Lax, 600);
        Ok(redirect(url.as_str(), &[cookie]))
    }

    async fn callback(&self, app: &App, parts: &Parts) -> Result<Response, GatewayError> {
        let bad = |why: &'static str| GatewayError::Downstream(Downstream::BadRequest(why));
        let now = self.clock.now();
        let login = cookie(&parts.headers, &app.login_cookie)
            .and_then(|c| self.sealer.open_login(&app.cfg.name, c, now))
            .ok_or(bad("the sign-in expired or was started elsewhere; start again"))?;
        let query = parts.uri.query();
        if query_param(query, "error").is_some() {
            return Err(bad("the provider refused the sign-in"));
        }
        let state_ok =
            query_param(query, "state").is_some_and(|s| secret::constant_time_eq(s.as_bytes(), login.state.as_bytes()));
        if !state_ok {
            return Err(bad("the sign-in state does not match"));
        }
        let code = query_param(query, "code").ok_or(bad("no authorization code"))?;
        let endpoints = self.endpoints(app).await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", app.cfg.redirect_uri.as_str()),
            ("code_verifier", login.verifier.as_str()),
        ];
        let issued = self.token_request(app, &endpoints, &form).await?.ok_or(bad("the code was refused"))?;
        let id_token = issued.get("id_token").and_then(Value::as_str).ok_or(bad("no ID token"))?;
        let mut claims = self.check_id_token(app, id_token, &login.nonce, now).await?;
        let access = issued.get("access_token").and_then(Value::as_str).ok_or(bad("no access token"))?;
        if let Some(info) = self.userinfo(&endpoints, access).await
            && info.get("sub") == claims.get("sub")
        {
            claims.extend(info);
        }
        let subject = claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned();
        let tokens = SessionTokens {
            access_token: access.to_owned(),
            access_expires_at: now + issued.get("expires_in").and_then(Value::as_i64).unwrap_or(60),
            refresh_token: issued.get("refresh_token").and_then(Value::as_str).map(str::to_owned),
            id_token: Some(id_token.to_owned()),
            claims: claims.into_iter().filter(|(k, _)| PUBLIC_CLAIMS.contains(&k.as_str())).collect(),
        };
        let id = secret::random_token(32);
        let id_hash = secret::hash_secret(&id);
        let sealed = self.sealer.seal_tokens(&id_hash, &tokens).map_err(|e| GatewayError::Internal(e.to_string()))?;
        let absolute = i64::try_from(app.cfg.session_absolute_ttl.0).unwrap_or(i64::MAX);
        let session = BffSession {
            id_hash,
            app: app.cfg.name.clone(),
            subject: subject.clone(),
            sealed,
            created_at: now,
            last_seen_at: now,
            expires_at: now.saturating_add(absolute),
        };
        self.sessions.insert_bff_session(&session).await.map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        // A fresh id on every sign-in (no fixation); a session this browser had ends.
        if let Some(previous) = cookie(&parts.headers, &app.cookie) {
            let _ = self.sessions.delete_bff_session(&secret::hash_secret(previous)).await;
        }
        tracing::info!(target: "portcullis::audit", event = "bff.login", app = %app.cfg.name, subject = %subject, "browser session started");
        let cookies = [
            set_cookie(&app.cookie, &id, app.cfg.same_site, absolute),
            set_cookie(&app.login_cookie, "", SameSite::Lax, 0),
        ];
        Ok(redirect(&login.return_to, &cookies))
    }

    /// Checks the ID token of a code exchange (OIDC Core §3.1.3.7): our own are verified
    /// with the key ring, an external provider's through its JWKS when it is one of
    /// `[[gateway.issuers]]`; otherwise it came straight from the provider's token endpoint
    /// over TLS, which §3.1.3.7 item 6 accepts in place of the signature. Claims always.
    async fn check_id_token(
        &self,
        app: &App,
        id_token: &str,
        nonce: &str,
        now: UnixTime,
    ) -> Result<Map<String, Value>, GatewayError> {
        let bad = || GatewayError::Downstream(Downstream::BadRequest("the ID token is invalid"));
        let policy = domain::token::JwtPolicy {
            issuer: &app.issuer,
            audiences: std::slice::from_ref(&app.cfg.client_id),
            leeway: self.leeway,
            typ: None,
        };
        let external = self.external.iter().find(|e| e.config.issuer == app.issuer);
        let claims: Map<String, Value> = if app.cfg.issuer == crate::config::SELF_ISSUER {
            let keys = self.keys.snapshot();
            domain::token::verify_jwt(id_token, |kid| keys.verifier(kid), &policy, now).map_err(|_| bad())?
        } else if let Some(issuer) = external {
            let kid = domain::jose::peek_header(id_token).map_err(|_| bad())?.kid.unwrap_or_default();
            let verifier = issuer.verifier(&kid, now).await.ok_or_else(bad)?;
            domain::token::verify_jwt(id_token, |_| Some(verifier.as_ref()), &policy, now).map_err(|_| bad())?
        } else {
            use base64::Engine as _;
            let payload = id_token.split('.').nth(1).ok_or_else(bad)?;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?;
            serde_json::from_slice(&raw).map_err(|_| bad())?
        };
        let text = |k: &str| claims.get(k).and_then(Value::as_str);
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => *a == app.cfg.client_id,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(app.cfg.client_id.as_str())),
            _ => false,
        };
        let exp_ok = claims.get("exp").and_then(Value::as_i64).is_some_and(|e| e > now - self.leeway);
        let nonce_ok = text("nonce").is_some_and(|n| secret::constant_time_eq(n.as_bytes(), nonce.as_bytes()));
        if text("iss") != Some(app.issuer.as_str()) || !aud_ok || !exp_ok || !nonce_ok || text("sub").is_none() {
            return Err(bad());
        }
        Ok(claims)
    }

    async fn userinfo(&self, endpoints: &Endpoints, access: &str) -> Option<Map<String, Value>> {
        let userinfo = endpoints.userinfo.as_deref()?;
        let resp = self.http.get(userinfo).timeout(BACKCHANNEL_TIMEOUT).bearer_auth(access).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    /// A token-endpoint call with the app's client authentication. `Ok(None)`: refused.
    async fn token_request(
        &self,
        app: &App,
        endpoints: &Endpoints,
        form: &[(&'static str, &str)],
    ) -> Result<Option<Map<String, Value>>, GatewayError> {
        let form = form.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let resp = self
            .client_post(app, &endpoints.token, form)
            .send()
            .await
            .map_err(|e| GatewayError::Upstream(Upstream::Unreachable(format!("token endpoint: {e}"))))?;
        if resp.status().is_server_error() {
            return Err(GatewayError::Upstream(Upstream::Unreachable(format!("token endpoint: {}", resp.status()))));
        }
        if !resp.status().is_success() {
            return Ok(None);
        }
        Ok(resp.json().await.ok())
    }

    /// The live session of a request and its tokens (touching its idle clock).
    async fn session(&self, app: &App, headers: &HeaderMap) -> Result<(BffSession, SessionTokens), GatewayError> {
        let none = || GatewayError::Downstream(Downstream::NoSession);
        let id = cookie(headers, &app.cookie).ok_or_else(none)?;
        let id_hash = secret::hash_secret(id);
        let unavailable = |e: domain::StoreError| GatewayError::Unavailable(e.to_string());
        let session = self.sessions.get_bff_session(&id_hash).await.map_err(unavailable)?.ok_or_else(none)?;
        let now = self.clock.now();
        let idle = i64::try_from(app.cfg.session_idle_ttl.0).unwrap_or(i64::MAX);
        if session.app != app.cfg.name || now >= session.expires_at || now >= session.last_seen_at.saturating_add(idle)
        {
            let _ = self.sessions.delete_bff_session(&id_hash).await;
            return Err(none());
        }
        let tokens = self.sealer.open_tokens(&id_hash, &session.sealed).map_err(|_| none())?;
        Ok((session, tokens))
    }

    async fn user(&self, app: &App, headers: &HeaderMap) -> Result<Response, GatewayError> {
        let (session, tokens) = self.session(app, headers).await?;
        self.touch(&session, &tokens).await;
        let body = Value::Object(tokens.claims).to_string();
        Ok(([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
    }

    async fn touch(&self, session: &BffSession, tokens: &SessionTokens) {
        let now = self.clock.now();
        // Idle time counts in whole minutes: one write a minute per active session at most.
        if now - session.last_seen_at >= 60
            && let Ok(sealed) = self.sealer.seal_tokens(&session.id_hash, tokens)
        {
            let _ = self.sessions.update_bff_session(&session.id_hash, &sealed, now).await;
        }
    }

    async fn logout(&self, app: &App, parts: &Parts) -> Result<Response, GatewayError> {
        check_csrf(app, parts)?;
        let (session, tokens) = self.session(app, &parts.headers).await?;
        self.sessions
            .delete_bff_session(&session.id_hash)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        let endpoints = self.endpoints(app).await.ok();
        if let (Some(e), Some(refresh)) = (endpoints.as_deref(), &tokens.refresh_token)
            && let Some(revocation) = &e.revocation
        {
            // RFC 7009 for the refresh token revokes its whole grant family.
            let form = vec![("token", refresh.clone()), ("token_type_hint", "refresh_token".to_owned())];
            if let Err(e) = self.client_post(app, revocation, form).send().await {
                tracing::warn!(app = %app.cfg.name, cause = %e, "refresh token not revoked at logout");
            }
        }
        // RP-initiated logout ends the provider's SSO session too.
        let logout_url = match (endpoints.as_deref().and_then(|e| e.end_session.as_deref()), &tokens.id_token) {
            (Some(end), Some(hint)) => url::Url::parse(end).ok().map(|mut u| {
                u.query_pairs_mut().append_pair("client_id", &app.cfg.client_id).append_pair("id_token_hint", hint);
                if let Some(after) = &app.cfg.post_logout_redirect {
                    u.query_pairs_mut().append_pair("post_logout_redirect_uri", after);
                }
                u.to_string()
            }),
            _ => None,
        };
        let logout_url = logout_url.or_else(|| app.cfg.post_logout_redirect.clone()).unwrap_or_else(|| "/".into());
        tracing::info!(target: "portcullis::audit", event = "bff.logout", app = %app.cfg.name, subject = %session.subject, "browser session ended");
        let body = serde_json::json!({ "logout_url": logout_url }).to_string();
        let mut response =
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        if let Ok(v) = HeaderValue::from_str(&set_cookie(&app.cookie, "", app.cfg.same_site, 0)) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        Ok(response)
    }

    /// For a route with `auth = "bff"`: the session's access token, refreshed first when it
    /// is about to expire. State-changing methods pass the CSRF checks first.
    ///
    /// # Errors
    /// No live session (401), a CSRF failure (403), the provider down (502).
    pub async fn access_token(&self, app_name: &str, parts: &Parts) -> Result<String, GatewayError> {
        let app = self
            .apps
            .iter()
            .find(|a| a.cfg.name == app_name)
            .ok_or_else(|| GatewayError::Internal(format!("bff app {app_name} missing")))?;
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            check_csrf(app, parts)?;
        }
        let (session, tokens) = self.session(app, &parts.headers).await?;
        let now = self.clock.now();
        let margin = i64::try_from(app.cfg.refresh_before.0).unwrap_or(30);
        if tokens.access_expires_at - now > margin {
            self.touch(&session, &tokens).await;
            return Ok(tokens.access_token);
        }
        self.refresh(app, &session, tokens, now).await
    }

    async fn refresh(
        &self,
        app: &App,
        session: &BffSession,
        mut tokens: SessionTokens,
        now: UnixTime,
    ) -> Result<String, GatewayError> {
        let ended = || GatewayError::Downstream(Downstream::NoSession);
        let Some(refresh) = tokens.refresh_token.clone() else {
            let _ = self.sessions.delete_bff_session(&session.id_hash).await;
            return Err(ended());
        };
        let endpoints = self.endpoints(app).await?;
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
        let Some(issued) = self.token_request(app, &endpoints, &form).await? else {
            // Revoked, expired or reused: the session is over.
            let _ = self.sessions.delete_bff_session(&session.id_hash).await;
            tracing::info!(target: "portcullis::audit", event = "bff.refresh_failed", app = %app.cfg.name, subject = %session.subject, "refresh refused; session ended");
            return Err(ended());
        };
        let access = issued.get("access_token").and_then(Value::as_str).ok_or_else(ended)?.to_owned();
        tokens.access_token.clone_from(&access);
        tokens.access_expires_at = now + issued.get("expires_in").and_then(Value::as_i64).unwrap_or(60);
        if let Some(next) = issued.get("refresh_token").and_then(Value::as_str) {
            tokens.refresh_token = Some(next.to_owned());
        }
        let sealed =
            self.sealer.seal_tokens(&session.id_hash, &tokens).map_err(|e| GatewayError::Internal(e.to_string()))?;
        self.sessions
            .update_bff_session(&session.id_hash, &sealed, now)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        tracing::debug!(app = %app.cfg.name, "bff access token refreshed");
        Ok(access)
    }

    /// The names of every BFF cookie (stripped before requests reach upstreams).
    #[must_use]
    pub fn cookie_names(&self) -> Vec<String> {
        self.apps.iter().flat_map(|a| [a.cookie.clone(), a.login_cookie.clone()]).collect()
    }
}

/// CSRF defence for state-changing calls: the custom header (a cross-site page cannot send
/// it without a preflight the gateway never grants) and, when the browser names one, an
/// allowed `Origin`; `Sec-Fetch-Site: cross-site` is refused outright.
fn check_csrf(app: &App, parts: &Parts) -> Result<(), GatewayError> {
    let refused = |why| Err(GatewayError::Downstream(Downstream::CsrfRefused(why)));
    let h = &parts.headers;
    if h.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::trim) != Some("1") {
        return refused("missing X-Portcullis-CSRF header");
    }
    if let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !app.origins.iter().any(|o| o == origin)
    {
        return refused("origin not allowed");
    }
    if h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) == Some("cross-site") {
        return refused("cross-site request");
    }
    Ok(())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    domain::request::cookie_value(headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()), name)
}

/// `__Host-` cookies: `Secure`, `Path=/`, no `Domain` (RFC 6265bis §4.1.3.2), `HttpOnly`.
fn set_cookie(name: &str, value: &str, same_site: SameSite, max_age: i64) -> String {
    let site = match same_site {
        SameSite::Strict => "Strict",
        SameSite::Lax => "Lax",
    };
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite={site}; Max-Age={}", max_age.max(0))
}

fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Removes the BFF cookies from a `Cookie` header value (upstreams never see them).
#[must_use]
pub fn strip_cookies(value: &str, names: &[String]) -> String {
    value
        .split(';')
        .map(str::trim)
        .filter(|pair| !names.iter().any(|n| pair.split_once('=').is_some_and(|(k, _)| k == n)))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_and_stripped() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; __Host-portcullis-spa=abc; b=2"));
        assert_eq!(cookie(&h, "__Host-portcullis-spa"), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
        let names = vec!["__Host-portcullis-spa".to_owned()];
        assert_eq!(strip_cookies("a=1; __Host-portcullis-spa=abc; b=2", &names), "a=1; b=2");
        let c = set_cookie("__Host-x", "v", SameSite::Strict, 60);
        for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict", "Max-Age=60"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!c.contains("Domain"));
    }

    #[test]
    fn open_redirects_are_not_local_paths() {
        assert!(is_local_path("/app/page?x=1"));
        for bad in ["//evil.example", "/\\evil.example", "https://evil.example", "evil", ""] {
            assert!(!is_local_path(bad), "{bad}");
        }
    }

    /// Sessions in a map, for the lifetime rules.
    #[derive(Debug, Default)]
    struct Sessions(std::sync::Mutex<std::collections::HashMap<String, BffSession>>);

    #[async_trait::async_trait]
    impl BffSessionStore for Sessions {
        async fn insert_bff_session(&self, s: &BffSession) -> Result<(), domain::StoreError> {
            self.0.lock().unwrap().insert(s.id_hash.clone(), s.clone());
            Ok(())
        }
        async fn get_bff_session(&self, id_hash: &str) -> Result<Option<BffSession>, domain::StoreError> {
            Ok(self.0.lock().unwrap().get(id_hash).cloned())
        }
        async fn update_bff_session(&self, id: &str, sealed: &[u8], at: UnixTime) -> Result<bool, domain::StoreError> {
            Ok(self.0.lock().unwrap().get_mut(id).map(|s| (s.sealed = sealed.to_vec(), s.last_seen_at = at)).is_some())
        }
        async fn delete_bff_session(&self, id_hash: &str) -> Result<bool, domain::StoreError> {
            Ok(self.0.lock().unwrap().remove(id_hash).is_some())
        }
        async fn delete_user_bff_sessions(&self, _: &str) -> Result<u64, domain::StoreError> {
            Ok(0)
        }
        async fn purge_bff_sessions(&self, _: UnixTime) -> Result<u64, domain::StoreError> {
            Ok(0)
        }
    }

    /// Signing keys in a vector (the key ring is only needed to build a `Bff`).
    #[derive(Debug, Default)]
    struct Keys(std::sync::Mutex<Vec<domain::keys::StoredKey>>);

    #[async_trait::async_trait]
    impl domain::ports::KeyStore for Keys {
        async fn list_keys(&self) -> Result<Vec<domain::keys::StoredKey>, domain::StoreError> {
            Ok(self.0.lock().unwrap().clone())
        }
        async fn insert_key(&self, key: &domain::keys::StoredKey) -> Result<(), domain::StoreError> {
            self.0.lock().unwrap().push(key.clone());
            Ok(())
        }
        async fn update_key(&self, key: &domain::keys::StoredKey) -> Result<(), domain::StoreError> {
            let mut keys = self.0.lock().unwrap();
            keys.retain(|k| k.kid != key.kid);
            keys.push(key.clone());
            Ok(())
        }
        async fn acquire_rotation_lease(&self, _: &str, _: UnixTime, _: UnixTime) -> Result<bool, domain::StoreError> {
            Ok(true)
        }
        async fn release_rotation_lease(&self, _: &str) -> Result<(), domain::StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn idle_and_absolute_lifetimes_end_sessions() {
        use domain::clock::FixedClock;
        let clock = Arc::new(FixedClock::new(1_000));
        let policy = domain::keys::RotationPolicy {
            algorithm: domain::jose::Algorithm::ES256,
            interval: 86_400,
            announce: 60,
            max_token_ttl: 900,
            leeway: 30,
        };
        let key = |b| domain::keys::MasterKey::from_bytes(&[b; 32]).unwrap();
        let keys = Arc::new(KeyRing::load(Arc::new(Keys::default()), key(3), policy, clock.clone()).await.unwrap());
        let sessions = Arc::new(Sessions::default());
        let sealer = Arc::new(BffSealer::new(key(3)));
        let cfg = BffAppConfig {
            name: "spa".into(),
            client_id: "c".into(),
            redirect_uri: "https://app.example.com/bff/callback".into(),
            session_idle_ttl: Seconds(600),
            session_absolute_ttl: Seconds(3600),
            ..BffAppConfig::default()
        };
        let admin = BffAppConfig {
            name: "admin".into(),
            path_prefix: "/admin".into(),
            redirect_uri: "https://admin.example.com/admin/bff/callback".into(),
            ..cfg.clone()
        };
        let bff =
            Bff::new(&[cfg, admin], "https://id.example.com", sessions.clone(), sealer.clone(), keys, clock.clone());
        // Several apps on one gateway: each has its endpoints and its own cookie.
        let named = |path: &str| bff.endpoint(path).map(|(app, action)| (app.cfg.name.as_str(), action));
        assert_eq!(named("/bff/login"), Some(("spa", Action::Login)));
        assert_eq!(named("/admin/bff/callback"), Some(("admin", Action::Callback)));
        assert_eq!(named("/admin/bff/other"), None);
        assert_eq!(named("/bff/user/x"), None);
        assert_eq!(bff.cookie_names().len(), 4);
        let start = |id: &str| {
            let id_hash = secret::hash_secret(id);
            let tokens = SessionTokens {
                access_token: "at".into(),
                access_expires_at: 1_000_000,
                refresh_token: None,
                id_token: None,
                claims: Map::new(),
            };
            BffSession {
                sealed: sealer.seal_tokens(&id_hash, &tokens).unwrap(),
                id_hash,
                app: "spa".into(),
                subject: "u".into(),
                created_at: clock.now(),
                last_seen_at: clock.now(),
                expires_at: clock.now() + 3600,
            }
        };
        let request = |id: &str| {
            let req = axum::http::Request::get("/api/x").header("cookie", format!("__Host-portcullis-spa={id}"));
            req.body(()).unwrap().into_parts().0
        };
        sessions.insert_bff_session(&start("s1")).await.unwrap();
        assert_eq!(bff.access_token("spa", &request("s1")).await.unwrap(), "at");
        // Used every 9 minutes it stays alive (idle clock touched), until the absolute end.
        for _ in 0..6 {
            clock.advance(540);
            assert!(bff.access_token("spa", &request("s1")).await.is_ok(), "at {}", clock.now());
        }
        clock.advance(540); // 3780 s after the start: past the absolute lifetime
        assert!(matches!(
            bff.access_token("spa", &request("s1")).await,
            Err(GatewayError::Downstream(Downstream::NoSession))
        ));
        assert!(sessions.get_bff_session(&secret::hash_secret("s1")).await.unwrap().is_none(), "deleted");
        // Unused for longer than the idle lifetime.
        sessions.insert_bff_session(&start("s2")).await.unwrap();
        clock.advance(601);
        assert!(matches!(
            bff.access_token("spa", &request("s2")).await,
            Err(GatewayError::Downstream(Downstream::NoSession))
        ));
        // A cookie that is not a session, and a GET with no cookie.
        assert!(bff.access_token("spa", &request("nope")).await.is_err());
        let bare = axum::http::Request::get("/api/x").body(()).unwrap().into_parts().0;
        assert!(bff.access_token("spa", &bare).await.is_err());
    }

    #[test]
    fn config_problems() {
        let ok = BffAppConfig {
            name: "spa".into(),
            client_id: "c".into(),
            redirect_uri: "https://app.example.com/bff/callback".into(),
            ..BffAppConfig::default()
        };
        assert!(ok.problems(0).is_empty(), "{:?}", ok.problems(0));
        let bad = BffAppConfig {
            name: "a b".into(),
            path_prefix: "app/".into(),
            client_id: String::new(),
            redirect_uri: "/relative".into(),
            scopes: vec!["profile".into()],
            post_login_redirect: "//evil".into(),
            ..BffAppConfig::default()
        };
        assert_eq!(bad.problems(0).len(), 6, "{:?}", bad.problems(0));
        assert!(!format!("{:?}", BffAppConfig { client_secret: Some("s3cret".into()), ..ok }).contains("s3cret"));
    }
}
