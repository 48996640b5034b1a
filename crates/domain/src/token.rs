//! JWT access tokens (RFC 9068): the claims we issue and the checks every verifier applies
//! (RFC 9068 §4, RFC 8725).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::jose::{self, JwsError};
use crate::keyring::KeySet;
use crate::scope::Scopes;

/// RFC 9068 §2.1: access tokens carry `typ: at+jwt`.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    #[must_use]
    pub fn from_list(list: &[String]) -> Self {
        match list {
            [one] => Self::One(one.clone()),
            many => Self::Many(many.to_vec()),
        }
    }

    #[must_use]
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Self::One(a) => a == aud,
            Self::Many(list) => list.iter().any(|a| a == aud),
        }
    }
}

/// The claims of an RFC 9068 access token (§2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: UnixTime,
    pub iat: UnixTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<UnixTime>,
    pub jti: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When the user authenticated (tokens issued to a user only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<UnixTime>,
    /// RFC 9068 §2.2.3.1 (from SCIM): the user's roles and groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// RFC 7800 confirmation: the key the token is bound to (RFC 9449 §6, RFC 8705 §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// A user's attributes (`user create --attributes '{"tenant":"acme"}'`) as claims of
    /// their own, for policies (`[authorization.claims]` maps them). Issued only; never
    /// read back from a token (deserialising stays a plain struct, with no catch-all).
    #[serde(flatten, skip_deserializing)]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// Claim names a user attribute can never take: registered JWT and OIDC claims and every
/// claim Portcullis sets itself (a duplicate would make two readings of one token).
const RESERVED_CLAIMS: [&str; 24] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "client_id",
    "scope",
    "auth_time",
    "roles",
    "groups",
    "entitlements",
    "cnf",
    "act",
    "may_act",
    "azp",
    "amr",
    "acr",
    "sid",
    "nonce",
    "typ",
    "at_hash",
    "c_hash",
];

/// The attributes of a user that become access-token claims: all but reserved names.
#[must_use]
pub fn attribute_claims(
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> BTreeMap<String, serde_json::Value> {
    attributes
        .iter()
        .filter(|(name, _)| !RESERVED_CLAIMS.contains(&name.as_str()) && !name.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The `cnf` claim of a sender-constrained token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 9449 §6.1: the RFC 7638 thumbprint of the DPoP key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// RFC 8705 §3.1: base64url SHA-256 of the client certificate.
    #[serde(rename = "x5t#S256", default, skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl Confirmation {
    /// `None` when nothing binds the token (a plain bearer token).
    #[must_use]
    pub fn of(jkt: Option<String>, x5t_s256: Option<String>) -> Option<Self> {
        (jkt.is_some() || x5t_s256.is_some()).then_some(Self { jkt, x5t_s256 })
    }
}

impl AccessTokenClaims {
    #[must_use]
    pub fn scopes(&self) -> Scopes {
        self.scope.as_deref().and_then(|s| Scopes::parse(s).ok()).unwrap_or_default()
    }
}

/// Why a token was refused; the reason goes to the log and the audit trail, the client
/// only ever learns "invalid" (`active: false`, `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("{0}")]
    Jws(#[from] JwsError),
    #[error("not an access token (typ)")]
    WrongType,
    #[error("claims are malformed")]
    MalformedClaims,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("revoked")]
    Revoked,
}

impl TokenRejection {
    /// A stable short code for logs and metrics.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Jws(JwsError::TooLong) => "too_long",
            Self::Jws(JwsError::Malformed) => "malformed",
            Self::Jws(JwsError::ForbiddenHeader) => "forbidden_header",
            Self::Jws(JwsError::UnknownKey) => "unknown_key",
            Self::Jws(JwsError::AlgorithmMismatch) => "algorithm_mismatch",
            Self::Jws(JwsError::BadSignature) => "bad_signature",
            Self::Jws(JwsError::SigningFailed) => "signing_failed",
            Self::WrongType => "wrong_type",
            Self::MalformedClaims => "malformed_claims",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::Revoked => "revoked",
        }
    }
}

