//! Scopes (RFC 6749 §3.3): parsing and the subset rule of the token endpoint.

use std::collections::BTreeSet;
use std::fmt;

use crate::error::OAuthError;

/// An ordered set of scope tokens. Ordered so that the `scope` claim is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scopes(BTreeSet<String>);

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope token {0:?}")]
pub struct ScopeParseError(pub String);

impl Scopes {
    /// Parses a space-delimited scope string.
    ///
    /// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`, tokens separated by
    /// single spaces. Repeated spaces are tolerated; any other character is refused.
    ///
    /// # Errors
    /// A token with a character outside the allowed set.
    pub fn parse(s: &str) -> Result<Self, ScopeParseError> {
        let mut set = BTreeSet::new();
        for token in s.split(' ').filter(|t| !t.is_empty()) {
            let valid = token.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
            if !valid {
                return Err(ScopeParseError(token.chars().take(64).collect()));
            }
            set.insert(token.to_owned());
        }
        Ok(Self(set))
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[must_use]
    pub fn is_subset(&self, other: &Self) -> bool {
        self.0.is_subset(&other.0)
    }

    #[must_use]
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Every scope of either set.
    #[must_use]
    pub fn union(&self, other: &Self) -> Self {
        Self(self.0.union(&other.0).cloned().collect())
    }

    /// The scopes granted for a request: the requested ones when they are a subset of the
    /// allowed ones, the defaults when none were requested.
    ///
    /// # Errors
    /// `invalid_scope` when a requested scope is not allowed (RFC 6749 §5.2).
    pub fn grant(requested: Option<&Self>, allowed: &Self, default: &Self) -> Result<Self, OAuthError> {
        match requested {
            Some(req) if !req.is_empty() => {
                if req.is_subset(allowed) {
                    Ok(req.clone())
                } else {
                    Err(OAuthError::new(
                        crate::error::ErrorCode::InvalidScope,
                        "the requested scope exceeds the scope granted to the client",
                    ))
                }
            }
            _ => Ok(default.clone()),
        }
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
            first = false;
        }
        Ok(())
    }
}

impl TryFrom<String> for Scopes {
    type Error = ScopeParseError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Scopes> for String {
    fn from(s: Scopes) -> Self {
        s.to_string()
    }
}

impl std::str::FromStr for Scopes {
    type Err = ScopeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn parses_and_orders() {
        let s = Scopes::parse("b  a c").unwrap();
        assert_eq!(s.to_string(), "a b c");
    }

    #[test]
    fn refuses_quote_backslash_and_control() {
        for bad in ["a\"b", "a\\b", "a\tb", "é"] {
            assert!(Scopes::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grant_rules() {
        let allowed = Scopes::parse("invoices:read invoices:write").unwrap();
        let default = Scopes::parse("invoices:read").unwrap();
        let req = Scopes::parse("invoices:write").unwrap();
        assert_eq!(Scopes::grant(Some(&req), &allowed, &default).unwrap(), req);
        assert_eq!(Scopes::grant(None, &allowed, &default).unwrap(), default);
        let too_much = Scopes::parse("admin").unwrap();
        let err = Scopes::grant(Some(&too_much), &allowed, &default).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
    }
}
