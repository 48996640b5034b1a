//! TLS end to end: `portcullis tls dev-cert`, both listeners over HTTPS (HTTP/2 and
//! HTTP/1.1), HSTS and security headers, the redirect-only plain listener, refusal of
//! plain HTTP on the TLS port, and certificate hot reload without a restart.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use crate::harness::{Instance, http, listening};
use crate::upstream::Upstream;

fn client(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec()
}

#[tokio::test]
async fn https_listeners_hsts_redirect_and_hot_reload() {
    let upstream = Upstream::start(None).await;
    let instance = Instance::new();
    let tls_dir = instance.data_dir().join("certs");
    let out = instance.cli(&["tls", "dev-cert", "--out", tls_dir.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("[tls]"), "{}", out.stdout);
    let (cert, key) = (tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let instance = instance.with_config(&format!(
        r#"
[tls]
cert_file = "{}"
key_file = "{}"
reload_interval = "1s"
redirect_listen = "127.0.0.1:0"
redirect_https_port = 8443

[[gateway.routes]]
path_prefix = "/public"
upstreams = ["{}"]
auth = "none"
"#,
        cert.display(),
        key.display(),
        upstream.url()
    ));
    let server = instance.serve();
    assert!(server.issuer.starts_with("https://127.0.0.1:"), "the default issuer is https: {}", server.issuer);
    let first_pem = std::fs::read(&cert).unwrap();
    let https = client(&first_pem);

    // The authorization server over HTTPS, with HSTS and the security headers.
    let resp = https.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "h2 negotiated by ALPN");
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.headers()["referrer-policy"], "no-referrer");
    let disco: serde_json::Value =
        https.get(server.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(disco["token_endpoint"], format!("{}/oauth2/token", server.issuer));

    // The gateway over HTTPS (HTTP/1.1 too).
    let h1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&first_pem).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let resp = h1.get(server.gw("/public/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");

    // Plain HTTP on the TLS port is not served.
    let plain = server.url("/healthz").replacen("https://", "http://", 1);
    assert!(http().get(&plain).timeout(Duration::from_secs(5)).send().await.is_err());

    // The redirect listener only redirects (308 keeps method and body).
    let redirect = listening(&server.logs(), "redirect listening").unwrap();
    let resp = http().post(format!("http://{redirect}/oauth2/token?x=1")).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "https://127.0.0.1:8443/oauth2/token?x=1");
    assert!(resp.headers().get("strict-transport-security").is_none(), "no HSTS over plain HTTP (RFC 6797 §7.2)");

    // Hot reload: a new certificate is served without a restart; a broken pair is ignored.
    let first_der = peer_cert(&https.get(server.url("/healthz")).send().await.unwrap());
    std::fs::write(&key, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = client(&first_pem).get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(peer_cert(&still), first_der, "a broken pair keeps the old certificate");
    let out = instance.cli(&["tls", "dev-cert", "--out", tls_dir.to_str().unwrap()]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let second_pem = std::fs::read(&cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // A fresh client each time: a pooled connection would keep the old handshake.
        if let Ok(resp) = client(&second_pem).get(server.url("/healthz")).send().await {
            assert_ne!(peer_cert(&resp), first_der);
            break;
        }
        assert!(Instant::now() < deadline, "the new certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.logs_once("tls.reloaded").iter().any(|l| l.contains("tls.reloaded")));
    assert!(server.logs().iter().any(|l| l.contains("tls.reload_failed")));
    assert_eq!(server.stop(), 0);
}

#[test]
fn a_missing_certificate_fails_startup_clearly() {
    let instance = Instance::new()
        .with_config("[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n");
    let out = instance.cli(&["serve"]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("/nonexistent/cert.pem"), "{}", out.stderr);
    let out = Instance::new().with_config("[tls]\ncert_file = \"c.pem\"\n").cli(&["config", "check"]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("cert_file and key_file"), "{}", out.stderr);
}
