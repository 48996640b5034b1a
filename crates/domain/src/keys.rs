//! Signing-key lifecycle: *announced* → *active* → *retired* → *purged*, private keys
//! sealed at rest, and the pure rotation planner that decides the next transitions.
//!
//! Invariants the planner keeps (so a rotation never fails a single verification):
//! - a key is published in the JWKS for at least `announce` seconds before it signs, and
//!   the JWKS `max-age` is at most half of that, so every verifier has it cached in time;
//! - a retired key stays published until every token it signed has expired
//!   (`retired_at + max_token_ttl + leeway`).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::clock::UnixTime;
use crate::jose::{Algorithm, Jwk, KeyError, Signer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    /// Published in the JWKS, not yet signing.
    Announced,
    /// Signs new tokens (exactly one key at a time).
    Active,
    /// Published, verify-only, until the tokens it signed have expired.
    Retired,
    /// Gone from the JWKS; the private key has been erased.
    Purged,
}

impl KeyState {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Announced => "announced",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Purged => "purged",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "announced" => Some(Self::Announced),
            "active" => Some(Self::Active),
            "retired" => Some(Self::Retired),
            "purged" => Some(Self::Purged),
            _ => None,
        }
    }

    /// Whether the key belongs in the JWKS and may verify tokens.
    #[must_use]
    pub const fn is_published(self) -> bool {
        matches!(self, Self::Announced | Self::Active | Self::Retired)
    }
}

/// A signing key as stored. `sealed_private_key` is AES-256-GCM under the master key, with
/// the `kid` as associated data; empty once purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub alg: Algorithm,
    pub state: KeyState,
    pub public_jwk: Jwk,
    pub sealed_private_key: Vec<u8>,
    pub created_at: UnixTime,
    /// When the key starts (or started) signing.
    pub activates_at: UnixTime,
    pub retired_at: Option<UnixTime>,
    /// When a retired key may be purged.
    pub purge_after: Option<UnixTime>,
}

/// The key that encrypts private keys at rest. 256 bits; never logged or printed.
pub struct MasterKey {
    aead: LessSafeKey,
    /// HMAC-SHA256(master, "portcullis audit chain v1"): the audit chain's key, so editing
    /// the stored audit trail undetectably needs the master key.
    audit: Zeroizing<[u8; 32]>,
    /// HMAC-SHA256(master, "portcullis dpop nonce v1"): signs server-issued DPoP nonces, so
    /// every instance sharing the master key accepts the nonces of the others.
    dpop_nonce: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Sealing or unsealing failed: wrong master key, or tampered data.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be exactly 32 bytes")]
    BadMasterKey,
    #[error("sealed key cannot be opened (wrong master key or tampered data)")]
    Open,
    #[error("sealing failed")]
    Seal,
    #[error(transparent)]
    Key(#[from] KeyError),
}

const SEAL_VERSION: u8 = 1;

impl MasterKey {
    /// # Errors
    /// The key is not 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadMasterKey)?;
        let derive = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, bytes);
        let mut audit = Zeroizing::new([0u8; 32]);
        audit.copy_from_slice(aws_lc_rs::hmac::sign(&derive, b"portcullis audit chain v1").as_ref());
        let mut dpop_nonce = Zeroizing::new([0u8; 32]);
        dpop_nonce.copy_from_slice(aws_lc_rs::hmac::sign(&derive, b"portcullis dpop nonce v1").as_ref());
        Ok(Self { aead: LessSafeKey::new(unbound), audit, dpop_nonce })
    }

    /// The key of the stored audit trail's hash chain.
    #[must_use]
    pub fn audit_chain(&self) -> crate::audit::AuditChain {
        crate::audit::AuditChain::from_secret(&*self.audit)
    }

    /// The key of server-issued DPoP nonces (RFC 9449 §8).
    #[must_use]
    pub fn dpop_nonces(&self) -> crate::dpop::NonceKey {
        crate::dpop::NonceKey::new(&*self.dpop_nonce)
    }

    /// 32 random bytes for a new master key.
    #[must_use]
    pub fn generate_bytes() -> Zeroizing<[u8; 32]> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(&mut *bytes);
        bytes
    }

    /// `version || nonce || ciphertext || tag`, bound to `kid` as associated data.
    ///
    /// # Errors
    /// The AEAD operation failed.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut buf = plaintext.to_vec();
        self.aead
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// # Errors
    /// Wrong master key, wrong `kid`, or tampered data.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (version, rest) = sealed.split_first().ok_or(SealError::Open)?;
        if *version != SEAL_VERSION || rest.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let plain = self.aead.open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf).map_err(|_| SealError::Open)?;
        Ok(Zeroizing::new(plain.to_vec()))
    }

    /// Generates a key pair and its stored record.
    ///
    /// # Errors
    /// Generation or sealing failed.
    pub fn new_key(
        &self,
        alg: Algorithm,
        state: KeyState,
        now: UnixTime,
        activates_at: UnixTime,
    ) -> Result<(StoredKey, Signer), SealError> {
        let (signer, pkcs8) = Signer::generate(alg)?;
        let jwk = signer.public_jwk()?;
        let sealed = self.seal(&jwk.kid, &pkcs8)?;
        let key = StoredKey {
            kid: jwk.kid.clone(),
            alg,
            state,
            public_jwk: jwk,
            sealed_private_key: sealed,
            created_at: now,
            activates_at,
            retired_at: None,
            purge_after: None,
        };
        Ok((key, signer))
    }

    /// Opens a stored key's private half.
    ///
    /// # Errors
    /// Wrong master key or tampered data.
    pub fn signer(&self, key: &StoredKey) -> Result<Signer, SealError> {
        let pkcs8 = self.open(&key.kid, &key.sealed_private_key)?;
        Ok(Signer::from_pkcs8(key.alg, &pkcs8)?)
    }
}

