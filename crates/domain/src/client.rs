//! Registered clients (RFC 6749 §2) and client authentication (§2.3.1).

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::error::OAuthError;
use crate::scope::Scopes;
use crate::secret;

/// Grant types a client may be registered for. OAuth 2.1 drops implicit and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    ClientCredentials,
    AuthorizationCode,
    RefreshToken,
}

impl GrantType {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_credentials" => Some(Self::ClientCredentials),
            "authorization_code" => Some(Self::AuthorizationCode),
            "refresh_token" => Some(Self::RefreshToken),
            _ => None,
        }
    }
}

/// A registered client as stored. The secret exists only as its SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the secret; `None` for a public client.
    pub secret_hash: Option<String>,
    pub grant_types: Vec<GrantType>,
    /// Scopes the client may request.
    pub allowed_scopes: Scopes,
    /// Scopes granted when a request names none.
    pub default_scopes: Scopes,
    /// The `aud` of the access tokens issued to this client.
    pub audience: Vec<String>,
    /// Per-client access-token lifetime in seconds; `None` means the server default.
    pub access_token_ttl: Option<u32>,
    /// Registered redirect URIs, compared byte for byte (OAuth 2.1 §2.3.1).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser afterwards.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// A first-party client skips the consent page.
    #[serde(default)]
    pub first_party: bool,
    /// RFC 9449 §5.2 `dpop_bound_access_tokens`: token requests without a DPoP proof are
    /// refused.
    #[serde(default)]
    pub dpop_bound_access_tokens: bool,
    /// RFC 8705 §2.1.2 `tls_client_auth_subject`: the client authenticates with a
    /// certificate (verified against `tls.client_ca_file`) whose subject — first SAN URI,
    /// else SAN DNS name, else CN — is this; its access tokens are certificate-bound (§3).
    #[serde(default)]
    pub tls_client_auth_subject: Option<String>,
    pub disabled: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

impl Client {
    /// A public client (a single-page or native app) has no secret (RFC 6749 §2.1).
    #[must_use]
    pub const fn is_public(&self) -> bool {
        self.secret_hash.is_none() && self.tls_client_auth_subject.is_none()
    }

    /// RFC 8705 §2.1: whether `certificate` authenticates this client.
    #[must_use]
    pub fn certificate_matches(&self, certificate: &ClientCertificate) -> bool {
        !self.disabled && self.tls_client_auth_subject.as_deref() == Some(certificate.subject.as_str())
    }

    /// The `aud` of access tokens for this client: its configured audience, or its own id.
    #[must_use]
    pub fn token_audience(&self) -> Vec<String> {
        if self.audience.is_empty() { vec![self.id.clone()] } else { self.audience.clone() }
    }

    #[must_use]
    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// Checks a presented secret. Always does the constant-time comparison, so the time taken
    /// does not reveal whether the client has a secret or is disabled.
    #[must_use]
    pub fn secret_matches(&self, presented: &str) -> bool {
        let stored = self.secret_hash.as_deref().unwrap_or(DUMMY_HASH);
        let ok = secret::verify_secret(presented, stored);
        ok && self.secret_hash.is_some() && !self.disabled
    }
}

/// Compared against when there is no stored hash, to keep timing uniform.
const DUMMY_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What `client create` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRegistration {
    pub name: String,
    pub grant_types: Vec<GrantType>,
    pub allowed_scopes: Scopes,
    /// Defaults to `allowed_scopes` when `None`.
    pub default_scopes: Option<Scopes>,
    pub audience: Vec<String>,
    pub access_token_ttl: Option<u32>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// No secret: the client cannot keep one (SPA, native app).
    pub public: bool,
    pub first_party: bool,
    /// Refuse token requests without a DPoP proof (RFC 9449 §5.2).
    pub dpop_bound_access_tokens: bool,
    /// Authenticate with a client certificate of this subject instead of a secret
    /// (RFC 8705 §2.1, `tls_client_auth`); tokens are bound to the certificate.
    pub tls_client_auth_subject: Option<String>,
}

/// A freshly minted client secret, shown to the operator exactly once.
#[derive(Debug)]
pub struct IssuedSecret(pub zeroize::Zeroizing<String>);

