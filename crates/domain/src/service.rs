//! The authorization server's operations: client authentication (RFC 6749 §2.3.1, public
//! clients by id alone), the token endpoint's dispatch and the client-credentials grant
//! (§4.4), introspection (RFC 7662) and revocation (RFC 7009). The user grants live in
//! `grants.rs`, the sign-in decisions in `signin.rs`. Each HTTP handler makes exactly one
//! call into these modules.

use std::sync::Arc;

use crate::client::{Client, ClientCredentials, GrantType};
use crate::clock::Clock;
use crate::dpop::Proof;
use crate::error::{ErrorCode, OAuthError};
use crate::keyring::KeyRing;
use crate::ports::{ClientStore, GrantStore, RevocationStore, Stores, UserStore};
use crate::request::TokenRequest;
use crate::revoked::RevokedSet;
use crate::scope::Scopes;
use crate::secret;
use crate::settings::TokenSettings;
use crate::token::{self, ACCESS_TOKEN_TYP, AccessTokenClaims, Audience, Confirmation, TokenRejection};

/// A freshly issued access token and what the token response says about it (§5.1).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u32,
    pub scope: Scopes,
    /// Set by the authorization-code and refresh grants when the client may refresh.
    pub refresh_token: Option<String>,
    /// Set when the scope includes `openid`.
    pub id_token: Option<String>,
}

/// The keys a token request proved possession of: the DPoP proof's key (RFC 9449) and the
/// client certificate of a `tls_client_auth` client (RFC 8705).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    pub jkt: Option<String>,
    pub x5t_s256: Option<String>,
}

impl Binding {
    #[must_use]
    pub fn confirmation(&self) -> Option<Confirmation> {
        Confirmation::of(self.jkt.clone(), self.x5t_s256.clone())
    }

    /// For the audit trail: how the token is sender-constrained.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match (&self.jkt, &self.x5t_s256) {
            (Some(_), Some(_)) => "dpop+mtls",
            (Some(_), None) => "dpop",
            (None, Some(_)) => "mtls",
            (None, None) => "bearer",
        }
    }
}

/// The result of introspecting a token (RFC 7662 §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Introspection {
    Active(Box<AccessTokenClaims>),
    /// `{"active": false}` on the wire; the reason is for the log only.
    Inactive(TokenRejection),
}

/// What a revocation request did (RFC 7009 §2.2: the response is 200 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    /// Not a valid token of ours, or already expired: nothing to do.
    Ignored(TokenRejection),
}

/// The token service. Cheap to clone; shares its ports.
#[derive(Debug, Clone)]
pub struct TokenService {
    pub(crate) settings: Arc<TokenSettings>,
    pub(crate) clients: Arc<dyn ClientStore>,
    pub(crate) revocations: Arc<dyn RevocationStore>,
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) grants: Arc<dyn GrantStore>,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) revoked: Arc<RevokedSet>,
    pub(crate) bus: Arc<dyn crate::cluster::ClusterBus>,
}

impl TokenService {
    #[must_use]
    pub fn new(settings: TokenSettings, stores: &Stores, keys: Arc<KeyRing>, clock: Arc<dyn Clock>) -> Self {
        Self {
            settings: Arc::new(settings),
            clients: stores.clients.clone(),
            revocations: stores.revocations.clone(),
            users: stores.users.clone(),
            grants: stores.grants.clone(),
            keys,
            clock,
            revoked: Arc::new(RevokedSet::new()),
            bus: Arc::new(crate::cluster::LocalOnly),
        }
    }

    /// Tells the other instances about revocations (and key changes) made here.
    #[must_use]
    pub fn with_bus(mut self, bus: Arc<dyn crate::cluster::ClusterBus>) -> Self {
        self.bus = bus;
        self
    }

    /// Access tokens just put on the store's blocklist: refused by this instance at once,
    /// and by the others as soon as the bus delivers.
    pub(crate) async fn announce_revoked(&self, tokens: Vec<crate::grant::FamilyToken>) {
        if tokens.is_empty() {
            return;
        }
        for t in &tokens {
            self.revoked.insert(&t.jti, t.expires_at);
        }
        self.bus.publish(&crate::cluster::ClusterEvent::Revoked { tokens }).await;
    }

