//! JSON Web Signature in compact form (RFC 7515 §7.1), JSON Web Keys (RFC 7517) and their
//! thumbprints (RFC 7638), for the three algorithms Portcullis signs with (RFC 7518 §3,
//! RFC 8037): ES256 (default), RS256 and EdDSA (Ed25519).
//!
//! Verification is deliberately narrow: the *key* decides the algorithm (the header `alg`
//! must equal it, so `none` and HMAC-with-a-public-key cannot be smuggled in), and headers
//! that point at other keys (`jwk`, `jku`, `x5u`, `x5c`) or demand extensions (`crit`) are
//! refused outright.

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ParsedPublicKey, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The largest compact JWS we look at; anything longer is refused before decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Signing algorithms Portcullis issues with. HMAC and `none` are not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Algorithm {
    #[default]
    ES256,
    RS256,
    EdDSA,
}

impl Algorithm {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::EdDSA => "EdDSA",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ES256" => Some(Self::ES256),
            "RS256" => Some(Self::RS256),
            "EdDSA" => Some(Self::EdDSA),
            _ => None,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A public JSON Web Key, as published in the JWKS. Holds no private members by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

impl Jwk {
    /// RFC 7638 §3.2: the SHA-256 of the required members, lexicographically ordered, no
    /// whitespace, base64url.
    #[must_use]
    pub fn thumbprint(&self) -> String {
        let s = |o: &Option<String>| o.clone().unwrap_or_default();
        let canonical = match self.kty.as_str() {
            "EC" => {
                serde_json::json!({"crv": s(&self.crv), "kty": "EC", "x": s(&self.x), "y": s(&self.y)})
            }
            "RSA" => serde_json::json!({"e": s(&self.e), "kty": "RSA", "n": s(&self.n)}),
            _ => serde_json::json!({"crv": s(&self.crv), "kty": self.kty, "x": s(&self.x)}),
        };
        // serde_json's Map is a BTreeMap without `preserve_order`: members come out sorted.
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// Why key material could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed")]
    Generation,
    #[error("stored private key is malformed")]
    Malformed,
}

/// A private signing key, parsed once and kept for the life of the key snapshot.
pub enum Signer {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "Signer({})", self.algorithm())
    }
}

impl Signer {
    /// Generates a fresh key pair and returns it with its PKCS#8 encoding (for sealing).
    ///
    /// # Errors
    /// The crypto library failed to generate a key.
    pub fn generate(alg: Algorithm) -> Result<(Self, zeroize::Zeroizing<Vec<u8>>), KeyError> {
        let pkcs8 = match alg {
            Algorithm::ES256 => EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|k| k.to_pkcs8v1())
                .map(|d| d.as_ref().to_vec()),
            Algorithm::EdDSA => Ed25519KeyPair::generate().and_then(|k| k.to_pkcs8v1()).map(|d| d.as_ref().to_vec()),
            Algorithm::RS256 => RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .and_then(|k| k.as_der())
                .map(|d| d.as_ref().to_vec()),
        }
        .map_err(|_| KeyError::Generation)?;
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let signer = Self::from_pkcs8(alg, &pkcs8)?;
        Ok((signer, pkcs8))
    }

    /// # Errors
    /// The bytes are not a PKCS#8 key of the given algorithm.
    pub fn from_pkcs8(alg: Algorithm, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let malformed = |_| KeyError::Malformed;
        Ok(match alg {
            Algorithm::ES256 => Self::Es256(
                EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(malformed)?,
            ),
            Algorithm::RS256 => Self::Rs256(RsaKeyPair::from_pkcs8(pkcs8).map_err(malformed)?),
            Algorithm::EdDSA => Self::EdDsa(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(malformed)?),
        })
    }

    #[must_use]
    pub const fn algorithm(&self) -> Algorithm {
        match self {
            Self::Es256(_) => Algorithm::ES256,
            Self::Rs256(_) => Algorithm::RS256,
            Self::EdDsa(_) => Algorithm::EdDSA,
        }
    }

    /// The public JWK of this key, with `kid` set to its RFC 7638 thumbprint.
    ///
    /// # Errors
    /// An EC public key that is not an uncompressed P-256 point (cannot happen for keys we made).
    pub fn public_jwk(&self) -> Result<Jwk, KeyError> {
        let b64 = |b: &[u8]| Some(URL_SAFE_NO_PAD.encode(b));
        let mut jwk = Jwk {
            kty: String::new(),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            kid: String::new(),
            alg: self.algorithm().as_str().to_owned(),
            use_: "sig".to_owned(),
        };
        match self {
            Self::Es256(k) => {
                // Uncompressed SEC1 point: 0x04 || X (32) || Y (32).
                let point = k.public_key().as_ref();
                let (x, y) = match point {
                    [0x04, rest @ ..] if rest.len() == 64 => rest.split_at(32),
                    _ => return Err(KeyError::Malformed),
                };
                jwk.kty = "EC".into();
                jwk.crv = Some("P-256".into());
                jwk.x = b64(x);
                jwk.y = b64(y);
            }
            Self::EdDsa(k) => {
                jwk.kty = "OKP".into();
                jwk.crv = Some("Ed25519".into());
                jwk.x = b64(k.public_key().as_ref());
            }
            Self::Rs256(k) => {
                let public = k.public_key();
                jwk.kty = "RSA".into();
                jwk.n = b64(public.modulus().big_endian_without_leading_zero());
                jwk.e = b64(public.exponent().big_endian_without_leading_zero());
            }
        }
        jwk.kid = jwk.thumbprint();
        Ok(jwk)
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match self {
            Self::Es256(k) => k.sign(&rng, message).map(|s| s.as_ref().to_vec()),
            Self::EdDsa(k) => Ok(k.sign(message).as_ref().to_vec()),
            Self::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig).map(|()| sig)
            }
        }
        .map_err(|_| KeyError::Generation)
    }
}

