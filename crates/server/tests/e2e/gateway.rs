//! The gateway end to end: a real upstream behind `portcullis serve`. For every rejection
//! the test asserts the status, the `WWW-Authenticate` challenge, and that the upstream
//! never received the request.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::jose;
use domain::keys::{KeyState, MasterKey};

use crate::harness::{Instance, Server, http, post_form, token};
use crate::upstream::{Upstream, raw};

const AUD: &str = "https://api.example.com";

fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[[gateway.routes]]
name = "invoices"
path_prefix = "/api/invoices"
upstreams = ["{upstream}"]
auth = "jwt"
audiences = ["{AUD}"]
scopes_all = ["invoices:read"]

[[gateway.routes]]
name = "admin"
path_prefix = "/admin"
upstreams = ["{upstream}"]
auth = "jwt"
audiences = ["{AUD}"]
scopes_all = ["admin"]

[[gateway.routes]]
name = "public"
path_prefix = "/public"
upstreams = ["{upstream}"]
auth = "none"
{extra}
"#
    )
}

/// Signs arbitrary claims with the server's real active key, read from its data directory
/// (to test claim checks behind a valid signature).
pub async fn forge(instance: &Instance, claims: &serde_json::Value) -> String {
    let key_b64 = std::fs::read_to_string(instance.data_dir().join("master.key")).unwrap();
    let master =
        MasterKey::from_bytes(&base64::engine::general_purpose::STANDARD.decode(key_b64.trim()).unwrap()).unwrap();
    let keys = instance.stores().await.keys.list_keys().await.unwrap();
    let active = keys.iter().find(|k| k.state == KeyState::Active).unwrap();
    jose::sign(&master.signer(active).unwrap(), &active.kid, "at+jwt", claims).unwrap()
}

