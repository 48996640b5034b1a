//! DPoP, Demonstrating Proof of Possession (RFC 9449): checking a proof JWT (§4.3), the
//! access-token hash `ath` (§4.2), server-issued nonces (§8) and the proof-replay cache
//! (§11.1), shared by the token endpoint, userinfo and the gateway.
//!
//! A proof is a JWS whose header carries the client's public key (`jwk`); the key is the
//! one thing a verifier trusts from the header, and only after checking it is public and
//! fits an allowed asymmetric algorithm. Its RFC 7638 thumbprint (`jkt`) is what tokens
//! are bound to (`cnf.jkt`, §6).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::clock::{Clock, UnixTime};
use crate::error::StoreError;
use crate::jose::{self, Algorithm, Verifier};
use crate::token::Confirmation;

/// RFC 9449 §4.2: the `typ` of every proof.
pub const PROOF_TYP: &str = "dpop+jwt";
/// The request header that carries a proof, and the response header of a fresh nonce.
pub const DPOP_HEADER: &str = "dpop";
pub const NONCE_HEADER: &str = "dpop-nonce";
/// A proof is a few hundred bytes (an RSA key makes it ~1 KB); anything this long is abuse.
const MAX_PROOF_LEN: usize = 8 * 1024;
const MAX_JTI_LEN: usize = 256;
/// JWK members that only private (or symmetric) keys have. RFC 9449 §4.3 check 7: the
/// `jwk` header "does not contain a private key".
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
/// Header members that would name a second key or demand processing we do not do.
const FORBIDDEN_HEADERS: [&str; 4] = ["jku", "x5u", "x5c", "crit"];

/// Why a proof was refused. The client sees `invalid_dpop_proof` (or `use_dpop_nonce`);
/// the code goes to the log and the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("no DPoP proof")]
    Missing,
    #[error("more than one DPoP header")]
    Multiple,
    #[error("not a compact JWS")]
    Malformed,
    #[error("typ is not dpop+jwt")]
    WrongType,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("jwk missing, malformed, private or not fitting the algorithm")]
    BadKey,
    #[error("bad signature")]
    BadSignature,
    #[error("claims missing or malformed")]
    MalformedClaims,
    #[error("htm does not match the request method")]
    WrongMethod,
    #[error("htu does not match the request URL")]
    WrongUrl,
    #[error("iat outside the accepted window")]
    Stale,
    #[error("ath missing or not the hash of the access token")]
    WrongAth,
    #[error("proof replayed")]
    Replayed,
    #[error("nonce missing or expired")]
    UseNonce,
    #[error("proof key is not the key the token is bound to")]
    KeyMismatch,
    #[error("replay cache unavailable")]
    Unavailable,
}

impl DpopError {
    /// A stable short code for logs and metrics.
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::Missing => "dpop_missing",
            Self::Multiple => "dpop_multiple",
            Self::Malformed => "dpop_malformed",
            Self::WrongType => "dpop_wrong_typ",
            Self::Algorithm => "dpop_algorithm",
            Self::BadKey => "dpop_bad_key",
            Self::BadSignature => "dpop_bad_signature",
            Self::MalformedClaims => "dpop_malformed_claims",
            Self::WrongMethod => "dpop_wrong_htm",
            Self::WrongUrl => "dpop_wrong_htu",
            Self::Stale => "dpop_stale",
            Self::WrongAth => "dpop_wrong_ath",
            Self::Replayed => "dpop_replayed",
            Self::UseNonce => "use_dpop_nonce",
            Self::KeyMismatch => "dpop_key_mismatch",
            Self::Unavailable => "dpop_replay_cache_unavailable",
        }
    }

    /// The client-safe description for `error_description`.
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Self::UseNonce => "a DPoP nonce is required; use the one in the DPoP-Nonce header",
            Self::Missing => "a DPoP proof is required",
            Self::Multiple => "send exactly one DPoP header",
            Self::KeyMismatch => "the DPoP proof is not signed by the key the token is bound to",
            Self::Replayed => "the DPoP proof was already used",
            Self::Unavailable => "the DPoP proof cannot be checked right now",
            _ => "the DPoP proof is invalid",
        }
    }
}