/// A public key ready to verify signatures, parsed once.
#[derive(Clone)]
pub struct Verifier {
    alg: Algorithm,
    key: ParsedPublicKey,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier({})", self.alg)
    }
}

impl Verifier {
    /// Builds a verifier from a public JWK, insisting that `kty`/`crv` agree with `alg`.
    ///
    /// # Errors
    /// Missing or malformed members, or a key type that does not fit the algorithm.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let alg = Algorithm::parse(&jwk.alg).ok_or(KeyError::Malformed)?;
        Self::build(alg, &jwk.kty, jwk.crv.as_deref(), [&jwk.x, &jwk.y, &jwk.n, &jwk.e])
    }

    /// Builds a verifier from a JWK published by another issuer. `alg` may be absent (then
    /// the allowed algorithm that fits the key type is used); when present it must be
    /// allowed. Keys marked for encryption (`use: enc`) are refused.
    ///
    /// # Errors
    /// A key that is not a usable signature key for one of the allowed algorithms.
    pub fn from_external_jwk(jwk: &serde_json::Value, allowed: &[Algorithm]) -> Result<Self, KeyError> {
        let text = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
        if text("use").is_some_and(|u| u != "sig") {
            return Err(KeyError::Malformed);
        }
        let kty = text("kty").ok_or(KeyError::Malformed)?;
        let crv = text("crv");
        let alg = match text("alg") {
            Some(a) => Algorithm::parse(a).filter(|a| allowed.contains(a)).ok_or(KeyError::Malformed)?,
            None => *allowed
                .iter()
                .find(|a| {
                    matches!(
                        (a, kty, crv),
                        (Algorithm::ES256, "EC", Some("P-256"))
                            | (Algorithm::RS256, "RSA", _)
                            | (Algorithm::EdDSA, "OKP", Some("Ed25519"))
                    )
                })
                .ok_or(KeyError::Malformed)?,
        };
        let member = |name: &str| text(name).map(str::to_owned);
        Self::build(alg, kty, crv, [&member("x"), &member("y"), &member("n"), &member("e")])
    }

    fn build(
        alg: Algorithm,
        kty: &str,
        crv: Option<&str>,
        [x, y, n, e]: [&Option<String>; 4],
    ) -> Result<Self, KeyError> {
        let dec =
            |o: &Option<String>| o.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok()).ok_or(KeyError::Malformed);
        let key = match (alg, kty, crv) {
            (Algorithm::ES256, "EC", Some("P-256")) => {
                let mut point = vec![0x04];
                point.extend(dec(x)?);
                point.extend(dec(y)?);
                ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
            }
            (Algorithm::EdDSA, "OKP", Some("Ed25519")) => ParsedPublicKey::new(&signature::ED25519, dec(x)?),
            (Algorithm::RS256, "RSA", None) => {
                let der = rsa_public_key_der(&dec(n)?, &dec(e)?);
                ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der)
            }
            _ => return Err(KeyError::Malformed),
        }
        .map_err(|_| KeyError::Malformed)?;
        Ok(Self { alg, key })
    }

    #[must_use]
    pub const fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub(crate) fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        self.key.verify_sig(message, sig).is_ok()
    }
}

