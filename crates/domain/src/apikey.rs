//! API keys for machine callers of the gateway: the wire format, generation, the stored form
//! (a SHA-256 hash, as for client secrets: the key is 256-bit random, so a slow KDF adds
//! nothing) and the lifecycle (expiry, revocation, rotation with an overlap).
//!
//! Format: `pcs_<id>_<secret>`. The `pcs_` prefix makes leaked keys findable by secret
//! scanners; the 16-hex-character `id` is public and is how a presented key is looked up
//! without scanning; the secret is 32 random bytes, base64url.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clock::UnixTime;
use crate::scope::Scopes;
use crate::secret;

/// The public prefix of every key.
pub const PREFIX: &str = "pcs_";
const ID_LEN: usize = 16;
const SECRET_LEN: usize = 43;
/// The length of a well-formed key.
pub const KEY_LEN: usize = PREFIX.len() + ID_LEN + 1 + SECRET_LEN;

/// A stored API key. The key itself exists only as its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The public id embedded in the key.
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the whole key.
    pub key_hash: String,
    pub scopes: Scopes,
    pub roles: Vec<String>,
    /// Who the key belongs to (a person, team or system): incident commands revoke every
    /// key of an owner; policies see it as the principal's `owner`.
    pub owner: Option<String>,
    pub created_at: UnixTime,
    pub expires_at: Option<UnixTime>,
    pub revoked_at: Option<UnixTime>,
    pub last_used_at: Option<UnixTime>,
    /// The key this one replaced by rotation.
    pub rotated_from: Option<String>,
}

/// Why a stored key does not authenticate right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active,
    Expired,
    Revoked,
}

impl KeyState {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

impl ApiKey {
    #[must_use]
    pub fn state(&self, now: UnixTime) -> KeyState {
        if self.revoked_at.is_some_and(|at| at <= now) {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyState::Expired
        } else {
            KeyState::Active
        }
    }

    /// Whether `presented` is this key and it is usable at `now`. The hash comparison is
    /// constant-time and always done.
    #[must_use]
    pub fn authenticates(&self, presented: &str, now: UnixTime) -> bool {
        secret::verify_secret(presented, &self.key_hash) && self.state(now) == KeyState::Active
    }
}

/// What `apikey create` asks for.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Scopes,
    pub roles: Vec<String>,
    pub owner: Option<String>,
    /// Lifetime in seconds from creation; `None` never expires.
    pub lifetime: Option<i64>,
}

/// A key just created: the stored form, and the key to show once.
#[derive(Debug)]
pub struct IssuedApiKey {
    pub stored: ApiKey,
    pub key: Zeroizing<String>,
}

impl NewApiKey {
    #[must_use]
    pub fn issue(self, now: UnixTime) -> IssuedApiKey {
        let id = secret::random_hex(ID_LEN / 2);
        let key = Zeroizing::new(format!("{PREFIX}{id}_{}", secret::random_token(32)));
        let stored = ApiKey {
            id,
            name: self.name,
            key_hash: secret::hash_secret(&key),
            scopes: self.scopes,
            roles: self.roles,
            owner: self.owner,
            created_at: now,
            expires_at: self.lifetime.map(|l| now.saturating_add(l)),
            revoked_at: None,
            last_used_at: None,
            rotated_from: None,
        };
        IssuedApiKey { stored, key }
    }
}

/// Rotation: a successor with the same name, scopes, roles and lifetime, and the old key
/// cut down to stay valid for `overlap` seconds more (never extended).
#[must_use]
pub fn rotate(old: &ApiKey, overlap: i64, now: UnixTime) -> (ApiKey, IssuedApiKey) {
    let lifetime = old.expires_at.map(|exp| exp.saturating_sub(old.created_at));
    let mut issued = NewApiKey {
        name: old.name.clone(),
        scopes: old.scopes.clone(),
        roles: old.roles.clone(),
        owner: old.owner.clone(),
        lifetime,
    }
    .issue(now);
    issued.stored.rotated_from = Some(old.id.clone());
    let mut retiring = old.clone();
    let cutoff = now.saturating_add(overlap.max(0));
    retiring.expires_at = Some(retiring.expires_at.map_or(cutoff, |exp| exp.min(cutoff)));
    (retiring, issued)
}