/// The rotation schedule, all in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    pub algorithm: Algorithm,
    /// How long a key signs before the next one takes over.
    pub interval: i64,
    /// How long a new key is published before it signs.
    pub announce: i64,
    /// The longest access-token lifetime any client can get.
    pub max_token_ttl: i64,
    /// Clock leeway verifiers allow.
    pub leeway: i64,
}

impl RotationPolicy {
    /// JWKS `Cache-Control: max-age`: half the announcement period (capped at an hour), so a
    /// verifier that cached the set just before a key was announced refetches before the key
    /// signs anything.
    #[must_use]
    pub fn jwks_max_age(&self) -> i64 {
        (self.announce / 2).clamp(0, 3600)
    }

    fn purge_after(&self, retired_at: UnixTime) -> UnixTime {
        retired_at + self.max_token_ttl + self.leeway
    }
}

/// One change to the stored key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// Create a new key in this state, signing from `activates_at`.
    Create { state: KeyState, activates_at: UnixTime },
    /// Move an announced key to active.
    Activate { kid: String },
    /// Move an active (or announced) key to retired.
    Retire { kid: String, purge_after: UnixTime },
    /// Erase a retired key whose tokens have all expired.
    Purge { kid: String },
}

/// Decides what the schedule requires now. Pure: no I/O, no clock.
#[must_use]
pub fn plan_rotation(keys: &[StoredKey], now: UnixTime, policy: &RotationPolicy) -> Vec<KeyChange> {
    let mut changes = Vec::new();
    let active = keys.iter().filter(|k| k.state == KeyState::Active).max_by_key(|k| k.activates_at);
    let due_announced =
        keys.iter().filter(|k| k.state == KeyState::Announced && k.activates_at <= now).max_by_key(|k| k.activates_at);
    let pending_announced = keys.iter().any(|k| k.state == KeyState::Announced && k.activates_at > now);

    match (active, due_announced) {
        (_, Some(next)) => {
            changes.push(KeyChange::Activate { kid: next.kid.clone() });
            for old in keys.iter().filter(|k| k.state == KeyState::Active) {
                changes.push(KeyChange::Retire { kid: old.kid.clone(), purge_after: policy.purge_after(now) });
            }
        }
        (None, None) => {
            // First start (or every key retired by hand): sign at once.
            changes.push(KeyChange::Create { state: KeyState::Active, activates_at: now });
        }
        (Some(current), None) => {
            let next_at = current.activates_at + policy.interval;
            if !pending_announced && now >= next_at - policy.announce {
                changes.push(KeyChange::Create {
                    state: KeyState::Announced,
                    activates_at: next_at.max(now + policy.announce),
                });
            }
        }
    }
    for k in keys {
        if k.state == KeyState::Retired && k.purge_after.is_some_and(|p| p <= now) {
            changes.push(KeyChange::Purge { kid: k.kid.clone() });
        }
    }
    changes
}

