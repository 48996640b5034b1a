//! The master key that seals signing keys at rest: from config, from a file (a mounted
//! secret), or, on a first start without either, generated into the data directory with
//! 0600 permissions and a loud warning.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use domain::keys::MasterKey;
use zeroize::Zeroizing;

use crate::config::KeysConfig;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("cannot read the master key file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write a new master key to {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("the master key from {0} is not base64 of exactly 32 bytes")]
    Invalid(String),
}

pub const GENERATED_FILE: &str = "master.key";

/// Resolves the master key as configured.
///
/// # Errors
/// Unreadable file, or a value that is not a 32-byte base64 key.
pub fn resolve(config: &KeysConfig, data_dir: &Path) -> Result<MasterKey, MasterKeyError> {
    if let Some(value) = &config.master_key {
        return decode(value, "keys.master_key");
    }
    if let Some(path) = &config.master_key_file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| MasterKeyError::Read(path.clone(), e))?);
        return decode(&text, &path.display().to_string());
    }
    let path = data_dir.join(GENERATED_FILE);
    if path.exists() {
        warn_if_readable_by_others(&path);
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| MasterKeyError::Read(path.clone(), e))?);
        return decode(&text, &path.display().to_string());
    }
    let bytes = MasterKey::generate_bytes();
    let encoded = Zeroizing::new(STANDARD.encode(*bytes));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| MasterKeyError::Write(path.clone(), e))?;
    file.write_all(encoded.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| MasterKeyError::Write(path.clone(), e))?;
    tracing::warn!(
        path = %path.display(),
        "GENERATED A NEW MASTER KEY in the data directory. It encrypts the signing keys at rest; \
         anyone who reads it can decrypt them. In production supply it from a secret store \
         (keys.master_key_file or PORTCULLIS_KEYS__MASTER_KEY) and keep it off the database host."
    );
    decode(&encoded, &path.display().to_string())
}

fn decode(value: &str, source: &str) -> Result<MasterKey, MasterKeyError> {
    let value = value.trim();
    let bytes = Zeroizing::new(
        STANDARD
            .decode(value)
            .or_else(|_| URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')))
            .map_err(|_| MasterKeyError::Invalid(source.to_owned()))?,
    );
    MasterKey::from_bytes(&bytes).map_err(|_| MasterKeyError::Invalid(source.to_owned()))
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the master key file is readable by other users; chmod 600 it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_with_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = KeysConfig::default();
        let first = resolve(&config, dir.path()).unwrap();
        let path = dir.path().join(GENERATED_FILE);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let sealed = first.seal("k", b"x").unwrap();
        let second = resolve(&config, dir.path()).unwrap();
        assert_eq!(&*second.open("k", &sealed).unwrap(), b"x");
    }

    #[test]
    fn configured_key_must_be_32_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = KeysConfig { master_key: Some(STANDARD.encode([1u8; 16])), ..KeysConfig::default() };
        let err = resolve(&config, dir.path()).unwrap_err();
        assert!(!err.to_string().contains(&STANDARD.encode([1u8; 16])), "never echo the value");
        config.master_key = Some(STANDARD.encode([1u8; 32]));
        assert!(resolve(&config, dir.path()).is_ok());
        config.master_key = Some(URL_SAFE_NO_PAD.encode([1u8; 32]));
        assert!(resolve(&config, dir.path()).is_ok());
    }
}