/// DER `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017 A.1.1).
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> Vec<u8> {
        let trimmed: &[u8] = {
            let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
            bytes.get(start..).unwrap_or_default()
        };
        let mut content = Vec::with_capacity(trimmed.len() + 1);
        if trimmed.first().is_none_or(|b| *b & 0x80 != 0) {
            content.push(0); // keep the INTEGER positive
        }
        content.extend_from_slice(trimmed);
        tlv(0x02, &content)
    }
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(u8::try_from(len).unwrap_or(0));
        } else {
            let bytes = len.to_be_bytes();
            let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
            let len_bytes = bytes.get(start..).unwrap_or_default();
            out.push(0x80 | u8::try_from(len_bytes.len()).unwrap_or(0));
            out.extend_from_slice(len_bytes);
        }
        out.extend_from_slice(content);
        out
    }
    let mut body = integer(n);
    body.extend(integer(e));
    tlv(0x30, &body)
}

/// The protected header Portcullis writes and accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// Why a compact JWS was refused. Never shown to clients in detail; logged as a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("token too long")]
    TooLong,
    #[error("not a compact JWS")]
    Malformed,
    #[error("header names a forbidden member")]
    ForbiddenHeader,
    #[error("unknown key id")]
    UnknownKey,
    #[error("algorithm does not match the key")]
    AlgorithmMismatch,
    #[error("bad signature")]
    BadSignature,
    #[error("signing failed")]
    SigningFailed,
}

/// Header members that would let the token choose its own verification key or require
/// processing we do not do. RFC 8725 §3.10 and RFC 7515 §4.1.11.
const FORBIDDEN_HEADERS: [&str; 5] = ["jwk", "jku", "x5u", "x5c", "crit"];

/// Signs `claims` into a compact JWS with the given header values.
///
/// # Errors
/// The claims cannot be serialized or the signature operation failed.
pub fn sign<T: Serialize>(signer: &Signer, kid: &str, typ: &str, claims: &T) -> Result<String, JwsError> {
    let header =
        Header { alg: signer.algorithm().as_str().to_owned(), typ: Some(typ.to_owned()), kid: Some(kid.to_owned()) };
    let header = serde_json::to_vec(&header).map_err(|_| JwsError::SigningFailed)?;
    let payload = serde_json::to_vec(claims).map_err(|_| JwsError::SigningFailed)?;
    let mut out = URL_SAFE_NO_PAD.encode(header);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut out);
    let sig = signer.sign(out.as_bytes()).map_err(|_| JwsError::SigningFailed)?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut out);
    Ok(out)
}

/// The verified parts of a JWS.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub payload: Vec<u8>,
}

/// Splits and decodes the header without verifying anything; used to find the key.
///
/// # Errors
/// Too long, not three base64url parts, a header that is not a JSON object with a string
/// `alg`, or one naming a forbidden member.
pub fn peek_header(token: &str) -> Result<Header, JwsError> {
    let (header_b64, _, _) = split(token)?;
    decode_header(header_b64)
}

/// Verifies a compact JWS with a key looked up by the header's `kid`.
///
/// # Errors
/// See [`JwsError`].
pub fn verify<'k>(token: &str, lookup: impl FnOnce(&str) -> Option<&'k Verifier>) -> Result<Verified, JwsError> {
    let (header_b64, payload_b64, sig_b64) = split(token)?;
    let header = decode_header(header_b64)?;
    let kid = header.kid.as_deref().ok_or(JwsError::UnknownKey)?;
    let verifier = lookup(kid).ok_or(JwsError::UnknownKey)?;
    // RFC 8725 §3.1: the algorithm is the key's, never the token's choice.
    if header.alg != verifier.algorithm().as_str() {
        return Err(JwsError::AlgorithmMismatch);
    }
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| JwsError::Malformed)?;
    let signing_input = token.get(..header_b64.len() + 1 + payload_b64.len()).ok_or(JwsError::Malformed)?;
    if !verifier.verify(signing_input.as_bytes(), &sig) {
        return Err(JwsError::BadSignature);
    }
    let payload = URL_SAFE_NO_PAD.decode(payload_b64).map_err(|_| JwsError::Malformed)?;
    Ok(Verified { header, payload })
}

