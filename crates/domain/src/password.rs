//! Passwords: argon2id hashing with OWASP parameters (m = 19 MiB, t = 2, p = 1 by default),
//! the length policy, transparent upgrade of hashes made with older parameters, and a bounded
//! pool for the hashing work so a flood of logins cannot starve other requests.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore as _;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::error::{ErrorCode, OAuthError};

/// Passwords shorter than this are refused (NIST SP 800-63B asks for at least 8; we ask 12).
pub const MIN_LENGTH: usize = 12;
/// Longer input is refused before hashing: nobody types more, and it bounds the work.
pub const MAX_LENGTH: usize = 1024;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordParams {
    /// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least {MIN_LENGTH} characters")]
    TooShort,
    #[error("password must be at most {MAX_LENGTH} characters")]
    TooLong,
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub ok: bool,
    /// The stored hash uses other parameters than the current ones: store a fresh hash.
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords on the blocking pool, at most `concurrency` at a time.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    params: PasswordParams,
    argon: Argon2<'static>,
    permits: Arc<Semaphore>,
    queue_timeout: Duration,
    /// Verified against when the user does not exist, so timing does not tell.
    dummy_hash: Arc<String>,
}

impl PasswordHasher {
    /// # Errors
    /// Parameters argon2 does not accept.
    pub fn new(params: PasswordParams, concurrency: usize, queue_timeout: Duration) -> Result<Self, PasswordError> {
        let p = Params::new(params.memory_kib, params.iterations, params.parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
        let dummy = hash_with(&argon, "portcullis-dummy-password").map_err(|e| PasswordError::Params(e.to_string()))?;
        Ok(Self {
            params,
            argon,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            queue_timeout,
            dummy_hash: Arc::new(dummy),
        })
    }

    #[must_use]
    pub const fn params(&self) -> PasswordParams {
        self.params
    }

    /// # Errors
    /// The password is outside the length policy.
    pub fn check_policy(password: &str) -> Result<(), PasswordError> {
        let len = password.chars().count();
        if len < MIN_LENGTH {
            Err(PasswordError::TooShort)
        } else if len > MAX_LENGTH {
            Err(PasswordError::TooLong)
        } else {
            Ok(())
        }
    }

    /// Hashes a new password (after the policy check).
    ///
    /// # Errors
    /// `invalid_request` for a policy violation; `temporarily_unavailable` when the pool is
    /// saturated; `server_error` if hashing fails.
    pub async fn hash(&self, password: Zeroizing<String>) -> Result<String, OAuthError> {
        Self::check_policy(&password).map_err(|e| OAuthError::invalid_request(e.to_string()))?;
        let argon = self.argon.clone();
        self.run(move || hash_with(&argon, &password)).await?.map_err(OAuthError::server_error)
    }

    /// Checks `password` against `stored`; with `None` (no such user) does the same work
    /// against a dummy hash and answers "no".
    ///
    /// # Errors
    /// `temporarily_unavailable` when the pool is saturated.
    pub async fn verify(
        &self,
        password: Zeroizing<String>,
        stored: Option<String>,
    ) -> Result<Verification, OAuthError> {
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.as_str().to_owned());
        let argon = self.argon.clone();
        let current = self.params;
        let result = self
            .run(move || {
                if password.len() > MAX_LENGTH * 4 {
                    return Verification { ok: false, needs_rehash: false };
                }
                let Ok(parsed) = PasswordHash::new(&stored) else {
                    return Verification { ok: false, needs_rehash: false };
                };
                let ok = argon.verify_password(password.as_bytes(), &parsed).is_ok();
                Verification { ok, needs_rehash: ok && !uses_params(&parsed, current) }
            })
            .await?;
        Ok(Verification { ok: result.ok && exists, needs_rehash: result.needs_rehash && exists })
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, OAuthError> {
        let busy = || OAuthError::new(ErrorCode::TemporarilyUnavailable, "the server is busy, try again shortly");
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy().with_cause("password hashing queue timed out"))?
            .map_err(|_| busy().with_cause("password hashing pool closed"))?;
        let result = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(OAuthError::server_error)?;
        Ok(result)
    }
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(argon.hash_password(password.as_bytes(), &salt)?.to_string())
}

fn uses_params(hash: &PasswordHash<'_>, params: PasswordParams) -> bool {
    let get = |name: &str| hash.params.get_decimal(name);
    hash.algorithm.as_str() == "argon2id"
        && hash.version == Some(0x13)
        && get("m") == Some(params.memory_kib)
        && get("t") == Some(params.iterations)
        && get("p") == Some(params.parallelism)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordParams {
        PasswordParams { memory_kib: 64, iterations: 1, parallelism: 1 }
    }

    fn pw(s: &str) -> Zeroizing<String> {
        Zeroizing::new(s.to_owned())
    }

    #[tokio::test]
    async fn hash_verify_and_upgrade() {
        let old = PasswordHasher::new(cheap(), 2, Duration::from_secs(5)).unwrap();
        let hash = old.hash(pw("correct horse battery")).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let v = old.verify(pw("correct horse battery"), Some(hash.clone())).await.unwrap();
        assert_eq!(v, Verification { ok: true, needs_rehash: false });
        assert!(!old.verify(pw("wrong horse battery"), Some(hash.clone())).await.unwrap().ok);
        assert!(!old.verify(pw("correct horse battery"), None).await.unwrap().ok);
        assert!(!old.verify(pw("x"), Some("not a hash".into())).await.unwrap().ok);

        let new =
            PasswordHasher::new(PasswordParams { memory_kib: 128, ..cheap() }, 2, Duration::from_secs(5)).unwrap();
        let v = new.verify(pw("correct horse battery"), Some(hash)).await.unwrap();
        assert_eq!(v, Verification { ok: true, needs_rehash: true });
    }

    #[test]
    fn owasp_defaults_and_policy() {
        assert_eq!(PasswordParams::default(), PasswordParams { memory_kib: 19_456, iterations: 2, parallelism: 1 });
        assert_eq!(PasswordHasher::check_policy("short"), Err(PasswordError::TooShort));
        assert_eq!(PasswordHasher::check_policy(&"x".repeat(1025)), Err(PasswordError::TooLong));
        assert!(PasswordHasher::check_policy("twelve chars").is_ok());
    }
}
