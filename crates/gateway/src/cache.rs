//! A bounded cache of verified tokens, keyed by the SHA-256 of the token (never the token
//! itself). An entry never outlives its token's `exp`; revocation is checked on every hit
//! by the caller, so an entry never outlives a revocation either. When full, expired
//! entries go first, then an arbitrary tenth: memory stays bounded under a flood of
//! distinct tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::bounded::make_room;
use domain::clock::UnixTime;
use sha2::{Digest as _, Sha256};

use crate::auth::Identity;

pub type TokenHash = [u8; 32];

#[must_use]
pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug)]
pub struct TokenCache {
    entries: Mutex<HashMap<TokenHash, Arc<Identity>>>,
    capacity: usize,
}

impl TokenCache {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::with_capacity(capacity.min(65_536))), capacity }
    }

    #[must_use]
    pub fn get(&self, key: &TokenHash, now: UnixTime) -> Option<Arc<Identity>> {
        let mut map = self.entries.lock().ok()?;
        match map.get(key) {
            Some(id) if id.expires_at > now => Some(id.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: TokenHash, identity: Arc<Identity>, now: UnixTime) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut map) = self.entries.lock() else { return };
        make_room(&mut map, self.capacity, |id| id.expires_at <= now);
        map.insert(key, identity);
    }

    /// Drops every entry (e.g. after an emergency key retirement).
    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |m| m.len())
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(exp: i64) -> Arc<Identity> {
        Arc::new(Identity { expires_at: exp, ..Identity::default() })
    }

    #[test]
    fn bounded_and_expiring() {
        let cache = TokenCache::new(100);
        for i in 0..1000u32 {
            cache.insert(hash(&i.to_string()), identity(50), 0);
            assert!(cache.len() <= 100);
        }
        cache.insert(hash("x"), identity(10), 0);
        assert!(cache.get(&hash("x"), 9).is_some());
        assert!(cache.get(&hash("x"), 10).is_none(), "never outlives exp");
        assert!(cache.get(&hash("x"), 0).is_none(), "expired entries are removed");
    }
}
