//! Rate limits and bans end to end: 429s with `Retry-After`, `RateLimit` headers and a
//! problem+json body on both listeners; per-client keys and plans on gateway routes; bans
//! after repeated failures (and `portcullis ban list / remove`); trusted proxies; two
//! processes sharing one limit through Redis; Redis down in both fail modes.

use std::time::{Duration, Instant};

use crate::harness::{Browser, Instance, PASSWORD, Server, http, post_form, token, urlencode};
use crate::upstream::Upstream;

const AUD: &str = "https://api.example.com";

fn route(upstream: &str, auth: &str, limits: &str) -> String {
    let audiences = if auth == "jwt" { format!("audiences = [\"{AUD}\"]") } else { String::new() };
    format!(
        r#"
[[gateway.routes]]
name = "api"
path_prefix = "/api"
upstreams = ["{upstream}"]
auth = "{auth}"
{audiences}
{limits}
"#
    )
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// Checks a 429: `Retry-After` in whole seconds, a problem+json body.
async fn assert_429(resp: reqwest::Response) -> (u64, String) {
    assert_eq!(resp.status(), 429);
    let retry: u64 = header(&resp, "retry-after").parse().expect("Retry-After in seconds");
    assert!(retry >= 1);
    assert_eq!(header(&resp, "content-type"), "application/problem+json");
    let policy = header(&resp, "ratelimit-policy");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], 429);
    (retry, policy)
}

#[tokio::test]
async fn the_token_endpoint_is_limited_by_default_and_by_config() {
    // Default limits announce themselves on successful responses.
    let instance = Instance::new();
    let (id, secret) = instance.create_client("a", AUD);
    let server = instance.serve();
    let resp = post_form(&server.url("/oauth2/token"), &id, &secret, &[("grant_type", "client_credentials")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "ratelimit-policy"), "\"token-per-ip\";q=600;w=60");
    assert_eq!(header(&resp, "ratelimit"), "\"token-per-ip\";r=59;t=1");
    drop(server);

    // A configured limit: the fourth request within the minute is refused, with the time
    // until one request is allowed again.
    let instance = Instance::new().with_config(
        r#"
[[rate_limit.token]]
name = "tight"
by = ["ip"]
requests = 3
per = "1m"
"#,
    );
    let (id, secret) = instance.create_client("a", AUD);
    let server = instance.serve();
    for i in 0..3 {
        let resp = post_form(&server.url("/oauth2/token"), &id, &secret, &[("grant_type", "client_credentials")]).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(header(&resp, "ratelimit"), format!("\"tight\";r={};t={}", 2 - i, 20 * (i + 1)));
    }
    let resp = post_form(&server.url("/oauth2/token"), &id, &secret, &[("grant_type", "client_credentials")]).await;
    let (retry, policy) = assert_429(resp).await;
    assert!((19..=20).contains(&retry), "one interval (20 s): {retry}");
    assert_eq!(policy, "\"tight\";q=3;w=60");
    // Other endpoints have their own limits.
    assert_eq!(http().get(server.url("/oauth2/jwks")).send().await.unwrap().status(), 200);
    let logs = server.logs_once("ratelimit.limited");
    assert!(logs.iter().any(|l| l.contains("\"event\":\"ratelimit.limited\"") && l.contains("tight")));
}

#[tokio::test]
async fn gateway_limits_are_per_client_with_plans_and_refusals_never_reach_the_upstream() {
    let upstream = Upstream::start(None).await;
    let limits = r#"
[[gateway.routes.rate_limits]]
name = "per-client"
by = ["client_id"]
requests = 2
per = "1h"
plans = { gold = { requests = 4 } }
"#;
    let instance = Instance::new().with_config(&route(&upstream.url(), "jwt", limits));
    let (a, a_secret) = instance.create_client("x", AUD);
    let (b, b_secret) = instance.create_client("x", AUD);
    let (gold, gold_secret) = instance.create_client("x", AUD);
    let instance = instance
        .with_config(&format!("{}\n[rate_limit.plans]\ngold = [\"{gold}\"]\n", route(&upstream.url(), "jwt", limits)));
    let server = instance.serve();
    let bearer = |id, secret| {
        let server = &server;
        async move { token(server, id, secret, None).await["access_token"].as_str().unwrap().to_owned() }
    };
    let (ta, tb, tg) = (bearer(&a, &a_secret).await, bearer(&b, &b_secret).await, bearer(&gold, &gold_secret).await);
    let get = |t: String| {
        let server = &server;
        async move { http().get(server.gw("/api/x")).bearer_auth(t).send().await.unwrap() }
    };
    for i in 0..2 {
        let resp = get(ta.clone()).await;
        assert_eq!(resp.status(), 200, "client a, request {i}");
        assert_eq!(header(&resp, "ratelimit-policy"), "\"per-client\";q=2;w=3600");
    }
    let before = upstream.count();
    let (retry, _) = assert_429(get(ta.clone()).await).await;
    assert!(retry > 1700, "half an hour until the next of 2/h: {retry}");
    assert_eq!(upstream.count(), before, "the refused request never reached the upstream");
    assert_eq!(get(tb.clone()).await.status(), 200, "another client has its own counter");
    for i in 0..4 {
        assert_eq!(get(tg.clone()).await.status(), 200, "the gold plan's 4, request {i}");
    }
    assert_eq!(get(tg).await.status(), 429);
}

