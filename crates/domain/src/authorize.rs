//! The authorization request (RFC 6749 §4.1.1, OAuth 2.1 §4.1.1, OpenID Connect Core
//! §3.1.2.1) parsed in two steps: first the client and its redirect URI — failures there are
//! shown to the user and never redirected (RFC 6749 §4.1.2.1, RFC 9700 §4.11) — then the
//! rest, whose failures go back to the client's redirect URI with `state` and `iss`
//! (RFC 9207).

use crate::client::{Client, GrantType};
use crate::error::{ErrorCode, OAuthError};
use crate::pkce::CodeChallenge;
use crate::request::FormParams;
use crate::scope::Scopes;

/// Longest `state` and `nonce` accepted; they are echoed, so they are bounded.
const MAX_ECHO_LEN: usize = 1024;

/// OIDC `prompt` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// A valid authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub client: Client,
    pub redirect_uri: String,
    pub redirect_uri_given: bool,
    pub state: Option<String>,
    pub scope: Scopes,
    pub nonce: Option<String>,
    pub challenge: CodeChallenge,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    /// RFC 9449 §10: the thumbprint of the DPoP key the code is bound to.
    pub dpop_jkt: Option<String>,
}

impl AuthorizationRequest {
    #[must_use]
    pub fn is_openid(&self) -> bool {
        self.scope.contains("openid")
    }
}

/// A failed authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: an error page, never a redirect.
    Page(OAuthError),
    /// Reported to the client at its (verified) redirect URI.
    Redirect(ErrorRedirect),
}

impl From<OAuthError> for AuthorizeError {
    fn from(e: OAuthError) -> Self {
        Self::Page(e)
    }
}

/// An error response to a verified redirect URI (RFC 6749 §4.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub state: Option<String>,
    pub error: OAuthError,
}

impl ErrorRedirect {
    /// The redirect target with `error`, `error_description`, `state` and `iss`.
    #[must_use]
    pub fn to_url(&self, issuer: &str) -> String {
        let mut params = vec![("error", self.error.code.as_str()), ("error_description", &self.error.description)];
        if let Some(state) = &self.state {
            params.push(("state", state));
        }
        params.push(("iss", issuer));
        with_query(&self.redirect_uri, &params)
    }
}

/// Appends query parameters to a registered redirect URI, keeping its own query
/// (RFC 6749 §3.1.2: "MUST retain the query component").
#[must_use]
pub fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(base) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        // Registered URIs are checked at registration; fall back to a plain join.
        Err(_) => base.to_owned(),
    }
}

/// Step one: the client (already looked up by `client_id`) and the redirect URI.
///
/// # Errors
/// A page error: unknown or disabled client, a client without the code grant, a redirect
/// URI that is not registered byte for byte, or a missing one when several are registered.
pub fn resolve_client(params: &FormParams, client: Option<Client>) -> Result<(Client, String, bool), OAuthError> {
    let client = match client {
        Some(c) if !c.disabled => c,
        _ => return Err(OAuthError::invalid_request("unknown client").with_cause("client_id not found or disabled")),
    };
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization code flow",
        ));
    }
    match params.optional("redirect_uri")? {
        // OAuth 2.1 §2.3.1: "exact string matching" — no prefix, case, port or slash leniency.
        Some(given) => match client.redirect_uris.iter().find(|r| *r == given) {
            Some(found) => {
                let found = found.clone();
                Ok((client, found, true))
            }
            None => Err(OAuthError::invalid_request("the redirect_uri is not registered for this client")
                .with_cause(format!("redirect_uri {given:?} not registered"))),
        },
        None => match client.redirect_uris.as_slice() {
            [only] => {
                let only = only.clone();
                Ok((client, only, false))
            }
            _ => Err(OAuthError::invalid_request("redirect_uri is required")),
        },
    }
}

