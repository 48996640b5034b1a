//! Several instances, one deployment: three `portcullis serve` processes on one PostgreSQL
//! database and one Redis. A token issued by one is accepted by the others; a revocation on
//! one is refused by the others within a second (pushed through Redis, not polled); codes
//! and refresh tokens raced across instances have exactly one winner and the reuse rules
//! hold; an instance killed with SIGKILL in the middle of a load leaves no refresh family
//! inconsistent and no revocation lost while the others keep serving. Also: SIGTERM lets
//! in-flight requests finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Browser, Instance, PASSWORD, Server, eventually, http, post_form, services, token, urlencode};
use crate::upstream::Upstream;

const AUD: &str = "https://api.example.com";
const REDIRECT: &str = "http://127.0.0.1:9/cb";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn config(upstream: &str) -> String {
    format!(
        r#"
[gateway]
# Long on purpose: a revoked key refused sooner than this was announced, not expired.
api_key_cache_ttl = "60s"

[[gateway.routes]]
name = "invoices"
path_prefix = "/api"
upstreams = ["{upstream}"]
auth = "jwt"
audiences = ["{AUD}"]

[[gateway.routes]]
name = "keys"
path_prefix = "/keys"
upstreams = ["{upstream}"]
auth = "api_key"
"#
    )
}

/// Three servers of one deployment; `base` runs the CLI.
struct Cluster {
    base: Instance,
    servers: Vec<Server>,
    upstream: Upstream,
    /// The other two instances' data directories.
    _siblings: [Instance; 2],
}

async fn cluster(test: &str, extra: &[(&str, &str)]) -> Option<Cluster> {
    let services = services(test)?;
    let upstream = Upstream::start(None).await;
    // Every request comes from 127.0.0.1 and the limits are shared through Redis: the
    // per-IP defaults would throttle the load below (the rate-limit tests cover limits).
    let mut base = Instance::on(Some(services))
        .with_config(&config(&upstream.url()))
        .with("PORTCULLIS_RATE_LIMIT__ENABLED", "false");
    for (k, v) in extra {
        base = base.with(k, v);
    }
    // One issuer for all (in production: the load balancer's URL).
    let base = base.with("PORTCULLIS_SERVER__ISSUER", "http://127.0.0.1:9");
    // All three start at the same moment on the fresh database.
    let siblings = [base.sibling(), base.sibling()];
    let servers = std::thread::scope(|scope| {
        let starts: Vec<_> =
            [&base, &siblings[0], &siblings[1]].map(|i| scope.spawn(move || i.serve())).into_iter().collect();
        starts.into_iter().map(|s| s.join().unwrap()).collect()
    });
    Some(Cluster { base, servers, upstream, _siblings: siblings })
}

