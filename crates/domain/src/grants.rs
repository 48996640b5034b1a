//! The user grants of the token endpoint: authorization code (RFC 6749 §4.1.3, RFC 7636
//! §4.6) and refresh token (§6) with rotation and reuse detection (RFC 9700 §4.14.2), plus
//! revocation of refresh tokens (RFC 7009 §2.1). Every token issued from one authorization
//! belongs to a grant family; a replayed code or a reused refresh token revokes the family.

use serde::{Deserialize, Serialize};

use crate::client::{Client, GrantType};
use crate::clock::UnixTime;
use crate::error::{ErrorCode, OAuthError};
use crate::grant::{CodeRedemption, FamilyToken, GrantFamily, RefreshToken};
use crate::keys::MasterKey;
use crate::oidc::{ID_TOKEN_TYP, IdTokenClaims, at_hash};
use crate::pkce::CodeVerifier;
use crate::scope::Scopes;
use crate::secret;
use crate::service::{Binding, IssuedToken, Revocation, TokenService};
use crate::token::TokenRejection;
use crate::user::User;

/// The successor response sealed into a rotated refresh token, for retries in the grace window.
#[derive(Serialize, Deserialize)]
struct Successor {
    access_token: String,
    expires_in: u32,
    scope: String,
    refresh_token: Option<String>,
    id_token: Option<String>,
}

/// The AEAD key that seals a token's successor: derived from the token itself, which is
/// never stored, so the database alone cannot open it.
fn successor_key(token: &str) -> Result<MasterKey, OAuthError> {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(b"portcullis/refresh-successor/v1\0");
    h.update(token.as_bytes());
    MasterKey::from_bytes(&h.finalize()).map_err(OAuthError::server_error)
}

impl TokenService {
    /// `grant_type=authorization_code`.
    pub(crate) async fn redeem_code(
        &self,
        client: &Client,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: &CodeVerifier,
        binding: &Binding,
    ) -> Result<IssuedToken, OAuthError> {
        let now = self.clock.now();
        let invalid = || OAuthError::invalid_grant("the authorization code is invalid, expired or already used");
        // The code is spent by the first attempt, whatever its outcome: one chance only.
        let code = match self.grants.redeem_code(&secret::hash_secret(code), now).await? {
            None => return Err(invalid().with_cause("unknown code")),
            Some(CodeRedemption::Replayed(code)) => {
                // RFC 6749 §4.1.2: "If an authorization code is used more than once, the
                // authorization server MUST deny the request and SHOULD revoke (when
                // possible) all tokens previously issued based on that authorization code."
                let revoked = self.revoke_family(&code.family_id, now).await?;
                tracing::warn!(
                    target: "portcullis::audit",
                    event = "token.code_replay",
                    alert = true,
                    client_id = %client.id,
                    family = %code.family_id,
                    revoked_access_tokens = revoked,
                    "authorization code replayed; every token issued from it is revoked"
                );
                return Err(invalid().with_cause("code replayed"));
            }
            Some(CodeRedemption::First(code)) => code,
        };
        if code.client_id != client.id {
            return Err(invalid().with_cause("code issued to another client"));
        }
        if now >= code.expires_at {
            return Err(invalid().with_cause("code expired"));
        }
        // RFC 6749 §4.1.3: redirect_uri "REQUIRED, if the redirect_uri parameter was included
        // in the authorization request …, and their values MUST be identical."
        let redirect_ok = match redirect_uri {
            Some(given) => given == code.redirect_uri,
            None => !code.redirect_uri_given,
        };
        if !redirect_ok {
            return Err(invalid().with_cause("redirect_uri does not match the authorization request"));
        }
        if !code.challenge.verify(verifier) {
            return Err(invalid().with_cause("PKCE verifier does not match the challenge"));
        }
        // RFC 9449 §10: a code bound to a DPoP key is redeemed only with a proof by that key.
        if let Some(bound) = &code.dpop_jkt
            && binding.jkt.as_ref() != Some(bound)
        {
            return Err(invalid().with_cause("code bound to another DPoP key (dpop_jkt)"));
        }
        let family =
            self.live_family(&code.family_id, now).await?.ok_or_else(|| invalid().with_cause("grant revoked"))?;
        let user = self.active_user(&family.user_id).await?.ok_or_else(|| invalid().with_cause("user disabled"))?;
        let (issued, access) =
            self.issue_for_family(client, &family, &user, family.scope.clone(), code.nonce.as_deref(), binding)?;
        let refresh = self.refresh_token_for(client, &family, now, refresh_binding(client, binding, None));
        if let Some((_, record)) = &refresh {
            self.grants.insert_refresh_token(record).await?;
        }
        if !self.grants.record_access_token(&family.id, &access).await? {
            // Revoked while we issued (a replay of this very code on another instance).
            return Err(invalid().with_cause("grant revoked"));
        }
        self.audit_issued(GrantType::AuthorizationCode, client, &family, &issued);
        Ok(IssuedToken { refresh_token: refresh.map(|(token, _)| token), ..issued })
    }