/// Step two: every other parameter.
///
/// # Errors
/// An error to redirect to the client.
pub fn parse(
    params: &FormParams,
    client: Client,
    redirect_uri: String,
    redirect_uri_given: bool,
) -> Result<AuthorizationRequest, ErrorRedirect> {
    // `state` first, so every later error can carry it back.
    let state = params.optional("state").ok().flatten().filter(|s| s.len() <= MAX_ECHO_LEN).map(str::to_owned);
    let fail = |error: OAuthError| ErrorRedirect { redirect_uri: redirect_uri.clone(), state: state.clone(), error };
    let p = |name: &str| params.optional(name).map_err(fail);
    if params.optional("state").map_err(fail)?.is_some_and(|s| s.len() > MAX_ECHO_LEN) {
        return Err(fail(OAuthError::invalid_request("state is too long")));
    }
    if p("request")?.is_some() {
        return Err(fail(OAuthError::new(ErrorCode::RequestNotSupported, "request objects are not supported")));
    }
    if p("request_uri")?.is_some() {
        return Err(fail(OAuthError::new(ErrorCode::RequestUriNotSupported, "request_uri is not supported")));
    }
    match p("response_type")? {
        Some("code") => {}
        Some(_) => {
            return Err(fail(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported (OAuth 2.1 has no implicit flow)",
            )));
        }
        None => return Err(fail(OAuthError::invalid_request("response_type is required"))),
    }
    if p("response_mode")?.is_some_and(|m| m != "query") {
        return Err(fail(OAuthError::invalid_request("only response_mode=query is supported")));
    }
    let challenge = CodeChallenge::parse(p("code_challenge")?, p("code_challenge_method")?).map_err(fail)?;
    let requested = p("scope")?
        .map(Scopes::parse)
        .transpose()
        .map_err(|_| fail(OAuthError::new(ErrorCode::InvalidScope, "the scope parameter is malformed")))?;
    let scope = Scopes::grant(requested.as_ref(), &client.allowed_scopes, &client.default_scopes).map_err(fail)?;
    let nonce = p("nonce")?.map(str::to_owned);
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_ECHO_LEN) {
        return Err(fail(OAuthError::invalid_request("nonce is too long")));
    }
    let prompt = parse_prompt(p("prompt")?).map_err(fail)?;
    let max_age = match p("max_age")? {
        None => None,
        Some(m) => Some(
            m.parse::<u32>()
                .map(i64::from)
                .map_err(|_| fail(OAuthError::invalid_request("max_age must be a number")))?,
        ),
    };
    let login_hint = p("login_hint")?.filter(|h| h.len() <= 256).map(str::to_owned);
    // An RFC 7638 SHA-256 thumbprint: 43 base64url characters.
    let dpop_jkt = p("dpop_jkt")?.map(str::to_owned);
    if dpop_jkt
        .as_ref()
        .is_some_and(|j| j.len() != 43 || !j.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        return Err(fail(OAuthError::invalid_request("dpop_jkt must be a JWK SHA-256 thumbprint")));
    }
    Ok(AuthorizationRequest {
        client,
        redirect_uri,
        redirect_uri_given,
        state,
        scope,
        nonce,
        challenge,
        prompt,
        max_age,
        login_hint,
        dpop_jkt,
    })
}

