//! The ports: what the domain needs from storage. Adapters live in the `store` crate and
//! all pass one conformance suite (`store/tests`).

use async_trait::async_trait;

use crate::apikey::ApiKey;
use crate::client::Client;
use crate::clock::UnixTime;
use crate::error::StoreError;
use crate::grant::{AuthCode, CodeRedemption, Consent, FamilyToken, GrantFamily, RefreshLookup, RefreshToken, Session};
use crate::keys::StoredKey;
use crate::user::User;

/// Registered clients.
#[async_trait]
pub trait ClientStore: Send + Sync + std::fmt::Debug {
    /// # Errors
    /// `Conflict` when the id exists.
    async fn insert_client(&self, client: &Client) -> Result<(), StoreError>;
    async fn get_client(&self, id: &str) -> Result<Option<Client>, StoreError>;
    /// All clients, ordered by creation time then id.
    async fn list_clients(&self) -> Result<Vec<Client>, StoreError>;
    /// Replaces the stored client with the same id.
    ///
    /// # Errors
    /// `NotFound` when there is no such client.
    async fn update_client(&self, client: &Client) -> Result<(), StoreError>;
    /// # Errors
    /// `NotFound` when there is no such client.
    async fn delete_client(&self, id: &str) -> Result<(), StoreError>;
    /// A number that changes whenever any client is inserted, updated or deleted — by this
    /// process or any other writing to the same store — and otherwise stays the same: what a
    /// cache polls to know its entries may be stale (`crate::client_cache`).
    async fn clients_version(&self) -> Result<i64, StoreError>;
}

/// Signing keys.
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// Every key, including purged ones, ordered by creation time then kid.
    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// # Errors
    /// `Conflict` when the kid exists.
    async fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError>;
    /// Replaces state, timestamps and sealed material of the key with the same kid.
    ///
    /// # Errors
    /// `NotFound` when there is no such key.
    async fn update_key(&self, key: &StoredKey) -> Result<(), StoreError>;
    /// Takes the key-rotation lease for `holder` until `until` (renews it when `holder`
    /// already has it), so one instance at a time changes the key set. Returns false when
    /// another holder has it and it has not ended at `now`. A lease its holder never
    /// released (the process died) ends by itself.
    async fn acquire_rotation_lease(&self, holder: &str, now: UnixTime, until: UnixTime) -> Result<bool, StoreError>;
    /// Ends the lease if `holder` has it.
    async fn release_rotation_lease(&self, holder: &str) -> Result<(), StoreError>;
}

/// Revoked access tokens, by `jti`, kept until the token would have expired anyway.
#[async_trait]
pub trait RevocationStore: Send + Sync + std::fmt::Debug {
    /// Idempotent: revoking twice keeps the later expiry.
    async fn revoke(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError>;
    /// Whether `jti` is revoked and its entry has not expired at `now`.
    async fn is_revoked(&self, jti: &str, now: UnixTime) -> Result<bool, StoreError>;
    /// Every entry still in force at `now` (jti, expiry), to fill in-memory mirrors.
    async fn list_active(&self, now: UnixTime) -> Result<Vec<(String, UnixTime)>, StoreError>;
    /// Drops entries whose tokens have expired; returns how many.
    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError>;
}

/// API keys of the gateway, looked up by their public id.
#[async_trait]
pub trait ApiKeyStore: Send + Sync + std::fmt::Debug {
    /// # Errors
    /// `Conflict` when the id exists.
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// All keys, ordered by creation time then id.
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// Replaces expiry and revocation of the key with the same id.
    ///
    /// # Errors
    /// `NotFound` when there is no such key.
    async fn update_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;
    /// Records a use; never moves `last_used_at` backwards.
    async fn touch_api_key(&self, id: &str, at: UnixTime) -> Result<(), StoreError>;
}

/// Users and their remembered consents.
#[async_trait]
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// # Errors
    /// `Conflict` when the id or the username exists.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError>;
    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError>;
    async fn get_user_by_username(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// All users, ordered by creation time then id.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Replaces the stored user with the same id.
    ///
    /// # Errors
    /// `NotFound` when there is no such user; `Conflict` on a duplicate username.
    async fn update_user(&self, user: &User) -> Result<(), StoreError>;
    /// Deletes the user with its sessions, consents and grants.
    ///
    /// # Errors
    /// `NotFound` when there is no such user.
    async fn delete_user(&self, id: &str) -> Result<(), StoreError>;
    async fn get_consent(&self, user_id: &str, client_id: &str) -> Result<Option<Consent>, StoreError>;
    /// Inserts or replaces the consent of `user_id` to `client_id`.
    async fn put_consent(&self, consent: &Consent) -> Result<(), StoreError>;
    /// Returns whether there was one.
    async fn delete_consent(&self, user_id: &str, client_id: &str) -> Result<bool, StoreError>;
    async fn list_consents(&self, user_id: &str) -> Result<Vec<Consent>, StoreError>;
}

/// SSO sessions, by the hash of their cookie value.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError>;
    async fn get_session(&self, id_hash: &str) -> Result<Option<Session>, StoreError>;
    /// Moves `last_seen_at` forward (never back).
    async fn touch_session(&self, id_hash: &str, at: UnixTime) -> Result<(), StoreError>;
    /// Returns whether there was one.
    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError>;
    /// Ends every session of a user; returns how many.
    async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, StoreError>;
    /// The user's sessions not past their absolute end at `now` (idle ones included),
    /// newest first.
    async fn list_user_sessions(&self, user_id: &str, now: UnixTime) -> Result<Vec<Session>, StoreError>;
    /// Drops sessions past their absolute end.
    async fn purge_sessions(&self, now: UnixTime) -> Result<u64, StoreError>;
}