#[expect(clippy::disallowed_methods, reason = "tests build claims against the wall clock")]
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = http().get(server.gw(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn forwards_verified_identity_and_strips_spoofed_headers() {
    let upstream = Upstream::start(None).await;
    let instance = Instance::new().with_config(&config(&upstream.url(), ""));
    let (id, secret) = instance.create_client("invoices:read invoices:write", AUD);
    let server = instance.serve();
    let t = token(&server, &id, &secret, Some("invoices:read")).await["access_token"].as_str().unwrap().to_owned();

    let resp = http()
        .post(server.gw("/api/invoices/42?expand=lines"))
        .header("authorization", format!("bEaReR {t}"))
        .header("x-portcullis-subject", "admin")
        .header("X-Portcullis-Roles", "superuser")
        .header("x-forwarded-for", "6.6.6.6")
        .header("forwarded", "for=6.6.6.6")
        .header("connection", "close, x-drop-me")
        .header("x-drop-me", "1")
        .body("{\"amount\": 10}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let seen = upstream.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/api/invoices/42");
    assert_eq!(seen.query.as_deref(), Some("expand=lines"));
    assert_eq!(&seen.body[..], b"{\"amount\": 10}");
    assert_eq!(seen.headers["x-portcullis-subject"], id);
    assert_eq!(seen.headers["x-portcullis-client-id"], id);
    assert_eq!(seen.headers["x-portcullis-scopes"], "invoices:read");
    assert_eq!(seen.headers["x-portcullis-roles"], "");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert!(seen.headers["forwarded"].starts_with("for=127.0.0.1;proto=http"));
    // The upstream is addressed by its own name; the client's Host travels only as X-Forwarded-Host.
    assert_eq!(seen.headers["host"], upstream.url().trim_start_matches("http://"));
    assert_eq!(seen.headers["x-forwarded-host"], server.gw("").trim_start_matches("http://"));
    assert!(!seen.headers.contains_key("authorization"), "Authorization is not forwarded by default");
    assert!(!seen.headers.contains_key("x-drop-me"), "Connection-listed headers are hop-by-hop");

    // A route with auth = "none" still strips identity headers.
    let resp = http().get(server.gw("/public/x")).header("x-portcullis-subject", "admin").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!upstream.last().headers.contains_key("x-portcullis-subject"));
}

#[tokio::test]
async fn every_bad_token_is_refused_before_the_upstream() {
    let upstream = Upstream::start(None).await;
    // Dozens of bad tokens from one address would (rightly) ban it; this test is about
    // each token's own answer.
    let instance = Instance::new()
        .with_config(&config(&upstream.url(), ""))
        .with("PORTCULLIS_RATE_LIMIT__BANS", "{ enabled = false }");
    let (id, secret) = instance.create_client("invoices:read", AUD);
    let (other_id, other_secret) = instance.create_client("invoices:read", "https://other.example.com");
    let server = instance.serve();
    let good = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = good.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let enc = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let jwks: serde_json::Value = http().get(server.url("/oauth2/jwks")).send().await.unwrap().json().await.unwrap();

    let mut bad: Vec<(String, String)> = Vec::new();
    for none in ["none", "None", "NONE", "nOnE"] {
        let h = serde_json::json!({"alg": none, "typ": "at+jwt", "kid": kid});
        bad.push((format!("alg {none}"), format!("{}.{}.", enc(&h), parts[1])));
        bad.push((format!("alg {none} with signature"), format!("{}.{}.{}", enc(&h), parts[1], parts[2])));
    }
    let hs = serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let input = format!("{}.{}", enc(&hs), parts[1]);
    let mac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, jwks["keys"][0].to_string().as_bytes()),
        input.as_bytes(),
    );
    bad.push(("HS256 with public key".into(), format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))));
    let mut h = header.clone();
    h["kid"] = "unknown".into();
    bad.push(("unknown kid".into(), format!("{}.{}.{}", enc(&h), parts[1], parts[2])));
    for (name, value) in [
        ("jwk", jwks["keys"][0].clone()),
        ("jku", "https://evil.example/jwks".into()),
        ("x5u", "https://evil.example/c".into()),
    ] {
        let mut h = header.clone();
        h[name] = value;
        bad.push((format!("embedded {name}"), format!("{}.{}.{}", enc(&h), parts[1], parts[2])));
    }
    bad.push(("stripped signature".into(), format!("{}.{}.", parts[0], parts[1])));
    let other = token(&server, &other_id, &other_secret, None).await["access_token"].as_str().unwrap().to_owned();
    bad.push(("foreign signature".into(), format!("{}.{}.{}", parts[0], parts[1], other.split('.').nth(2).unwrap())));
    let mut tampered = payload.clone();
    tampered["scope"] = "invoices:read admin".into();
    bad.push(("tampered payload".into(), format!("{}.{}.{}", parts[0], enc(&tampered), parts[2])));
    bad.push(("wrong audience".into(), other));
    let base = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = payload.clone();
        f(&mut c);
        c
    };
    bad.push(("expired".into(), forge(&instance, &base(&|c| c["exp"] = (now() - 120).into())).await));
    bad.push(("future nbf".into(), forge(&instance, &base(&|c| c["nbf"] = (now() + 600).into())).await));
    bad.push(("future iat".into(), forge(&instance, &base(&|c| c["iat"] = (now() + 600).into())).await));
    bad.push(("wrong iss".into(), forge(&instance, &base(&|c| c["iss"] = "https://evil.example".into())).await));
    bad.push(("huge".into(), "a".repeat(20_000)));
    bad.push(("garbage".into(), "garbage".into()));

    for (name, t) in &bad {
        let resp = get(&server, "/api/invoices", Some(t)).await;
        assert_eq!(resp.status(), 401, "{name}");
        assert_eq!(
            challenge(&resp),
            r#"Bearer realm="portcullis", error="invalid_token", error_description="the access token is invalid""#,
            "{name}"
        );
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }

    // No credentials: a challenge without an error code (RFC 6750 §3.1), offering both
    // token schemes (RFC 9449 §7.1).
    let resp = get(&server, "/api/invoices", None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(challenge(&resp), r#"Bearer realm="portcullis", DPoP realm="portcullis""#);
    // Query-string tokens are refused unless the route opts in.
    let resp = http().get(server.gw(&format!("/api/invoices?access_token={good}"))).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(challenge(&resp).contains("invalid_request"));
    // Valid token, missing scope.
    let resp = get(&server, "/admin", Some(&good)).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(challenge(&resp), r#"Bearer realm="portcullis", error="insufficient_scope", scope="admin""#);
    // Revoked: refused at once.
    assert_eq!(get(&server, "/api/invoices", Some(&good)).await.status(), 200);
    let seen_before = upstream.count();
    post_form(&server.url("/oauth2/revoke"), &id, &secret, &[("token", &good)]).await;
    assert_eq!(get(&server, "/api/invoices", Some(&good)).await.status(), 401, "revoked token served from cache");
    assert_eq!(upstream.count(), seen_before, "no rejected request reached the upstream");
    assert_eq!(seen_before, 1);
}

#[tokio::test]
async fn path_tricks_smuggling_and_limits() {
    let upstream = Upstream::start(None).await;
    let extra = "[[gateway.routes]]\nname = \"small\"\npath_prefix = \"/small\"\nupstreams = [\"UP\"]\nauth = \"none\"\nbody_limit = 16\n";
    let instance = Instance::new().with_config(&config(&upstream.url(), &extra.replace("UP", &upstream.url())));
    let server = instance.serve();
    let gw = server.gateway.clone().unwrap();
    let host = gw.trim_start_matches("http://").to_owned();
    let req = |line: &str| format!("GET {line} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");

    for path in
        ["/admin", "/Admin", "/ADMIN/x", "//admin", "/public/../admin", "/public/./../admin/", "/%61dmin", "/%41DMIN"]
    {
        let (status, text) = raw(&gw, req(path).as_bytes()).await;
        assert_eq!(status, 401, "{path} must hit the admin rule: {text}");
    }
    for path in [
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/%2fadmin",
        "/public\\..\\admin",
        "/public/%5cadmin",
        "/public/%00",
    ] {
        let (status, _) = raw(&gw, req(path).as_bytes()).await;
        assert_eq!(status, 400, "{path}");
    }
    let (status, _) = raw(&gw, req("/public/ok/../fine").as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.last().path, "/public/fine", "the upstream sees the normalised path");

    // CL + TE: hyper lets Transfer-Encoding win and closes the connection after answering
    // (RFC 9112 §6.3); the gateway re-frames the upstream request with an exact length. The
    // request hidden in the body must never be processed as a second request.
    let smuggle = format!(
        "POST /public/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let (status, text) = raw(&gw, smuggle.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "exactly one response on that connection: {text}");
    let seen: Vec<String> = upstream.seen.lock().unwrap().iter().map(|s| s.path.clone()).collect();
    assert!(!seen.iter().any(|p| p.contains("smuggled")), "smuggled request reached the upstream: {seen:?}");
    let last = upstream.last();
    assert!(last.body.is_empty() && !last.headers.contains_key("transfer-encoding"), "re-framed: {last:?}");
    assert!(last.headers.get("content-length").is_none_or(|v| v == "0"));
    let count = upstream.count();
    let two = format!(
        "POST /public/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 4\r\nContent-Length: 5\r\nConnection: close\r\n\r\nabcde"
    );
    assert_eq!(raw(&gw, two.as_bytes()).await.0, 400, "two Content-Lengths");
    let big = http().post(server.gw("/small")).body(vec![b'x'; 17]).send().await.unwrap();
    assert_eq!(big.status(), 413);
    let chunked = format!(
        "POST /small HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n20\r\n{}\r\n0\r\n\r\n",
        "y".repeat(32)
    );
    assert_eq!(raw(&gw, chunked.as_bytes()).await.0, 413, "chunked bodies are limited too");
    let huge_header = format!(
        "GET /public/x HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "h".repeat(1024 * 1024)
    );
    let (status, _) = raw(&gw, huge_header.as_bytes()).await;
    assert!(status == 431 || status == 400 || status == 0, "oversized headers refused, got {status}");
    assert_eq!(upstream.count(), count, "none of these reached the upstream");
    let ok = http().post(server.gw("/small")).body(vec![b'x'; 16]).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(http().get(server.gw("/nowhere")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let slow = Upstream::start(Some(Duration::from_secs(5))).await;
    // Held, never listening: connections are refused for the whole test (a dropped probe
    // listener's port can be handed to another test's server meanwhile, which answered 404).
    let held = crate::harness::reserve_port();
    let closed = format!("127.0.0.1:{}", held.port);
    let toml = format!(
        "[[gateway.routes]]\nname = \"down\"\npath_prefix = \"/down\"\nupstreams = [\"http://{closed}\"]\nauth = \"none\"\n\
         [[gateway.routes]]\nname = \"slow\"\npath_prefix = \"/slow\"\nupstreams = [\"{}\"]\nauth = \"none\"\nrequest_timeout = \"1s\"\n",
        slow.url()
    );
    let instance = Instance::new().with_config(&toml);
    let server = instance.serve();
    let resp = http().get(server.gw("/down")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let started = std::time::Instant::now();
    let resp = http().get(server.gw("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(4), "answered at the timeout, not when the upstream finished");
}

#[tokio::test]
async fn cors_preflights_and_security_headers() {
    let upstream = Upstream::start(None).await;
    let cors = r#"
[[gateway.routes]]
name = "spa"
path_prefix = "/spa"
methods = ["GET", "PUT"]
upstreams = ["UPSTREAM"]
auth = "jwt"
audiences = ["https://api.example.com"]
[gateway.routes.cors]
allowed_origins = ["https://app.example.com"]
allowed_methods = ["GET", "PUT"]
allowed_headers = ["authorization", "content-type"]
expose_headers = ["x-request-id"]
allow_credentials = true
max_age = "5m"

[[gateway.routes]]
name = "read-only"
path_prefix = "/readonly"
methods = ["GET"]
upstreams = ["UPSTREAM"]
auth = "none"
"#
    .replace("UPSTREAM", &upstream.url());
    let instance = Instance::new().with_config(&config(&upstream.url(), &cors));
    let (id, secret) = instance.create_client("invoices:read", AUD);
    let server = instance.serve();
    let t = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();

    // The preflight is answered by the gateway: no credentials needed, upstream untouched.
    let preflight = |origin: &str, method: &str, headers: &str| {
        let mut req = http()
            .request(reqwest::Method::OPTIONS, server.gw("/spa/items"))
            .header("origin", origin)
            .header("access-control-request-method", method);
        if !headers.is_empty() {
            req = req.header("access-control-request-headers", headers);
        }
        req.send()
    };
    let resp = preflight("https://app.example.com", "PUT", "authorization, content-type").await.unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "authorization, content-type");
    assert_eq!(h["access-control-max-age"], "300");
    assert_eq!(h["vary"], "Origin");
    for (origin, method, headers) in [
        ("https://evil.example", "PUT", ""),
        ("https://app.example.com.evil.example", "GET", ""),
        ("null", "GET", ""),
        ("https://app.example.com", "DELETE", ""),
        ("https://app.example.com", "GET", "x-portcullis-subject"),
    ] {
        let resp = preflight(origin, method, headers).await.unwrap();
        assert!(resp.status() == 403 || resp.status() == 405, "{origin} {method} {headers}: {}", resp.status());
        assert!(resp.headers().get("access-control-allow-origin").is_none());
    }
    // On a route without CORS, a preflight-shaped OPTIONS is matched on OPTIONS itself.
    let resp = http()
        .request(reqwest::Method::OPTIONS, server.gw("/readonly/x"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405, "OPTIONS cannot borrow the GET route");
    assert_eq!(upstream.count(), 0, "preflights never reach the upstream");

    // Actual requests: CORS headers for the allowed origin, on errors too.
    let resp = http().get(server.gw("/spa/items")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example.com");
    let resp = http()
        .get(server.gw("/spa/items"))
        .header("origin", "https://app.example.com")
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(resp.headers()["access-control-expose-headers"], "x-request-id");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert!(resp.headers().get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    let resp =
        http().get(server.gw("/spa/items")).header("origin", "https://evil.example").bearer_auth(&t).send().await;
    assert!(resp.unwrap().headers().get("access-control-allow-origin").is_none());

    // A route without CORS config sends no CORS headers at all.
    let resp = http().get(server.gw("/public/x")).header("origin", "https://app.example.com").send().await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn json_schema_validates_request_bodies_before_the_upstream() {
    let upstream = Upstream::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("payment.schema.json");
    std::fs::write(
        &schema,
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["amount", "currency"],
  "additionalProperties": false,
  "properties": {
    "amount": { "type": "integer", "minimum": 1 },
    "currency": { "enum": ["EUR", "USD"] }
  }
}"#,
    )
    .unwrap();
    let extra = format!(
        r#"
[[gateway.routes]]
name = "payments"
path_prefix = "/payments"
upstreams = ["{}"]
auth = "none"
body_limit = 1024
json_schema = "{}"
"#,
        upstream.url(),
        schema.display()
    );
    let instance = Instance::new().with_config(&config(&upstream.url(), &extra));
    let server = instance.serve();
    let post = |body: &'static str, ctype: &'static str| {
        let url = server.gw("/payments");
        async move { http().post(url).header("content-type", ctype).body(body).send().await.unwrap() }
    };

    let ok = post(r#"{"amount": 12, "currency": "EUR"}"#, "application/json").await;
    assert_eq!(ok.status(), 200);
    assert_eq!(upstream.last().body.as_ref(), br#"{"amount": 12, "currency": "EUR"}"#, "forwarded unchanged");
    let before = upstream.count();

    let bad = post(r#"{"amount": 0, "currency": "GBP", "admin": true}"#, "application/json").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = bad.json().await.unwrap();
    let pointers: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["pointer"].as_str().unwrap()).collect();
    assert!(pointers.contains(&"/amount") && pointers.contains(&"/currency"), "{problem}");
    assert!(pointers.contains(&""), "the unknown field is reported at the object: {problem}");
    assert!(problem["detail"].as_str().unwrap().contains("invalid"), "{problem}");

    assert_eq!(post("{not json", "application/json").await.status(), 400);
    assert_eq!(post(r#"{"amount": 1, "currency": "EUR"}"#, "text/plain").await.status(), 415);
    let big =
        Box::leak(format!(r#"{{"amount": 1, "currency": "EUR", "pad": "{}"}}"#, "x".repeat(2000)).into_boxed_str());
    assert_eq!(post(big, "application/json").await.status(), 413);
    assert_eq!(upstream.count(), before, "no invalid body reached the upstream");

    // A broken schema is a configuration error, reported by `config check`.
    std::fs::write(&schema, r#"{"type": 12}"#).unwrap();
    let out = instance.cli(&["config", "check"]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("invalid JSON Schema"), "{}", out.stderr);
}
