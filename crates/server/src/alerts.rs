//! Alerts: the anomaly detectors (`domain::anomaly`) run over the audit stream in the audit
//! writer, off the request path; each finding is an `alert.<kind>` audit event. Every
//! audit event marked `alert: true` — the detectors' and the others (a ban, a compromised
//! key, a policy reload that failed, Redis lost) — is also POSTed to the configured
//! webhook: JSON, signed with HMAC-SHA256, retried with backoff.
//!
//! Signature: `X-Portcullis-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//! with `X-Portcullis-Timestamp: <unix seconds>`; a receiver recomputes it and refuses old
//! timestamps (replays).

use std::time::Duration;

use domain::anomaly::{AnomalyRules, Detectors, Rule};
use domain::audit::{AuditEntry, EventFields};
use domain::clock::Clock as _;
use domain::settings::Seconds;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

/// Alerts waiting for the webhook, at most; beyond that they reach only the log and the
/// audit trail.
const WEBHOOK_QUEUE: usize = 1000;

#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretString(pub String);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AlertsConfig {
    /// Run the anomaly detectors.
    pub detectors: bool,
    /// Refused credentials from one address (401/403, bad client secrets, bad passwords).
    pub auth_failures: u32,
    pub auth_failures_window: Seconds,
    /// Failed sign-ins for one account, from any addresses.
    pub failed_logins: u32,
    pub failed_logins_window: Seconds,
    /// Distinct addresses one access token is used from.
    pub addresses_per_token: u32,
    pub addresses_per_token_window: Seconds,
    /// Upstream failures (5xx, unreachable, timeout) on one route.
    pub upstream_errors: u32,
    pub upstream_errors_window: Seconds,
    /// POST every alert here (https in production). Redacted in Debug and errors: chat
    /// webhooks carry their token in the URL.
    pub webhook_url: Option<SecretString>,
    /// Key of the webhook signature.
    pub webhook_secret: Option<SecretString>,
    /// Attempts after the first one, 1 s, 2 s, 4 s, … apart.
    pub webhook_retries: u32,
    pub webhook_timeout: Seconds,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        let d = AnomalyRules::default();
        let secs = |r: Rule| Seconds(u64::try_from(r.window).unwrap_or(60));
        Self {
            detectors: true,
            auth_failures: d.auth_failures_per_address.count,
            auth_failures_window: secs(d.auth_failures_per_address),
            failed_logins: d.failed_logins_per_account.count,
            failed_logins_window: secs(d.failed_logins_per_account),
            addresses_per_token: d.addresses_per_token.count,
            addresses_per_token_window: secs(d.addresses_per_token),
            upstream_errors: d.upstream_errors_per_route.count,
            upstream_errors_window: secs(d.upstream_errors_per_route),
            webhook_url: None,
            webhook_secret: None,
            webhook_retries: 3,
            webhook_timeout: Seconds(5),
        }
    }
}

impl AlertsConfig {
    #[must_use]
    pub fn rules(&self) -> AnomalyRules {
        let rule = |count: u32, window: Seconds| Rule { count: count.max(1), window: window.as_i64().max(1) };
        AnomalyRules {
            auth_failures_per_address: rule(self.auth_failures, self.auth_failures_window),
            failed_logins_per_account: rule(self.failed_logins, self.failed_logins_window),
            addresses_per_token: rule(self.addresses_per_token, self.addresses_per_token_window),
            upstream_errors_per_route: rule(self.upstream_errors, self.upstream_errors_window),
        }
    }

    /// Problems `config check` reports.
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(url) = &self.webhook_url {
            match reqwest::Url::parse(&url.0) {
                Ok(u) if matches!(u.scheme(), "https" | "http") => {}
                _ => problems.push("alerts.webhook_url is not an http(s) URL".to_owned()),
            }
            if self.webhook_secret.as_ref().is_none_or(|s| s.0.len() < 16) {
                problems.push("alerts.webhook_url needs alerts.webhook_secret (16 characters or more)".into());
            }
        }
        problems
    }
}