/// The public id of a presented key, when it has the key's shape; nothing else is checked
/// here (the hash comparison decides).
#[must_use]
pub fn parse_id(presented: &str) -> Option<&str> {
    if presented.len() != KEY_LEN {
        return None;
    }
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, tail) = rest.split_at_checked(ID_LEN)?;
    let secret = tail.strip_prefix('_')?;
    let id_ok = id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok = secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key(lifetime: Option<i64>) -> IssuedApiKey {
        NewApiKey {
            name: "ci-bot".into(),
            scopes: Scopes::parse("invoices:read").unwrap(),
            roles: vec!["ci".into()],
            owner: Some("team-ci".into()),
            lifetime,
        }
        .issue(1_000)
    }

    #[test]
    fn issued_keys_have_the_format_and_parse_back() {
        let issued = new_key(Some(90 * 86_400));
        assert_eq!(issued.key.len(), KEY_LEN);
        assert!(issued.key.starts_with("pcs_"));
        assert_eq!(parse_id(&issued.key), Some(issued.stored.id.as_str()));
        assert_ne!(issued.stored.key_hash, *issued.key);
        assert_eq!(issued.stored.expires_at, Some(1_000 + 90 * 86_400));
        assert!(issued.stored.authenticates(&issued.key, 2_000));
    }

    #[test]
    fn malformed_keys_have_no_id() {
        let issued = new_key(None);
        for bad in [
            String::new(),
            "pcs_".into(),
            issued.key.replacen("pcs_", "pcx_", 1),
            format!("{}x", *issued.key),
            issued.key[..KEY_LEN - 1].to_owned(),
            issued.key.replacen('_', "-", 1),
            format!("pcs_ABCDEF0123456789_{}", "a".repeat(SECRET_LEN)),
            format!("pcs_0123456789abcdef_{}", "é".repeat(SECRET_LEN / 2)),
        ] {
            assert_eq!(parse_id(&bad), None, "{bad}");
        }
    }

    #[test]
    fn state_follows_expiry_and_revocation() {
        let mut key = new_key(Some(100)).stored;
        assert_eq!(key.state(1_099), KeyState::Active);
        assert_eq!(key.state(1_100), KeyState::Expired);
        key.revoked_at = Some(1_050);
        assert_eq!(key.state(1_050), KeyState::Revoked);
    }

    #[test]
    fn a_wrong_or_dead_key_does_not_authenticate() {
        let issued = new_key(Some(100));
        let other = new_key(Some(100));
        assert!(!issued.stored.authenticates(&other.key, 1_001));
        assert!(!issued.stored.authenticates(&issued.key, 1_100));
    }

    #[test]
    fn rotation_keeps_the_old_key_for_the_overlap_only() {
        let old = new_key(Some(90 * 86_400));
        let (retiring, successor) = rotate(&old.stored, 3_600, 5_000);
        assert_eq!(retiring.expires_at, Some(8_600));
        assert!(retiring.authenticates(&old.key, 8_599));
        assert!(!retiring.authenticates(&old.key, 8_600));
        assert_eq!(successor.stored.rotated_from.as_deref(), Some(old.stored.id.as_str()));
        assert_eq!(successor.stored.expires_at, Some(5_000 + 90 * 86_400));
        assert_eq!(successor.stored.scopes, old.stored.scopes);
        assert!(successor.stored.authenticates(&successor.key, 9_000));
        // an overlap never extends a key that expires sooner
        let (short, _) = rotate(&old.stored, 1_000_000_000, 5_000);
        assert_eq!(short.expires_at, old.stored.expires_at);
    }
}