#[tokio::test]
async fn repeated_failures_ban_the_address_on_both_listeners_until_lifted() {
    let upstream = Upstream::start(None).await;
    let instance = Instance::new().with_config(&format!(
        "{}\n[rate_limit.bans]\nfailures = 3\nwindow = \"1m\"\nbase = \"10m\"\n",
        route(&upstream.url(), "jwt", "")
    ));
    let (id, secret) = instance.create_client("x", AUD);
    let server = instance.serve();
    let good = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    // Once-valid credentials are what honest clients send: expired tokens never ban.
    let expired = crate::gateway::forge(
        &instance,
        &serde_json::json!({"iss": server.issuer, "sub": id, "client_id": id, "aud": AUD, "scope": "x",
            "exp": crate::gateway::now() - 600, "iat": crate::gateway::now() - 1200, "jti": "old"}),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(http().get(server.gw("/api/x")).bearer_auth(&expired).send().await.unwrap().status(), 401);
    }
    assert_eq!(http().get(server.gw("/api/x")).bearer_auth(&good).send().await.unwrap().status(), 200);
    // Bad tokens on the gateway, a bad secret on the token endpoint: three failures.
    for bad in ["not-a-token", "eyJhbGciOiJub25lIn0.e30."] {
        let resp = http().get(server.gw("/api/x")).bearer_auth(bad).send().await.unwrap();
        assert_eq!(resp.status(), 401);
    }
    let resp = post_form(&server.url("/oauth2/token"), &id, "wrong", &[("grant_type", "client_credentials")]).await;
    assert_eq!(resp.status(), 401);
    // Banned: even good credentials are refused, on both listeners.
    let (retry, _) = assert_429(http().get(server.gw("/api/x")).bearer_auth(&good).send().await.unwrap()).await;
    assert!((590..=600).contains(&retry), "a 10-minute ban: {retry}");
    let resp = post_form(&server.url("/oauth2/token"), &id, &secret, &[("grant_type", "client_credentials")]).await;
    assert_429(resp).await;
    let logs = server.logs_once("ban.created");
    assert!(logs.iter().any(|l| l.contains("\"event\":\"ban.created\"") && l.contains("auth_failures")));

    let list = instance.cli(&["ban", "list", "--json"]);
    assert_eq!(list.status, 0, "{}", list.stderr);
    let bans: serde_json::Value = serde_json::from_str(list.stdout.trim()).unwrap();
    assert_eq!(bans[0]["ip"], "127.0.0.1");
    assert_eq!(bans[0]["strikes"], 1);
    let removed = instance.cli(&["ban", "remove", "127.0.0.1"]);
    assert_eq!(removed.status, 0, "{}", removed.stderr);
    assert_ne!(instance.cli(&["ban", "remove", "127.0.0.1"]).status, 0, "nothing left to remove");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = http().get(server.gw("/api/x")).bearer_auth(&good).send().await.unwrap();
        if resp.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the lifted ban reaches the server within the sync interval");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A manual ban (incident command) with its own length.
    let added = instance.cli(&["ban", "add", "127.0.0.2", "--for", "1h"]);
    assert_eq!(added.status, 0, "{}", added.stderr);
    assert!(added.stdout.contains("banned 127.0.0.2"));
    assert_ne!(instance.cli(&["ban", "add", "not-an-ip"]).status, 0);
}

