//! The key ring: the current signing key and verification keys as one immutable snapshot,
//! swapped atomically after every change (no lock on the token path), plus the operations
//! that move keys through their lifecycle (`keys::plan_rotation`) and persist them.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clock::{Clock, UnixTime};
use crate::error::StoreError;
use crate::jose::{Jwk, KeyError, Signer, Verifier};
use crate::keys::{self, KeyChange, KeyState, MasterKey, RotationPolicy, SealError, StoredKey};
use crate::ports::KeyStore;

/// An immutable view of the keys at one moment.
#[derive(Debug)]
pub struct KeySet {
    signing: Option<(String, Signer)>,
    verifiers: HashMap<String, Verifier>,
    jwks_json: String,
    jwks_max_age: i64,
}

impl KeySet {
    /// The key that signs now, with its kid.
    #[must_use]
    pub fn signing(&self) -> Option<(&str, &Signer)> {
        self.signing.as_ref().map(|(kid, s)| (kid.as_str(), s))
    }

    #[must_use]
    pub fn verifier(&self, kid: &str) -> Option<&Verifier> {
        self.verifiers.get(kid)
    }

    /// `{"keys":[…]}`: the public keys of every announced, active and retired key.
    #[must_use]
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    #[must_use]
    pub const fn jwks_max_age(&self) -> i64 {
        self.jwks_max_age
    }

