//! Authentication and authorization of one request: credentials from the request (RFC 6750
//! §2.1, and §2.3 only where a route opts in), the token verified in-process (our own
//! tokens with the key ring, no network hop; external issuers with their cached JWKS), the
//! per-route checks (issuer, audience, time, revocation), then scopes and roles.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::clock::{Clock, UnixTime};
use domain::jose::{self, MAX_TOKEN_LEN};
use domain::keyring::KeyRing;
use domain::revoked::RevokedSet;
use domain::token::{self, Confirmation, JwtPolicy, TokenRejection};

use crate::cache::{self, TokenCache};
use crate::config::SELF_ISSUER;
use crate::error::Downstream;
use crate::jwks::ExternalIssuer;
use crate::routes::Route;

/// Who is calling, as established by a verified credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The token's `iss`.
    pub issuer: String,
    /// Issued by this Portcullis.
    pub is_self: bool,
    pub subject: String,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub audiences: Vec<String>,
    pub jti: Option<String>,
    pub expires_at: UnixTime,
    pub not_before: Option<UnixTime>,
    /// The token's `iat` (for cut-offs: "every token of this user issued before …").
    pub issued_at: Option<UnixTime>,
    /// The signing key of one of our tokens: a cached identity is refused once that key
    /// is purged (a compromised key stops working at once, cache or not).
    pub kid: Option<String>,
    /// Claims mapped for policies (`[authorization.claims]`): tenant, department, groups, …
    pub attributes: std::collections::BTreeMap<String, serde_json::Value>,
    /// The token's `amr` names a second factor (RFC 8176).
    pub mfa: bool,
    /// The key the token is bound to (RFC 9449 `cnf.jkt`, RFC 8705 `cnf.x5t#S256`).
    pub cnf: Option<Confirmation>,
}

/// The issuer recorded for identities proven by a client certificate.
pub const MTLS_ISSUER: &str = "mtls";

pub use domain::client::ClientCertificate;

/// The identity a verified client certificate proves (routes with `auth = "mtls"`).
#[must_use]
pub fn certificate_identity(cert: &ClientCertificate) -> Identity {
    Identity {
        issuer: MTLS_ISSUER.to_owned(),
        is_self: false,
        subject: cert.subject.clone(),
        client_id: Some(cert.subject.clone()),
        scopes: Vec::new(),
        roles: Vec::new(),
        audiences: Vec::new(),
        jti: None,
        expires_at: cert.not_after,
        not_before: Some(cert.not_before),
        issued_at: None,
        kid: None,
        attributes: std::collections::BTreeMap::new(),
        mfa: false,
        cnf: None,
    }
}

/// Verifies bearer tokens for every route.
#[derive(Debug)]
pub struct Authenticator {
    self_issuer: String,
    keys: Arc<KeyRing>,
    external: HashMap<String, Arc<ExternalIssuer>>,
    revoked: Arc<RevokedSet>,
    cache: TokenCache,
    clock: Arc<dyn Clock>,
    leeway: i64,
    /// (attribute, claim) pairs copied into [`Identity::attributes`].
    claims: Vec<(String, String)>,
}

const SELF_TYP: [&str; 2] = ["at+jwt", "application/at+jwt"];

impl Authenticator {
    #[must_use]
    pub fn new(
        self_issuer: String,
        keys: Arc<KeyRing>,
        external: Vec<Arc<ExternalIssuer>>,
        revoked: Arc<RevokedSet>,
        cache_size: usize,
        clock: Arc<dyn Clock>,
        leeway: i64,
    ) -> Self {
        let external = external.into_iter().map(|e| (e.config.issuer.clone(), e)).collect();
        Self {
            self_issuer,
            keys,
            external,
            revoked,
            cache: TokenCache::new(cache_size),
            clock,
            leeway,
            claims: Vec::new(),
        }
    }

    /// Copies these `(attribute, claim)` pairs from verified tokens into the identity (for
    /// policies).
    #[must_use]
    pub fn with_claims(mut self, claims: Vec<(String, String)>) -> Self {
        self.claims = claims;
        self
    }

    #[must_use]
    pub fn external_issuers(&self) -> Vec<Arc<ExternalIssuer>> {
        self.external.values().cloned().collect()
    }

