//! Signing people in: the decision at the authorization endpoint (login page, consent page
//! or a code), password login with throttling, SSO sessions (hashed ids, idle and absolute
//! lifetimes), remembered consent, userinfo (OIDC Core §5.3) and logout (RP-Initiated
//! Logout 1.0, and "everywhere" for incidents).

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::authorize::{self, AuthorizationRequest, AuthorizeError, ErrorRedirect};
use crate::client::Client;
use crate::clock::UnixTime;
use crate::error::{ErrorCode, OAuthError};
use crate::grant::{AuthCode, Consent, GrantFamily, Session};
use crate::password::PasswordHasher;
use crate::ports::Stores;
use crate::request::FormParams;
use crate::secret;
use crate::service::TokenService;
use crate::throttle::{Gate, Throttle, ThrottleKey};
use crate::user::{User, normalize_username};

/// Only write `last_seen_at` when it moved at least this much (one write per minute).
const TOUCH_EVERY: i64 = 60;

/// What the authorization endpoint does next.
#[derive(Debug)]
pub enum Next {
    /// Show the login page.
    Login(Box<AuthorizationRequest>),
    /// Show the consent page.
    Consent(Box<AuthorizationRequest>, Box<User>),
    /// Send the browser to the client (a code or an error).
    Redirect(String),
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session: Session,
    pub user: User,
}

/// The result of a login form.
#[derive(Debug)]
pub enum LoginOutcome {
    /// A new session; `cookie` is its value (shown once, stored hashed).
    Ok { cookie: Zeroizing<String>, signed_in: Box<SignedIn> },
    /// Unknown user, wrong password or disabled account: one answer for all.
    Failed,
    /// Too many failures for this account name or this address.
    Locked { retry_after: i64 },
}

/// A checked RP-initiated logout request (RP-Initiated Logout 1.0 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// Where to send the browser afterwards: a registered URI with `state` appended.
    pub redirect: Option<String>,
    /// The subject of a valid `id_token_hint`.
    pub hint_sub: Option<String>,
}

/// How long after a login the consent step still counts as part of it (for `prompt=login`).
const FRESH_LOGIN: i64 = 300;

/// What logout did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedOut {
    pub user_id: Option<String>,
    pub sessions: u64,
    pub revoked_access_tokens: usize,
}

/// The sign-in service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SignIn {
    tokens: TokenService,
    stores: Stores,
    hasher: PasswordHasher,
    throttle: Arc<dyn Throttle>,
}

impl SignIn {
    #[must_use]
    pub fn new(tokens: TokenService, stores: &Stores, hasher: PasswordHasher, throttle: Arc<dyn Throttle>) -> Self {
        Self { tokens, stores: stores.clone(), hasher, throttle }
    }

    #[must_use]
    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    fn now(&self) -> UnixTime {
        self.tokens.clock.now()
    }

    fn issuer(&self) -> &str {
        self.tokens.settings.issuer.as_str()
    }

    /// Parses an authorization request (query of `GET /oauth2/authorize`, or the copy a
    /// login or consent form carries).
    ///
    /// # Errors
    /// See [`AuthorizeError`].
    pub async fn parse_request(&self, params: &FormParams) -> Result<AuthorizationRequest, AuthorizeError> {
        let client_id = params.required("client_id")?;
        let client = self.tokens.clients.get_client(client_id).await.map_err(OAuthError::from)?;
        let (client, redirect_uri, given) = authorize::resolve_client(params, client)?;
        authorize::parse(params, client, redirect_uri, given).map_err(AuthorizeError::Redirect)
    }

    /// The error redirect for a request, as a URL.
    #[must_use]
    pub fn error_url(&self, request: &AuthorizationRequest, error: OAuthError) -> String {
        ErrorRedirect { redirect_uri: request.redirect_uri.clone(), state: request.state.clone(), error }
            .to_url(self.issuer())
    }