/// Applies one planned change to the in-memory list (the caller persists the result).
///
/// # Errors
/// Creating a key failed.
pub fn apply_change(
    keys: &mut Vec<StoredKey>,
    change: &KeyChange,
    master: &MasterKey,
    algorithm: Algorithm,
    now: UnixTime,
) -> Result<Option<StoredKey>, SealError> {
    match change {
        KeyChange::Create { state, activates_at } => {
            let (key, _) = master.new_key(algorithm, *state, now, *activates_at)?;
            keys.push(key.clone());
            Ok(Some(key))
        }
        KeyChange::Activate { kid } => Ok(update(keys, kid, |k| {
            k.state = KeyState::Active;
            k.activates_at = k.activates_at.min(now);
        })),
        KeyChange::Retire { kid, purge_after } => Ok(update(keys, kid, |k| {
            k.state = KeyState::Retired;
            k.retired_at = Some(now);
            k.purge_after = Some(*purge_after);
        })),
        KeyChange::Purge { kid } => Ok(update(keys, kid, |k| {
            k.state = KeyState::Purged;
            k.sealed_private_key.clear();
        })),
    }
}

fn update(keys: &mut [StoredKey], kid: &str, f: impl FnOnce(&mut StoredKey)) -> Option<StoredKey> {
    let key = keys.iter_mut().find(|k| k.kid == kid)?;
    f(key);
    Some(key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            algorithm: Algorithm::ES256,
            interval: 90 * DAY,
            announce: DAY,
            max_token_ttl: 3600,
            leeway: 30,
        }
    }

    fn master() -> MasterKey {
        MasterKey::from_bytes(&[7u8; 32]).unwrap()
    }

    fn run(keys: &mut Vec<StoredKey>, now: UnixTime) -> Vec<KeyChange> {
        let changes = plan_rotation(keys, now, &policy());
        for c in &changes {
            apply_change(keys, c, &master(), Algorithm::ES256, now).unwrap();
        }
        changes
    }

    #[test]
    fn seal_roundtrip_and_tamper_detection() {
        let m = master();
        let sealed = m.seal("kid1", b"private").unwrap();
        assert_eq!(&*m.open("kid1", &sealed).unwrap(), b"private");
        assert!(m.open("kid2", &sealed).is_err(), "bound to kid");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(m.open("kid1", &bad).is_err());
        assert!(MasterKey::from_bytes(&[1u8; 32]).unwrap().open("kid1", &sealed).is_err());
        assert!(MasterKey::from_bytes(&[1u8; 16]).is_err());
    }

    #[test]
    fn full_lifecycle() {
        let mut keys = Vec::new();
        let t0 = 1_000_000;
        assert_eq!(run(&mut keys, t0).len(), 1);
        assert_eq!(keys[0].state, KeyState::Active);
        assert!(run(&mut keys, t0 + 10 * DAY).is_empty(), "nothing to do mid-interval");

        // One day before the interval ends, the successor is announced.
        let announce_at = t0 + 89 * DAY;
        let changes = run(&mut keys, announce_at);
        assert!(matches!(changes.as_slice(), [KeyChange::Create { state: KeyState::Announced, .. }]));
        assert_eq!(keys[1].activates_at, t0 + 90 * DAY);
        assert!(run(&mut keys, announce_at + 1).is_empty(), "announce only once");

        // At the interval, the successor activates and the old key retires.
        run(&mut keys, t0 + 90 * DAY);
        assert_eq!(keys[0].state, KeyState::Retired);
        assert_eq!(keys[1].state, KeyState::Active);
        assert_eq!(keys[0].purge_after, Some(t0 + 90 * DAY + 3600 + 30));

        // Purged only after every token it signed has expired.
        assert!(run(&mut keys, t0 + 90 * DAY + 3600).is_empty());
        run(&mut keys, t0 + 90 * DAY + 3630);
        assert_eq!(keys[0].state, KeyState::Purged);
        assert!(keys[0].sealed_private_key.is_empty());
    }

    #[test]
    fn announcement_outlasts_jwks_cache() {
        let p = policy();
        assert!(p.jwks_max_age() * 2 <= p.announce);
    }
}