/// What proofs must satisfy.
#[derive(Debug, Clone)]
pub struct DpopSettings {
    /// Proof signing algorithms accepted (advertised as `dpop_signing_alg_values_supported`).
    pub algorithms: Vec<Algorithm>,
    /// How old a proof's `iat` may be (RFC 9449 §11.1: "a relatively brief period").
    pub proof_lifetime: i64,
    /// Clock skew allowed in both directions.
    pub leeway: i64,
    /// How long a server-issued nonce stays valid (it is accepted for one more period).
    pub nonce_lifetime: i64,
}

impl Default for DpopSettings {
    fn default() -> Self {
        Self {
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256],
            proof_lifetime: 60,
            leeway: 5,
            nonce_lifetime: 300,
        }
    }
}

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    /// The HTTP method, as sent.
    pub method: &'a str,
    /// The request URL without query or fragment, as the server sees it.
    pub url: &'a str,
    /// The access token presented with the proof (resource requests): `ath` must hash it.
    pub access_token: Option<&'a str>,
    /// Whether a server-issued nonce is required (RFC 9449 §8).
    pub require_nonce: bool,
}

/// A proof that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof key: the `cnf.jkt` a token is (or must be) bound to.
    pub jkt: String,
    pub jti: String,
    pub iat: UnixTime,
}

/// Remembers proof `jti`s for as long as their proofs are acceptable (RFC 9449 §11.1).
#[async_trait]
pub trait ReplayCache: Send + Sync + std::fmt::Debug {
    /// Records `key` until `until`; `true` when it was not recorded yet (first use).
    async fn first_use(&self, key: &str, until: UnixTime) -> Result<bool, StoreError>;
}

/// Signs and checks stateless server nonces: `base64url(period || HMAC(period)[..16])`.
/// Any instance holding the same master key accepts any other's nonce.
#[derive(Clone)]
pub struct NonceKey(Arc<aws_lc_rs::hmac::Key>);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

impl NonceKey {
    #[must_use]
    pub fn new(secret: &[u8]) -> Self {
        Self(Arc::new(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret)))
    }

    fn tag(&self, period: i64) -> [u8; 24] {
        let mut out = [0u8; 24];
        let (head, tail) = out.split_at_mut(8);
        head.copy_from_slice(&period.to_be_bytes());
        let mac = aws_lc_rs::hmac::sign(&self.0, &period.to_be_bytes());
        for (o, m) in tail.iter_mut().zip(mac.as_ref()) {
            *o = *m;
        }
        out
    }

    /// The nonce of the current period.
    #[must_use]
    pub fn issue(&self, now: UnixTime, lifetime: i64) -> String {
        URL_SAFE_NO_PAD.encode(self.tag(now.div_euclid(lifetime.max(1))))
    }

    /// A nonce of the current or the previous period.
    #[must_use]
    pub fn accepts(&self, nonce: &str, now: UnixTime, lifetime: i64) -> bool {
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(nonce) else { return false };
        let current = now.div_euclid(lifetime.max(1));
        [current, current - 1].iter().any(|p| {
            let expected = self.tag(*p);
            crate::secret::constant_time_eq(&expected, &bytes)
        })
    }
}

/// The DPoP checker: settings, nonce key, replay cache and clock.
#[derive(Debug, Clone)]
pub struct Dpop {
    settings: Arc<DpopSettings>,
    nonces: NonceKey,
    replay: Arc<dyn ReplayCache>,
    clock: Arc<dyn Clock>,
    /// Proof headers already checked, by their base64url text (bounded: clients choose it).
    keys: Arc<Mutex<HashMap<String, Arc<ProofKey>>>>,
}

/// How many proof keys [`Dpop`] remembers.
const PROOF_KEYS: usize = 4096;

impl Dpop {
    #[must_use]
    pub fn new(settings: DpopSettings, nonces: NonceKey, replay: Arc<dyn ReplayCache>, clock: Arc<dyn Clock>) -> Self {
        Self { settings: Arc::new(settings), nonces, replay, clock, keys: Arc::default() }
    }

    #[must_use]
    pub fn settings(&self) -> &DpopSettings {
        &self.settings
    }

    /// A fresh nonce for the `DPoP-Nonce` response header.
    #[must_use]
    pub fn nonce(&self) -> String {
        self.nonces.issue(self.clock.now(), self.settings.nonce_lifetime)
    }