    /// The browser's live session, from its cookie value.
    ///
    /// # Errors
    /// The store is down.
    pub async fn session(&self, cookie: Option<&str>) -> Result<Option<SignedIn>, OAuthError> {
        let Some(cookie) = cookie.filter(|c| c.len() <= 128) else { return Ok(None) };
        let now = self.now();
        let hash = secret::hash_secret(cookie);
        let Some(session) = self.stores.sessions.get_session(&hash).await? else { return Ok(None) };
        if !session.is_live(now, self.tokens.settings.flow.session_idle_ttl) {
            self.stores.sessions.delete_session(&hash).await?;
            return Ok(None);
        }
        let Some(user) = self.tokens.active_user(&session.user_id).await? else { return Ok(None) };
        if now - session.last_seen_at >= TOUCH_EVERY {
            self.stores.sessions.touch_session(&hash, now).await?;
        }
        Ok(Some(SignedIn { session, user }))
    }

    /// The authorization decision. `fresh_login` is set right after the login form succeeded;
    /// `consented` right after the consent form said yes.
    ///
    /// # Errors
    /// Store failures.
    pub async fn authorize(
        &self,
        request: AuthorizationRequest,
        signed_in: Option<SignedIn>,
        fresh_login: bool,
        consented: bool,
    ) -> Result<Next, OAuthError> {
        let now = self.now();
        let needs_login = match &signed_in {
            None => true,
            Some(s) => {
                !fresh_login && (request.prompt.login || request.max_age.is_some_and(|m| now - s.session.auth_time > m))
            }
        };
        let signed_in = match signed_in {
            Some(s) if !needs_login => s,
            _ if request.prompt.none => {
                let e = OAuthError::new(ErrorCode::LoginRequired, "the user is not signed in");
                return Ok(Next::Redirect(self.error_url(&request, e)));
            }
            _ => return Ok(Next::Login(Box::new(request))),
        };
        let client = &request.client;
        // First-party apps skip consent, unless the app itself asks for it (prompt=consent).
        if (!client.first_party || request.prompt.consent) && !consented {
            let remembered = self.stores.users.get_consent(&signed_in.user.id, &client.id).await?;
            let covered = remembered.is_some_and(|c| request.scope.is_subset(&c.scope));
            if request.prompt.consent || !covered {
                if request.prompt.none {
                    let e = OAuthError::new(ErrorCode::ConsentRequired, "the user has not consented to this client");
                    return Ok(Next::Redirect(self.error_url(&request, e)));
                }
                return Ok(Next::Consent(Box::new(request), Box::new(signed_in.user)));
            }
        }
        if consented {
            self.remember_consent(&signed_in.user, client, &request, now).await?;
        }
        let code = self.issue_code(&request, &signed_in, now).await?;
        let mut params = vec![("code", code.as_str())];
        if let Some(state) = &request.state {
            params.push(("state", state));
        }
        params.push(("iss", self.issuer()));
        Ok(Next::Redirect(authorize::with_query(&request.redirect_uri, &params)))
    }

    /// The consent form: allow continues the authorization, deny answers `access_denied`.
    ///
    /// # Errors
    /// Store failures.
    pub async fn consent(
        &self,
        request: AuthorizationRequest,
        signed_in: Option<SignedIn>,
        allow: bool,
    ) -> Result<Next, OAuthError> {
        let Some(signed_in) = signed_in else {
            // The session ended while the page was open: sign in again.
            return self.authorize(request, None, false, false).await;
        };
        if !allow {
            return Ok(Next::Redirect(self.deny(&request, &signed_in.user)));
        }
        let fresh = self.now() - signed_in.session.auth_time <= FRESH_LOGIN;
        self.authorize(request, Some(signed_in), fresh, true).await
    }

    /// The user said no on the consent page.
    #[must_use]
    pub fn deny(&self, request: &AuthorizationRequest, user: &User) -> String {
        tracing::info!(
            target: "portcullis::audit",
            event = "consent.denied",
            user_id = %user.id,
            client_id = %request.client.id,
            "user denied consent"
        );
        self.error_url(request, OAuthError::new(ErrorCode::AccessDenied, "the user denied the request"))
    }