pub(crate) fn split(token: &str) -> Result<(&str, &str, &str), JwsError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwsError::TooLong);
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() && !s.is_empty() => Ok((h, p, s)),
        _ => Err(JwsError::Malformed),
    }
}

fn decode_header(header_b64: &str) -> Result<Header, JwsError> {
    let raw = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| JwsError::Malformed)?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw).map_err(|_| JwsError::Malformed)?;
    if FORBIDDEN_HEADERS.iter().any(|h| map.contains_key(*h)) {
        return Err(JwsError::ForbiddenHeader);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|_| JwsError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(alg: Algorithm) {
        let (signer, pkcs8) = Signer::generate(alg).unwrap();
        let jwk = signer.public_jwk().unwrap();
        assert_eq!(jwk.alg, alg.as_str());
        let reloaded = Signer::from_pkcs8(alg, &pkcs8).unwrap();
        assert_eq!(reloaded.public_jwk().unwrap(), jwk);
        let verifier = Verifier::from_jwk(&jwk).unwrap();
        let token = sign(&signer, &jwk.kid, "at+jwt", &serde_json::json!({"sub": "x"})).unwrap();
        let v = verify(&token, |kid| (kid == jwk.kid).then_some(&verifier)).unwrap();
        assert_eq!(v.header.typ.as_deref(), Some("at+jwt"));
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 2, 'A');
        assert!(verify(&tampered, |_| Some(&verifier)).is_err());
    }

    #[test]
    fn es256_roundtrip() {
        roundtrip(Algorithm::ES256);
    }

    #[test]
    fn eddsa_roundtrip() {
        roundtrip(Algorithm::EdDSA);
    }

    #[test]
    fn rs256_roundtrip() {
        roundtrip(Algorithm::RS256);
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = Jwk {
            kty: "RSA".into(),
            crv: None,
            x: None,
            y: None,
            n: Some("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into()),
            e: Some("AQAB".into()),
            kid: String::new(),
            alg: "RS256".into(),
            use_: "sig".into(),
        };
        assert_eq!(jwk.thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn forbidden_headers_and_garbage_are_refused() {
        let (signer, _) = Signer::generate(Algorithm::ES256).unwrap();
        let jwk = signer.public_jwk().unwrap();
        let verifier = Verifier::from_jwk(&jwk).unwrap();
        for header in [
            serde_json::json!({"alg": "ES256", "kid": jwk.kid, "jwk": jwk}),
            serde_json::json!({"alg": "ES256", "kid": jwk.kid, "jku": "https://evil"}),
            serde_json::json!({"alg": "ES256", "kid": jwk.kid, "x5u": "https://evil"}),
            serde_json::json!({"alg": "ES256", "kid": jwk.kid, "crit": ["exp"]}),
        ] {
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            let token = format!("{h}.e30.AAAA");
            assert_eq!(verify(&token, |_| Some(&verifier)).unwrap_err(), JwsError::ForbiddenHeader);
        }
        for garbage in ["", "a", "a.b", "a.b.c.d", "..", "!!.!!.!!"] {
            assert!(verify(garbage, |_| Some(&verifier)).is_err(), "{garbage:?}");
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(verify(&long, |_| Some(&verifier)).unwrap_err(), JwsError::TooLong);
    }

    #[test]
    fn alg_none_and_hs256_are_refused() {
        let (signer, _) = Signer::generate(Algorithm::ES256).unwrap();
        let jwk = signer.public_jwk().unwrap();
        let verifier = Verifier::from_jwk(&jwk).unwrap();
        for alg in ["none", "HS256", "RS256", "EdDSA"] {
            let h = URL_SAFE_NO_PAD.encode(serde_json::json!({"alg": alg, "kid": jwk.kid}).to_string());
            let token = format!("{h}.e30.AAAA");
            assert_eq!(verify(&token, |_| Some(&verifier)).unwrap_err(), JwsError::AlgorithmMismatch);
        }
    }
}