    /// The key of a proof header, remembered: a client's proofs all carry the same header,
    /// and decoding it, hashing the thumbprint and parsing the key cost about a tenth of a
    /// proof check. Only headers that pass are remembered.
    fn proof_key(&self, header_b64: &str) -> Result<Arc<ProofKey>, DpopError> {
        if let Some(known) = self.keys.lock().ok().and_then(|keys| keys.get(header_b64).cloned()) {
            return Ok(known);
        }
        let key = Arc::new(proof_key(header_b64, &self.settings)?);
        if let Ok(mut keys) = self.keys.lock() {
            crate::bounded::make_room(&mut keys, PROOF_KEYS, |_| false);
            keys.insert(header_b64.to_owned(), key.clone());
        }
        Ok(key)
    }

    /// Checks a proof against the request, then spends its `jti`.
    ///
    /// # Errors
    /// See [`DpopError`]; `Unavailable` when the replay cache cannot be reached (fail closed).
    pub async fn verify(&self, proof: &str, request: &ProofRequest<'_>) -> Result<Proof, DpopError> {
        let now = self.clock.now();
        let proof = check_proof_with(proof, request, &self.settings, &self.nonces, now, |h| self.proof_key(h))?;
        // RFC 9449 §11.1: a proof is accepted once. Keyed by key and jti, hashed to bound
        // the key length whatever the client sent.
        let mut h = Sha256::new();
        h.update(proof.jkt.as_bytes());
        h.update([0]);
        h.update(proof.jti.as_bytes());
        let key = URL_SAFE_NO_PAD.encode(h.finalize());
        let until = proof.iat + self.settings.proof_lifetime + 2 * self.settings.leeway;
        match self.replay.first_use(&key, until).await {
            Ok(true) => Ok(proof),
            Ok(false) => Err(DpopError::Replayed),
            Err(e) => {
                tracing::warn!(error = %e, "DPoP replay cache unavailable; proof refused");
                Err(DpopError::Unavailable)
            }
        }
    }
}

/// How a token was presented to a resource (RFC 9449 §7, RFC 8705 §3).
#[derive(Debug, Clone, Copy, Default)]
pub struct Presentation<'a> {
    /// The key of the verified proof, when the token came as `Authorization: DPoP`.
    pub dpop_jkt: Option<&'a str>,
    /// `x5t#S256` of the client certificate the connection's TLS handshake verified.
    pub certificate: Option<&'a str>,
}

/// Why a token's `cnf` refuses how it was presented. The client sees `invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    #[error("a DPoP-bound token presented as a bearer token")]
    DpopRequired,
    #[error("the proof key is not the token's cnf.jkt")]
    KeyMismatch,
    #[error("the DPoP scheme with a token that is not DPoP-bound")]
    NotBound,
    #[error("a certificate-bound token without that certificate")]
    CertificateMismatch,
}

impl BindingError {
    #[must_use]
    pub const fn code(self) -> &'static str {
        match self {
            Self::DpopRequired => "dpop_bound_token_as_bearer",
            Self::KeyMismatch => "dpop_key_mismatch",
            Self::NotBound => "dpop_token_not_bound",
            Self::CertificateMismatch => "certificate_mismatch",
        }
    }
}

/// Checks a token's confirmation against how it was presented: a DPoP-bound token only
/// with a proof by its key (RFC 9449 §7.1, and never as `Bearer`, §7.2), a DPoP proof only
/// with a DPoP-bound token, a certificate-bound token only over a connection with that
/// certificate (RFC 8705 §3: the resource "MUST ... reject the request").
///
/// # Errors
/// See [`BindingError`].
pub fn check_confirmation(cnf: Option<&Confirmation>, presented: &Presentation<'_>) -> Result<(), BindingError> {
    let bound_jkt = cnf.and_then(|c| c.jkt.as_deref());
    match (bound_jkt, presented.dpop_jkt) {
        (Some(_), None) => return Err(BindingError::DpopRequired),
        (None, Some(_)) => return Err(BindingError::NotBound),
        (Some(bound), Some(proved)) if !crate::secret::constant_time_eq(bound.as_bytes(), proved.as_bytes()) => {
            return Err(BindingError::KeyMismatch);
        }
        _ => {}
    }
    if let Some(x5t) = cnf.and_then(|c| c.x5t_s256.as_deref())
        && presented.certificate != Some(x5t)
    {
        return Err(BindingError::CertificateMismatch);
    }
    Ok(())
}

/// The one `DPoP` header value of a request, if any.
///
/// # Errors
/// `Multiple` for several headers (RFC 9449 §4.3 check 1), `Malformed` for a non-ASCII one.
pub fn single_proof<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Result<Option<&'a str>, DpopError> {
    let first = values.next();
    if values.next().is_some() {
        return Err(DpopError::Multiple);
    }
    first.map(|v| std::str::from_utf8(v).map(str::trim).map_err(|_| DpopError::Malformed)).transpose()
}

