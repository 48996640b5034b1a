//! An in-memory mirror of the revocation blocklist, so the gateway checks revocation on
//! every request without a database round trip. Filled from the store at start, updated
//! at once by revocations in this process, and re-synced from the store periodically (to
//! pick up other instances and the CLI; the scale-out issue adds push through Redis).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::UnixTime;

#[derive(Debug, Default)]
pub struct RevokedSet {
    entries: Mutex<HashMap<String, UnixTime>>,
}

impl RevokedSet {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `jti` is revoked at `now`. A poisoned lock answers "revoked" (fail closed).
    #[must_use]
    pub fn contains(&self, jti: &str, now: UnixTime) -> bool {
        match self.entries.lock() {
            Ok(map) => map.get(jti).is_some_and(|exp| *exp > now),
            Err(_) => true,
        }
    }

    pub fn insert(&self, jti: &str, expires_at: UnixTime) {
        if let Ok(mut map) = self.entries.lock() {
            let entry = map.entry(jti.to_owned()).or_insert(expires_at);
            *entry = (*entry).max(expires_at);
        }
    }

    /// Revocations announced by another instance over the bus. No token of ours outlives
    /// `horizon` (now + the longest access-token lifetime + leeway): an entry claiming more
    /// did not come from an instance and is dropped, so a stranger publishing on the channel
    /// cannot make the set hold memory for ever. Returns how many were taken.
    pub fn insert_announced(&self, tokens: &[crate::grant::FamilyToken], horizon: UnixTime) -> usize {
        let plausible: Vec<_> = tokens.iter().filter(|t| t.expires_at <= horizon).collect();
        for t in &plausible {
            self.insert(&t.jti, t.expires_at);
        }
        plausible.len()
    }

    /// Replaces the contents with the store's view, keeping local entries the store may not
    /// show yet, and dropping expired ones.
    pub fn sync(&self, from_store: Vec<(String, UnixTime)>, now: UnixTime) {
        if let Ok(mut map) = self.entries.lock() {
            map.retain(|_, exp| *exp > now);
            for (jti, exp) in from_store {
                let entry = map.entry(jti).or_insert(exp);
                *entry = (*entry).max(exp);
            }
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

    #[test]
    fn insert_contains_expire_sync() {
        let set = RevokedSet::new();
        set.insert("a", 100);
        assert!(set.contains("a", 99));
        assert!(!set.contains("a", 100));
        set.sync(vec![("b".into(), 200)], 150);
        assert!(!set.contains("a", 0), "expired entries dropped on sync");
        assert!(set.contains("b", 150));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn announced_entries_beyond_the_horizon_are_dropped() {
        use crate::grant::FamilyToken;
        let set = RevokedSet::new();
        let t = |jti: &str, exp| FamilyToken { jti: jti.into(), expires_at: exp };
        assert_eq!(set.insert_announced(&[t("ok", 500), t("forged", i64::MAX)], 1000), 1);
        assert!(set.contains("ok", 0));
        assert!(!set.contains("forged", 0));
    }
}
