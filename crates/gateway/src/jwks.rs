//! Keys of external issuers (Auth0, Keycloak, Cognito, another Portcullis): fetched from
//! their JWKS URL, refreshed in the background, refetched on an unknown `kid` at most once
//! per `min_refetch_interval` (no JWKS storms), and served from cache while the issuer is
//! down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use domain::clock::{Clock, UnixTime};
use domain::jose::Verifier;

use crate::config::IssuerConfig;

/// The largest JWKS document we accept.
const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct ExternalIssuer {
    pub config: IssuerConfig,
    keys: ArcSwap<HashMap<String, Arc<Verifier>>>,
    last_fetch: Mutex<Option<UnixTime>>,
    /// Single-flight: one fetch at a time; requests meeting an unknown kid wait for the
    /// fetch in progress and look again instead of starting their own.
    fetching: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

impl ExternalIssuer {
    #[must_use]
    pub fn new(config: IssuerConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            keys: ArcSwap::from_pointee(HashMap::new()),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            http,
        }
    }

    /// Fetches the key set and swaps it in; on any failure the previous set stays.
    ///
    /// # Errors
    /// A description of what failed (network, status, size, no usable key).
    pub async fn refresh(&self, now: UnixTime) -> Result<usize, String> {
        let _single_flight = self.fetching.lock().await;
        let result = self.fetch(now).await;
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        metrics::counter!("portcullis_jwks_refreshes_total", "issuer" => self.config.issuer.clone(), "result" => outcome)
            .increment(1);
        result
    }

    async fn fetch(&self, now: UnixTime) -> Result<usize, String> {
        if let Ok(mut last) = self.last_fetch.lock() {
            *last = Some(now);
        }
        let response = self
            .http
            .get(&self.config.jwks_uri)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("fetch failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("JWKS answered {}", response.status()));
        }
        if response.content_length().is_some_and(|l| l > MAX_JWKS_BYTES as u64) {
            return Err("JWKS too large".into());
        }
        let body = response.bytes().await.map_err(|e| format!("read failed: {e}"))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("JWKS too large".into());
        }
        let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|_| "JWKS is not JSON".to_owned())?;
        let mut keys = HashMap::new();
        for jwk in doc.get("keys").and_then(serde_json::Value::as_array).into_iter().flatten() {
            if let Ok(verifier) = Verifier::from_external_jwk(jwk, &self.config.algorithms) {
                let kid = jwk.get("kid").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
                keys.insert(kid, Arc::new(verifier));
            }
        }
        if keys.is_empty() {
            return Err("JWKS holds no usable signing key".into());
        }
        let count = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(count)
    }

    /// The verifier for `kid`, refetching the set once if the kid is unknown and the last
    /// fetch is older than `min_refetch_interval`.
    pub async fn verifier(&self, kid: &str, now: UnixTime) -> Option<Arc<Verifier>> {
        if let Some(v) = self.keys.load().get(kid) {
            return Some(v.clone());
        }
        let _single_flight = self.fetching.lock().await;
        // A fetch that was in flight (the startup fetch, another request's) may have it now.
        if let Some(v) = self.keys.load().get(kid) {
            return Some(v.clone());
        }
        let may_refetch = self
            .last_fetch
            .lock()
            .ok()
            .is_some_and(|last| last.is_none_or(|at| now - at >= self.config.min_refetch_interval.as_i64()));
        if !may_refetch {
            return None;
        }
        // `fetch`, not `refresh`: this task already holds the single-flight lock.
        match self.fetch(now).await {
            Ok(n) => {
                tracing::info!(event = "jwks.refetched", issuer = %self.config.issuer, keys = n, "JWKS refetched for an unknown kid")
            }
            Err(e) => {
                tracing::warn!(event = "jwks.refresh_failed", issuer = %self.config.issuer, cause = %e, "JWKS refetch failed")
            }
        }
        self.keys.load().get(kid).cloned()
    }

    /// Background refresh loop; runs until the task is aborted.
    pub async fn run_refresher(self: Arc<Self>, clock: Arc<dyn Clock>) {
        let every = Duration::from_secs(self.config.refresh_interval.0.max(1));
        loop {
            match self.refresh(clock.now()).await {
                Ok(n) => tracing::debug!(issuer = %self.config.issuer, keys = n, "JWKS refreshed"),
                Err(e) => tracing::warn!(
                    event = "jwks.refresh_failed", issuer = %self.config.issuer, cause = %e,
                    "JWKS refresh failed; serving the cached keys"
                ),
            }
            tokio::time::sleep(every).await;
        }
    }
}