/// RFC 9449 §6.1: `ath` is the base64url SHA-256 of the access token's ASCII.
#[must_use]
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// RFC 9449 §4.3 check 9: `htu` is compared without query and fragment, after RFC 3986
/// §6.2.2/§6.2.3 normalization (case of scheme and host, default port, dot segments, and
/// percent-encoding: unreserved characters decoded, other escapes in upper case).
#[must_use]
pub fn normalize_htu(htu: &str) -> Option<String> {
    let mut url = url::Url::parse(htu).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.cannot_be_a_base() {
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    let path = normalize_percent_encoding(url.path());
    url.set_path(&path);
    Some(url.into())
}

/// Whether a proof's `htu` names the request's URL. The usual case, a client that sent the
/// URL it called, is the same text: one parse (it must still be a valid http(s) URL) instead
/// of two.
fn same_htu(htu: &str, url: &str) -> bool {
    if htu == url {
        return normalize_htu(htu).is_some();
    }
    normalize_htu(htu).is_some_and(|h| Some(h) == normalize_htu(url))
}

/// RFC 3986 §6.2.2.1–2: `%7E` → `~`, `%61` → `a`; `%2f` → `%2F` (a reserved character
/// stays encoded: decoding it would change the path's meaning).
fn normalize_percent_encoding(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('%') {
        let (before, escape) = rest.split_at(at);
        out.push_str(before);
        let hex = escape.get(1..3).filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok().map(|b| (h, b))) {
            Some((_, b)) if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(b));
            }
            Some((h, _)) => {
                out.push('%');
                out.push_str(&h.to_ascii_uppercase());
            }
            None => {
                // Not an escape: a lone '%' (the URL parser leaves it as it is).
                out.push('%');
                rest = escape.get(1..).unwrap_or_default();
                continue;
            }
        }
        rest = escape.get(3..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// Every check of RFC 9449 §4.3 but replay, at time `now`.
///
/// # Errors
/// See [`DpopError`].
pub fn check_proof(
    proof: &str,
    request: &ProofRequest<'_>,
    settings: &DpopSettings,
    nonces: &NonceKey,
    now: UnixTime,
) -> Result<Proof, DpopError> {
    check_proof_with(proof, request, settings, nonces, now, |header| proof_key(header, settings).map(Arc::new))
}

/// What a proof's header says once checks 4 and 5 and the key rules pass: the key, ready to
/// verify, and its thumbprint. A client signs every proof with one key, so its proofs'
/// headers are the same bytes; [`Dpop`] remembers this per header.
#[derive(Debug)]
pub struct ProofKey {
    jkt: String,
    verifier: Verifier,
}

/// Checks 4 and 5 of RFC 9449 §4.3 and the key rules, on the base64url header.
fn proof_key(header_b64: &str, settings: &DpopSettings) -> Result<ProofKey, DpopError> {
    let header: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or(DpopError::Malformed)?;
    let text = |name: &str| header.get(name).and_then(Value::as_str);
    // Check 4: "the typ JOSE Header Parameter has the value dpop+jwt".
    if text("typ") != Some(PROOF_TYP) {
        return Err(DpopError::WrongType);
    }
    if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return Err(DpopError::Malformed);
    }
    // Check 5: "the alg ... indicates a registered asymmetric digital signature algorithm,
    // is not none, is supported by the application, and is acceptable per local policy".
    let alg = text("alg").and_then(Algorithm::parse).filter(|a| settings.algorithms.contains(a));
    let alg = alg.ok_or(DpopError::Algorithm)?;
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(DpopError::BadKey);
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(DpopError::BadKey);
    }
    let jkt = thumbprint(jwk).ok_or(DpopError::BadKey)?;
    let mut keyed = jwk.clone();
    keyed.entry("alg").or_insert_with(|| Value::String(alg.as_str().to_owned()));
    let verifier = Verifier::from_external_jwk(&Value::Object(keyed), &[alg]).map_err(|_| DpopError::BadKey)?;
    Ok(ProofKey { jkt, verifier })
}

