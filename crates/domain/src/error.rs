//! The protocol error of the authorization server (RFC 6749 §5.2, RFC 7009 §2.2.1,
//! RFC 7662 §2.3) and the storage error every port returns.
//!
//! An [`OAuthError`] carries a code from the IANA "OAuth Extensions Error" registry, a
//! description that is safe to show the client, and an internal cause for the log only.
//! The authserver renders it to the wire in exactly one place (`authserver::wire`).

use std::borrow::Cow;
use std::fmt;

/// Error codes of RFC 6749 §5.2 / §4.1.2.1, RFC 7009 §2.2.1, RFC 6750 §3.1, RFC 9449 §5
/// and OpenID Connect Core §3.1.2.6; no others are ever sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    UnsupportedTokenType,
    ServerError,
    TemporarilyUnavailable,
    /// RFC 6749 §4.1.2.1
    AccessDenied,
    UnsupportedResponseType,
    /// OpenID Connect Core §3.1.2.6
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    /// RFC 6750 §3.1 (userinfo)
    InvalidToken,
    InsufficientScope,
    /// RFC 9449 §5, §7.1
    InvalidDpopProof,
    UseDpopNonce,
}

impl ErrorCode {
    /// The registered wire name of the code.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InteractionRequired => "interaction_required",
            Self::RequestNotSupported => "request_not_supported",
            Self::RequestUriNotSupported => "request_uri_not_supported",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error: what the client is told, and (separately) why it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    /// Client-safe text for `error_description` (RFC 6749 §5.2: printable ASCII, no `"` or `\`).
    pub description: Cow<'static, str>,
    /// Internal cause, logged once by the middleware, never sent to the client.
    pub cause: Option<String>,
}

impl OAuthError {
    #[must_use]
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self { code, description: description.into(), cause: None }
    }

    #[must_use]
    pub fn with_cause(mut self, cause: impl fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    #[must_use]
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// The one answer for every client-authentication failure, so that an unknown client id,
    /// a disabled client and a wrong secret cannot be told apart (RFC 6749 §5.2).
    #[must_use]
    pub fn invalid_client() -> Self {
        Self::new(ErrorCode::InvalidClient, "client authentication failed")
    }

    #[must_use]
    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    #[must_use]
    pub fn server_error(cause: impl fmt::Display) -> Self {
        Self::new(ErrorCode::ServerError, "the server could not complete the request").with_cause(cause)
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)?;
        if let Some(cause) = &self.cause {
            write!(f, " ({cause})")?;
        }
        Ok(())
    }
}

impl std::error::Error for OAuthError {}

/// What a storage adapter can report; adapters map their driver errors into these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<StoreError> for OAuthError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => {
                Self::new(ErrorCode::TemporarilyUnavailable, "the server is temporarily unable to handle the request")
                    .with_cause(err)
            }
            StoreError::NotFound | StoreError::Conflict(_) | StoreError::Corrupt(_) => Self::server_error(err),
        }
    }
}