async fn gw_status(server: &Server, token: &str) -> u16 {
    http().get(server.gw("/api/invoices/1")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

/// Signs `username` in on `server` (an existing SSO session skips the form) and returns a
/// fresh authorization code.
async fn code(browser: &Browser, server: &Server, client_id: &str, username: &str) -> String {
    let url = format!(
        "{}?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid&state=s\
         &code_challenge={CHALLENGE}&code_challenge_method=S256",
        server.url("/oauth2/authorize"),
        urlencode(REDIRECT)
    );
    let mut page = browser.get(&url).await;
    if page.status == 200 {
        page = browser.login(server, &page, username, PASSWORD).await;
    }
    assert_eq!(page.status, 303, "{}", page.body);
    page.redirect_param("code").unwrap()
}

async fn redeem(server: &Server, client_id: &str, code: &str) -> reqwest::Response {
    http()
        .post(server.url("/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
}

async fn refresh(server: &Server, client_id: &str, refresh_token: &str) -> reqwest::Result<reqwest::Response> {
    http()
        .post(server.url("/oauth2/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", client_id)])
        .send()
        .await
}

/// Polls until every server's gateway refuses `token`; returns how long it took.
async fn refused_everywhere(servers: &[&Server], token: &str) -> Duration {
    let start = Instant::now();
    loop {
        let mut all = true;
        for s in servers {
            all &= gw_status(s, token).await == 401;
        }
        if all || start.elapsed() > Duration::from_secs(10) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn three_instances_share_tokens_revocations_codes_and_refresh_families() {
    let Some(c) = cluster("three_instances_share_tokens", &[("PORTCULLIS_SIGNIN__REFRESH_GRACE", "2")]).await else {
        return;
    };
    let [a, b, cc] = [&c.servers[0], &c.servers[1], &c.servers[2]];

    // A token issued by A is verified by the gateways of all three.
    let (id, secret) = c.base.create_client("invoices:read", AUD);
    let t = token(a, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    for s in [a, b, cc] {
        assert_eq!(gw_status(s, &t).await, 200);
    }
    // Revoked on B: refused by A and C within a second (the store sync alone takes 2 s).
    let resp = post_form(&b.url("/oauth2/revoke"), &id, &secret, &[("token", &t)]).await;
    assert_eq!(resp.status(), 200);
    let took = refused_everywhere(&[a, b, cc], &t).await;
    assert!(took < Duration::from_secs(1), "revocation reached every instance in {took:?}");

    // Clients are cached on each instance; a change made anywhere (here: the CLI) reaches
    // every cache at once.
    for s in [a, b, cc] {
        assert_eq!(
            post_form(&s.url("/oauth2/token"), &id, &secret, &[("grant_type", "client_credentials")]).await.status(),
            200
        );
    }
    let out = c.base.cli(&["client", "disable", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let start = Instant::now();
    for s in [a, b, cc] {
        loop {
            let status = post_form(&s.url("/oauth2/token"), &id, &secret, &[("grant_type", "client_credentials")])
                .await
                .status();
            if status == 401 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(1), "a disabled client still gets tokens from {}", s.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // 100 redemptions of one code spread over the three instances: exactly one wins.
    c.base.create_user("carol", &[]);
    let app = c.base.create_app("Web", &["--public", "--first-party", "--redirect-uri", REDIRECT, "--audience", AUD]);
    let app_id = app["client_id"].as_str().unwrap().to_owned();
    let browser = Browser::new();
    let the_code = code(&browser, a, &app_id, "carol").await;
    let servers: Vec<&Server> = c.servers.iter().collect();
    let results = futures_join_all((0..100).map(|i| redeem(servers[i % 3], &app_id, &the_code))).await;
    let mut winners = Vec::new();
    for r in results {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        match status {
            200 => winners.push(body),
            400 => assert_eq!(body["error"], "invalid_grant", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    // Exactly one request redeemed the code; the 99 others are replays, each logged — and
    // each revokes what the code issued (RFC 9700 §4.2), so the winner either was refused
    // too (a replay revoked the grant before it finished issuing) or its token is refused
    // everywhere now.
    assert!(winners.len() <= 1, "at most one redemption gets tokens: {winners:?}");
    let count = || -> usize {
        c.servers.iter().map(|s| s.logs().iter().filter(|l| l.contains("\"token.code_replay\"")).count()).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while count() < 99 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(), 99, "exactly one of 100 redemptions won the code");
    if let Some(winner) = winners.first() {
        let took = refused_everywhere(&[a, b, cc], winner["access_token"].as_str().unwrap()).await;
        assert!(took < Duration::from_secs(1), "code replay revocation reached every instance in {took:?}");
    }

    // A refresh token raced over the three instances: exactly one rotation; every racer
    // inside the grace window (2 s here) gets that same successor pair, none a second one.
    let tokens: serde_json::Value =
        redeem(b, &app_id, &code(&browser, b, &app_id, "carol").await).await.json().await.unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap().to_owned();
    let at = tokens["access_token"].as_str().unwrap().to_owned();
    assert_eq!(gw_status(cc, &at).await, 200);
    let results = futures_join_all((0..30).map(|i| refresh(servers[i % 3], &app_id, &rt))).await;
    let mut successors = std::collections::BTreeSet::new();
    for r in results {
        let r = r.unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        successors.insert((body["refresh_token"].to_string(), body["access_token"].to_string()));
    }
    assert_eq!(successors.len(), 1, "exactly one rotation; every racer got its pair");
    let (successor, new_at) = successors.pop_first().unwrap();
    let (successor, new_at) = (successor.trim_matches('"').to_owned(), new_at.trim_matches('"').to_owned());
    assert_eq!(gw_status(a, &new_at).await, 200);

    // After the grace window the old token is reuse, on whichever instance: the family dies,
    // successor and access tokens included, everywhere.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = refresh(cc, &app_id, &rt).await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = refresh(a, &app_id, &successor).await.unwrap();
    assert_eq!(resp.status(), 400, "reuse on another instance revoked the family, successor included");
    let took = refused_everywhere(&[a, b, cc], &new_at).await;
    assert!(took < Duration::from_secs(1), "family revocation reached every instance in {took:?}");
    assert!(c.upstream.count() >= 4);

    // One JWKS for all.
    let jwks: Vec<String> = futures_join_all(
        [a, b, cc]
            .map(|s| async move { http().get(s.url("/oauth2/jwks")).send().await.unwrap().text().await.unwrap() }),
    )
    .await;
    assert!(jwks.windows(2).all(|w| w[0] == w[1]), "JWKS identical on every instance");
}

/// Key rotation across instances: a key retired on one (by the CLI, as in an emergency) is
/// refused by all at once, and the key set they serve is the same.
#[tokio::test]
async fn an_api_key_revoked_anywhere_is_refused_everywhere_within_a_second() {
    let Some(c) = cluster("an_api_key_revoked", &[]).await else { return };
    let out = c.base.cli(&["apikey", "create", "--name", "ci-bot", "--scopes", "invoices:read", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let created: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let (id, key) = (created["id"].as_str().unwrap(), created["api_key"].as_str().unwrap());
    crate::harness::remember(key);
    let status = |server: &Server| {
        let req = http().get(server.gw("/keys/report")).header("x-api-key", key);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // Every gateway has the key cached (for 60 s).
    for s in &c.servers {
        assert_eq!(status(s).await, 200);
    }
    let out = c.base.cli(&["apikey", "revoke", id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let start = Instant::now();
    loop {
        let mut refused = 0;
        for s in &c.servers {
            if status(s).await == 401 {
                refused += 1;
            }
        }
        if refused == c.servers.len() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "the revocation did not reach every gateway's cache");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dpop_proof_spent_on_one_instance_is_refused_by_the_others() {
    // Behind one load balancer every instance checks `htu` against the public URL.
    let public = "http://127.0.0.1:9";
    let Some(c) = cluster("a_dpop_proof_spent", &[("PORTCULLIS_DPOP__GATEWAY_PUBLIC_ORIGIN", public)]).await else {
        return;
    };
    let [a, b, cc] = [&c.servers[0], &c.servers[1], &c.servers[2]];
    let (id, secret) = c.base.create_client("invoices:read", AUD);
    let key = crate::dpop::DpopKey::new();
    let token_request = |server: &Server, proof: &str| {
        http()
            .post(server.url("/oauth2/token"))
            .basic_auth(&id, Some(&secret))
            .header("DPoP", proof)
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let proof = key.proof("POST", &format!("{public}/oauth2/token"), None);
    let resp = token_request(a, &proof).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    crate::harness::remember_tokens(&body);
    let t = body["access_token"].as_str().unwrap().to_owned();
    for s in [b, cc] {
        let resp = token_request(s, &proof).await.unwrap();
        assert_eq!(resp.status(), 400, "the proof was spent on another instance");
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["error"], "invalid_dpop_proof");
    }
    // At the gateways: a proof accepted by A is a replay at B and C (shared through Redis).
    let proof = key.proof("GET", &format!("{public}/api/invoices"), Some(&t));
    let call = |server: &Server| {
        http()
            .get(server.gw("/api/invoices"))
            .header("authorization", format!("DPoP {t}"))
            .header("DPoP", &proof)
            .send()
    };
    assert_eq!(call(a).await.unwrap().status(), 200);
    let before = c.upstream.count();
    for s in [b, cc] {
        assert_eq!(call(s).await.unwrap().status(), 401, "replayed on another instance");
    }
    assert_eq!(c.upstream.count(), before);
}

#[tokio::test]
async fn a_key_retired_anywhere_is_refused_everywhere_and_jwks_agree() {
    let Some(c) = cluster("a_key_retired_anywhere", &[]).await else { return };
    let servers: Vec<&Server> = c.servers.iter().collect();
    let (id, secret) = c.base.create_client("invoices:read", AUD);
    let t = token(servers[0], &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    let kid = jwt_kid(&t);
    let out = c.base.cli(&["keys", "retire", &kid]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    // Within a second every instance signs with the successor and publishes both keys.
    let start = Instant::now();
    loop {
        let mut kids = Vec::new();
        for s in &servers {
            let fresh = token(s, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
            kids.push(jwt_kid(&fresh));
        }
        if kids.iter().all(|k| *k != kid) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "still signing with the retired key: {kids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jwks: Vec<String> = futures_join_all(
        servers
            .iter()
            .map(|s| async move { http().get(s.url("/oauth2/jwks")).send().await.unwrap().text().await.unwrap() }),
    )
    .await;
    assert!(jwks.windows(2).all(|w| w[0] == w[1]), "JWKS identical on every instance");
    assert!(jwks[0].contains(&kid), "the retired key stays published for verification");
    // Instances started at the same moment on a fresh database make one first key, not three.
    let list = c.base.cli(&["keys", "list", "--json"]);
    let keys: serde_json::Value = serde_json::from_str(list.stdout.trim()).unwrap();
    let active = keys.as_array().unwrap().iter().filter(|k| k["state"] == "active").count();
    assert_eq!(active, 1, "{keys}");
}

fn jwt_kid(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// SIGKILL one instance in the middle of a load of refreshes and revocations.
#[tokio::test]
async fn an_instance_killed_mid_load_loses_nothing() {
    let Some(mut c) = cluster("an_instance_killed_mid_load", &[]).await else { return };
    c.base.create_user("dave", &[]);
    let app = c.base.create_app("Web", &["--public", "--first-party", "--redirect-uri", REDIRECT, "--audience", AUD]);
    let app_id = app["client_id"].as_str().unwrap().to_owned();
    let (cid, csecret) = c.base.create_client("invoices:read", AUD);
    let browser = Browser::new();
    let mut families = Vec::new();
    for i in 0..6 {
        let s = &c.servers[i % 3];
        let tokens: serde_json::Value =
            redeem(s, &app_id, &code(&browser, s, &app_id, "dave").await).await.json().await.unwrap();
        families.push(tokens["refresh_token"].as_str().unwrap().to_owned());
    }
    let urls: Arc<Vec<String>> = Arc::new(c.servers.iter().map(|s| s.base.clone()).collect());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors_from_survivors = Arc::new(AtomicUsize::new(0));
    let served_by_survivors = Arc::new(AtomicUsize::new(0));

    // Each family refreshes in a loop, round-robin over the instances; a request that fails
    // (the instance died under it) is retried elsewhere with the same token: the retry
    // gets the same successor (grace window) or, if the rotation never committed, a new one.
    let mut loads = Vec::new();
    for (n, first) in families.into_iter().enumerate() {
        let (urls, stop, app_id) = (urls.clone(), stop.clone(), app_id.clone());
        let (errors, served) = (errors_from_survivors.clone(), served_by_survivors.clone());
        loads.push(tokio::spawn(async move {
            let mut current = first;
            let mut i = n;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let url = &urls[i % 3];
                let resp = http()
                    .post(format!("{url}/oauth2/token"))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", &current), ("client_id", &app_id)])
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status() == 200 => {
                        let body: serde_json::Value = r.json().await.unwrap();
                        current = body["refresh_token"].as_str().unwrap().to_owned();
                        served.fetch_add(usize::from(i % 3 != 0), Ordering::Relaxed);
                    }
                    Ok(r) => {
                        errors.fetch_add(usize::from(i % 3 != 0), Ordering::Relaxed);
                        panic!("refresh refused: {} {}", r.status(), r.text().await.unwrap_or_default());
                    }
                    Err(_) => assert_eq!(i % 3, 0, "only the killed instance may fail to answer"),
                }
            }
            current
        }));
    }
    // Revocations against every instance; those answered 200 must hold everywhere.
    let revoker = {
        let (urls, stop, cid, csecret) = (urls.clone(), stop.clone(), cid.clone(), csecret.clone());
        tokio::spawn(async move {
            let mut confirmed = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let url = &urls[i % 3];
                let Ok(r) = http()
                    .post(format!("{url}/oauth2/token"))
                    .basic_auth(&cid, Some(&csecret))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                else {
                    continue;
                };
                let Ok(body) = r.json::<serde_json::Value>().await else { continue };
                let t = body["access_token"].as_str().unwrap_or_default().to_owned();
                let done = http()
                    .post(format!("{url}/oauth2/revoke"))
                    .basic_auth(&cid, Some(&csecret))
                    .form(&[("token", t.as_str())])
                    .send()
                    .await;
                if done.is_ok_and(|r| r.status() == 200) {
                    confirmed.push(t);
                }
            }
            confirmed
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut killed = c.servers.remove(0);
    killed.child.kill().unwrap(); // SIGKILL
    killed.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);

    let (b, cc) = (&c.servers[0], &c.servers[1]);
    for load in loads {
        let last = load.await.unwrap();
        // The family is intact: its latest token works on a survivor, once.
        let resp = refresh(b, &app_id, &last).await.unwrap();
        assert_eq!(resp.status(), 200, "family usable after the kill");
    }
    assert!(served_by_survivors.load(Ordering::Relaxed) > 0, "the survivors kept serving");
    assert_eq!(errors_from_survivors.load(Ordering::Relaxed), 0);
    let confirmed = revoker.await.unwrap();
    assert!(!confirmed.is_empty());
    for t in &confirmed {
        assert_eq!(gw_status(cc, t).await, 401, "a confirmed revocation holds on the survivors");
        let v = crate::harness::introspect(b, &cid, &csecret, t).await;
        assert_eq!(v["active"], false);
    }
}

/// SIGTERM: the listener stops accepting, a request in flight still gets its answer, the
/// process exits 0 after logging that it stopped.
#[tokio::test]
async fn sigterm_finishes_in_flight_requests() {
    let upstream = Upstream::start(Some(Duration::from_millis(800))).await;
    let instance = Instance::new().with_config(&config(&upstream.url()));
    let (id, secret) = instance.create_client("invoices:read", AUD);
    let server = instance.serve();
    let t = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    let url = server.gw("/api/slow");
    let in_flight = tokio::spawn({
        let t = t.clone();
        async move { http().get(url).bearer_auth(t).send().await.map(|r| r.status().as_u16()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = server.logs.clone();
    let gw = server.gw("/api/x");
    let code = tokio::task::spawn_blocking(move || server.stop()).await.unwrap();
    assert_eq!(in_flight.await.unwrap().unwrap(), 200, "the request in flight was answered");
    assert_eq!(code, 0);
    assert!(http().get(gw).bearer_auth(&t).send().await.is_err(), "no new connections after shutdown");
    // The log reader thread may still be draining the exited process's stderr.
    eventually(Duration::from_secs(5), "no \"portcullis stopped\" in the logs", || {
        let stopped = logs.lock().unwrap().iter().any(|l| l.contains("portcullis stopped"));
        async move { stopped }
    })
    .await;
}

/// `join_all` without the futures crate: runs every future concurrently on this task.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|v| v.unwrap()).collect()
}

/// Failed logins count across instances (the throttle's counters live in Redis): one wrong
/// password on each of the three locks the account everywhere, even for the right password.
#[tokio::test]
async fn failed_logins_on_any_instance_lock_the_account() {
    let Some(c) = cluster(
        "failed_logins_on_any_instance_lock_the_account",
        &[("PORTCULLIS_SIGNIN__LOCKOUT_ACCOUNT_FAILURES", "3")],
    )
    .await
    else {
        return;
    };
    c.base.create_user("erin", &[]);
    let app = c.base.create_app("Web", &["--public", "--first-party", "--redirect-uri", REDIRECT]);
    let id = app["client_id"].as_str().unwrap();
    let attempt = async |server: &Server, password: &str| {
        let url = format!(
            "{}?response_type=code&client_id={id}&redirect_uri={}&scope=openid&state=s\
             &code_challenge={CHALLENGE}&code_challenge_method=S256",
            server.url("/oauth2/authorize"),
            urlencode(REDIRECT)
        );
        let browser = Browser::new();
        let page = browser.get(&url).await;
        browser.login(server, &page, "erin", password).await
    };
    for server in &c.servers {
        let page = attempt(server, "wrong password!!").await;
        assert_eq!(page.status, 403, "{}", page.body);
    }
    for server in &c.servers {
        let page = attempt(server, PASSWORD).await;
        assert_eq!(page.status, 429, "locked on every instance: {}", page.body);
        assert!(page.headers.get("retry-after").is_some());
    }
}