fn parse_prompt(raw: Option<&str>) -> Result<Prompt, OAuthError> {
    let mut prompt = Prompt::default();
    for value in raw.unwrap_or("").split(' ').filter(|v| !v.is_empty()) {
        match value {
            "none" => prompt.none = true,
            // Portcullis has one account per browser session: choosing one means signing in.
            "login" | "select_account" => prompt.login = true,
            "consent" => prompt.consent = true,
            _ => return Err(OAuthError::invalid_request("unknown prompt value")),
        }
    }
    // OIDC Core §3.1.2.1: "If this parameter contains none with any other value, an error
    // is returned."
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(OAuthError::invalid_request("prompt=none cannot be combined with other values"));
    }
    Ok(prompt)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client() -> Client {
        Client {
            id: "app".into(),
            name: "App".into(),
            secret_hash: None,
            grant_types: vec![GrantType::AuthorizationCode],
            allowed_scopes: Scopes::parse("openid profile").unwrap(),
            default_scopes: Scopes::parse("openid").unwrap(),
            audience: vec![],
            access_token_ttl: None,
            redirect_uris: vec!["https://app.example.com/cb".into(), "https://app.example.com/cb2?x=1".into()],
            post_logout_redirect_uris: vec![],
            first_party: false,
            dpop_bound_access_tokens: false,
            tls_client_auth_subject: None,
            disabled: false,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn params(pairs: &[(&str, &str)]) -> FormParams {
        FormParams::new(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    fn full(extra: &[(&str, &str)]) -> Result<AuthorizationRequest, ErrorRedirect> {
        let mut pairs = vec![
            ("response_type", "code"),
            ("redirect_uri", "https://app.example.com/cb"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("state", "xyz"),
        ];
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                pairs.push((k, v));
            }
        }
        let p = params(&pairs);
        let (c, r, g) = resolve_client(&p, Some(client())).unwrap();
        parse(&p, c, r, g)
    }

    #[test]
    fn redirect_uri_is_matched_exactly() {
        for bad in [
            "https://app.example.com/cb/",
            "https://APP.example.com/cb",
            "https://app.example.com:443/cb",
            "https://app.example.com/cb?y=2",
            "https://app.example.com/c",
            "https://app.example.com/cbx",
            "http://app.example.com/cb",
        ] {
            assert!(resolve_client(&params(&[("redirect_uri", bad)]), Some(client())).is_err(), "{bad}");
        }
        assert!(resolve_client(&params(&[]), Some(client())).is_err(), "two registered: required");
        assert!(resolve_client(&params(&[]), None).is_err());
        let (_, r, given) =
            resolve_client(&params(&[("redirect_uri", "https://app.example.com/cb2?x=1")]), Some(client())).unwrap();
        assert_eq!((r.as_str(), given), ("https://app.example.com/cb2?x=1", true));
    }

    #[test]
    fn errors_are_redirected_with_state() {
        let code = |extra: &[(&str, &str)]| full(extra).unwrap_err().error.code;
        assert_eq!(code(&[("response_type", "token")]), ErrorCode::UnsupportedResponseType);
        assert_eq!(code(&[("response_type", "code id_token")]), ErrorCode::UnsupportedResponseType);
        assert_eq!(code(&[("response_type", "")]), ErrorCode::InvalidRequest);
        assert_eq!(code(&[("code_challenge_method", "plain")]), ErrorCode::InvalidRequest);
        assert_eq!(code(&[("code_challenge_method", "")]), ErrorCode::InvalidRequest);
        assert_eq!(code(&[("code_challenge", "")]), ErrorCode::InvalidRequest);
        assert_eq!(code(&[("scope", "openid admin")]), ErrorCode::InvalidScope);
        assert_eq!(code(&[("prompt", "none login")]), ErrorCode::InvalidRequest);
        assert_eq!(code(&[("max_age", "-1")]), ErrorCode::InvalidRequest);
        assert_eq!(code(&[("request", "eyJ")]), ErrorCode::RequestNotSupported);
        let err = full(&[("response_type", "token")]).unwrap_err();
        let url = err.to_url("https://id.example.com");
        assert!(url.starts_with("https://app.example.com/cb?error=unsupported_response_type&"));
        assert!(url.contains("state=xyz") && url.contains("iss=https%3A%2F%2Fid.example.com"));
    }

    #[test]
    fn a_good_request_parses() {
        let r = full(&[("scope", "openid profile"), ("nonce", "n1"), ("prompt", "login consent"), ("max_age", "60")])
            .unwrap();
        assert!(r.is_openid());
        assert_eq!(r.nonce.as_deref(), Some("n1"));
        assert_eq!(r.prompt, Prompt { none: false, login: true, consent: true });
        assert_eq!(r.max_age, Some(60));
        assert_eq!(full(&[]).unwrap().scope, Scopes::parse("openid").unwrap(), "default scopes");
        assert_eq!(
            with_query("https://app.example.com/cb2?x=1", &[("code", "a b")]),
            "https://app.example.com/cb2?x=1&code=a+b"
        );
    }
}