impl ClientRegistration {
    /// Validates the registration and builds the stored client plus its one-time secret.
    ///
    /// # Errors
    /// An empty name or grant list, default scopes that are not allowed, a zero lifetime.
    pub fn into_client(self, now: UnixTime) -> Result<(Client, Option<IssuedSecret>), OAuthError> {
        if self.name.trim().is_empty() {
            return Err(OAuthError::invalid_request("client name must not be empty"));
        }
        if self.grant_types.is_empty() {
            return Err(OAuthError::invalid_request("at least one grant type is required"));
        }
        // RFC 9068 §2.2: `aud` is REQUIRED in every access token.
        if self.grant_types.contains(&GrantType::ClientCredentials) && self.audience.is_empty() {
            return Err(OAuthError::invalid_request("a client_credentials client needs an audience"));
        }
        if self.audience.iter().any(|a| a.trim().is_empty()) {
            return Err(OAuthError::invalid_request("an audience must not be empty"));
        }
        if self.access_token_ttl == Some(0) {
            return Err(OAuthError::invalid_request("access token lifetime must be positive"));
        }
        let default_scopes = self.default_scopes.unwrap_or_else(|| self.allowed_scopes.clone());
        if !default_scopes.is_subset(&self.allowed_scopes) {
            return Err(OAuthError::invalid_request("default scopes must be allowed scopes"));
        }
        let code_flow = self.grant_types.contains(&GrantType::AuthorizationCode);
        if code_flow && self.redirect_uris.is_empty() {
            return Err(OAuthError::invalid_request("an authorization_code client needs a redirect URI"));
        }
        if !code_flow && !self.redirect_uris.is_empty() {
            return Err(OAuthError::invalid_request("redirect URIs are only for authorization_code clients"));
        }
        if self.grant_types.contains(&GrantType::RefreshToken) && !code_flow {
            return Err(OAuthError::invalid_request("refresh_token needs the authorization_code grant"));
        }
        // OAuth 2.1 §2.1: client credentials are for confidential clients only.
        if self.public && self.grant_types.contains(&GrantType::ClientCredentials) {
            return Err(OAuthError::invalid_request("a public client cannot use client_credentials"));
        }
        for uri in self.redirect_uris.iter().chain(&self.post_logout_redirect_uris) {
            check_redirect_uri(uri)?;
        }
        if let Some(subject) = &self.tls_client_auth_subject {
            if self.public {
                return Err(OAuthError::invalid_request("a public client cannot use tls_client_auth"));
            }
            if subject.trim().is_empty() || subject.chars().any(char::is_control) {
                return Err(OAuthError::invalid_request("the certificate subject must not be empty"));
            }
        }
        // A tls_client_auth client proves itself with its certificate: no secret to leak.
        let secret = (!self.public && self.tls_client_auth_subject.is_none()).then(new_secret);
        let client = Client {
            id: new_client_id(),
            name: self.name,
            secret_hash: secret.as_ref().map(|s| secret::hash_secret(&s.0)),
            grant_types: self.grant_types,
            allowed_scopes: self.allowed_scopes,
            default_scopes,
            audience: self.audience,
            access_token_ttl: self.access_token_ttl,
            redirect_uris: self.redirect_uris,
            post_logout_redirect_uris: self.post_logout_redirect_uris,
            first_party: self.first_party,
            dpop_bound_access_tokens: self.dpop_bound_access_tokens,
            tls_client_auth_subject: self.tls_client_auth_subject,
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        Ok((client, secret))
    }
}

/// Registration-time rules for a redirect URI (RFC 9700 §4.1.1, RFC 8252 §7): absolute,
/// no fragment, no wildcard; `https`, `http` on a loopback address only, or a private-use
/// scheme with a dot (`com.example.app:/cb`) for native apps.
///
/// # Errors
/// `invalid_request` naming the rule.
pub fn check_redirect_uri(uri: &str) -> Result<(), OAuthError> {
    let bad = |why: &'static str| Err(OAuthError::invalid_request(why).with_cause(uri.to_owned()));
    let Ok(url) = url::Url::parse(uri) else { return bad("a redirect URI must be an absolute URL") };
    if url.fragment().is_some() || uri.contains('#') {
        return bad("a redirect URI must not contain a fragment");
    }
    if uri.contains('*') {
        return bad("a redirect URI must not contain a wildcard");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("a redirect URI must not contain user information");
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if loopback { Ok(()) } else { bad("a redirect URI must use https (http only on a loopback address)") }
        }
        "javascript" | "data" | "file" | "vbscript" => bad("that redirect URI scheme is not allowed"),
        scheme if scheme.contains('.') => Ok(()),
        _ => bad("a custom redirect URI scheme must be a reverse domain name (com.example.app)"),
    }
}

/// The browser origins of every client's redirect URIs (`https://app.example.com`): the
/// origins a single-page app calls the token, revocation and userinfo endpoints from. Native
/// apps' private-use schemes have no web origin and are skipped.
#[must_use]
pub fn web_origins(clients: &[Client]) -> std::collections::BTreeSet<String> {
    clients
        .iter()
        .filter(|c| !c.disabled)
        .flat_map(|c| c.redirect_uris.iter())
        .filter_map(|uri| url::Url::parse(uri).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(|u| u.origin().ascii_serialization())
        .collect()
}

/// A client id: 128 random bits, base64url ([`secret::random_id`]: never starting with
/// `-`). Not a secret, but not guessable either.
#[must_use]
pub fn new_client_id() -> String {
    secret::random_id(16)
}

/// A client secret: 256 random bits, base64url (43 characters).
#[must_use]
pub fn new_secret() -> IssuedSecret {
    IssuedSecret(zeroize::Zeroizing::new(secret::random_token(32)))
}

/// How the client authenticated to the token, introspection or revocation endpoint.
/// Parsed at the edge from `Authorization: Basic` or the form body (RFC 6749 §2.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredentials {
    /// `client_secret_basic`
    Basic { client_id: String, client_secret: String },
    /// `client_secret_post`
    Post { client_id: String, client_secret: String },
    /// Only a `client_id` was sent: a public client, or a confidential one that forgot.
    None { client_id: String },
    /// `tls_client_auth` (RFC 8705 §2.1): a `client_id` over a connection whose client
    /// certificate the listener verified.
    Certificate { client_id: String, certificate: ClientCertificate },
}