    /// `grant_type=refresh_token`.
    pub(crate) async fn refresh(
        &self,
        client: &Client,
        presented: &str,
        scope: Option<&Scopes>,
        binding: &Binding,
    ) -> Result<IssuedToken, OAuthError> {
        let now = self.clock.now();
        let invalid = || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
        let hash = secret::hash_secret(presented);
        let Some(found) = self.grants.get_refresh_token(&hash).await? else {
            return Err(invalid().with_cause("unknown refresh token"));
        };
        let (token, family) = (found.token, found.family);
        // RFC 6749 §6: the refresh token is bound to the client it was issued to.
        if token.client_id != client.id {
            tracing::warn!(
                target: "portcullis::audit",
                event = "token.refresh_wrong_client",
                client_id = %client.id,
                family = %family.id,
                "refresh token presented by another client"
            );
            return Err(invalid().with_cause("refresh token issued to another client"));
        }
        if family.revoked_at.is_some() {
            return Err(invalid().with_cause("grant revoked"));
        }
        // RFC 9449 §5: a bound refresh token needs a proof by the same key — checked before
        // reuse detection, so a thief without the key cannot even end the family.
        if let Some(bound) = &token.dpop_jkt
            && binding.jkt.as_ref() != Some(bound)
        {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "the refresh token is bound to a DPoP key; sign the proof with that key",
            )
            .with_cause("refresh token presented without a proof by its bound key"));
        }
        if token.used_at.is_some() {
            return self.replayed_refresh(client, presented, &token, &family, now).await;
        }
        if now >= token.expires_at || now >= family.expires_at {
            return Err(invalid().with_cause("refresh token expired"));
        }
        let access_scope = match scope {
            // RFC 6749 §6: "MUST NOT include any scope not originally granted".
            Some(s) if !s.is_subset(&family.scope) => {
                return Err(OAuthError::new(ErrorCode::InvalidScope, "the requested scope exceeds the original grant"));
            }
            Some(s) if !s.is_empty() => s.clone(),
            _ => family.scope.clone(),
        };
        let user = self.active_user(&family.user_id).await?.ok_or_else(|| invalid().with_cause("user disabled"))?;
        let (issued, access) = self.issue_for_family(client, &family, &user, access_scope, None, binding)?;
        let jkt = refresh_binding(client, binding, token.dpop_jkt.as_deref());
        let Some((successor_token, successor)) = self.refresh_token_for(client, &family, now, jkt) else {
            return Err(OAuthError::new(ErrorCode::UnauthorizedClient, "the client may not use refresh tokens"));
        };
        let response = IssuedToken { refresh_token: Some(successor_token), ..issued };
        let sealed = seal_successor(presented, &family.id, &response)?;
        if !self.grants.rotate_refresh_token(&hash, now, &sealed, &successor).await? {
            // Another request rotated it first (two tabs, a retry): answer as that one did.
            let again = self.grants.get_refresh_token(&hash).await?.ok_or_else(invalid)?;
            return self.replayed_refresh(client, presented, &again.token, &again.family, now).await;
        }
        if !self.grants.record_access_token(&family.id, &access).await? {
            // Revoked while we rotated (reuse of this family detected elsewhere).
            return Err(invalid().with_cause("grant revoked"));
        }
        self.audit_issued(GrantType::RefreshToken, client, &family, &response);
        Ok(response)
    }

    /// A rotated refresh token came back: the same successor inside the grace window, else
    /// reuse — the family dies (RFC 9700 §4.14.2).
    async fn replayed_refresh(
        &self,
        client: &Client,
        presented: &str,
        token: &RefreshToken,
        family: &GrantFamily,
        now: UnixTime,
    ) -> Result<IssuedToken, OAuthError> {
        let used_at = token.used_at.unwrap_or(now);
        let in_grace = now - used_at < self.settings.flow.refresh_grace && family.revoked_at.is_none();
        if let Some(response) =
            token.successor.as_deref().filter(|_| in_grace).and_then(|s| open_successor(presented, &family.id, s))
        {
            tracing::info!(
                target: "portcullis::audit",
                event = "token.refresh_retry",
                client_id = %client.id,
                family = %family.id,
                "rotated refresh token retried within the grace window; same successor returned"
            );
            return Ok(response);
        }
        let revoked = self.revoke_family(&family.id, now).await?;
        tracing::warn!(
            target: "portcullis::audit",
            event = "token.refresh_reuse",
            alert = true,
            client_id = %client.id,
            user_id = %family.user_id,
            family = %family.id,
            revoked_access_tokens = revoked,
            "rotated refresh token reused; the whole grant family is revoked"
        );
        Err(OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
            .with_cause("refresh token reuse"))
    }

    /// RFC 7009 for a refresh token: revokes its family (§2.1: "SHOULD also invalidate all
    /// access tokens based on the same authorization grant").
    pub(crate) async fn revoke_refresh_token(&self, caller: &Client, token: &str) -> Result<Revocation, OAuthError> {
        let now = self.clock.now();
        let Some(found) = self.grants.get_refresh_token(&secret::hash_secret(token)).await? else {
            return Ok(Revocation::Ignored(TokenRejection::MalformedClaims));
        };
        if found.token.client_id != caller.id {
            return Err(OAuthError::new(ErrorCode::UnauthorizedClient, "the token was not issued to this client"));
        }
        let revoked = self.revoke_family(&found.family.id, now).await?;
        tracing::info!(
            target: "portcullis::audit",
            event = "token.revoked",
            client_id = %caller.id,
            family = %found.family.id,
            revoked_access_tokens = revoked,
            token_fp = %secret::fingerprint(token),
            "refresh token revoked with its grant family"
        );
        Ok(Revocation::Revoked)
    }

    /// Revokes a family and blocklists its live access tokens; returns how many.
    pub(crate) async fn revoke_family(&self, family_id: &str, now: UnixTime) -> Result<usize, OAuthError> {
        let tokens = self.grants.revoke_family(family_id, now).await?;
        self.blocklist(&tokens).await?;
        Ok(tokens.len())
    }

    async fn live_family(&self, id: &str, now: UnixTime) -> Result<Option<GrantFamily>, OAuthError> {
        Ok(self.grants.get_family(id).await?.filter(|f| f.revoked_at.is_none() && now < f.expires_at))
    }

    pub(crate) async fn active_user(&self, id: &str) -> Result<Option<User>, OAuthError> {
        Ok(self.users.get_user(id).await?.filter(|u| !u.disabled))
    }

    /// Access token (and ID token when `openid` was granted) for a user grant, with the
    /// record that lets the family revoke the access token later.
    fn issue_for_family(
        &self,
        client: &Client,
        family: &GrantFamily,
        user: &User,
        scope: Scopes,
        nonce: Option<&str>,
        binding: &Binding,
    ) -> Result<(IssuedToken, FamilyToken), OAuthError> {
        let mut claims = self.access_claims(&user.id, client, scope, Some((user, family.auth_time)));
        claims.cnf = binding.confirmation();
        let mut issued = self.sign_access_token(&claims)?;
        let access = FamilyToken { jti: claims.jti.clone(), expires_at: claims.exp };
        if family.scope.contains("openid") {
            let alg = self.keys.snapshot().signing().map(|(_, s)| s.algorithm()).unwrap_or_default();
            let id = IdTokenClaims {
                iss: claims.iss.clone(),
                sub: user.id.clone(),
                aud: client.id.clone(),
                azp: client.id.clone(),
                exp: claims.iat + self.settings.flow.id_token_ttl,
                iat: claims.iat,
                auth_time: family.auth_time,
                nonce: nonce.map(str::to_owned),
                at_hash: Some(at_hash(alg, &issued.access_token)),
                amr: family.amr.clone(),
            };
            issued.id_token = Some(self.sign(ID_TOKEN_TYP, &id)?);
        }
        Ok((issued, access))
    }

    /// A new refresh token of the family, when the client may refresh.
    fn refresh_token_for(
        &self,
        client: &Client,
        family: &GrantFamily,
        now: UnixTime,
        dpop_jkt: Option<String>,
    ) -> Option<(String, RefreshToken)> {
        if !client.allows_grant(GrantType::RefreshToken) {
            return None;
        }
        let token = secret::random_token(32);
        let record = RefreshToken {
            token_hash: secret::hash_secret(&token),
            family_id: family.id.clone(),
            client_id: client.id.clone(),
            created_at: now,
            expires_at: (now + self.settings.flow.refresh_idle_ttl).min(family.expires_at),
            used_at: None,
            successor: None,
            dpop_jkt,
        };
        Some((token, record))
    }

    fn audit_issued(&self, grant: GrantType, client: &Client, family: &GrantFamily, issued: &IssuedToken) {
        tracing::info!(
            target: "portcullis::audit",
            event = if grant == GrantType::RefreshToken { "token.refreshed" } else { "token.issued" },
            grant = grant.as_str(),
            client_id = %client.id,
            user_id = %family.user_id,
            family = %family.id,
            scope = %issued.scope,
            token_fp = %secret::fingerprint(&issued.access_token),
            refresh = issued.refresh_token.is_some(),
            id_token = issued.id_token.is_some(),
            "tokens issued"
        );
    }
}