    /// The in-memory revocation mirror this service updates; share it with the gateway.
    #[must_use]
    pub fn revoked_set(&self) -> &Arc<RevokedSet> {
        &self.revoked
    }

    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    #[must_use]
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    #[must_use]
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Authenticates a client: a confidential one by its secret, a public one (no secret
    /// registered) by its id alone, where `public_ok`. Unknown id, disabled client, missing
    /// or wrong secret are indistinguishable to the caller (one error, uniform timing).
    ///
    /// # Errors
    /// `invalid_client`, or `temporarily_unavailable` when the store is down.
    pub async fn authenticate(&self, creds: &ClientCredentials, public_ok: bool) -> Result<Client, OAuthError> {
        let id_only = match creds {
            ClientCredentials::None { client_id } => Some((client_id, None)),
            ClientCredentials::Certificate { client_id, certificate } => Some((client_id, Some(certificate))),
            ClientCredentials::Basic { .. } | ClientCredentials::Post { .. } => None,
        };
        if let (Some((client_id, certificate)), true) = (id_only, public_ok) {
            return match self.clients.get_client(client_id).await? {
                Some(c) if c.is_public() && !c.disabled => Ok(c),
                Some(c) if certificate.is_some_and(|cert| c.certificate_matches(cert)) => Ok(c),
                Some(_) => Err(OAuthError::invalid_client().with_cause("no secret presented, or client disabled")),
                None => Err(OAuthError::invalid_client().with_cause("unknown client id")),
            };
        }
        self.authenticate_client(creds).await
    }

    /// Authenticates a confidential client by its secret.
    ///
    /// # Errors
    /// `invalid_client`, or `temporarily_unavailable` when the store is down.
    pub async fn authenticate_client(&self, creds: &ClientCredentials) -> Result<Client, OAuthError> {
        if let ClientCredentials::Certificate { client_id, certificate } = creds {
            // RFC 8705 §2.1: the TLS handshake proved the certificate; its subject must be
            // the one registered for the client.
            return match self.clients.get_client(client_id).await? {
                Some(c) if c.certificate_matches(certificate) => Ok(c),
                Some(_) => Err(OAuthError::invalid_client()
                    .with_cause("client certificate does not match tls_client_auth_subject, or client disabled")),
                None => Err(OAuthError::invalid_client().with_cause("unknown client id")),
            };
        }
        let (client_id, presented) = match creds {
            ClientCredentials::Basic { client_id, client_secret }
            | ClientCredentials::Post { client_id, client_secret } => (client_id, client_secret.as_str()),
            ClientCredentials::None { client_id } | ClientCredentials::Certificate { client_id, .. } => (client_id, ""),
        };
        let client = self.clients.get_client(client_id).await?;
        match client {
            Some(client) if !presented.is_empty() && client.secret_matches(presented) => Ok(client),
            Some(client) => Err(OAuthError::invalid_client().with_cause(if client.disabled {
                "client is disabled"
            } else {
                "wrong or missing client secret"
            })),
            None => {
                // Same work as a real comparison, so response time does not reveal which ids exist.
                let _ = secret::verify_secret(presented, &secret::hash_secret(client_id));
                Err(OAuthError::invalid_client().with_cause("unknown client id"))
            }
        }
    }

    /// The token endpoint (RFC 6749 §3.2) for an authenticated request.
    ///
    /// # Errors
    /// Client authentication failures, `unauthorized_client` when the client may not use the
    /// grant, `invalid_scope`, or a server-side failure.
    pub async fn token(
        &self,
        creds: &ClientCredentials,
        request: TokenRequest,
        dpop: Option<&Proof>,
    ) -> Result<IssuedToken, OAuthError> {
        let client = self.authenticate(creds, true).await?;
        self.token_for(&client, creds, request, dpop).await
    }

    /// The token endpoint for a client [`Self::authenticate`] already accepted with `creds`
    /// (the endpoint checks a DPoP proof in between, so anonymous callers cannot spend
    /// replay-cache entries).
    ///
    /// # Errors
    /// As [`Self::token`], without the authentication failures.
    pub async fn token_for(
        &self,
        client: &Client,
        creds: &ClientCredentials,
        request: TokenRequest,
        dpop: Option<&Proof>,
    ) -> Result<IssuedToken, OAuthError> {
        if !client.allows_grant(request.grant_type()) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client is not allowed to use this grant type",
            ));
        }
        if client.dpop_bound_access_tokens && dpop.is_none() {
            // RFC 9449 §5.2: a client registered with dpop_bound_access_tokens "MUST"
            // have its token requests without a DPoP proof rejected.
            return Err(OAuthError::new(ErrorCode::InvalidDpopProof, "this client must send a DPoP proof")
                .with_cause("dpop_bound_access_tokens client sent no proof"));
        }
        let binding = Binding {
            jkt: dpop.map(|p| p.jkt.clone()),
            // RFC 8705 §3: tokens of a client that authenticated with its certificate are
            // bound to that certificate.
            x5t_s256: match creds {
                ClientCredentials::Certificate { certificate, .. } if client.tls_client_auth_subject.is_some() => {
                    Some(certificate.thumbprint.clone())
                }
                _ => None,
            },
        };
        match request {
            TokenRequest::ClientCredentials { scope } => {
                let scope = Scopes::grant(scope.as_ref(), &client.allowed_scopes, &client.default_scopes)?;
                let mut claims = self.access_claims(&client.id, client, scope, None);
                claims.cnf = binding.confirmation();
                let issued = self.sign_access_token(&claims)?;
                let token_fp = secret::fingerprint(&issued.access_token);
                tracing::info!(
                    target: "portcullis::audit",
                    event = "token.issued",
                    grant = GrantType::ClientCredentials.as_str(),
                    client_id = client.id.as_str(),
                    scope = %issued.scope,
                    token_fp = token_fp.as_str(),
                    expires_in = issued.expires_in,
                    bound = binding.kind(),
                    "access token issued"
                );
                Ok(issued)
            }
            TokenRequest::AuthorizationCode { code, redirect_uri, verifier } => {
                self.redeem_code(client, &code, redirect_uri.as_deref(), &verifier, &binding).await
            }
            TokenRequest::RefreshToken { refresh_token, scope } => {
                self.refresh(client, &refresh_token, scope.as_ref(), &binding).await
            }
        }
    }

    /// The claims of a new access token; `user` is set for tokens issued to a person.
    pub(crate) fn access_claims(
        &self,
        subject: &str,
        client: &Client,
        scope: Scopes,
        user: Option<(&crate::user::User, crate::clock::UnixTime)>,
    ) -> AccessTokenClaims {
        let ttl =
            client.access_token_ttl.unwrap_or(self.settings.access_token_ttl).min(self.settings.max_access_token_ttl);
        let now = self.clock.now();
        AccessTokenClaims {
            iss: self.settings.issuer.as_str().to_owned(),
            sub: subject.to_owned(),
            aud: Audience::from_list(&client.token_audience()),
            exp: now + i64::from(ttl),
            iat: now,
            nbf: Some(now),
            jti: secret::random_token(16),
            client_id: client.id.clone(),
            scope: (!scope.is_empty()).then(|| scope.to_string()),
            auth_time: user.map(|(_, t)| t),
            roles: user.map(|(u, _)| u.roles.clone()).unwrap_or_default(),
            groups: user.map(|(u, _)| u.groups.clone()).unwrap_or_default(),
            cnf: None,
            attributes: user.map(|(u, _)| crate::token::attribute_claims(&u.attributes)).unwrap_or_default(),
        }
    }

    pub(crate) fn sign_access_token(&self, claims: &AccessTokenClaims) -> Result<IssuedToken, OAuthError> {
        let access_token = self.sign(ACCESS_TOKEN_TYP, claims)?;
        let expires_in = u32::try_from(claims.exp - claims.iat).unwrap_or(0);
        Ok(IssuedToken { access_token, expires_in, scope: claims.scopes(), refresh_token: None, id_token: None })
    }

    /// Signs any JWT with the current signing key.
    pub(crate) fn sign<T: serde::Serialize>(&self, typ: &str, claims: &T) -> Result<String, OAuthError> {
        let keys = self.keys.snapshot();
        let (kid, signer) = keys.signing().ok_or_else(|| {
            OAuthError::new(ErrorCode::TemporarilyUnavailable, "no signing key is available")
                .with_cause("key ring has no active key")
        })?;
        crate::jose::sign(signer, kid, typ, claims).map_err(OAuthError::server_error)
    }

    /// Puts access tokens on the blocklist (store and in-memory mirror).
    pub(crate) async fn blocklist(&self, tokens: &[crate::grant::FamilyToken]) -> Result<(), OAuthError> {
        for t in tokens {
            self.revocations.revoke(&t.jti, t.expires_at).await?;
        }
        self.announce_revoked(tokens.to_vec()).await;
        Ok(())
    }

    /// Verifies one of our access tokens, including revocation.
    ///
    /// # Errors
    /// The reason the token is not valid now; a store failure while checking revocation
    /// is an error of its own (fail closed, never "active" by accident).
    pub async fn verify(&self, token: &str) -> Result<Result<AccessTokenClaims, TokenRejection>, OAuthError> {
        let now = self.clock.now();
        let keys = self.keys.snapshot();
        let leeway = i64::from(self.settings.leeway);
        let claims = match token::verify_access_token(token, &keys, self.settings.issuer.as_str(), now, leeway) {
            Ok(c) => c,
            Err(rejection) => return Ok(Err(rejection)),
        };
        let cut_off = self.revoked.cut_off(&claims.sub, Some(&claims.client_id), claims.iat, now);
        if cut_off || self.revocations.is_revoked(&claims.jti, now).await? {
            return Ok(Err(TokenRejection::Revoked));
        }
        Ok(Ok(claims))
    }

    /// RFC 7662 §2.1: "the protected resource calls the introspection endpoint" with its
    /// own credentials; any authenticated client may introspect.
    ///
    /// # Errors
    /// Client authentication failed, or the store is down.
    pub async fn introspect(&self, creds: &ClientCredentials, token: &str) -> Result<Introspection, OAuthError> {
        let caller = self.authenticate_client(creds).await?;
        let result = match self.verify(token).await? {
            Ok(claims) => Introspection::Active(Box::new(claims)),
            Err(rejection) => Introspection::Inactive(rejection),
        };
        if let Introspection::Inactive(reason) = &result {
            tracing::info!(
                target: "portcullis::audit",
                event = "token.refused",
                endpoint = "introspect",
                caller = %caller.id,
                reason = reason.code(),
                token_fp = %secret::fingerprint(token),
                "token inactive at introspection"
            );
        }
        Ok(result)
    }

    /// RFC 7009 §2.1: revokes an access token issued to the calling client. The `jti` stays
    /// on the blocklist until the token's own expiry.
    ///
    /// # Errors
    /// Client authentication failed, the token belongs to another client
    /// (`unauthorized_client`, as fosite answers), or the store is down.
    pub async fn revoke(&self, creds: &ClientCredentials, token: &str) -> Result<Revocation, OAuthError> {
        // RFC 7009 §2.1 lets public clients revoke their own tokens too.
        let caller = self.authenticate(creds, true).await?;
        if !token.contains('.') {
            // Not a JWT: one of our opaque refresh tokens, or nothing.
            return self.revoke_refresh_token(&caller, token).await;
        }
        let claims = match self.verify(token).await? {
            Ok(claims) => claims,
            // "invalid tokens do not cause an error response" (RFC 7009 §2.2).
            Err(rejection) => return Ok(Revocation::Ignored(rejection)),
        };
        // RFC 7009 §2.1: "verifies whether the token was issued to the client making the
        // revocation request. If this validation fails, the request is refused".
        if claims.client_id != caller.id {
            return Err(OAuthError::new(ErrorCode::UnauthorizedClient, "the token was not issued to this client"));
        }
        self.revocations.revoke(&claims.jti, claims.exp).await?;
        self.announce_revoked(vec![crate::grant::FamilyToken { jti: claims.jti.clone(), expires_at: claims.exp }])
            .await;
        tracing::info!(
            target: "portcullis::audit",
            event = "token.revoked",
            client_id = %caller.id,
            jti = %claims.jti,
            token_fp = %secret::fingerprint(token),
            "access token revoked"
        );
        Ok(Revocation::Revoked)
    }
}