    async fn remember_consent(
        &self,
        user: &User,
        client: &Client,
        request: &AuthorizationRequest,
        now: UnixTime,
    ) -> Result<(), OAuthError> {
        let mut scope = request.scope.clone();
        if let Some(old) = self.stores.users.get_consent(&user.id, &client.id).await? {
            scope = scope.union(&old.scope);
        }
        self.stores
            .users
            .put_consent(&Consent { user_id: user.id.clone(), client_id: client.id.clone(), scope, granted_at: now })
            .await?;
        tracing::info!(
            target: "portcullis::audit",
            event = "consent.granted",
            user_id = %user.id,
            client_id = %client.id,
            scope = %request.scope,
            "user granted consent"
        );
        Ok(())
    }

    async fn issue_code(
        &self,
        request: &AuthorizationRequest,
        signed_in: &SignedIn,
        now: UnixTime,
    ) -> Result<String, OAuthError> {
        let flow = self.tokens.settings.flow;
        let family = GrantFamily {
            id: secret::random_token(16),
            client_id: request.client.id.clone(),
            user_id: signed_in.user.id.clone(),
            session_hash: Some(signed_in.session.id_hash.clone()),
            scope: request.scope.clone(),
            auth_time: signed_in.session.auth_time,
            amr: signed_in.session.amr.clone(),
            created_at: now,
            expires_at: now + flow.refresh_absolute_ttl,
            revoked_at: None,
        };
        self.tokens.grants.insert_family(&family).await?;
        let code = secret::random_token(32);
        self.tokens
            .grants
            .insert_code(&AuthCode {
                code_hash: secret::hash_secret(&code),
                family_id: family.id.clone(),
                client_id: request.client.id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                redirect_uri_given: request.redirect_uri_given,
                challenge: request.challenge.clone(),
                nonce: request.nonce.clone(),
                dpop_jkt: request.dpop_jkt.clone(),
                created_at: now,
                expires_at: now + flow.code_ttl,
            })
            .await?;
        tracing::info!(
            target: "portcullis::audit",
            event = "authorize.code_issued",
            user_id = %signed_in.user.id,
            client_id = %request.client.id,
            family = %family.id,
            scope = %request.scope,
            "authorization code issued"
        );
        Ok(code)
    }

    /// Checks a username and password under the throttle; on success starts a session.
    /// `previous` is the browser's old session cookie, ended so that a session id never
    /// survives a login (session fixation).
    ///
    /// # Errors
    /// Store failures, or the hashing pool is saturated.
    pub async fn login(
        &self,
        username: &str,
        password: Zeroizing<String>,
        ip: &str,
        previous: Option<&str>,
    ) -> Result<LoginOutcome, OAuthError> {
        let now = self.now();
        // Throttle by the name as typed (normalised when it can be) so unknown names count too.
        let name = normalize_username(username).unwrap_or_else(|_| username.trim().chars().take(64).collect());
        for key in [ThrottleKey::Account(&name), ThrottleKey::Ip(ip)] {
            match self.throttle.check(key, now).await {
                Gate::Locked { retry_after } => {
                    tracing::warn!(
                        target: "portcullis::audit",
                        event = "login.locked_out",
                        username_fp = %secret::fingerprint(&name),
                        ip,
                        retry_after,
                        "login attempt refused during lockout"
                    );
                    return Ok(LoginOutcome::Locked { retry_after });
                }
                Gate::Unlocked => tracing::info!(
                    target: "portcullis::audit",
                    event = "login.unlocked",
                    key = if matches!(key, ThrottleKey::Account(_)) { "account" } else { "ip" },
                    username_fp = %secret::fingerprint(&name),
                    ip,
                    "lockout ended"
                ),
                Gate::Open => {}
            }
        }
        let user = self.stores.users.get_user_by_username(&name).await?;
        let stored = user.as_ref().map(|u| u.password_hash.clone());
        let verified = self.hasher.verify(password.clone(), stored).await?;
        let user = match user {
            Some(u) if verified.ok && !u.disabled => u,
            other => {
                self.failed_login(&name, other.as_ref(), ip, now).await;
                return Ok(LoginOutcome::Failed);
            }
        };
        self.throttle.succeed(&name).await;
        if verified.needs_rehash {
            self.upgrade_hash(&user, password).await;
        }
        if let Some(previous) = previous {
            self.stores.sessions.delete_session(&secret::hash_secret(previous)).await?;
        }
        let cookie = Zeroizing::new(secret::random_token(32));
        let flow = self.tokens.settings.flow;
        let session = Session {
            id_hash: secret::hash_secret(&cookie),
            user_id: user.id.clone(),
            auth_time: now,
            amr: vec!["pwd".to_owned()],
            created_at: now,
            last_seen_at: now,
            expires_at: now + flow.session_absolute_ttl,
        };
        self.stores.sessions.insert_session(&session).await?;
        tracing::info!(target: "portcullis::audit", event = "login.succeeded", user_id = %user.id, ip, "user signed in");
        Ok(LoginOutcome::Ok { cookie, signed_in: Box::new(SignedIn { session, user }) })
    }

