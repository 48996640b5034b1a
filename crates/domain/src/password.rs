//! Passwords: argon2id hashing with OWASP parameters (m = 19 MiB, t = 2, p = 1 by default),
//! the length policy, transparent upgrade of hashes made with older parameters, and a bounded
//! pool for the hashing work so a flood of logins cannot starve other requests.
//!
//! The pool is a fixed set of dedicated threads, each owning one argon2 memory buffer that
//! every hash it computes reuses. Letting argon2 allocate `m` (19 MiB) per hash on tokio's
//! blocking threads left glibc holding freed buffers in many arenas: measured 487 MB resident
//! after a login benchmark. Now the resident cost is `concurrency × m`.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;
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
    jobs: std::sync::mpsc::Sender<Job>,
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
        let dummy = hash_with(&argon, "portcullis-dummy-password", &mut Vec::new())
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let concurrency = concurrency.max(1);
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..concurrency {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    // This thread's argon2 memory, reused by every hash it computes.
                    let mut memory: Vec<Block> = Vec::new();
                    // Ends when every hasher clone (every sender) is gone.
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| PasswordError::Params(format!("cannot start hashing threads: {e}")))?;
        }
        Ok(Self {
            params,
            argon,
            permits: Arc::new(Semaphore::new(concurrency)),
            jobs,
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
        self.run(move |memory| hash_with(&argon, &password, memory)).await?.map_err(OAuthError::server_error)
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
        let current = self.params;
        let result = self
            .run(move |memory| {
                if password.len() > MAX_LENGTH * 4 {
                    return Verification { ok: false, needs_rehash: false };
                }
                let Ok(parsed) = PasswordHash::new(&stored) else {
                    return Verification { ok: false, needs_rehash: false };
                };
                let ok = verify_with(&parsed, &password, memory);
                Verification { ok, needs_rehash: ok && !uses_params(&parsed, current) }
            })
            .await?;
        Ok(Verification { ok: result.ok && exists, needs_rehash: result.needs_rehash && exists })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, OAuthError> {
        let busy = || OAuthError::new(ErrorCode::TemporarilyUnavailable, "the server is busy, try again shortly");
        let permit = tokio::time::timeout(self.queue_timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy().with_cause("password hashing queue timed out"))?
            .map_err(|_| busy().with_cause("password hashing pool closed"))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            let _ = tx.send(work(memory));
            drop(permit);
        });
        self.jobs.send(job).map_err(|_| busy().with_cause("password hashing threads are gone"))?;
        rx.await.map_err(|_| OAuthError::server_error("password hashing thread failed"))
    }
}

/// Work for a hashing thread, given the thread's argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Grows `memory` to what `params` need (it never shrinks: a thread keeps its largest).
fn memory_for<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    memory.as_mut_slice()
}

/// A new PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), computed in `memory`.
fn hash_with(argon: &Argon2<'_>, password: &str, memory: &mut Vec<Block>) -> Result<String, argon2::Error> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let params = argon.params().clone();
    let mut out = [0u8; 32];
    argon.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory_for(memory, &params))?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| argon2::Error::SaltTooShort)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|_| argon2::Error::OutputTooLong)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|_| argon2::Error::OutputTooShort)?),
    };
    Ok(phc.to_string())
}

/// Recomputes a stored argon2 PHC hash (with its own parameters) in `memory` and compares
/// in constant time.
fn verify_with(stored: &PasswordHash<'_>, password: &str, memory: &mut Vec<Block>) -> bool {
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) =
        (Algorithm::try_from(stored.algorithm), Params::try_from(stored), stored.salt, stored.hash)
    else {
        return false;
    };
    let version = stored.version.and_then(|v| Version::try_from(v).ok()).unwrap_or(Version::V0x13);
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    if argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory_for(memory, &params)).is_err() {
        return false;
    }
    out.as_slice().ct_eq(expected.as_bytes()).into()
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
        // Hashes made by the argon2 crate's own API verify here, and ours verify there.
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(64, 1, 1, None).unwrap());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let theirs = reference.hash_password(b"correct horse battery", &salt).unwrap().to_string();
        assert!(old.verify(pw("correct horse battery"), Some(theirs)).await.unwrap().ok);
        assert!(reference.verify_password(b"correct horse battery", &PasswordHash::new(&hash).unwrap()).is_ok());

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