/// What a verifier requires of a JWT from any issuer (RFC 8725 §3.8, §3.9, §3.11).
#[derive(Debug, Clone, Copy)]
pub struct JwtPolicy<'a> {
    pub issuer: &'a str,
    /// The token's `aud` must contain one of these; empty means "not checked".
    pub audiences: &'a [String],
    pub leeway: i64,
    /// Accepted `typ` header values (compared case-insensitively); `None` means any.
    pub typ: Option<&'a [String]>,
}

/// Verifies any JWT under a policy: signature with the key its `kid` names (whose algorithm
/// must be the header's), `typ`, `iss`, `aud`, `exp` (required), `nbf`, `iat`. Returns the
/// claims as a JSON object.
///
/// # Errors
/// See [`TokenRejection`].
pub fn verify_jwt<'k>(
    token: &str,
    lookup: impl FnOnce(&str) -> Option<&'k crate::jose::Verifier>,
    policy: &JwtPolicy<'_>,
    now: UnixTime,
) -> Result<serde_json::Map<String, serde_json::Value>, TokenRejection> {
    let verified = jose::verify(token, lookup)?;
    if let Some(accepted) = policy.typ {
        let typ = verified.header.typ.as_deref().unwrap_or("");
        if !accepted.iter().any(|a| a.eq_ignore_ascii_case(typ)) {
            return Err(TokenRejection::WrongType);
        }
    }
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&verified.payload).map_err(|_| TokenRejection::MalformedClaims)?;
    let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
    if claims.get("iss").and_then(serde_json::Value::as_str) != Some(policy.issuer) {
        return Err(TokenRejection::WrongIssuer);
    }
    if !policy.audiences.is_empty() {
        let aud_ok = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => policy.audiences.contains(a),
            Some(serde_json::Value::Array(list)) => {
                list.iter().filter_map(serde_json::Value::as_str).any(|a| policy.audiences.iter().any(|p| p == a))
            }
            _ => false,
        };
        if !aud_ok {
            return Err(TokenRejection::WrongAudience);
        }
    }
    let exp = number("exp").ok_or(TokenRejection::MalformedClaims)?;
    if exp <= now - policy.leeway {
        return Err(TokenRejection::Expired);
    }
    if number("nbf").is_some_and(|nbf| nbf > now + policy.leeway) {
        return Err(TokenRejection::NotYetValid);
    }
    if number("iat").is_some_and(|iat| iat > now + policy.leeway) {
        return Err(TokenRejection::IssuedInFuture);
    }
    Ok(claims)
}

