//! OpenID Connect ID tokens (Core §2, §3.1.3.6 `at_hash`) and the verification of an
//! `id_token_hint` at logout (RP-Initiated Logout §2: expired hints are acceptable).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256, Sha512};

use crate::clock::UnixTime;
use crate::jose::Algorithm;
use crate::keyring::KeySet;

/// The JOSE `typ` of ID tokens.
pub const ID_TOKEN_TYP: &str = "JWT";

/// ID token claims (OIDC Core §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    /// Core §2: the party to which the ID token was issued.
    pub azp: String,
    pub exp: UnixTime,
    pub iat: UnixTime,
    pub auth_time: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

/// Core §3.1.3.6: base64url of the left half of the hash of the access token, the hash
/// being the one of the ID token's `alg` (SHA-256 for ES256/RS256; SHA-512 for EdDSA with
/// Ed25519, as OpenID Connect's errata set and certified libraries expect).
#[must_use]
pub fn at_hash(alg: Algorithm, access_token: &str) -> String {
    match alg {
        Algorithm::ES256 | Algorithm::RS256 => {
            let d = Sha256::digest(access_token.as_bytes());
            URL_SAFE_NO_PAD.encode(d.get(..16).unwrap_or_default())
        }
        Algorithm::EdDSA => {
            let d = Sha512::digest(access_token.as_bytes());
            URL_SAFE_NO_PAD.encode(d.get(..32).unwrap_or_default())
        }
    }
}

/// Checks an `id_token_hint`: our signature and issuer; expiry is ignored (the user may come
/// back to log out long after). Returns `(sub, aud)`.
#[must_use]
pub fn verify_hint(token: &str, keys: &KeySet, issuer: &str) -> Option<(String, String)> {
    let verified = crate::jose::verify(token, |kid| keys.verifier(kid)).ok()?;
    let claims: IdTokenClaims = serde_json::from_slice(&verified.payload).ok()?;
    (claims.iss == issuer).then_some((claims.sub, claims.aud))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_is_the_left_half_of_the_algorithms_hash() {
        // Expected values computed independently with Python's hashlib.
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNgQ";
        assert_eq!(at_hash(Algorithm::ES256, token), "Gjmmgey63xLthBp2nLoBrw");
        assert_eq!(at_hash(Algorithm::RS256, token), "Gjmmgey63xLthBp2nLoBrw");
        assert_eq!(at_hash(Algorithm::EdDSA, token), "HIrEzRfTJ0IRzC4JoJFwGABIekRqWp9KDvhrwlm4hJ8");
    }
}
