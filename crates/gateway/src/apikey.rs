//! API-key authentication: the key from `X-API-Key` or `Authorization: ApiKey …` (never the
//! query string), looked up by its public id, compared by hash in constant time, and its
//! use recorded.
//!
//! Lookups are cached for `ttl` seconds (hits and misses, so a flood of made-up ids does
//! not reach the store more than once per id and period; the map is bounded). A revocation
//! made by the CLI, in another process, therefore takes effect within `ttl`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::apikey::{self, ApiKey};
use domain::clock::UnixTime;
use domain::ports::ApiKeyStore;

use crate::auth::Identity;
use crate::error::{Downstream, GatewayError};
use domain::bounded::make_room;

/// The issuer recorded in identities established by an API key.
pub const API_KEY_ISSUER: &str = "portcullis:api_key";

/// Record a use at most this often per key (last-used is coarse by design: no write per
/// request).
const TOUCH_EVERY: i64 = 60;

#[derive(Debug)]
struct Cached {
    key: Option<ApiKey>,
    fetched_at: UnixTime,
    touched_at: Option<UnixTime>,
}

#[derive(Debug)]
pub struct ApiKeyVerifier {
    store: Arc<dyn ApiKeyStore>,
    cache: Mutex<HashMap<String, Cached>>,
    ttl: i64,
    capacity: usize,
}

impl ApiKeyVerifier {
    #[must_use]
    pub fn new(store: Arc<dyn ApiKeyStore>, ttl: i64, capacity: usize) -> Self {
        Self { store, cache: Mutex::new(HashMap::new()), ttl: ttl.max(0), capacity: capacity.max(1) }
    }

    /// Forgets one key (it was revoked or rotated elsewhere): the next use reads the store.
    pub fn invalidate(&self, id: &str) {
        if let Ok(mut map) = self.cache.lock() {
            map.remove(id);
        }
    }

    /// Forgets every key (after a gap in the change announcements).
    pub fn clear(&self) {
        if let Ok(mut map) = self.cache.lock() {
            map.clear();
        }
    }

    /// The identity of a presented key.
    ///
    /// # Errors
    /// `InvalidApiKey` (reason for the log) for a malformed, unknown, wrong, expired or
    /// revoked key; `Unavailable` when the key cannot be looked up.
    pub async fn verify(&self, presented: &str, now: UnixTime) -> Result<Identity, GatewayError> {
        let invalid = |reason| GatewayError::Downstream(Downstream::InvalidApiKey(reason));
        let id = apikey::parse_id(presented).ok_or_else(|| invalid("malformed"))?;
        let (key, touch) = self.lookup(id, now).await?;
        let key = key.ok_or_else(|| invalid("unknown_key"))?;
        if !key.authenticates(presented, now) {
            let reason = match key.state(now) {
                apikey::KeyState::Active => "wrong_secret",
                apikey::KeyState::Expired => "expired",
                apikey::KeyState::Revoked => "revoked",
            };
            return Err(invalid(reason));
        }
        if touch {
            let store = self.store.clone();
            let id = key.id.clone();
            tokio::spawn(async move {
                if let Err(e) = store.touch_api_key(&id, now).await {
                    tracing::warn!(event = "apikey.touch_failed", key_id = %id, cause = %e, "could not record key use");
                }
            });
        }
        Ok(Identity {
            issuer: API_KEY_ISSUER.into(),
            is_self: false,
            subject: format!("apikey:{}", key.id),
            client_id: None,
            scopes: key.scopes.iter().map(str::to_owned).collect(),
            roles: key.roles.clone(),
            audiences: Vec::new(),
            jti: None,
            expires_at: key.expires_at.unwrap_or(i64::MAX),
            not_before: None,
            issued_at: None,
            kid: None,
            // The key's owner is a verified fact about it: policies see `principal.owner`.
            attributes: key.owner.iter().map(|o| ("owner".to_owned(), serde_json::Value::from(o.as_str()))).collect(),
            mfa: false,
            cnf: None,
        })
    }

    /// The key with `id` (from cache when fresh) and whether this use should be recorded.
    async fn lookup(&self, id: &str, now: UnixTime) -> Result<(Option<ApiKey>, bool), GatewayError> {
        let fresh = self
            .cache
            .lock()
            .ok()
            .and_then(|map| map.get(id).filter(|e| now - e.fetched_at < self.ttl).map(|e| e.key.clone()));
        let key = match fresh {
            Some(key) => key,
            None => {
                let key = self
                    .store
                    .get_api_key(id)
                    .await
                    .map_err(|e| GatewayError::Unavailable(format!("API key lookup: {e}")))?;
                if let Ok(mut map) = self.cache.lock() {
                    let touched_at = map.get(id).and_then(|e| e.touched_at);
                    make_room(&mut map, self.capacity, |e| now - e.fetched_at >= self.ttl);
                    map.insert(id.to_owned(), Cached { key: key.clone(), fetched_at: now, touched_at });
                }
                key
            }
        };
        let touch = key.is_some() && self.mark_used(id, now);
        Ok((key, touch))
    }

    /// Whether this use is the first in `TOUCH_EVERY` seconds (and so should be written).
    fn mark_used(&self, id: &str, now: UnixTime) -> bool {
        let Ok(mut map) = self.cache.lock() else { return false };
        match map.get_mut(id) {
            Some(entry) if entry.touched_at.is_none_or(|t| now - t >= TOUCH_EVERY) => {
                entry.touched_at = Some(now);
                true
            }
            _ => false,
        }
    }
}