/// [`check_proof`] with the header's checks answered by `key` (given the base64url header).
fn check_proof_with(
    proof: &str,
    request: &ProofRequest<'_>,
    settings: &DpopSettings,
    nonces: &NonceKey,
    now: UnixTime,
    key: impl FnOnce(&str) -> Result<Arc<ProofKey>, DpopError>,
) -> Result<Proof, DpopError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(DpopError::Malformed);
    }
    let (header_b64, payload_b64, sig_b64) = jose::split(proof).map_err(|_| DpopError::Malformed)?;
    let ProofKey { jkt, verifier } = &*key(header_b64)?;
    // Check 6: "the JWT signature verifies with the public key contained in the jwk".
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| DpopError::Malformed)?;
    let signing_input = proof.get(..header_b64.len() + 1 + payload_b64.len()).ok_or(DpopError::Malformed)?;
    if !verifier.verify(signing_input.as_bytes(), &sig) {
        return Err(DpopError::BadSignature);
    }
    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .ok()
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .ok_or(DpopError::MalformedClaims)?;
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    let jti = claim("jti").filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN).ok_or(DpopError::MalformedClaims)?;
    let iat = claims.get("iat").and_then(Value::as_i64).ok_or(DpopError::MalformedClaims)?;
    let (htm, htu) = claim("htm").zip(claim("htu")).ok_or(DpopError::MalformedClaims)?;
    // Check 8: "the htm claim matches the HTTP method of the current request".
    if htm != request.method {
        return Err(DpopError::WrongMethod);
    }
    // Check 9: "the htu claim matches the HTTP URI value for the HTTP request in which the
    // JWT was received, ignoring any query and fragment parts".
    if !same_htu(htu, request.url) {
        return Err(DpopError::WrongUrl);
    }
    // Check 11: "the creation time of the JWT ... is within an acceptable window".
    if iat > now + settings.leeway || iat < now - settings.proof_lifetime - settings.leeway {
        return Err(DpopError::Stale);
    }
    // Check 12: with an access token, `ath` must be present and equal its hash.
    if let Some(token) = request.access_token {
        let expected = ath(token);
        let given = claim("ath").unwrap_or_default();
        if !crate::secret::constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Err(DpopError::WrongAth);
        }
    }
    // Check 10: "if the server provided a nonce value to the client, the nonce claim
    // matches the server-provided nonce value".
    if request.require_nonce && !claim("nonce").is_some_and(|n| nonces.accepts(n, now, settings.nonce_lifetime)) {
        return Err(DpopError::UseNonce);
    }
    Ok(Proof { jkt: jkt.clone(), jti: jti.to_owned(), iat })
}

