//! The domain's part of the configuration: issuer and token lifetimes. The server crate
//! deserializes these (with `deny_unknown_fields`) and hands them over already checked.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The issuer identifier (RFC 8414 §2): an `https` URL with no query or fragment, or `http`
/// on a loopback address for local development.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Issuer(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    #[error("issuer {0:?} is not an absolute URL")]
    NotUrl(String),
    #[error(
        "issuer {0:?} must use https; plain http is allowed only on a loopback address \
         (127.0.0.1, [::1] or localhost)"
    )]
    NotHttps(String),
    #[error("issuer {0:?} must not have a query, a fragment or user information (RFC 8414 §2)")]
    ExtraParts(String),
}

impl Issuer {
    /// # Errors
    /// See [`IssuerError`].
    pub fn parse(s: &str) -> Result<Self, IssuerError> {
        let url = url::Url::parse(s).map_err(|_| IssuerError::NotUrl(s.to_owned()))?;
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
            return Err(IssuerError::ExtraParts(s.to_owned()));
        }
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => return Err(IssuerError::NotUrl(s.to_owned())),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(IssuerError::NotHttps(s.to_owned())),
        }
        // The issuer is compared byte for byte with `iss`; keep it as given, minus a trailing
        // slash on a bare origin, so `https://id.example.com/` and `…com` don't both circulate.
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An endpoint URL below the issuer, e.g. `endpoint("/oauth2/token")`.
    #[must_use]
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

impl TryFrom<String> for Issuer {
    type Error = IssuerError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Issuer> for String {
    fn from(i: Issuer) -> Self {
        i.0
    }
}

impl std::fmt::Display for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Token lifetimes and verification tolerances, in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    pub issuer: Issuer,
    /// Default access-token lifetime (15 minutes).
    pub access_token_ttl: u32,
    /// Upper bound for any per-client lifetime; also how long a retired key stays published.
    pub max_access_token_ttl: u32,
    /// Clock leeway for `exp`/`nbf`/`iat` checks.
    pub leeway: u32,
    /// Lifetimes of the sign-in flows.
    pub flow: FlowSettings,
}

/// Lifetimes of codes, refresh tokens, sessions and ID tokens, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSettings {
    /// Authorization codes: single use, short (RFC 6749 §4.1.2 recommends at most 10 min).
    pub code_ttl: i64,
    /// A refresh token dies when unused this long…
    pub refresh_idle_ttl: i64,
    /// …and the whole chain this long after sign-in.
    pub refresh_absolute_ttl: i64,
    /// A rotated refresh token presented again by the same client within this window gets
    /// the same successor back instead of revoking the family.
    pub refresh_grace: i64,
    pub session_idle_ttl: i64,
    pub session_absolute_ttl: i64,
    pub id_token_ttl: i64,
}

impl Default for FlowSettings {
    fn default() -> Self {
        Self {
            code_ttl: 60,
            refresh_idle_ttl: 7 * 86_400,
            refresh_absolute_ttl: 30 * 86_400,
            refresh_grace: 10,
            session_idle_ttl: 8 * 3600,
            session_absolute_ttl: 24 * 3600,
            id_token_ttl: 3600,
        }
    }
}

/// A duration in whole seconds: an integer, or a string such as `"30s"`, `"15m"`, `"2h"`, `"90d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl Seconds {
    #[must_use]
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    #[must_use]
    pub fn as_u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }

    /// Parses `30`, `30s`, `15m`, `2h`, `90d`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().ok()?;
        let factor = match unit.trim() {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        n.checked_mul(factor).map(Self)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Self(n)),
            Raw::Str(s) => Self::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!("invalid duration {s:?} (use e.g. 30s, 15m, 2h, 90d)"))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_rules() {
        assert!(Issuer::parse("https://id.example.com").is_ok());
        assert!(Issuer::parse("http://127.0.0.1:8080").is_ok());
        assert!(Issuer::parse("http://localhost:8080").is_ok());
        assert!(Issuer::parse("http://[::1]:8080").is_ok());
        assert!(matches!(Issuer::parse("http://id.example.com"), Err(IssuerError::NotHttps(_))));
        assert!(matches!(Issuer::parse("http://10.0.0.1"), Err(IssuerError::NotHttps(_))));
        assert!(matches!(Issuer::parse("https://x.example?a=b"), Err(IssuerError::ExtraParts(_))));
        assert!(matches!(Issuer::parse("not a url"), Err(IssuerError::NotUrl(_))));
        assert_eq!(Issuer::parse("https://x.example/").unwrap().as_str(), "https://x.example");
    }
}