    /// The gateway's clock reading.
    #[must_use]
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    #[must_use]
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Verifies a bearer token for `route`.
    ///
    /// # Errors
    /// `InvalidToken` with the reason, for the log.
    pub async fn verify(&self, token: &str, route: &Route) -> Result<Arc<Identity>, Downstream> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Downstream::InvalidToken("too_long"));
        }
        let now = self.clock.now();
        let key = cache::hash(token);
        let identity = match self.cache.get(&key, now) {
            Some(id) => id,
            None => {
                let id =
                    Arc::new(self.verify_signature(token, now).await.map_err(|r| Downstream::InvalidToken(r.code()))?);
                self.cache.insert(key, id.clone(), now);
                id
            }
        };
        self.check_for_route(&identity, route, now)?;
        Ok(identity)
    }

    /// The expensive part, done once per distinct token: signature and claims.
    async fn verify_signature(&self, token: &str, now: UnixTime) -> Result<Identity, TokenRejection> {
        let iss = unverified_issuer(token).ok_or(TokenRejection::MalformedClaims)?;
        let no_audience_yet: [String; 0] = [];
        if iss == self.self_issuer {
            let typ: Vec<String> = SELF_TYP.iter().map(|s| (*s).to_owned()).collect();
            let policy = JwtPolicy {
                issuer: &self.self_issuer,
                audiences: &no_audience_yet,
                leeway: self.leeway,
                typ: Some(&typ),
            };
            let keys = self.keys.snapshot();
            let claims = token::verify_jwt(token, |kid| keys.verifier(kid), &policy, now)?;
            let mut identity = identity_from_claims(&claims, true, "roles", &self.claims);
            identity.kid = jose::peek_header(token).ok().and_then(|h| h.kid);
            return Ok(identity);
        }
        let issuer = self.external.get(&iss).ok_or(TokenRejection::WrongIssuer)?;
        let kid = jose::peek_header(token)?.kid.unwrap_or_default();
        let verifier = issuer.verifier(&kid, now).await.ok_or(TokenRejection::Jws(jose::JwsError::UnknownKey))?;
        let typ = (!issuer.config.typ.is_empty()).then_some(issuer.config.typ.as_slice());
        let policy = JwtPolicy { issuer: &issuer.config.issuer, audiences: &no_audience_yet, leeway: self.leeway, typ };
        let claims = token::verify_jwt(token, |_| Some(verifier.as_ref()), &policy, now)?;
        Ok(identity_from_claims(&claims, false, &issuer.config.roles_claim, &self.claims))
    }

    /// The cheap per-request checks, also applied to cached identities.
    fn check_for_route(&self, id: &Identity, route: &Route, now: UnixTime) -> Result<(), Downstream> {
        let issuer_ok =
            route.cfg.issuers.iter().any(|i| (i == SELF_ISSUER && id.is_self) || (!id.is_self && *i == id.issuer));
        if !issuer_ok {
            return Err(Downstream::InvalidToken("issuer_not_accepted_on_route"));
        }
        // RFC 9068 §4: the resource server MUST validate that `aud` identifies it.
        if !id.audiences.iter().any(|a| route.cfg.audiences.contains(a)) {
            return Err(Downstream::InvalidToken(TokenRejection::WrongAudience.code()));
        }
        if id.expires_at <= now - self.leeway {
            return Err(Downstream::InvalidToken(TokenRejection::Expired.code()));
        }
        if id.not_before.is_some_and(|nbf| nbf > now + self.leeway) {
            return Err(Downstream::InvalidToken(TokenRejection::NotYetValid.code()));
        }
        // Our own tokens are also refused by an incident cut-off on their user or client
        // (a missing `iat` counts as issued before any cut-off: fail closed).
        let revoked = match (&id.jti, id.is_self) {
            (jti, true) => self.revoked.revokes(
                jti.as_deref().unwrap_or_default(),
                &id.subject,
                id.client_id.as_deref(),
                id.issued_at.unwrap_or(UnixTime::MIN),
                now,
            ),
            (Some(jti), false) => self.revoked.contains(jti, now),
            (None, false) => false,
        };
        if revoked {
            return Err(Downstream::InvalidToken(TokenRejection::Revoked.code()));
        }
        if id.is_self && id.kid.as_deref().is_none_or(|kid| self.keys.snapshot().verifier(kid).is_none()) {
            return Err(Downstream::InvalidToken("key_revoked"));
        }
        Ok(())
    }
}

/// Reads `iss` from the payload without verifying anything, only to pick the key set.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