    async fn failed_login(&self, name: &str, user: Option<&User>, ip: &str, now: UnixTime) {
        let reason = match user {
            None => "unknown_user",
            Some(u) if u.disabled => "disabled",
            Some(_) => "wrong_password",
        };
        let account = self.throttle.fail(ThrottleKey::Account(name), now).await;
        let by_ip = self.throttle.fail(ThrottleKey::Ip(ip), now).await;
        tracing::warn!(
            target: "portcullis::audit",
            event = "login.failed",
            reason,
            user_id = user.map_or("", |u| u.id.as_str()),
            username_fp = %secret::fingerprint(name),
            ip,
            account_failures = account.failures,
            ip_failures = by_ip.failures,
            "login failed"
        );
        for (key, failure) in [("account", account), ("ip", by_ip)] {
            if let Some(locked_for) = failure.locked_for {
                tracing::warn!(
                    target: "portcullis::audit",
                    event = "login.lockout",
                    key,
                    user_id = user.map_or("", |u| u.id.as_str()),
                    username_fp = %secret::fingerprint(name),
                    ip,
                    locked_for,
                    failures = failure.failures,
                    "too many failed logins: locked"
                );
            }
        }
    }

    async fn upgrade_hash(&self, user: &User, password: Zeroizing<String>) {
        // Best effort: a failure leaves the old (still valid) hash in place.
        if let Ok(hash) = self.hasher.hash(password).await {
            let mut updated = user.clone();
            updated.password_hash = hash;
            if self.stores.users.update_user(&updated).await.is_ok() {
                tracing::info!(target: "portcullis::audit", event = "user.password_rehashed", user_id = %user.id, "password hash upgraded to current parameters");
            }
        }
    }

    /// OIDC Core §5.3 userinfo for a bearer access token.
    ///
    /// # Errors
    /// `invalid_token` (RFC 6750 §3.1) for a bad token or a gone user; `insufficient_scope`
    /// without `openid`.
    pub async fn userinfo(
        &self,
        token: &str,
        presented: &crate::dpop::Presentation<'_>,
    ) -> Result<serde_json::Map<String, serde_json::Value>, OAuthError> {
        let invalid = |why: &str| {
            OAuthError::new(ErrorCode::InvalidToken, "the access token is invalid").with_cause(why.to_owned())
        };
        let claims = self.tokens.verify(token).await?.map_err(|r| invalid(r.code()))?;
        crate::dpop::check_confirmation(claims.cnf.as_ref(), presented).map_err(|e| invalid(e.code()))?;
        let scope = claims.scopes();
        if !scope.contains("openid") {
            return Err(OAuthError::new(ErrorCode::InsufficientScope, "the token lacks the openid scope"));
        }
        let user = self.tokens.active_user(&claims.sub).await?.ok_or_else(|| invalid("user gone or disabled"))?;
        Ok(user.claims(&scope))
    }

