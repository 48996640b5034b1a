//! Typed requests of the token, introspection and revocation endpoints, parsed from the
//! form parameters at the edge (RFC 6749 §3.2, §4.4.2; RFC 7662 §2.1; RFC 7009 §2.1).
//! After parsing, a required parameter is never an `Option`.

use crate::client::GrantType;
use crate::error::{ErrorCode, OAuthError};
use crate::pkce::CodeVerifier;
use crate::scope::Scopes;

/// Decoded `application/x-www-form-urlencoded` parameters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormParams(Vec<(String, String)>);

impl FormParams {
    #[must_use]
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The value of `name`, if present and non-empty.
    ///
    /// RFC 6749 §3.2: "Parameters sent without a value MUST be treated as if they were
    /// omitted from the request" and "Request and response parameters MUST NOT be included
    /// more than once."
    ///
    /// # Errors
    /// `invalid_request` when the parameter appears more than once.
    pub fn optional(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut found = self.0.iter().filter(|(k, _)| k == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
        }
        Ok(first.map(|(_, v)| v.as_str()).filter(|v| !v.is_empty()))
    }

    /// # Errors
    /// `invalid_request` when missing, empty or repeated.
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.optional(name)?.ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is missing")))
    }
}

/// A token request, one variant per supported grant (OAuth 2.1: no implicit, no password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest {
    /// RFC 6749 §4.4.2.
    ClientCredentials { scope: Option<Scopes> },
    /// RFC 6749 §4.1.3 with RFC 7636 §4.5: the verifier is required of every client.
    AuthorizationCode { code: String, redirect_uri: Option<String>, verifier: CodeVerifier },
    /// RFC 6749 §6.
    RefreshToken { refresh_token: String, scope: Option<Scopes> },
}

impl TokenRequest {
    /// # Errors
    /// `invalid_request` for missing/repeated parameters, `unsupported_grant_type` for any
    /// grant this server does not implement, `invalid_scope` for a malformed scope.
    pub fn parse(params: &FormParams) -> Result<Self, OAuthError> {
        let grant = params.required("grant_type")?;
        match GrantType::parse(grant) {
            Some(GrantType::ClientCredentials) => Ok(Self::ClientCredentials { scope: parse_scope(params)? }),
            Some(GrantType::AuthorizationCode) => Ok(Self::AuthorizationCode {
                code: params.required("code")?.to_owned(),
                redirect_uri: params.optional("redirect_uri")?.map(str::to_owned),
                verifier: CodeVerifier::parse(params.required("code_verifier")?)?,
            }),
            Some(GrantType::RefreshToken) => Ok(Self::RefreshToken {
                refresh_token: params.required("refresh_token")?.to_owned(),
                scope: parse_scope(params)?,
            }),
            None => {
                Err(OAuthError::new(ErrorCode::UnsupportedGrantType, "the grant type is not supported by this server"))
            }
        }
    }

    #[must_use]
    pub const fn grant_type(&self) -> GrantType {
        match self {
            Self::ClientCredentials { .. } => GrantType::ClientCredentials,
            Self::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            Self::RefreshToken { .. } => GrantType::RefreshToken,
        }
    }
}

fn parse_scope(params: &FormParams) -> Result<Option<Scopes>, OAuthError> {
    params
        .optional("scope")?
        .map(Scopes::parse)
        .transpose()
        .map_err(|_| OAuthError::new(ErrorCode::InvalidScope, "the scope parameter is malformed"))
}

/// RFC 7662 §2.1 and RFC 7009 §2.1: `token` plus an optional `token_type_hint`, which we
/// may ignore ("If the server is unable to locate the token using the given hint, it MUST
/// extend its search across all of its supported token types").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReference {
    pub token: String,
}

impl TokenReference {
    /// # Errors
    /// `invalid_request` when `token` is missing or a parameter is repeated.
    pub fn parse(params: &FormParams) -> Result<Self, OAuthError> {
        let _hint = params.optional("token_type_hint")?;
        Ok(Self { token: params.required("token")?.to_owned() })
    }
}

/// The value of cookie `name` among a request's `Cookie` header values (RFC 6265 §4.2.1:
/// `name=value` pairs separated by `;`). The first occurrence counts; empty means absent.
pub fn cookie_value<'a>(values: impl IntoIterator<Item = &'a str>, name: &str) -> Option<&'a str> {
    values
        .into_iter()
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> FormParams {
        FormParams::new(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn client_credentials() {
        let r = TokenRequest::parse(&params(&[("grant_type", "client_credentials"), ("scope", "a b")])).unwrap();
        assert_eq!(r, TokenRequest::ClientCredentials { scope: Some(Scopes::parse("a b").unwrap()) });
        let r = TokenRequest::parse(&params(&[("grant_type", "client_credentials"), ("scope", "")])).unwrap();
        assert_eq!(r, TokenRequest::ClientCredentials { scope: None });
    }

    #[test]
    fn errors() {
        let code = |p: &[(&str, &str)]| TokenRequest::parse(&params(p)).unwrap_err().code;
        assert_eq!(code(&[]), ErrorCode::InvalidRequest);
        assert_eq!(code(&[("grant_type", "")]), ErrorCode::InvalidRequest);
        assert_eq!(
            code(&[("grant_type", "client_credentials"), ("grant_type", "client_credentials")]),
            ErrorCode::InvalidRequest
        );
        assert_eq!(code(&[("grant_type", "password")]), ErrorCode::UnsupportedGrantType);
        assert_eq!(code(&[("grant_type", "implicit")]), ErrorCode::UnsupportedGrantType);
        let verifier = "a".repeat(43);
        assert_eq!(code(&[("grant_type", "authorization_code"), ("code", "c")]), ErrorCode::InvalidRequest);
        assert_eq!(
            code(&[("grant_type", "authorization_code"), ("code", "c"), ("code_verifier", "short")]),
            ErrorCode::InvalidRequest
        );
        assert!(
            TokenRequest::parse(&params(&[
                ("grant_type", "authorization_code"),
                ("code", "c"),
                ("code_verifier", &verifier)
            ]))
            .is_ok()
        );
        assert_eq!(code(&[("grant_type", "refresh_token")]), ErrorCode::InvalidRequest);
        assert_eq!(code(&[("grant_type", "client_credentials"), ("scope", "a\"b")]), ErrorCode::InvalidScope);
        assert_eq!(
            code(&[("grant_type", "client_credentials"), ("scope", "a"), ("scope", "b")]),
            ErrorCode::InvalidRequest
        );
    }
}