/// The detectors and the webhook queue; owned by the audit writer.
#[derive(Debug)]
pub struct Alerting {
    detectors: Option<Detectors>,
    webhook: Option<mpsc::Sender<Value>>,
}

impl Alerting {
    /// Starts the webhook sender when configured.
    #[must_use]
    pub fn start(config: &AlertsConfig) -> Self {
        let webhook = match (&config.webhook_url, &config.webhook_secret) {
            (Some(url), Some(secret)) => {
                let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
                let sender = Webhook {
                    url: url.0.clone(),
                    secret: secret.0.clone(),
                    retries: config.webhook_retries,
                    timeout: Duration::from_secs(config.webhook_timeout.0.max(1)),
                };
                tokio::spawn(sender.run(rx));
                Some(tx)
            }
            _ => None,
        };
        Self { detectors: config.detectors.then(|| Detectors::new(config.rules())), webhook }
    }

    /// Feeds one stored event to the detectors (emitting what they find) and sends it to
    /// the webhook if it is an alert.
    pub fn observe(&mut self, entry: &AuditEntry, fields: &dyn EventFields) {
        if fields.is_alert()
            && let Some(tx) = &self.webhook
        {
            let fields: Value = serde_json::from_str(&entry.fields).unwrap_or(Value::Null);
            let payload = serde_json::json!({
                "event": entry.event,
                "at_ms": entry.at_ms,
                "subject": entry.subject,
                "fields": fields,
            });
            if tx.try_send(payload).is_err() {
                tracing::warn!(event = %entry.event, "alert webhook queue full; alert not sent");
            }
        }
        if entry.event.starts_with("alert.") {
            return;
        }
        let Some(detectors) = &mut self.detectors else { return };
        if let Some(a) = detectors.observe(&entry.event, fields, entry.at_ms.div_euclid(1000)) {
            let event = format!("alert.{}", a.kind);
            tracing::warn!(
                target: "portcullis::audit", event = %event, alert = true, key = %a.key, count = a.count,
                window = a.window, "anomaly detected"
            );
        }
    }
}

struct Webhook {
    url: String,
    secret: String,
    retries: u32,
    timeout: Duration,
}

impl Webhook {
    async fn run(self, mut rx: mpsc::Receiver<Value>) {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .build()
            .unwrap_or_default();
        while let Some(payload) = rx.recv().await {
            let body = payload.to_string();
            let mut delay = Duration::from_secs(1);
            for attempt in 0..=self.retries {
                let now = domain::clock::SystemClock.now();
                let signature =
                    domain::secret::hmac_sha256_hex(self.secret.as_bytes(), format!("{now}.{body}").as_bytes());
                let sent = http
                    .post(&self.url)
                    .header("content-type", "application/json")
                    .header("x-portcullis-timestamp", now.to_string())
                    .header("x-portcullis-signature", format!("sha256={signature}"))
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => break,
                    outcome => {
                        let why = outcome.map_or_else(|e| e.to_string(), |r| format!("status {}", r.status()));
                        let last = attempt == self.retries;
                        tracing::warn!(attempt, last, cause = %why, "alert webhook delivery failed");
                        if last {
                            break;
                        }
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_url_and_secret_never_print() {
        let config = AlertsConfig {
            webhook_url: Some(SecretString("https://hooks.example.com/services/T0/B0/tok3n-in-path".into())),
            webhook_secret: Some(SecretString("s3cret-s3cret-s3cret".into())),
            ..AlertsConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("tok3n") && !printed.contains("s3cret"), "{printed}");
        let bad = AlertsConfig { webhook_url: Some(SecretString("ftp://x/tok3n".into())), ..config };
        let problems = bad.problems().join(" ");
        assert!(problems.contains("not an http(s) URL") && !problems.contains("tok3n"), "{problems}");
    }
}
