//! Anomaly alerts end to end: normal traffic raises none; a burst of bad client secrets
//! from one address raises `alert.auth_failure_spike` in the audit trail and POSTs it to
//! the webhook, signed (HMAC-SHA256 over timestamp and body) and retried after a failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};

use crate::harness::{Instance, post_form, token};

const SECRET: &str = "webhook-secret-for-the-test-0123";

type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A webhook receiver that answers 500 to the first delivery and 204 afterwards.
async fn receiver() -> (String, Received, Arc<AtomicUsize>) {
    let received: Received = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (r, c) = (received.clone(), calls.clone());
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (r, c) = (r.clone(), c.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                r.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received, calls)
}

fn alerts(instance: &Instance) -> Vec<serde_json::Value> {
    let out = instance.cli(&["audit", "search", "--event", "alert.", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    out.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn a_burst_of_bad_secrets_raises_one_signed_retried_alert_and_normal_traffic_none() {
    let (url, received, calls) = receiver().await;
    let config = format!(
        "[alerts]\nauth_failures = 5\nauth_failures_window = \"60s\"\nwebhook_url = \"{url}\"\n\
         webhook_secret = \"{SECRET}\"\nwebhook_retries = 2\n"
    );
    let instance = Instance::new().with_config(&config);
    let (id, secret) = instance.create_client("invoices:read", "https://api.example.com");
    let server = instance.serve();

    for _ in 0..15 {
        token(&server, &id, &secret, None).await;
    }
    let wrong = post_form(&server.url("/oauth2/token"), &id, "wrong", &[("grant_type", "client_credentials")]).await;
    assert_eq!(wrong.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alerts(&instance).is_empty(), "normal traffic and one typo raise no alert");

    for _ in 0..6 {
        post_form(&server.url("/oauth2/token"), &id, "guess", &[("grant_type", "client_credentials")]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let delivered = loop {
        let got = received.lock().unwrap().clone();
        if let Some(d) = got.into_iter().find(|(_, b)| b.contains("alert.auth_failure_spike")) {
            break d;
        }
        assert!(Instant::now() < deadline, "no webhook delivery; {} call(s)", calls.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(calls.load(Ordering::SeqCst) >= 2, "the first delivery failed and was retried");
    let (headers, body) = delivered;
    let ts = headers["x-portcullis-timestamp"].to_str().unwrap();
    let expected = domain::secret::hmac_sha256_hex(SECRET.as_bytes(), format!("{ts}.{body}").as_bytes());
    assert_eq!(headers["x-portcullis-signature"].to_str().unwrap(), format!("sha256={expected}"));
    let payload: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(payload["fields"]["key"], "127.0.0.1");
    assert_eq!(payload["fields"]["count"], 5);
    assert!(!body.contains("guess") && !body.contains(&secret), "no secret in an alert");

    let stored = alerts(&instance);
    let spikes: Vec<_> = stored.iter().filter(|a| a["event"] == "alert.auth_failure_spike").collect();
    assert_eq!(spikes.len(), 1, "one alert per window, not one per failure: {stored:#?}");
}