    /// Builds a snapshot from stored keys, opening the private half of the active key only.
    ///
    /// # Errors
    /// A stored key cannot be opened or parsed.
    pub fn build(stored: &[StoredKey], master: &MasterKey, jwks_max_age: i64) -> Result<Self, KeyRingError> {
        let mut verifiers = HashMap::new();
        let mut published: Vec<&Jwk> = Vec::new();
        let mut signing = None;
        for key in stored.iter().filter(|k| k.state.is_published()) {
            let verifier = Verifier::from_jwk(&key.public_jwk).map_err(|e| KeyRingError::Key(key.kid.clone(), e))?;
            verifiers.insert(key.kid.clone(), verifier);
            published.push(&key.public_jwk);
            if key.state == KeyState::Active {
                let newest =
                    signing.as_ref().is_none_or(|(_, at, _): &(String, UnixTime, Signer)| key.activates_at > *at);
                if newest {
                    let signer = master.signer(key).map_err(|e| KeyRingError::Seal(key.kid.clone(), e))?;
                    signing = Some((key.kid.clone(), key.activates_at, signer));
                }
            }
        }
        let jwks_json = serde_json::json!({ "keys": published }).to_string();
        Ok(Self { signing: signing.map(|(kid, _, s)| (kid, s)), verifiers, jwks_json, jwks_max_age })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("key store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open signing key {0}: {1}")]
    Seal(String, SealError),
    #[error("stored public key {0} is unusable: {1}")]
    Key(String, KeyError),
    #[error("a successor key is already announced ({0}); it activates on schedule")]
    AlreadyAnnounced(String),
    #[error("no key with id {0:?}")]
    UnknownKey(String),
    #[error("key {0} is {1} and cannot be retired")]
    NotRetirable(String, &'static str),
    #[error("another instance is changing the keys; try again in a few seconds")]
    Busy,
}

/// How long the rotation lease lasts if its holder dies before releasing it.
const LEASE_SECONDS: i64 = 30;
/// How long to wait for another instance's lease before giving up (it holds it for the
/// milliseconds a change takes).
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Holds the current [`KeySet`] and applies lifecycle changes through the [`KeyStore`].
#[derive(Debug)]
pub struct KeyRing {
    current: ArcSwap<KeySet>,
    master: MasterKey,
    store: Arc<dyn KeyStore>,
    policy: RotationPolicy,
    clock: Arc<dyn Clock>,
    /// This ring's name on the rotation lease (random per process).
    holder: String,
}

impl KeyRing {
    /// Loads the keys, applies whatever the schedule requires (on a first start: creates
    /// the first key), and builds the first snapshot.
    ///
    /// # Errors
    /// The store failed or a key cannot be opened (e.g. a different master key).
    pub async fn load(
        store: Arc<dyn KeyStore>,
        master: MasterKey,
        policy: RotationPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, KeyRingError> {
        let empty =
            KeySet { signing: None, verifiers: HashMap::new(), jwks_json: r#"{"keys":[]}"#.into(), jwks_max_age: 0 };
        let holder = crate::secret::random_hex(8);
        let ring = Self { current: ArcSwap::from_pointee(empty), master, store, policy, clock, holder };
        ring.maintain().await?;
        Ok(ring)
    }

    /// Rebuilds the snapshot if the stored keys no longer match it (another process
    /// purged, retired or activated a key). One small query and no decryption when
    /// nothing changed, so it runs with the 2-second revocation sync: a compromised key
    /// purged by the CLI is refused within seconds even without the Redis bus.
    ///
    /// # Errors
    /// The store failed or a key cannot be opened.
    pub async fn refresh_if_changed(&self) -> Result<bool, KeyRingError> {
        let stored = self.store.list_keys().await?;
        let current = self.snapshot();
        let published: Vec<&StoredKey> = stored.iter().filter(|k| k.state.is_published()).collect();
        let active = published.iter().filter(|k| k.state == KeyState::Active).max_by_key(|k| k.activates_at);
        let same = published.len() == current.verifiers.len()
            && published.iter().all(|k| current.verifiers.contains_key(&k.kid))
            && active.map(|k| k.kid.as_str()) == current.signing().map(|(kid, _)| kid);
        if same {
            return Ok(false);
        }
        self.publish(&stored)?;
        Ok(true)
    }

    /// The snapshot to sign and verify with. Cheap: one atomic load.
    #[must_use]
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    #[must_use]
    pub const fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// Applies due transitions and reloads the snapshot from the store (which also picks up
    /// changes made by the CLI or by another instance). Returns the changes applied.
    ///
    /// With several instances on one database, changes are made under the rotation lease:
    /// one instance makes them, the others wait for it (milliseconds), find nothing left to
    /// do, and publish the result — never two successors, never two first keys.
    ///
    /// # Errors
    /// The store failed or a key cannot be opened.
    pub async fn maintain(&self) -> Result<Vec<KeyChange>, KeyRingError> {
        let stored = self.store.list_keys().await?;
        if keys::plan_rotation(&stored, self.clock.now(), &self.policy).is_empty() {
            self.publish(&stored)?;
            return Ok(Vec::new());
        }
        if !self.take_lease().await? {
            // Another instance is still at it: publish what is stored; the next round
            // picks up its changes.
            self.publish(&stored)?;
            return Ok(Vec::new());
        }
        let result = self.maintain_leased().await;
        self.release_lease().await;
        result
    }

    async fn maintain_leased(&self) -> Result<Vec<KeyChange>, KeyRingError> {
        let now = self.clock.now();
        let mut stored = self.store.list_keys().await?;
        let changes = keys::plan_rotation(&stored, now, &self.policy);
        for change in &changes {
            self.apply(&mut stored, change, now).await?;
            tracing::info!(target: "portcullis::keys", change = ?change, "signing key lifecycle change");
        }
        self.publish(&stored)?;
        Ok(changes)
    }

    /// Announces a successor that starts signing after the announcement period.
    ///
    /// # Errors
    /// A successor is already announced, another instance holds the lease, or the store
    /// failed.
    pub async fn rotate(&self) -> Result<StoredKey, KeyRingError> {
        if !self.take_lease().await? {
            return Err(KeyRingError::Busy);
        }
        let result = self.rotate_leased().await;
        self.release_lease().await;
        result
    }

    async fn rotate_leased(&self) -> Result<StoredKey, KeyRingError> {
        let now = self.clock.now();
        let mut stored = self.store.list_keys().await?;
        if let Some(pending) = stored.iter().find(|k| k.state == KeyState::Announced) {
            return Err(KeyRingError::AlreadyAnnounced(pending.kid.clone()));
        }
        let change = KeyChange::Create { state: KeyState::Announced, activates_at: now + self.policy.announce };
        let key = self.apply(&mut stored, &change, now).await?;
        self.publish(&stored)?;
        key.ok_or_else(|| KeyRingError::UnknownKey(String::new()))
    }

    /// Retires a key now: it stops signing at once and stays published until the tokens it
    /// signed have expired. Retiring the active key promotes the announced successor, or
    /// creates one that signs immediately.
    ///
    /// # Errors
    /// No such key, a key that is already retired or purged, another instance holds the
    /// lease, or the store failed.
    pub async fn retire(&self, kid: &str) -> Result<Vec<KeyChange>, KeyRingError> {
        if !self.take_lease().await? {
            return Err(KeyRingError::Busy);
        }
        let result = self.retire_leased(kid, false).await;
        self.release_lease().await;
        result
    }

    /// A compromised key: purged now — gone from the JWKS and from verification, its
    /// private key erased — so every token it signed is refused at once (by every instance
    /// once it reloads: the caller announces the change). An active key is replaced as by
    /// [`Self::retire`].
    ///
    /// # Errors
    /// No such key, a key already purged, another instance holds the lease, or the store
    /// failed.
    pub async fn revoke_compromised(&self, kid: &str) -> Result<Vec<KeyChange>, KeyRingError> {
        if !self.take_lease().await? {
            return Err(KeyRingError::Busy);
        }
        let result = self.retire_leased(kid, true).await;
        self.release_lease().await;
        result
    }

    async fn retire_leased(&self, kid: &str, compromised: bool) -> Result<Vec<KeyChange>, KeyRingError> {
        let now = self.clock.now();
        let mut stored = self.store.list_keys().await?;
        let key = stored.iter().find(|k| k.kid == kid).ok_or_else(|| KeyRingError::UnknownKey(kid.to_owned()))?;
        let allowed = match key.state {
            KeyState::Active | KeyState::Announced => true,
            KeyState::Retired => compromised,
            KeyState::Purged => false,
        };
        if !allowed {
            return Err(KeyRingError::NotRetirable(kid.to_owned(), key.state.as_str()));
        }
        let was_active = key.state == KeyState::Active;
        let mut changes = vec![if compromised {
            KeyChange::Purge { kid: kid.to_owned() }
        } else {
            KeyChange::Retire { kid: kid.to_owned(), purge_after: now + self.policy.max_token_ttl + self.policy.leeway }
        }];
        if was_active {
            let successor = stored.iter().filter(|k| k.state == KeyState::Announced).max_by_key(|k| k.activates_at);
            changes.push(match successor {
                Some(next) => KeyChange::Activate { kid: next.kid.clone() },
                None => KeyChange::Create { state: KeyState::Active, activates_at: now },
            });
        }
        for change in &changes {
            self.apply(&mut stored, change, now).await?;
        }
        self.publish(&stored)?;
        Ok(changes)
    }

    /// Takes the rotation lease, waiting up to [`LEASE_WAIT`] for another holder.
    async fn take_lease(&self) -> Result<bool, KeyRingError> {
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        loop {
            let now = self.clock.now();
            if self.store.acquire_rotation_lease(&self.holder, now, now + LEASE_SECONDS).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn release_lease(&self) {
        if let Err(e) = self.store.release_rotation_lease(&self.holder).await {
            tracing::warn!(cause = %e, "releasing the key-rotation lease failed; it ends by itself");
        }
    }

    async fn apply(
        &self,
        stored: &mut Vec<StoredKey>,
        change: &KeyChange,
        now: UnixTime,
    ) -> Result<Option<StoredKey>, KeyRingError> {
        let updated = keys::apply_change(stored, change, &self.master, self.policy.algorithm, now)
            .map_err(|e| KeyRingError::Seal(String::new(), e))?;
        if let Some(key) = &updated {
            match change {
                KeyChange::Create { .. } => self.store.insert_key(key).await?,
                _ => self.store.update_key(key).await?,
            }
        }
        Ok(updated)
    }

    fn publish(&self, stored: &[StoredKey]) -> Result<(), KeyRingError> {
        let set = KeySet::build(stored, &self.master, self.policy.jwks_max_age())?;
        self.current.store(Arc::new(set));
        Ok(())
    }
}
