//! The `[dpop]` section and the DPoP checker it builds (RFC 9449): accepted proof
//! algorithms, proof lifetime, server nonces per endpoint, and the proof-replay cache — in
//! memory on one instance, in Redis (`[redis]`) when several must refuse each other's
//! replays.

use std::sync::Arc;
use std::time::Duration;

use domain::clock::Clock;
use domain::dpop::{Dpop, DpopSettings, ReplayCache};
use domain::jose::Algorithm;
use domain::keys::MasterKey;
use domain::settings::Seconds;
use serde::Deserialize;

/// Live proofs one instance remembers at most (each entry ~100 bytes); past it new
/// proofs are refused rather than a replay risked.
const MEMORY_REPLAY_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpopConfig {
    /// Proof signing algorithms accepted (`dpop_signing_alg_values_supported`).
    pub algorithms: Vec<Algorithm>,
    /// How old a proof may be (its `iat`); each proof is accepted once within it.
    pub proof_lifetime: Seconds,
    /// Clock skew allowed between clients and this server.
    pub leeway: Seconds,
    /// Require a server-issued nonce in proofs at the token endpoint (RFC 9449 §8).
    pub nonce_at_token_endpoint: bool,
    /// Require a server-issued nonce in proofs at userinfo and the gateway (§9); costs
    /// clients one extra round trip per nonce period.
    pub nonce_at_resources: bool,
    /// How long one server nonce is valid (accepted for one more period after).
    pub nonce_lifetime: Seconds,
    /// `scheme://host[:port]` clients use to reach the gateway when a proxy in front of it
    /// changes scheme or host: proofs' `htu` is checked against it. Default: the gateway
    /// listener's own scheme and the request's `Host`.
    pub gateway_public_origin: Option<String>,
}

impl Default for DpopConfig {
    fn default() -> Self {
        Self {
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256],
            proof_lifetime: Seconds(60),
            leeway: Seconds(5),
            nonce_at_token_endpoint: false,
            nonce_at_resources: false,
            nonce_lifetime: Seconds(300),
            gateway_public_origin: None,
        }
    }
}

impl DpopConfig {
    /// Every problem with the section.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.algorithms.is_empty() {
            errors.push("dpop.algorithms must name at least one algorithm".to_owned());
        }
        if self.proof_lifetime.0 == 0 || self.proof_lifetime.0 > 600 {
            errors.push("dpop.proof_lifetime must be between 1 s and 10 min".to_owned());
        }
        if self.nonce_lifetime.0 == 0 {
            errors.push("dpop.nonce_lifetime must be positive".to_owned());
        }
        if let Some(origin) = &self.gateway_public_origin {
            // Already in normal form (lowercase, no default port), so it prefixes paths as is.
            if domain::dpop::normalize_htu(origin) != Some(format!("{origin}/")) {
                errors.push(format!(
                    "dpop.gateway_public_origin must be a normalized scheme://host[:port] (lowercase, no default port, \
                     no path or trailing slash), got {origin:?}"
                ));
            }
        }
        errors
    }

    /// The checker, with its replay cache.
    ///
    /// # Errors
    /// The Redis URL is unusable.
    pub fn build(
        &self,
        master: &MasterKey,
        redis: Option<(&str, &str, Duration)>,
        clock: Arc<dyn Clock>,
    ) -> Result<Dpop, String> {
        let replay: Arc<dyn ReplayCache> = match redis {
            Some((url, prefix, timeout)) => Arc::new(store::RedisReplayCache::new(url, prefix, timeout)?),
            None => Arc::new(store::MemoryReplayCache::new(MEMORY_REPLAY_ENTRIES, clock.clone())),
        };
        let settings = DpopSettings {
            algorithms: self.algorithms.clone(),
            proof_lifetime: i64::try_from(self.proof_lifetime.0).unwrap_or(60),
            leeway: i64::try_from(self.leeway.0).unwrap_or(5),
            nonce_lifetime: i64::try_from(self.nonce_lifetime.0).unwrap_or(300),
        };
        Ok(Dpop::new(settings, master.dpop_nonces(), replay, clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported() {
        assert!(DpopConfig::default().problems().is_empty());
        let bad = DpopConfig {
            algorithms: vec![],
            proof_lifetime: Seconds(0),
            nonce_lifetime: Seconds(0),
            gateway_public_origin: Some("https://API.example.com/".into()),
            ..DpopConfig::default()
        };
        assert_eq!(bad.problems().len(), 4, "{:?}", bad.problems());
        for ok in ["https://api.example.com", "http://127.0.0.1:8081"] {
            let c = DpopConfig { gateway_public_origin: Some(ok.into()), ..DpopConfig::default() };
            assert!(c.problems().is_empty(), "{ok}");
        }
        for bad in ["https://api.example.com:443", "https://api.example.com/v1", "ftp://x", "api.example.com"] {
            let c = DpopConfig { gateway_public_origin: Some(bad.into()), ..DpopConfig::default() };
            assert_eq!(c.problems().len(), 1, "{bad}");
        }
    }
}