fn identity_from_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
    is_self: bool,
    roles_claim: &str,
    mapped: &[(String, String)],
) -> Identity {
    let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
    let list = |value: Option<&serde_json::Value>| -> Vec<String> {
        match value {
            Some(serde_json::Value::String(s)) => s.split(' ').filter(|x| !x.is_empty()).map(str::to_owned).collect(),
            Some(serde_json::Value::Array(a)) => {
                a.iter().filter_map(serde_json::Value::as_str).map(str::to_owned).collect()
            }
            _ => Vec::new(),
        }
    };
    Identity {
        issuer: text("iss").unwrap_or_default(),
        is_self,
        subject: text("sub").unwrap_or_default(),
        client_id: text("client_id").or_else(|| text("azp")).or_else(|| text("cid")),
        scopes: list(claims.get("scope").or_else(|| claims.get("scp"))),
        roles: list(claims.get(roles_claim)),
        audiences: list(claims.get("aud")),
        jti: text("jti"),
        expires_at: claims.get("exp").and_then(serde_json::Value::as_i64).unwrap_or_default(),
        not_before: claims.get("nbf").and_then(serde_json::Value::as_i64),
        issued_at: claims.get("iat").and_then(serde_json::Value::as_i64),
        kid: None,
        attributes: mapped
            .iter()
            .filter_map(|(attr, claim)| claims.get(claim).map(|v| (attr.clone(), v.clone())))
            .collect(),
        mfa: domain::policy::amr_has_mfa(claims.get("amr")),
        cnf: claims.get("cnf").and_then(|c| serde_json::from_value::<Confirmation>(c.clone()).ok()),
    }
}

/// A credential presented with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// RFC 6750 bearer token (header, or query where the route allows it).
    Bearer(String),
    /// RFC 9449 §7.1 `Authorization: DPoP <token>`, to be proven with a `DPoP` proof.
    Dpop(String),
    /// `X-API-Key: …` or `Authorization: ApiKey …`.
    ApiKey(String),
}

/// The header that carries API keys.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The one credential of a request, if any.
///
/// # Errors
/// `MalformedCredentials` for several `Authorization` or `X-API-Key` headers, a malformed
/// value, a query token on a route that does not accept one, an API key in the query
/// string (never accepted), or credentials sent two ways at once.
pub fn credentials(headers: &HeaderMap, query: Option<&str>, route: &Route) -> Result<Option<Credential>, Downstream> {
    let mut found = Vec::with_capacity(1);
    if let Some(value) = single(headers, header::AUTHORIZATION.as_str())? {
        // RFC 7235 §2.1: the scheme is case-insensitive.
        let value = value.trim();
        match value.split_once(' ').or(Some((value, ""))) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("dpop") => {
                let token = token.trim();
                if token.is_empty() || !token.bytes().all(is_token68) {
                    return Err(Downstream::MalformedCredentials("the access token is malformed"));
                }
                found.push(if scheme.eq_ignore_ascii_case("dpop") {
                    Credential::Dpop(token.to_owned())
                } else {
                    Credential::Bearer(token.to_owned())
                });
            }
            Some((scheme, key)) if scheme.eq_ignore_ascii_case("apikey") => {
                found.push(Credential::ApiKey(key.trim().to_owned()));
            }
            // Other schemes (Basic for an upstream's own use) are not ours to judge.
            _ => {}
        }
    }
    if let Some(value) = single(headers, API_KEY_HEADER)? {
        found.push(Credential::ApiKey(value.trim().to_owned()));
    }
    let params = || query.into_iter().flat_map(|q| q.split('&'));
    if params().any(|p| p.starts_with("api_key=") || p.starts_with("apikey=")) {
        return Err(Downstream::MalformedCredentials("API keys are not accepted in the query string"));
    }
    if let Some(token) = params().find_map(|p| p.strip_prefix("access_token=")) {
        if !route.cfg.allow_query_token {
            return Err(Downstream::MalformedCredentials("tokens in the query string are not accepted"));
        }
        found.push(Credential::Bearer(token.to_owned()));
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(Downstream::MalformedCredentials("send one credential, one way")),
    }
}

/// The value of a header that must appear at most once, as ASCII.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Downstream> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Downstream::MalformedCredentials("a credential header appears more than once"));
    }
    first
        .map(|v| v.to_str().map_err(|_| Downstream::MalformedCredentials("a credential header is not ASCII")))
        .transpose()
}