/// One address trying passwords against many accounts (credential stuffing) is banned at
/// the `distinct_accounts`-th account, well before the per-address failure count.
#[tokio::test]
async fn credential_stuffing_on_the_login_form_bans_the_address() {
    let instance = Instance::new().with("PORTCULLIS_RATE_LIMIT__BANS", "{ distinct_accounts = 5 }");
    let app = instance.create_app("App", &["--public", "--redirect-uri", "http://127.0.0.1:9/cb"]);
    instance.create_user("alice", &[]);
    let server = instance.serve();
    let client_id = app["client_id"].as_str().unwrap();
    let url = format!(
        "{}?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid&state=s&code_challenge={}&code_challenge_method=S256",
        server.url("/oauth2/authorize"),
        urlencode("http://127.0.0.1:9/cb"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
    let browser = Browser::new();
    let login = browser.get(&url).await;
    // Five different accounts ban. Known and unknown names count alike.
    for user in ["alice", "bob", "carol", "dave"] {
        let page = browser.login(&server, &login, user, "wrong password!").await;
        assert_eq!(page.status, 403, "{user}: refused, not yet banned");
    }
    let page = browser.login(&server, &login, "erin", "wrong password!").await;
    assert_eq!(page.status, 403, "the fifth account's failure is answered, then bans");
    let page = browser.login(&server, &login, "alice", PASSWORD).await;
    assert_eq!(page.status, 429, "banned: even the right password is not tried");
    let logs = server.logs_once("credential_stuffing");
    assert!(logs.iter().any(|l| l.contains("\"event\":\"ban.created\"") && l.contains("credential_stuffing")));
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    let upstream = Upstream::start(None).await;
    let limits = r#"
[[gateway.routes.rate_limits]]
name = "per-ip"
by = ["ip"]
requests = 1
per = "1h"
"#;
    let from = |server: &Server, xff: &str| http().get(server.gw("/api/x")).header("x-forwarded-for", xff).send();

    // Untrusted peer: a spoofed X-Forwarded-For does not buy a fresh counter.
    let instance = Instance::new().with_config(&route(&upstream.url(), "none", limits));
    let server = instance.serve();
    assert_eq!(from(&server, "203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(from(&server, "203.0.113.2").await.unwrap().status(), 429);
    assert_eq!(upstream.last().headers["x-forwarded-for"], "127.0.0.1");
    drop(server);

    // Loopback is a trusted proxy: each forwarded client has its own counter, the client
    // part the proxy did not write is ignored, and the upstream sees the real client.
    let instance = Instance::new().with_config(&format!(
        "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}",
        route(&upstream.url(), "none", limits)
    ));
    let server = instance.serve();
    assert_eq!(from(&server, "203.0.113.1").await.unwrap().status(), 200);
    assert_eq!(upstream.last().headers["x-forwarded-for"], "203.0.113.1");
    assert_eq!(from(&server, "203.0.113.2").await.unwrap().status(), 200);
    assert_eq!(from(&server, "6.6.6.6, 203.0.113.1").await.unwrap().status(), 429, "the spoofed left part is ignored");
}

#[expect(clippy::disallowed_methods, reason = "the test's own service switch")]
fn redis_url() -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let required = std::env::var_os("PORTCULLIS_TEST_REQUIRE_SERVICES").is_some();
            assert!(!required, "PORTCULLIS_TEST_REDIS_URL is required on CI");
            eprintln!("skipped: set PORTCULLIS_TEST_REDIS_URL to run the Redis rate-limit tests");
            None
        }
    }
}

/// Two Portcullis processes on one Redis enforce one limit between them.
#[tokio::test]
async fn two_instances_share_one_limit_through_redis() {
    let Some(redis) = redis_url() else { return };
    let upstream = Upstream::start(None).await;
    let prefix = format!("portcullis-e2e:{}:", domain::secret::random_token(8));
    let config = format!(
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nkey_prefix = \"{prefix}\"\nfail = \"closed\"\n{}",
        route(
            &upstream.url(),
            "none",
            "[[gateway.routes.rate_limits]]\nname = \"shared\"\nby = [\"route\"]\nrequests = 10\nper = \"1h\"\n"
        )
    );
    let one = Instance::new().with_config(&config);
    let two = one.sibling();
    let (a, b) = (one.serve(), two.serve());
    let mut allowed = 0;
    for i in 0..30 {
        let server = if i % 2 == 0 { &a } else { &b };
        let status = http().get(server.gw("/api/x")).send().await.unwrap().status();
        assert!(status == 200 || status == 429, "{status}");
        allowed += usize::from(status == 200);
    }
    assert_eq!(allowed, 10, "one global limit across both instances");
}

/// Redis unreachable: `fail = "closed"` answers 503, `fail = "open"` limits locally.
#[tokio::test]
async fn redis_down_follows_the_fail_mode() {
    if redis_url().is_none() {
        return;
    }
    let upstream = Upstream::start(None).await;
    let limits = "[[gateway.routes.rate_limits]]\nname = \"r\"\nby = [\"ip\"]\nrequests = 2\nper = \"1h\"\n";
    let config = |fail: &str| {
        format!(
            "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\nfail = \"{fail}\"\n{}",
            route(&upstream.url(), "none", limits)
        )
    };
    let closed = Instance::new().with_config(&config("closed")).serve();
    let resp = http().get(closed.gw("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "content-type"), "application/problem+json");
    let logs = closed.logs_once("ratelimit.backend_down");
    assert!(logs.iter().any(|l| l.contains("ratelimit.backend_down") && l.contains("\"alert\":true")));
    drop(closed);

    let open = Instance::new().with_config(&config("open")).serve();
    for _ in 0..2 {
        assert_eq!(http().get(open.gw("/api/x")).send().await.unwrap().status(), 200);
    }
    assert_eq!(http().get(open.gw("/api/x")).send().await.unwrap().status(), 429, "the local fallback limits");
}
