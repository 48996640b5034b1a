//! What a sign-in leaves behind, as stored: the SSO session, the authorization code
//! (RFC 6749 §4.1.2, single use, 60 s), the grant family that every token issued from one
//! authorization descends from, refresh tokens (rotated on every use, RFC 9700 §4.14.2) and
//! remembered consent. Secrets (session ids, codes, refresh tokens) exist only as SHA-256.

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::pkce::CodeChallenge;
use crate::scope::Scopes;

/// An SSO session, keyed by the hash of the cookie value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id_hash: String,
    pub user_id: String,
    /// When the user last authenticated (OIDC `auth_time`).
    pub auth_time: UnixTime,
    /// Authentication methods (RFC 8176), e.g. `["pwd"]`.
    pub amr: Vec<String>,
    pub created_at: UnixTime,
    pub last_seen_at: UnixTime,
    /// Absolute end; the idle end is `last_seen_at + idle`.
    pub expires_at: UnixTime,
}

impl Session {
    #[must_use]
    pub fn is_live(&self, now: UnixTime, idle: i64) -> bool {
        now < self.expires_at && now < self.last_seen_at.saturating_add(idle)
    }
}

/// Everything issued from one authorization: its access tokens and its chain of refresh
/// tokens. Revoking the family (code replay, refresh reuse, logout) kills all of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantFamily {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    /// The session the grant was made in (hash), so logging out ends it.
    pub session_hash: Option<String>,
    /// The scope the user granted; refresh can narrow the access token, never widen.
    pub scope: Scopes,
    pub auth_time: UnixTime,
    pub amr: Vec<String>,
    pub created_at: UnixTime,
    /// Absolute end of the refresh chain.
    pub expires_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

/// An authorization code, bound to client, redirect URI and PKCE challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCode {
    pub code_hash: String,
    pub family_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    /// Whether the authorization request carried `redirect_uri` (then the token request
    /// must repeat it, RFC 6749 §4.1.3).
    pub redirect_uri_given: bool,
    pub challenge: CodeChallenge,
    pub nonce: Option<String>,
    /// RFC 9449 §10: the DPoP key (thumbprint) the authorization request bound the code to.
    pub dpop_jkt: Option<String>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

/// The result of the atomic first-use check of a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeRedemption {
    /// This call spent the code.
    First(AuthCode),
    /// The code had been spent before: a replay.
    Replayed(AuthCode),
}

/// A refresh token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub token_hash: String,
    pub family_id: String,
    pub client_id: String,
    pub created_at: UnixTime,
    /// Idle end of this token (the family's absolute end caps it).
    pub expires_at: UnixTime,
    /// When it was rotated (used); a second use after the grace window is a reuse.
    pub used_at: Option<UnixTime>,
    /// The successor token response, sealed under a key derived from this token (which is
    /// never stored), so a retry within the grace window gets the same pair back.
    pub successor: Option<Vec<u8>>,
    /// RFC 9449 §5: a public client's refresh token is bound to its DPoP key (thumbprint);
    /// only a proof signed by that key may redeem it. Inherited by every successor.
    pub dpop_jkt: Option<String>,
}

/// A refresh token joined with its family, as the refresh grant needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshLookup {
    pub token: RefreshToken,
    pub family: GrantFamily,
}

/// A user's remembered consent to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub user_id: String,
    pub client_id: String,
    pub scope: Scopes,
    pub granted_at: UnixTime,
}

/// An access token of a family, kept so that revoking the family can blocklist it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FamilyToken {
    pub jti: String,
    pub expires_at: UnixTime,
}
