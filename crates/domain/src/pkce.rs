//! PKCE (RFC 7636), S256 only: OAuth 2.1 §4.1.1 requires PKCE of every client and
//! RFC 9700 §2.1.1 says "`plain` … SHOULD NOT be used"; Portcullis refuses it outright.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::error::OAuthError;

/// An S256 code challenge: base64url (no padding) of a SHA-256 digest, so exactly 43
/// characters. A `plain` challenge cannot be represented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeChallenge(String);

impl CodeChallenge {
    /// # Errors
    /// `invalid_request` when the challenge is missing, the method is absent (which means
    /// `plain`, RFC 7636 §4.3) or not `S256`, or the challenge is not 43 base64url characters.
    pub fn parse(challenge: Option<&str>, method: Option<&str>) -> Result<Self, OAuthError> {
        let challenge = challenge.ok_or_else(|| OAuthError::invalid_request("code_challenge is required (PKCE)"))?;
        match method {
            Some("S256") => {}
            None | Some("plain") => {
                return Err(OAuthError::invalid_request("code_challenge_method must be S256 (plain is not allowed)"));
            }
            Some(_) => return Err(OAuthError::invalid_request("code_challenge_method must be S256")),
        }
        let decoded = URL_SAFE_NO_PAD.decode(challenge).ok().filter(|d| d.len() == 32 && challenge.len() == 43);
        if decoded.is_none() {
            return Err(OAuthError::invalid_request("code_challenge must be a base64url SHA-256 digest"));
        }
        Ok(Self(challenge.to_owned()))
    }

    /// Restores a challenge read back from the store.
    #[must_use]
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RFC 7636 §4.2: the S256 challenge of a verifier (what a client, such as the BFF,
    /// sends with its authorization request).
    #[must_use]
    pub fn s256_of(verifier: &str) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    }

    /// RFC 7636 §4.6: `BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) == code_challenge`,
    /// compared in constant time.
    #[must_use]
    pub fn verify(&self, verifier: &CodeVerifier) -> bool {
        let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.0.as_bytes()));
        computed.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// RFC 7636 §4.1: `code-verifier = 43*128unreserved`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeVerifier(String);

impl CodeVerifier {
    /// # Errors
    /// `invalid_request` (RFC 7636 §4.1 syntax) — a wrong-but-wellformed verifier is
    /// `invalid_grant` later.
    pub fn parse(s: &str) -> Result<Self, OAuthError> {
        let ok = (43..=128).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        if ok { Ok(Self(s.to_owned())) } else { Err(OAuthError::invalid_request("code_verifier is malformed")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc_example_verifies() {
        let c = CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap();
        assert!(c.verify(&CodeVerifier::parse(VERIFIER).unwrap()));
        let other = CodeVerifier::parse(&"a".repeat(43)).unwrap();
        assert!(!c.verify(&other));
    }

    #[test]
    fn plain_missing_and_malformed_are_refused() {
        assert!(CodeChallenge::parse(Some(CHALLENGE), None).is_err());
        assert!(CodeChallenge::parse(Some(CHALLENGE), Some("plain")).is_err());
        assert!(CodeChallenge::parse(Some(CHALLENGE), Some("s256")).is_err());
        assert!(CodeChallenge::parse(None, Some("S256")).is_err());
        assert!(CodeChallenge::parse(Some(VERIFIER), Some("S256")).is_ok(), "any 32-byte digest shape");
        assert!(CodeChallenge::parse(Some("short"), Some("S256")).is_err());
        assert!(CodeVerifier::parse(&"a".repeat(42)).is_err());
        assert!(CodeVerifier::parse(&"a".repeat(129)).is_err());
        assert!(CodeVerifier::parse(&format!("{}+", "a".repeat(43))).is_err());
    }
}