/// Verifies signature, header, issuer and time claims of one of our access tokens.
/// Revocation is the caller's second step (it needs the store).
///
/// # Errors
/// See [`TokenRejection`].
pub fn verify_access_token(
    token: &str,
    keys: &KeySet,
    issuer: &str,
    now: UnixTime,
    leeway: i64,
) -> Result<AccessTokenClaims, TokenRejection> {
    let verified = jose::verify(token, |kid| keys.verifier(kid))?;
    // RFC 9068 §4: "Resource servers MUST verify that the typ header value is at+jwt or
    // application/at+jwt and reject tokens carrying any other value."
    let typ_ok = verified
        .header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt"));
    if !typ_ok {
        return Err(TokenRejection::WrongType);
    }
    let claims: AccessTokenClaims =
        serde_json::from_slice(&verified.payload).map_err(|_| TokenRejection::MalformedClaims)?;
    // RFC 9068 §4: the issuer MUST exactly match.
    if claims.iss != issuer {
        return Err(TokenRejection::WrongIssuer);
    }
    if claims.exp <= now - leeway {
        return Err(TokenRejection::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(TokenRejection::NotYetValid);
    }
    if claims.iat > now + leeway {
        return Err(TokenRejection::IssuedInFuture);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {

    #[test]
    fn user_attributes_become_claims_but_never_reserved_ones() {
        let attributes = serde_json::json!({"tenant": "acme", "sub": "mallory", "scope": "admin", "cnf": {}, "": 1});
        let claims = AccessTokenClaims { attributes: attribute_claims(attributes.as_object().unwrap()), ..claims() };
        assert_eq!(claims.attributes.keys().collect::<Vec<_>>(), ["tenant"]);
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(json["tenant"], "acme");
        let back: AccessTokenClaims = serde_json::from_value(json).unwrap();
        assert!(back.attributes.is_empty(), "never read back from a token");
        assert_eq!(back.sub, claims.sub);
    }

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::jose::{Algorithm, sign};
    use crate::keys::{KeyState, MasterKey};

    const ISS: &str = "https://id.example.com";
    const NOW: UnixTime = 1_700_000_000;

    fn setup() -> (KeySet, crate::jose::Signer, String) {
        let master = MasterKey::from_bytes(&[9u8; 32]).unwrap();
        let (stored, signer) = master.new_key(Algorithm::ES256, KeyState::Active, NOW, NOW).unwrap();
        let kid = stored.kid.clone();
        (KeySet::build(&[stored], &master, 60).unwrap(), signer, kid)
    }

    fn claims() -> AccessTokenClaims {
        AccessTokenClaims {
            iss: ISS.into(),
            sub: "c1".into(),
            aud: Audience::One("https://api.example.com".into()),
            exp: NOW + 900,
            iat: NOW,
            nbf: Some(NOW),
            jti: "j1".into(),
            client_id: "c1".into(),
            scope: Some("a b".into()),
            auth_time: None,
            roles: vec![],
            groups: vec![],
            cnf: None,
            attributes: BTreeMap::new(),
        }
    }

    fn check(c: &AccessTokenClaims, typ: &str) -> Result<AccessTokenClaims, TokenRejection> {
        let (keys, signer, kid) = setup();
        let token = sign(&signer, &kid, typ, c).unwrap();
        verify_access_token(&token, &keys, ISS, NOW, 30)
    }

    #[test]
    fn valid_token_verifies() {
        let c = check(&claims(), ACCESS_TOKEN_TYP).unwrap();
        assert_eq!(c, claims());
        assert!(c.scopes().contains("b"));
    }

    #[test]
    fn every_claim_rule_rejects() {
        let mut c = claims();
        c.exp = NOW - 31;
        assert_eq!(check(&c, ACCESS_TOKEN_TYP), Err(TokenRejection::Expired));
        c = claims();
        c.exp = NOW - 10; // within leeway
        assert!(check(&c, ACCESS_TOKEN_TYP).is_ok());
        c = claims();
        c.nbf = Some(NOW + 60);
        assert_eq!(check(&c, ACCESS_TOKEN_TYP), Err(TokenRejection::NotYetValid));
        c = claims();
        c.iat = NOW + 60;
        assert_eq!(check(&c, ACCESS_TOKEN_TYP), Err(TokenRejection::IssuedInFuture));
        c = claims();
        c.iss = "https://evil.example.com".into();
        assert_eq!(check(&c, ACCESS_TOKEN_TYP), Err(TokenRejection::WrongIssuer));
        assert_eq!(check(&claims(), "JWT"), Err(TokenRejection::WrongType));
        assert!(check(&claims(), "application/at+jwt").is_ok());
    }

    #[test]
    fn foreign_key_and_tampering_reject() {
        let (keys, _, kid) = setup();
        let (_, other_signer, _) = setup();
        let forged = sign(&other_signer, &kid, ACCESS_TOKEN_TYP, &claims()).unwrap();
        assert_eq!(verify_access_token(&forged, &keys, ISS, NOW, 30), Err(TokenRejection::Jws(JwsError::BadSignature)));
        let (_, signer, _) = setup();
        let unknown = sign(&signer, "nope", ACCESS_TOKEN_TYP, &claims()).unwrap();
        assert_eq!(verify_access_token(&unknown, &keys, ISS, NOW, 30), Err(TokenRejection::Jws(JwsError::UnknownKey)));
        // Tampered payload, same signature.
        let (keys, signer, kid) = setup();
        let token = sign(&signer, &kid, ACCESS_TOKEN_TYP, &claims()).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut evil = claims();
        evil.scope = Some("admin".into());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).unwrap());
        let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert_eq!(
            verify_access_token(&tampered, &keys, ISS, NOW, 30),
            Err(TokenRejection::Jws(JwsError::BadSignature))
        );
    }
}