/// RFC 7638 §3.2 thumbprint of a public JWK given as JSON: the required members of its
/// key type, sorted, without whitespace.
#[must_use]
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str).map(|s| Value::String(s.to_owned()));
    let names: &[&str] = match jwk.get("kty").and_then(Value::as_str)? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = Map::new();
    for name in names {
        canonical.insert((*name).to_owned(), member(name)?);
    }
    // serde_json's Map is a BTreeMap without `preserve_order`: members come out sorted.
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(Value::Object(canonical).to_string().as_bytes())))
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::jose::Signer;

    const URL: &str = "https://api.example.com/v1/things";
    const NOW: UnixTime = 1_700_000_000;

    /// A client key and a way to sign arbitrary proofs with it.
    pub(crate) struct Client {
        pub signer: Signer,
        pub jwk: Value,
    }

    impl Client {
        pub(crate) fn new(alg: Algorithm) -> Self {
            let (signer, _) = Signer::generate(alg).unwrap();
            let public = signer.public_jwk().unwrap();
            let mut jwk = serde_json::to_value(&public).unwrap();
            let obj = jwk.as_object_mut().unwrap();
            for m in ["kid", "alg", "use"] {
                obj.remove(m);
            }
            Self { signer, jwk }
        }

        pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
            let h = URL_SAFE_NO_PAD.encode(header.to_string());
            let p = URL_SAFE_NO_PAD.encode(claims.to_string());
            let input = format!("{h}.{p}");
            let sig = self.signer.sign(input.as_bytes()).unwrap();
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        }

        pub(crate) fn proof(&self, claims: &Value) -> String {
            let alg = self.signer.algorithm().as_str();
            self.sign(&json!({"typ": PROOF_TYP, "alg": alg, "jwk": self.jwk}), claims)
        }

        pub(crate) fn jkt(&self) -> String {
            thumbprint(self.jwk.as_object().unwrap()).unwrap()
        }
    }

    fn claims() -> Value {
        json!({"jti": "p1", "htm": "GET", "htu": URL, "iat": NOW})
    }

    fn request() -> ProofRequest<'static> {
        ProofRequest { method: "GET", url: URL, access_token: None, require_nonce: false }
    }

    fn check(proof: &str, req: &ProofRequest<'_>) -> Result<Proof, DpopError> {
        check_proof(proof, req, &DpopSettings::default(), &NonceKey::new(&[7; 32]), NOW)
    }

    fn with(claims_patch: &[(&str, Value)]) -> Value {
        let mut c = claims();
        for (k, v) in claims_patch {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(*k);
            } else {
                c[*k] = v.clone();
            }
        }
        c
    }

    #[test]
    fn a_good_proof_passes_for_every_algorithm_and_names_its_key() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let client = Client::new(alg);
            let proof = check(&client.proof(&claims()), &request()).unwrap();
            assert_eq!(proof.jkt, client.jkt());
            assert_eq!(proof.jti, "p1");
        }
    }

    #[test]
    fn jwk_thumbprint_matches_rfc7638_for_our_own_keys() {
        let (signer, _) = Signer::generate(Algorithm::ES256).unwrap();
        let public = signer.public_jwk().unwrap();
        let value = serde_json::to_value(&public).unwrap();
        assert_eq!(thumbprint(value.as_object().unwrap()).unwrap(), public.thumbprint());
    }

    #[test]
    fn htu_normalizes_percent_encoding() {
        let n = |u: &str| normalize_htu(u).unwrap();
        assert_eq!(n("https://a.example/v1/%7Ealice/%74hings"), "https://a.example/v1/~alice/things");
        assert_eq!(n("https://a.example/v1/a%2fb"), n("https://a.example/v1/a%2Fb"), "escape case does not matter");
        assert_ne!(
            n("https://a.example/v1/a%2Fb"),
            n("https://a.example/v1/a/b"),
            "a reserved escape keeps its meaning"
        );
        assert_eq!(n("https://a.example/v1/%e2%82%ac"), "https://a.example/v1/%E2%82%AC");
        assert_eq!(n("https://a.example/100%"), "https://a.example/100%");
        assert_eq!(n("https://a.example/%zz/%4"), "https://a.example/%zz/%4");
    }

    #[test]
    fn the_same_text_must_still_be_an_http_url() {
        assert!(same_htu("https://a.example/v1", "https://a.example/v1"));
        assert!(same_htu("HTTPS://A.example:443/v1/%7e", "https://a.example/v1/~"));
        assert!(!same_htu("https://a.example/v1", "https://a.example/v2"));
        for not_http in ["ftp://a.example/v1", "https://u:p@a.example/", "not a url", ""] {
            assert!(!same_htu(not_http, not_http), "{not_http:?}");
        }
    }

    #[test]
    fn each_claim_rule_refuses() {
        let c = Client::new(Algorithm::ES256);
        let refused = |claims: Value| check(&c.proof(&claims), &request()).unwrap_err();
        assert_eq!(refused(with(&[("htm", json!("POST"))])), DpopError::WrongMethod);
        assert_eq!(refused(with(&[("htm", json!("get"))])), DpopError::WrongMethod);
        assert_eq!(refused(with(&[("htu", json!("https://api.example.com/v1/other"))])), DpopError::WrongUrl);
        assert_eq!(refused(with(&[("htu", json!("https://evil.example.com/v1/things"))])), DpopError::WrongUrl);
        assert_eq!(refused(with(&[("htu", json!("not a url"))])), DpopError::WrongUrl);
        assert_eq!(refused(with(&[("iat", json!(NOW - 120))])), DpopError::Stale);
        assert_eq!(refused(with(&[("iat", json!(NOW + 60))])), DpopError::Stale);
        assert_eq!(refused(with(&[("jti", Value::Null)])), DpopError::MalformedClaims);
        assert_eq!(refused(with(&[("jti", json!(""))])), DpopError::MalformedClaims);
        assert_eq!(refused(with(&[("iat", json!("now"))])), DpopError::MalformedClaims);
        assert_eq!(refused(with(&[("htu", Value::Null)])), DpopError::MalformedClaims);
        // Normalization: case, default port, query and fragment do not matter.
        let same = with(&[("htu", json!("HTTPS://API.example.com:443/v1/./things?x=1#f"))]);
        assert!(check(&c.proof(&same), &request()).is_ok());
    }

    #[test]
    fn ath_binds_the_proof_to_the_token() {
        let c = Client::new(Algorithm::ES256);
        let req = ProofRequest { access_token: Some("tok"), ..request() };
        assert_eq!(check(&c.proof(&claims()), &req).unwrap_err(), DpopError::WrongAth);
        let wrong = with(&[("ath", json!(ath("other")))]);
        assert_eq!(check(&c.proof(&wrong), &req).unwrap_err(), DpopError::WrongAth);
        let right = with(&[("ath", json!(ath("tok")))]);
        assert!(check(&c.proof(&right), &req).is_ok());
    }

    #[test]
    fn header_attacks_are_refused() {
        let c = Client::new(Algorithm::ES256);
        let other = Client::new(Algorithm::ES256);
        let cl = claims();
        let refused = |header: Value| check(&c.sign(&header, &cl), &request()).unwrap_err();
        assert_eq!(refused(json!({"typ": "JWT", "alg": "ES256", "jwk": c.jwk})), DpopError::WrongType);
        assert_eq!(refused(json!({"alg": "ES256", "jwk": c.jwk})), DpopError::WrongType);
        for alg in ["none", "HS256", "ES384", "PS256"] {
            assert_eq!(refused(json!({"typ": PROOF_TYP, "alg": alg, "jwk": c.jwk})), DpopError::Algorithm, "{alg}");
        }
        // Signed by one key, claiming another.
        assert_eq!(refused(json!({"typ": PROOF_TYP, "alg": "ES256", "jwk": other.jwk})), DpopError::BadSignature);
        // A key that does not fit the algorithm.
        assert_eq!(refused(json!({"typ": PROOF_TYP, "alg": "EdDSA", "jwk": c.jwk})), DpopError::BadKey);
        assert_eq!(refused(json!({"typ": PROOF_TYP, "alg": "ES256"})), DpopError::BadKey);
        // A symmetric key, or a private one.
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        assert_eq!(refused(json!({"typ": PROOF_TYP, "alg": "ES256", "jwk": oct})), DpopError::BadKey);
        let mut private = c.jwk.clone();
        private["d"] = json!("AAAA");
        assert_eq!(refused(json!({"typ": PROOF_TYP, "alg": "ES256", "jwk": private})), DpopError::BadKey);
        let jku = json!({"typ": PROOF_TYP, "alg": "ES256", "jwk": c.jwk, "jku": "https://evil"});
        assert_eq!(refused(jku), DpopError::Malformed);
        // An unsigned token with alg none.
        let h = URL_SAFE_NO_PAD.encode(json!({"typ": PROOF_TYP, "alg": "none", "jwk": c.jwk}).to_string());
        let p = URL_SAFE_NO_PAD.encode(cl.to_string());
        assert_eq!(check(&format!("{h}.{p}."), &request()).unwrap_err(), DpopError::Malformed);
        for garbage in ["", "a.b", "a.b.c", &"x".repeat(MAX_PROOF_LEN + 1)] {
            assert!(check(garbage, &request()).is_err());
        }
    }

    #[test]
    fn nonces_are_required_when_asked_and_expire() {
        let c = Client::new(Algorithm::ES256);
        let key = NonceKey::new(&[7; 32]);
        let settings = DpopSettings::default();
        let req = ProofRequest { require_nonce: true, ..request() };
        let run = |claims: Value, now| check_proof(&c.proof(&claims), &req, &settings, &key, now);
        assert_eq!(run(claims(), NOW).unwrap_err(), DpopError::UseNonce);
        let nonce = key.issue(NOW, settings.nonce_lifetime);
        assert!(run(with(&[("nonce", json!(nonce))]), NOW).is_ok());
        assert!(key.accepts(&nonce, NOW + settings.nonce_lifetime, settings.nonce_lifetime));
        assert!(!key.accepts(&nonce, NOW + 2 * settings.nonce_lifetime + 1, settings.nonce_lifetime));
        assert!(!NonceKey::new(&[8; 32]).accepts(&nonce, NOW, settings.nonce_lifetime));
        assert!(!key.accepts("garbage!", NOW, settings.nonce_lifetime));
    }

    #[derive(Debug, Default)]
    struct Seen(std::sync::Mutex<std::collections::HashSet<String>>);

    #[async_trait]
    impl ReplayCache for Seen {
        async fn first_use(&self, key: &str, _until: UnixTime) -> Result<bool, StoreError> {
            Ok(self.0.lock().unwrap().insert(key.to_owned()))
        }
    }

    /// A checker with default settings, an in-memory replay cache and the clock at `NOW`.
    fn checker() -> Dpop {
        let clock = Arc::new(crate::clock::FixedClock::new(NOW));
        Dpop::new(DpopSettings::default(), NonceKey::new(&[1; 32]), Arc::new(Seen::default()), clock)
    }

    #[tokio::test]
    async fn a_proof_is_accepted_once() {
        let dpop = checker();
        let c = Client::new(Algorithm::ES256);
        let proof = c.proof(&claims());
        assert!(dpop.verify(&proof, &request()).await.is_ok());
        assert_eq!(dpop.verify(&proof, &request()).await.unwrap_err(), DpopError::Replayed);
        // The same jti under another key is another proof.
        let other = Client::new(Algorithm::ES256);
        assert!(dpop.verify(&other.proof(&claims()), &request()).await.is_ok());
    }

    #[tokio::test]
    async fn a_remembered_key_still_checks_every_signature_and_claim() {
        let dpop = checker();
        let c = Client::new(Algorithm::ES256);
        let first = c.proof(&claims());
        let second = c.proof(&with(&[("jti", json!("p2"))]));
        assert_eq!(first.split('.').next(), second.split('.').next(), "one key, one header");
        let jkt = dpop.verify(&first, &request()).await.unwrap().jkt;
        assert_eq!(dpop.keys.lock().unwrap().len(), 1, "the header is remembered");
        assert_eq!(dpop.verify(&second, &request()).await.unwrap().jkt, jkt);
        // A remembered header with another key's signature is still refused, and the
        // claims are still checked.
        let mine = c.proof(&with(&[("jti", json!("p3"))]));
        let other = Client::new(Algorithm::ES256).proof(&with(&[("jti", json!("p3"))]));
        let forged = format!("{}.{}", mine.rsplit_once('.').unwrap().0, other.rsplit_once('.').unwrap().1);
        assert_eq!(dpop.verify(&forged, &request()).await.unwrap_err(), DpopError::BadSignature);
        let stale = c.proof(&with(&[("jti", json!("p4")), ("iat", json!(NOW - 3600))]));
        assert_eq!(dpop.verify(&stale, &request()).await.unwrap_err(), DpopError::Stale);
        // A refused header is not remembered.
        let none = c.sign(&json!({"typ": "dpop+jwt", "alg": "none", "jwk": c.jwk}), &claims());
        assert_eq!(dpop.verify(&none, &request()).await.unwrap_err(), DpopError::Algorithm);
        assert_eq!(dpop.keys.lock().unwrap().len(), 1);
    }

    #[test]
    fn confirmation_rules() {
        let dpop = Confirmation::of(Some("k1".into()), None);
        let cert = Confirmation::of(None, Some("c1".into()));
        let p = |dpop_jkt, certificate| Presentation { dpop_jkt, certificate };
        assert_eq!(check_confirmation(None, &p(None, None)), Ok(()));
        assert_eq!(check_confirmation(None, &p(None, Some("c1"))), Ok(()));
        assert_eq!(check_confirmation(None, &p(Some("k1"), None)), Err(BindingError::NotBound));
        assert_eq!(check_confirmation(dpop.as_ref(), &p(Some("k1"), None)), Ok(()));
        assert_eq!(check_confirmation(dpop.as_ref(), &p(None, None)), Err(BindingError::DpopRequired));
        assert_eq!(check_confirmation(dpop.as_ref(), &p(Some("k2"), None)), Err(BindingError::KeyMismatch));
        assert_eq!(check_confirmation(cert.as_ref(), &p(None, Some("c1"))), Ok(()));
        assert_eq!(check_confirmation(cert.as_ref(), &p(None, None)), Err(BindingError::CertificateMismatch));
        assert_eq!(check_confirmation(cert.as_ref(), &p(None, Some("c2"))), Err(BindingError::CertificateMismatch));
    }

    #[test]
    fn one_header_only() {
        let one: [&[u8]; 1] = [b" p "];
        assert_eq!(single_proof(one.into_iter()), Ok(Some("p")));
        let two: [&[u8]; 2] = [b"a", b"b"];
        assert_eq!(single_proof(two.into_iter()), Err(DpopError::Multiple));
        assert_eq!(single_proof(std::iter::empty()), Ok(None));
    }
}