/// Authorization codes, grant families, refresh tokens and the access tokens of each
/// family. Every check-and-set here is atomic in the store, never read-then-write in code.
#[async_trait]
pub trait GrantStore: Send + Sync + std::fmt::Debug {
    /// # Errors
    /// `Conflict` when the id exists.
    async fn insert_family(&self, family: &GrantFamily) -> Result<(), StoreError>;
    async fn get_family(&self, id: &str) -> Result<Option<GrantFamily>, StoreError>;
    async fn insert_code(&self, code: &AuthCode) -> Result<(), StoreError>;
    /// Atomically marks the code used; tells whether this call was the first.
    async fn redeem_code(&self, code_hash: &str, now: UnixTime) -> Result<Option<CodeRedemption>, StoreError>;
    async fn insert_refresh_token(&self, token: &RefreshToken) -> Result<(), StoreError>;
    async fn get_refresh_token(&self, token_hash: &str) -> Result<Option<RefreshLookup>, StoreError>;
    /// Atomically: if `old_hash` is unused, mark it used at `now` with the sealed successor
    /// response and insert `successor`. Returns false (and changes nothing) when it was
    /// already used.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        now: UnixTime,
        sealed_successor: &[u8],
        successor: &RefreshToken,
    ) -> Result<bool, StoreError>;
    /// Records an access token issued from a family, atomically with checking that the
    /// family is live. Returns false (recording nothing) when it is revoked: the token must
    /// not be handed out. Against a concurrent `revoke_*` either this commits first and the
    /// revocation returns the token, or the revocation commits first and this returns false.
    async fn record_access_token(&self, family_id: &str, token: &FamilyToken) -> Result<bool, StoreError>;
    /// Revokes a family; returns its access tokens that are still unexpired at `now`.
    async fn revoke_family(&self, family_id: &str, now: UnixTime) -> Result<Vec<FamilyToken>, StoreError>;
    /// Revokes every family made in a session; returns their unexpired access tokens.
    async fn revoke_session_families(&self, session_hash: &str, now: UnixTime) -> Result<Vec<FamilyToken>, StoreError>;
    /// Revokes every family of a user; returns their unexpired access tokens.
    async fn revoke_user_families(&self, user_id: &str, now: UnixTime) -> Result<Vec<FamilyToken>, StoreError>;
    /// Revokes every family of a client; returns their unexpired access tokens.
    async fn revoke_client_families(&self, client_id: &str, now: UnixTime) -> Result<Vec<FamilyToken>, StoreError>;
    /// Drops expired codes and families (with their tokens) past their end.
    async fn purge_grants(&self, now: UnixTime) -> Result<u64, StoreError>;
}

/// Readiness of the backing store.
#[async_trait]
pub trait Health: Send + Sync + std::fmt::Debug {
    /// # Errors
    /// `Unavailable` when the store cannot be reached.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Everything the authorization server needs, as trait objects.
#[derive(Debug, Clone)]
pub struct Stores {
    pub clients: std::sync::Arc<dyn ClientStore>,
    pub keys: std::sync::Arc<dyn KeyStore>,
    pub revocations: std::sync::Arc<dyn RevocationStore>,
    pub api_keys: std::sync::Arc<dyn ApiKeyStore>,
    pub users: std::sync::Arc<dyn UserStore>,
    pub sessions: std::sync::Arc<dyn SessionStore>,
    pub grants: std::sync::Arc<dyn GrantStore>,
    pub bans: std::sync::Arc<dyn crate::abuse::BanStore>,
    pub audit: std::sync::Arc<dyn crate::audit::AuditStore>,
    pub bff_sessions: std::sync::Arc<dyn crate::bff::BffSessionStore>,
    pub health: std::sync::Arc<dyn Health>,
}
