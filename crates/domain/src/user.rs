//! People who sign in: the stored user record, its validation, and the claims it yields
//! (OpenID Connect Core §5.1 standard claims; RFC 9068 §2.2.3.1 `roles`/`groups`).

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::scope::Scopes;

/// A user as stored. The password exists only as an argon2id PHC string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Stable, opaque subject identifier (`sub`); never reused.
    pub id: String,
    /// Login name, lowercase; unique.
    pub username: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// Display name (`name` claim).
    pub name: Option<String>,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub groups: Vec<String>,
    /// Free-form attributes (a JSON object) for policies and claims.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub disabled: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("username must be 1 to 64 characters of a-z, 0-9, '.', '_', '-', '@'")]
    BadUsername,
    #[error("email address {0:?} is not valid")]
    BadEmail(String),
    #[error("role or group name {0:?} is not valid (1 to 64 printable characters, no spaces)")]
    BadName(String),
    #[error("attributes must be a JSON object")]
    BadAttributes,
}

/// Normalises a login name: trimmed, lowercase, from a small alphabet (no look-alikes).
///
/// # Errors
/// [`UserError::BadUsername`].
pub fn normalize_username(raw: &str) -> Result<String, UserError> {
    let name = raw.trim().to_ascii_lowercase();
    let ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '@'));
    if ok { Ok(name) } else { Err(UserError::BadUsername) }
}

/// A minimal syntactic check; ownership is proven elsewhere (`email_verified`).
///
/// # Errors
/// [`UserError::BadEmail`].
pub fn check_email(email: &str) -> Result<String, UserError> {
    let e = email.trim();
    let valid = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    if valid { Ok(e.to_owned()) } else { Err(UserError::BadEmail(email.to_owned())) }
}

/// Role and group names: what a policy compares against, so no spaces or controls.
///
/// # Errors
/// [`UserError::BadName`].
pub fn check_names(names: &[String]) -> Result<Vec<String>, UserError> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for n in names {
        let n = n.trim();
        if n.is_empty() || n.len() > 64 || n.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"') {
            return Err(UserError::BadName(n.to_owned()));
        }
        if !out.iter().any(|o| o == n) {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

impl User {
    /// Standard claims released for the granted scopes (OIDC Core §5.4): `profile` gives
    /// `name`, `preferred_username`, `updated_at`; `email` gives `email`, `email_verified`.
    #[must_use]
    pub fn claims(&self, scope: &Scopes) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), Value::String(self.id.clone()));
        if scope.contains("profile") {
            claims.insert("preferred_username".into(), Value::String(self.username.clone()));
            if let Some(name) = &self.name {
                claims.insert("name".into(), Value::String(name.clone()));
            }
            claims.insert("updated_at".into(), Value::from(self.updated_at));
        }
        if let Some(email) = self.email.as_ref().filter(|_| scope.contains("email")) {
            claims.insert("email".into(), Value::String(email.clone()));
            claims.insert("email_verified".into(), Value::Bool(self.email_verified));
        }
        claims
    }
}

/// A user id: 128 random bits, base64url ([`crate::secret::random_id`]: never starting
/// with `-`, so `user`/`incident` commands take it as a value).
#[must_use]
pub fn new_user_id() -> String {
    crate::secret::random_id(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalised_and_restricted() {
        assert_eq!(normalize_username(" Alice ").unwrap(), "alice");
        assert_eq!(normalize_username("a.b-c_d@x").unwrap(), "a.b-c_d@x");
        assert!(normalize_username("").is_err());
        assert!(normalize_username("al ice").is_err());
        assert!(normalize_username("аlice").is_err(), "cyrillic look-alike");
        assert!(normalize_username(&"a".repeat(65)).is_err());
    }

    #[test]
    fn emails_and_names() {
        assert!(check_email("a@example.com").is_ok());
        assert!(check_email("a@localhost").is_err());
        assert!(check_email("<a>@x.y").is_err());
        assert_eq!(check_names(&["editor".into(), "editor".into()]).unwrap(), vec!["editor".to_owned()]);
        assert!(check_names(&["a b".into()]).is_err());
    }

    #[test]
    fn claims_follow_scope() {
        let user = User {
            id: "u1".into(),
            username: "alice".into(),
            email: Some("a@example.com".into()),
            email_verified: false,
            name: Some("Alice".into()),
            password_hash: String::new(),
            roles: vec![],
            groups: vec![],
            attributes: serde_json::Map::new(),
            disabled: false,
            created_at: 1,
            updated_at: 2,
        };
        let c = user.claims(&Scopes::parse("openid").unwrap());
        assert_eq!(c.len(), 1);
        let c = user.claims(&Scopes::parse("openid profile email").unwrap());
        assert_eq!(c["preferred_username"], "alice");
        assert_eq!(c["email"], "a@example.com");
        assert_eq!(c["email_verified"], false);
    }
}