/// RFC 6750 §2.1 `b64token` characters.
const fn is_token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// Scopes and roles the route requires.
///
/// # Errors
/// `InsufficientScope` naming what is required.
pub fn authorize(
    identity: &Identity,
    route: &Route,
    permissions: &dyn Fn(&[String]) -> Vec<String>,
) -> Result<(), Downstream> {
    let has = |list: &[String], x: &String| list.contains(x);
    let subjects = &route.cfg.mtls_subjects;
    if identity.issuer == MTLS_ISSUER && !subjects.is_empty() && !has(subjects, &identity.subject) {
        return Err(Downstream::InsufficientScope { required: String::new(), reason: "certificate_not_allowed" });
    }
    if !route.cfg.scopes_all.iter().all(|s| has(&identity.scopes, s)) {
        return Err(Downstream::InsufficientScope {
            required: route.cfg.scopes_all.join(" "),
            reason: "missing_scope",
        });
    }
    if !route.cfg.scopes_any.is_empty() && !route.cfg.scopes_any.iter().any(|s| has(&identity.scopes, s)) {
        return Err(Downstream::InsufficientScope {
            required: route.cfg.scopes_any.join(" "),
            reason: "missing_scope",
        });
    }
    // The challenge's `scope` names scopes only (RFC 6750 §3); roles are not scopes.
    let scopes_required = || route.cfg.scopes_all.iter().chain(&route.cfg.scopes_any).cloned().collect::<Vec<_>>();
    if !route.cfg.roles_all.iter().all(|r| has(&identity.roles, r)) {
        return Err(Downstream::InsufficientScope { required: scopes_required().join(" "), reason: "missing_role" });
    }
    if !route.cfg.roles_any.is_empty() && !route.cfg.roles_any.iter().any(|r| has(&identity.roles, r)) {
        return Err(Downstream::InsufficientScope { required: scopes_required().join(" "), reason: "missing_role" });
    }
    if !(route.cfg.permissions_all.is_empty() && route.cfg.permissions_any.is_empty()) {
        let granted = permissions(&identity.roles);
        let all = route.cfg.permissions_all.iter().all(|p| has(&granted, p));
        let any = route.cfg.permissions_any.is_empty() || route.cfg.permissions_any.iter().any(|p| has(&granted, p));
        if !(all && any) {
            return Err(Downstream::InsufficientScope {
                required: scopes_required().join(" "),
                reason: "missing_permission",
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthSpec, RouteConfig};
    use crate::test_support::headers;

    fn route(allow_query_token: bool) -> Route {
        let cfg = RouteConfig {
            path_prefix: "/x".into(),
            upstreams: vec!["http://127.0.0.1:1".into()],
            auth: Some(AuthSpec::AnyOf(vec![crate::config::AuthMethod::Jwt, crate::config::AuthMethod::ApiKey])),
            allow_query_token,
            ..RouteConfig::default()
        };
        Route::compile(&cfg).unwrap()
    }

    #[test]
    fn each_way_of_sending_a_credential() {
        let r = route(true);
        let cred = |h: &[(&str, &str)], q: Option<&str>| credentials(&headers(h), q, &r);
        assert_eq!(cred(&[("authorization", "bEaReR abc.def")], None), Ok(Some(Credential::Bearer("abc.def".into()))));
        assert_eq!(cred(&[("authorization", "DPoP abc.def")], None), Ok(Some(Credential::Dpop("abc.def".into()))));
        assert_eq!(cred(&[("authorization", "ApiKey pcs_1")], None), Ok(Some(Credential::ApiKey("pcs_1".into()))));
        assert_eq!(cred(&[("x-api-key", " pcs_2 ")], None), Ok(Some(Credential::ApiKey("pcs_2".into()))));
        assert_eq!(cred(&[], Some("a=1&access_token=t")), Ok(Some(Credential::Bearer("t".into()))));
        assert_eq!(cred(&[("authorization", "Basic dTpw")], None), Ok(None));
        assert_eq!(cred(&[], None), Ok(None));
    }

    #[test]
    fn ambiguous_or_forbidden_credentials_are_refused() {
        let strict = route(false);
        let lax = route(true);
        let refused = |h: &[(&str, &str)], q: Option<&str>, r: &Route| {
            matches!(credentials(&headers(h), q, r), Err(Downstream::MalformedCredentials(_)))
        };
        assert!(refused(&[], Some("access_token=t"), &strict));
        assert!(refused(&[], Some("api_key=pcs_1"), &lax));
        assert!(refused(&[], Some("x=1&apikey=pcs_1"), &lax));
        assert!(refused(&[("authorization", "Bearer a"), ("x-api-key", "pcs_1")], None, &lax));
        assert!(refused(&[("authorization", "Bearer a")], Some("access_token=b"), &lax));
        assert!(refused(&[("x-api-key", "a"), ("x-api-key", "b")], None, &lax));
        assert!(refused(&[("authorization", "Bearer a"), ("authorization", "Bearer b")], None, &lax));
        assert!(refused(&[("authorization", "Bearer a b")], None, &lax));
        assert!(refused(&[("authorization", "Bearer ")], None, &lax));
    }
}
