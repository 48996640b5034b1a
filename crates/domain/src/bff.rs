//! Backend-for-frontend sessions: a browser app holds only an opaque, HttpOnly session
//! cookie; its tokens live here, server-side, sealed (AES-256-GCM under the master key,
//! bound to the session) so the database alone does not hold usable tokens. Also the short
//! login state (state, nonce, PKCE verifier) that rides in a sealed cookie between
//! `/bff/login` and `/bff/callback`.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::error::StoreError;
use crate::keys::MasterKey;

/// A stored session. The cookie holds the id; the store only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BffSession {
    pub id_hash: String,
    /// The app (`[[gateway.bff]] name`) the session belongs to.
    pub app: String,
    pub subject: String,
    /// [`SessionTokens`], sealed under the master key with the id hash as associated data.
    pub sealed: Vec<u8>,
    pub created_at: UnixTime,
    pub last_seen_at: UnixTime,
    /// The absolute end of the session.
    pub expires_at: UnixTime,
}

/// What a session keeps server-side.
#[derive(Clone, Serialize, Deserialize)]
pub struct SessionTokens {
    pub access_token: String,
    pub access_expires_at: UnixTime,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// The signed-in user's public claims (ID token and userinfo), for `/bff/user`.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a token.
        f.debug_struct("SessionTokens").field("access_expires_at", &self.access_expires_at).finish_non_exhaustive()
    }
}

/// The state of one sign-in between `/bff/login` and `/bff/callback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// Where the browser goes after signing in (a same-origin path).
    pub return_to: String,
    pub expires_at: UnixTime,
}

#[async_trait]
pub trait BffSessionStore: Send + Sync + std::fmt::Debug {
    async fn insert_bff_session(&self, session: &BffSession) -> Result<(), StoreError>;
    async fn get_bff_session(&self, id_hash: &str) -> Result<Option<BffSession>, StoreError>;
    /// Replaces the sealed tokens (after a refresh) and the last-seen time.
    async fn update_bff_session(
        &self,
        id_hash: &str,
        sealed: &[u8],
        last_seen_at: UnixTime,
    ) -> Result<bool, StoreError>;
    async fn delete_bff_session(&self, id_hash: &str) -> Result<bool, StoreError>;
    /// Ends every session of a user (incident response, logout everywhere).
    async fn delete_user_bff_sessions(&self, subject: &str) -> Result<u64, StoreError>;
    /// Deletes sessions past their absolute end.
    async fn purge_bff_sessions(&self, now: UnixTime) -> Result<u64, StoreError>;
}

/// Seals session tokens and login states under the master key.
#[derive(Debug)]
pub struct BffSealer(MasterKey);

impl BffSealer {
    #[must_use]
    pub const fn new(master: MasterKey) -> Self {
        Self(master)
    }

    /// # Errors
    /// Serialization or sealing failed.
    pub fn seal_tokens(&self, id_hash: &str, tokens: &SessionTokens) -> Result<Vec<u8>, StoreError> {
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(tokens).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        self.0.seal(&format!("bff-session:{id_hash}"), &plain).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// # Errors
    /// The sealed bytes do not open under this key and session (tampered or foreign).
    pub fn open_tokens(&self, id_hash: &str, sealed: &[u8]) -> Result<SessionTokens, StoreError> {
        let plain =
            self.0.open(&format!("bff-session:{id_hash}"), sealed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// The login state as a cookie value (base64url of the sealed JSON), bound to the app.
    #[must_use]
    pub fn seal_login(&self, app: &str, state: &LoginState) -> Option<String> {
        let plain = serde_json::to_vec(state).ok()?;
        self.0.seal(&format!("bff-login:{app}"), &plain).ok().map(|s| URL_SAFE_NO_PAD.encode(s))
    }

    /// The login state of a cookie value, if it is ours, for this app, and not expired.
    #[must_use]
    pub fn open_login(&self, app: &str, cookie: &str, now: UnixTime) -> Option<LoginState> {
        let sealed = URL_SAFE_NO_PAD.decode(cookie).ok()?;
        let plain = self.0.open(&format!("bff-login:{app}"), &sealed).ok()?;
        serde_json::from_slice::<LoginState>(&plain).ok().filter(|s| now < s.expires_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(byte: u8) -> BffSealer {
        BffSealer::new(MasterKey::from_bytes(&[byte; 32]).unwrap())
    }

    #[test]
    fn login_state_opens_only_for_its_app_key_and_time() {
        let s = sealer(1);
        let state = LoginState {
            state: "st".into(),
            nonce: "n".into(),
            verifier: "v".into(),
            return_to: "/".into(),
            expires_at: 100,
        };
        let cookie = s.seal_login("spa", &state).unwrap();
        assert_eq!(s.open_login("spa", &cookie, 99), Some(state));
        assert_eq!(s.open_login("spa", &cookie, 100), None, "expired");
        assert_eq!(s.open_login("other", &cookie, 99), None, "another app");
        assert_eq!(sealer(2).open_login("spa", &cookie, 99), None, "another key");
        assert_eq!(s.open_login("spa", "garbage", 99), None);
    }

    #[test]
    fn tokens_open_only_for_their_session() {
        let s = sealer(1);
        let tokens = SessionTokens {
            access_token: "access-token-value".into(),
            access_expires_at: 5,
            refresh_token: Some("refresh-token-value".into()),
            id_token: None,
            claims: serde_json::Map::new(),
        };
        let sealed = s.seal_tokens("h1", &tokens).unwrap();
        assert!(!sealed.windows(18).any(|w| w == b"access-token-value"), "sealed, not plain");
        assert_eq!(s.open_tokens("h1", &sealed).unwrap().refresh_token.as_deref(), Some("refresh-token-value"));
        assert!(s.open_tokens("h2", &sealed).is_err(), "a row copied to another session does not open");
        assert!(!format!("{tokens:?}").contains("token-value"), "Debug hides tokens");
    }
}