/// A client certificate the listener verified against its CA during the TLS handshake
/// (RFC 8705 §2.1), put on each request of that connection by the server crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The identity: the first SAN URI (a SPIFFE ID, say), else the first SAN DNS name,
    /// else the subject CN.
    pub subject: String,
    /// Hex SHA-256 of the DER certificate.
    pub fingerprint: String,
    /// RFC 8705 §3.1 `x5t#S256`: base64url SHA-256 of the DER certificate.
    pub thumbprint: String,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
}

impl ClientCredentials {
    #[must_use]
    pub fn client_id(&self) -> &str {
        match self {
            Self::Basic { client_id, .. }
            | Self::Post { client_id, .. }
            | Self::None { client_id }
            | Self::Certificate { client_id, .. } => client_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> ClientRegistration {
        ClientRegistration {
            name: "billing".into(),
            grant_types: vec![GrantType::ClientCredentials],
            allowed_scopes: Scopes::parse("a b").unwrap(),
            default_scopes: None,
            audience: vec!["https://api.example.com".into()],
            ..ClientRegistration::default()
        }
    }

    #[test]
    fn tls_client_auth_clients_have_no_secret_and_match_their_certificate_only() {
        let mut r = registration();
        r.tls_client_auth_subject = Some("spiffe://example.org/billing".into());
        let (client, secret) = r.clone().into_client(1).unwrap();
        assert!(secret.is_none(), "the certificate is the credential");
        assert!(!client.is_public(), "a tls_client_auth client is confidential");
        let cert = |subject: &str| ClientCertificate {
            subject: subject.into(),
            fingerprint: String::new(),
            thumbprint: String::new(),
            not_before: 0,
            not_after: 0,
        };
        assert!(client.certificate_matches(&cert("spiffe://example.org/billing")));
        assert!(!client.certificate_matches(&cert("spiffe://example.org/reports")));
        let mut disabled = client;
        disabled.disabled = true;
        assert!(!disabled.certificate_matches(&cert("spiffe://example.org/billing")));
        let mut public = r.clone();
        public.public = true;
        public.grant_types = vec![GrantType::AuthorizationCode];
        public.redirect_uris = vec!["https://app.example.com/cb".into()];
        assert!(public.into_client(1).is_err(), "a public client cannot use tls_client_auth");
        r.tls_client_auth_subject = Some(" ".into());
        assert!(r.into_client(1).is_err(), "empty subject");
    }

    #[test]
    fn registration_stores_only_the_hash() {
        let (client, secret) = registration().into_client(1).unwrap();
        let secret = secret.unwrap();
        let hash = client.secret_hash.clone().unwrap();
        assert_ne!(hash, *secret.0);
        assert!(client.secret_matches(&secret.0));
        assert!(!client.secret_matches("wrong"));
        assert_eq!(client.default_scopes, client.allowed_scopes);
    }

    #[test]
    fn disabled_client_never_matches() {
        let (mut client, secret) = registration().into_client(1).unwrap();
        let secret = secret.unwrap();
        client.disabled = true;
        assert!(!client.secret_matches(&secret.0));
    }

    #[test]
    fn redirect_uri_rules() {
        for ok in
            ["https://app.example.com/cb", "http://127.0.0.1:8081/cb", "http://localhost/cb", "com.example.app:/cb"]
        {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/cb",
            "http://app.example.com/cb",
            "https://app.example.com/cb#x",
            "https://*.example.com/cb",
            "javascript:alert(1)",
            "myapp:/cb",
            "https://user:pw@app.example.com/cb",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_code_clients() {
        let mut r = registration();
        r.grant_types = vec![GrantType::AuthorizationCode, GrantType::RefreshToken];
        r.audience = vec![];
        r.public = true;
        assert!(r.clone().into_client(1).is_err(), "needs a redirect URI");
        r.redirect_uris = vec!["https://app.example.com/cb".into()];
        let (client, secret) = r.clone().into_client(1).unwrap();
        assert!(secret.is_none() && client.is_public());
        assert_eq!(client.token_audience(), vec![client.id.clone()]);
        r.grant_types.push(GrantType::ClientCredentials);
        assert!(r.into_client(1).is_err(), "public clients cannot use client_credentials");
    }

    #[test]
    fn default_scopes_must_be_allowed() {
        let mut r = registration();
        r.default_scopes = Some(Scopes::parse("c").unwrap());
        assert!(r.into_client(1).is_err());
    }
}
