//! An in-memory mirror of the revocation blocklist, so the gateway checks revocation on
//! every request without a database round trip. Filled from the store at start, updated
//! at once by revocations in this process, and re-synced from the store periodically (to
//! pick up other instances and the CLI; the scale-out issue adds push through Redis).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::UnixTime;

/// Prefix of blocklist entries that are cut-offs, not token ids (a `jti` we issue is
/// base64url and never holds a `:`).
const CUTOFF: &str = "cutoff:";

/// "Every token of this user (or client) issued at or before `issued_before` is revoked":
/// the incident commands' way to revoke tokens nobody recorded (client-credentials tokens)
/// or too many to list. Stored and announced as an ordinary blocklist entry whose key
/// encodes the cut-off ([`Cutoff::key`]) and whose expiry is when the last such token
/// expires, so the store, the sync and the bus carry it unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutoffKind {
    /// The token's `sub` (a user, or a client for its own tokens).
    Subject,
    /// The token's `client_id`.
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutoff {
    pub kind: CutoffKind,
    pub id: String,
    pub issued_before: UnixTime,
}

impl Cutoff {
    /// The blocklist key: `cutoff:<sub|client>:<issued_before>:<id>`.
    #[must_use]
    pub fn key(&self) -> String {
        let kind = match self.kind {
            CutoffKind::Subject => "sub",
            CutoffKind::Client => "client",
        };
        format!("{CUTOFF}{kind}:{}:{}", self.issued_before, self.id)
    }

    #[must_use]
    pub fn parse(key: &str) -> Option<Self> {
        let rest = key.strip_prefix(CUTOFF)?;
        let (kind, rest) = rest.split_once(':')?;
        let (at, id) = rest.split_once(':')?;
        let kind = match kind {
            "sub" => CutoffKind::Subject,
            "client" => CutoffKind::Client,
            _ => return None,
        };
        Some(Self { kind, id: id.to_owned(), issued_before: at.parse().ok()? })
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Key (a `jti` or a cut-off key) → when the entry may be forgotten.
    entries: HashMap<String, UnixTime>,
    /// Derived from the cut-off entries: id → (latest `issued_before`, expiry).
    subjects: HashMap<String, (UnixTime, UnixTime)>,
    clients: HashMap<String, (UnixTime, UnixTime)>,
}

impl Inner {
    fn insert(&mut self, key: &str, expires_at: UnixTime) {
        let entry = self.entries.entry(key.to_owned()).or_insert(expires_at);
        *entry = (*entry).max(expires_at);
        if let Some(c) = Cutoff::parse(key) {
            let map = match c.kind {
                CutoffKind::Subject => &mut self.subjects,
                CutoffKind::Client => &mut self.clients,
            };
            let e = map.entry(c.id).or_insert((c.issued_before, expires_at));
            *e = (e.0.max(c.issued_before), e.1.max(expires_at));
        }
    }

    fn cut_off(&self, subject: &str, client_id: Option<&str>, issued_at: UnixTime, now: UnixTime) -> bool {
        let covers = |map: &HashMap<String, (UnixTime, UnixTime)>, id: &str| {
            map.get(id).is_some_and(|(before, exp)| issued_at <= *before && *exp > now)
        };
        covers(&self.subjects, subject) || client_id.is_some_and(|c| covers(&self.clients, c))
    }
}

#[derive(Debug, Default)]
pub struct RevokedSet {
    inner: Mutex<Inner>,
}

impl RevokedSet {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `jti` is revoked at `now`. A poisoned lock answers "revoked" (fail closed).
    #[must_use]
    pub fn contains(&self, jti: &str, now: UnixTime) -> bool {
        match self.inner.lock() {
            Ok(inner) => inner.entries.get(jti).is_some_and(|exp| *exp > now),
            Err(_) => true,
        }
    }

    /// Whether a token of ours — its `jti`, `sub`, `client_id` and `iat` — is revoked, by
    /// its id or by a cut-off. A poisoned lock answers "revoked".
    #[must_use]
    pub fn revokes(
        &self,
        jti: &str,
        subject: &str,
        client_id: Option<&str>,
        issued_at: UnixTime,
        now: UnixTime,
    ) -> bool {
        let Ok(inner) = self.inner.lock() else { return true };
        inner.entries.get(jti).is_some_and(|exp| *exp > now) || inner.cut_off(subject, client_id, issued_at, now)
    }

    /// Whether an incident cut-off on the token's `sub` or `client_id` covers its `iat`
    /// (callers that check the `jti` elsewhere, e.g. introspection against the store).
    /// A poisoned lock answers "revoked".
    #[must_use]
    pub fn cut_off(&self, subject: &str, client_id: Option<&str>, issued_at: UnixTime, now: UnixTime) -> bool {
        self.inner.lock().map_or(true, |inner| inner.cut_off(subject, client_id, issued_at, now))
    }

    pub fn insert(&self, jti: &str, expires_at: UnixTime) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.insert(jti, expires_at);
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
        if let Ok(mut inner) = self.inner.lock() {
            let mut kept: Vec<(String, UnixTime)> = std::mem::take(&mut inner.entries)
                .into_iter()
                .filter(|(_, exp)| *exp > now)
                .chain(from_store)
                .collect();
            *inner = Inner::default();
            for (key, exp) in kept.drain(..) {
                inner.insert(&key, exp);
            }
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.lock().map_or(0, |m| m.entries.len())
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

    #[test]
    fn cutoffs_revoke_what_was_issued_up_to_them_and_nothing_later() {
        let set = RevokedSet::new();
        let client = Cutoff { kind: CutoffKind::Client, id: "billing".into(), issued_before: 1000 };
        let user = Cutoff { kind: CutoffKind::Subject, id: "u:1".into(), issued_before: 2000 };
        assert_eq!(Cutoff::parse(&client.key()), Some(client.clone()));
        assert_eq!(Cutoff::parse(&user.key()), Some(user.clone()), "an id may hold colons");
        assert_eq!(Cutoff::parse("cutoff:nobody:1:x"), None);
        assert_eq!(Cutoff::parse("abcDEF123"), None);
        set.insert(&client.key(), 5000);
        assert!(set.revokes("j1", "svc", Some("billing"), 1000, 1500), "issued at the cut-off");
        assert!(!set.revokes("j2", "svc", Some("billing"), 1001, 1500), "issued after it");
        assert!(!set.revokes("j1", "svc", Some("other"), 900, 1500), "another client");
        assert!(!set.revokes("j1", "svc", Some("billing"), 900, 5000), "the entry expired");
        set.sync(vec![(user.key(), 6000)], 1500);
        assert!(set.revokes("j3", "u:1", Some("app"), 1999, 1500), "by subject, from the store");
        assert!(set.revokes("j1", "svc", Some("billing"), 1000, 1500), "local cut-off kept by the sync");
        set.sync(Vec::new(), 5500);
        assert!(!set.revokes("j1", "svc", Some("billing"), 1000, 5500), "expired cut-offs are dropped");
        assert!(set.revokes("j3", "u:1", None, 1999, 5500));
    }
}
