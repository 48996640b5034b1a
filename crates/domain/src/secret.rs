//! High-entropy secrets: generation, storage hash, constant-time comparison and log
//! fingerprints.
//!
//! Client secrets are 256-bit random values, so a fast hash (SHA-256) is the right storage
//! form: there is nothing for a slow KDF to protect against (RFC 6819 §5.1.4.1.3 asks that
//! secrets are not stored in clear). Comparison is constant-time (`subtle`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// `bytes` random bytes from the OS CSPRNG, base64url without padding.
#[must_use]
pub fn random_token(bytes: usize) -> String {
    let mut buf = Zeroizing::new(vec![0u8; bytes]);
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(&*buf)
}

/// An identifier people type on command lines (client and user ids): `bytes` random bytes,
/// base64url, never starting with `-` — one in 64 would, and a command line takes it for an
/// option (`portcullis client show -Rx…`, `audit search --subject -Rx…`).
#[must_use]
pub fn random_id(bytes: usize) -> String {
    loop {
        let id = random_token(bytes);
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// `bytes` random bytes from the OS CSPRNG, lowercase hex (public identifiers).
#[must_use]
pub fn random_hex(bytes: usize) -> String {
    let mut buf = [0u8; 64];
    let Some(buf) = buf.get_mut(..bytes) else {
        let mut big = vec![0u8; bytes];
        rand::rng().fill_bytes(&mut big);
        return hex(&big);
    };
    rand::rng().fill_bytes(buf);
    hex(buf)
}

/// The stored form of a secret: hex SHA-256.
#[must_use]
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Constant-time check of a presented secret against its stored hash.
#[must_use]
pub fn verify_secret(presented: &str, stored_hash: &str) -> bool {
    let presented = hash_secret(presented);
    presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Equality that takes the same time wherever the inputs differ (state, nonces, hashes,
/// key thumbprints compared against what a client sent).
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A short, non-reversible identifier of a token or secret for logs: the first 12 hex
/// characters of its SHA-256. Never log the value itself.
#[must_use]
pub fn fingerprint(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let mut out = hex(&digest);
    out.truncate(12);
    out
}

/// Hex HMAC-SHA256 of `message` under `key` (webhook signatures).
#[must_use]
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    hex(aws_lc_rs::hmac::sign(&key, message).as_ref())
}

/// Lowercase hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    // Not `write!("{b:02x}")`: this runs for every request's trace ids, and the formatter
    // costs several times as much per byte.
    let digit = |n: u8| char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 });
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(digit(b >> 4));
        out.push(digit(b & 0x0f));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
        assert_eq!(random_hex(16).len(), 32);
        assert_eq!(random_hex(100).len(), 200);
        assert_ne!(random_hex(16), random_hex(16));
    }

    #[test]
    fn ids_never_look_like_options() {
        // One in 64 raw tokens starts with `-`; 2,000 ids all but surely meet some.
        for _ in 0..2_000 {
            let id = random_id(16);
            assert!(!id.starts_with('-'), "{id}");
            assert_eq!(id.len(), 22);
        }
    }

    #[test]
    fn random_tokens_are_256_bit_and_distinct() {
        let a = random_token(32);
        let b = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }

    #[test]
    fn verify_accepts_only_the_same_secret() {
        let stored = hash_secret("s3cret");
        assert!(verify_secret("s3cret", &stored));
        assert!(!verify_secret("s3creT", &stored));
        assert!(!verify_secret("", &stored));
    }

    #[test]
    fn fingerprint_is_short_and_not_the_value() {
        let fp = fingerprint("eyJhbGciOi.payload.signature");
        assert_eq!(fp.len(), 12);
        assert!(!"eyJhbGciOi.payload.signature".contains(&fp));
    }
}