    /// Ends one browser session and revokes the grants made in it.
    ///
    /// # Errors
    /// Store failures.
    pub async fn logout(&self, cookie: &str) -> Result<LoggedOut, OAuthError> {
        let now = self.now();
        let hash = secret::hash_secret(cookie);
        let session = self.stores.sessions.get_session(&hash).await?;
        let ended = self.stores.sessions.delete_session(&hash).await?;
        let tokens = self.tokens.grants.revoke_session_families(&hash, now).await?;
        self.tokens.blocklist(&tokens).await?;
        let out = LoggedOut {
            user_id: session.map(|s| s.user_id),
            sessions: u64::from(ended),
            revoked_access_tokens: tokens.len(),
        };
        tracing::info!(
            target: "portcullis::audit",
            event = "logout",
            user_id = out.user_id.as_deref().unwrap_or(""),
            revoked_access_tokens = out.revoked_access_tokens,
            "session ended"
        );
        Ok(out)
    }

    /// Ends every session of a user and revokes every grant, at once.
    ///
    /// # Errors
    /// Store failures.
    pub async fn logout_everywhere(&self, user_id: &str) -> Result<LoggedOut, OAuthError> {
        let (out, tokens) = end_user_everywhere(&self.stores, user_id, self.now()).await?;
        self.tokens.announce_revoked(tokens).await;
        Ok(out)
    }

    /// Checks the parameters of RP-initiated logout: a valid `id_token_hint` if given, a
    /// `client_id` agreeing with it, and a `post_logout_redirect_uri` registered for that
    /// client byte for byte — else no redirect happens at all.
    ///
    /// # Errors
    /// `invalid_request` for anything that does not check out (shown on a page).
    pub async fn logout_request(&self, params: &FormParams) -> Result<LogoutRequest, OAuthError> {
        let hint = match params.optional("id_token_hint")? {
            Some(h) => Some(
                crate::oidc::verify_hint(h, &self.tokens.keys.snapshot(), self.issuer())
                    .ok_or_else(|| OAuthError::invalid_request("the id_token_hint is not valid"))?,
            ),
            None => None,
        };
        let client_id = match (params.optional("client_id")?, &hint) {
            (Some(c), Some((_, aud))) if c != aud => {
                return Err(OAuthError::invalid_request("client_id does not match the id_token_hint"));
            }
            (Some(c), _) => Some(c.to_owned()),
            (None, Some((_, aud))) => Some(aud.clone()),
            (None, None) => None,
        };
        let redirect = match params.optional("post_logout_redirect_uri")? {
            None => None,
            Some(uri) => {
                let client = match &client_id {
                    Some(id) => self.tokens.clients.get_client(id).await?,
                    None => None,
                };
                let registered = client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|r| r == uri));
                if !registered {
                    return Err(OAuthError::invalid_request("the post_logout_redirect_uri is not registered")
                        .with_cause(format!("post_logout_redirect_uri {uri:?}")));
                }
                let state = params.optional("state")?;
                Some(match state {
                    Some(state) => authorize::with_query(uri, &[("state", state)]),
                    None => uri.to_owned(),
                })
            }
        };
        Ok(LogoutRequest { redirect, hint_sub: hint.map(|(sub, _)| sub) })
    }
}

/// Ends every session of a user, revokes every grant family and blocklists the families'
/// live access tokens — the incident command, shared by the server and the CLI (whose
/// blocklist entries reach running servers through the revocation sync).
///
/// # Errors
/// Store failures.
pub async fn end_user_everywhere(
    stores: &Stores,
    user_id: &str,
    now: UnixTime,
) -> Result<(LoggedOut, Vec<crate::grant::FamilyToken>), OAuthError> {
    // Browser sessions at the provider and, for backend-for-frontend apps, at the gateway.
    let sessions = stores.sessions.delete_user_sessions(user_id).await?
        + stores.bff_sessions.delete_user_bff_sessions(user_id).await?;
    let tokens = stores.grants.revoke_user_families(user_id, now).await?;
    for t in &tokens {
        stores.revocations.revoke(&t.jti, t.expires_at).await?;
    }
    tracing::warn!(
        target: "portcullis::audit",
        event = "user.logged_out_everywhere",
        user_id,
        sessions,
        revoked_access_tokens = tokens.len(),
        "every session and grant of the user ended"
    );
    let out = LoggedOut { user_id: Some(user_id.to_owned()), sessions, revoked_access_tokens: tokens.len() };
    Ok((out, tokens))
}