/// RFC 9449 §5: "Refresh tokens issued to public clients ... MUST be bound to the
/// respective public key"; those of confidential clients are already bound to the client's
/// own credentials. A binding, once made, is kept by every successor.
fn refresh_binding(client: &Client, binding: &Binding, existing: Option<&str>) -> Option<String> {
    existing.map(str::to_owned).or_else(|| binding.jkt.clone().filter(|_| client.is_public()))
}

fn seal_successor(presented: &str, family_id: &str, response: &IssuedToken) -> Result<Vec<u8>, OAuthError> {
    let successor = Successor {
        access_token: response.access_token.clone(),
        expires_in: response.expires_in,
        scope: response.scope.to_string(),
        refresh_token: response.refresh_token.clone(),
        id_token: response.id_token.clone(),
    };
    let plain = zeroize::Zeroizing::new(serde_json::to_vec(&successor).map_err(OAuthError::server_error)?);
    successor_key(presented)?.seal(family_id, &plain).map_err(OAuthError::server_error)
}

fn open_successor(presented: &str, family_id: &str, sealed: &[u8]) -> Option<IssuedToken> {
    let plain = successor_key(presented).ok()?.open(family_id, sealed).ok()?;
    let s: Successor = serde_json::from_slice(&plain).ok()?;
    Some(IssuedToken {
        access_token: s.access_token,
        expires_in: s.expires_in,
        scope: Scopes::parse(&s.scope).unwrap_or_default(),
        refresh_token: s.refresh_token,
        id_token: s.id_token,
    })
}
