//! The ports: what the domain needs from storage. Adapters live in the `store` crate and
//! all pass one conformance suite (`store/tests`).

use async_trait::async_trait;

use crate::apikey::ApiKey;
use crate::client::Client;
use crate::clock::UnixTime;
use crate::error::StoreError;
use crate::keys::StoredKey;

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
    pub health: std::sync::Arc<dyn Health>,
}
