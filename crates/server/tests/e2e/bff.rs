//! Backend-for-frontend sessions over HTTP (the browser test drives the same in Chromium):
//! the gateway signs the user in as a relying party of this Portcullis, the browser only
//! ever holds an opaque HttpOnly cookie, API calls carry the session's access token to the
//! upstream (refreshed server-side), CSRF and tampering are refused, logout ends it all.

use serde_json::Value;

use crate::harness::{Browser, Instance, PASSWORD, Server, reserve_port};
use crate::upstream::Upstream;
use crate::webdriver;

pub(crate) const AUD: &str = "https://api.example.com";

/// An instance whose gateway (on `port`) serves BFF app "spa" and routes `/api` (session)
/// to `upstream` and `/app` (the app's static files, no auth) to `static_files`. Returns
/// it with the user id.
pub(crate) fn bff_instance(upstream: &str, static_files: &str, port: u16) -> (Instance, String) {
    let origin = format!("http://127.0.0.1:{port}");
    let instance = Instance::new().with("PORTCULLIS_GATEWAY__LISTEN", &format!("127.0.0.1:{port}"));
    let user = instance.create_user("alice", &["--name", "Alice Example", "--email", "alice@example.com"]);
    // Access tokens live 1 s, so every API call below needs a server-side refresh.
    let app = instance.create_app(
        "SPA",
        &[
            "--first-party",
            "--redirect-uri",
            &format!("{origin}/bff/callback"),
            "--post-logout-redirect-uri",
            &format!("{origin}/app/bye"),
            "--audience",
            AUD,
            "--token-ttl",
            "1",
        ],
    );
    let secret = app["client_secret"].as_str().unwrap();
    crate::harness::remember(secret);
    let instance = instance.with_config(&format!(
        r#"
[[gateway.routes]]
name = "api"
path_prefix = "/api"
upstreams = ["{upstream}"]
auth = "bff"
bff_app = "spa"
audiences = ["{AUD}"]

[[gateway.routes]]
name = "app"
path_prefix = "/app"
upstreams = ["{static_files}"]
auth = "none"

[[gateway.bff]]
name = "spa"
client_id = "{id}"
client_secret = "{secret}"
redirect_uri = "{origin}/bff/callback"
post_logout_redirect = "{origin}/app/bye"
post_login_redirect = "/app/"
"#,
        id = app["client_id"].as_str().unwrap(),
    ));
    (instance, user)
}

fn set_cookie<'a>(page: &'a crate::harness::Page, name: &str) -> &'a str {
    page.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie {name}: {:?}", page.headers))
}

/// Signs in through the BFF: login → the provider's form → callback. Returns the landing.
async fn sign_in(browser: &Browser, server: &Server) -> crate::harness::Page {
    let start = browser.get(&server.gw("/bff/login?return_to=/app/home")).await;
    assert_eq!(start.status, 303);
    let login_cookie = set_cookie(&start, "__Host-portcullis-login-spa");
    assert!(
        login_cookie.contains("HttpOnly") && login_cookie.contains("Secure") && login_cookie.contains("SameSite=Lax")
    );
    let authorize = start.location();
    assert!(authorize.starts_with(&server.url("/oauth2/authorize")), "{authorize}");
    assert!(authorize.contains("code_challenge_method=S256") && authorize.contains("nonce="), "{authorize}");
    let page = browser.get(&authorize).await;
    let page = browser.login(server, &page, "alice", PASSWORD).await;
    assert_eq!(page.status, 303, "first-party app: no consent page");
    let callback = page.location();
    assert!(callback.starts_with(&server.gw("/bff/callback")), "{callback}");
    browser.get(&callback).await
}

#[tokio::test]
async fn bff_sessions_keep_tokens_server_side() {
    let upstream = Upstream::start(None).await;
    let held = reserve_port();
    let port = held.port;
    let (instance, user) = bff_instance(&upstream.url(), &upstream.url(), port);
    let server = instance.serve();
    let browser = Browser::new();

    // No session yet.
    assert_eq!(browser.get(&server.gw("/bff/user")).await.status, 401);
    let before = upstream.count();
    assert_eq!(browser.get(&server.gw("/api/me")).await.status, 401);
    assert_eq!(upstream.count(), before);

    let landed = sign_in(&browser, &server).await;
    assert_eq!(landed.status, 303);
    assert_eq!(landed.location(), "/app/home", "back where the login started");
    let session_cookie = set_cookie(&landed, "__Host-portcullis-spa").to_owned();
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(session_cookie.contains(attr), "{session_cookie}");
    }
    assert!(!session_cookie.contains("Domain"), "__Host- cookies have no Domain");
    let value = session_cookie.split(';').next().unwrap().split_once('=').unwrap().1;
    assert!(!value.contains('.') && value.len() < 64, "opaque id, not a token: {value}");

    // The user's public claims, no token anywhere.
    let me = browser.get(&server.gw("/bff/user")).await;
    assert_eq!(me.status, 200);
    let claims: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(claims["sub"], user.as_str());
    assert_eq!(claims["name"], "Alice Example");
    assert_eq!(claims["email"], "alice@example.com");
    assert!(!me.body.contains("eyJ"), "no JWT in what the browser receives: {}", me.body);

    // API calls: the upstream gets the verified identity and the access token, never the
    // session cookie. Tokens live 1 s: each call refreshes server-side (rotation).
    let first = browser.get(&server.gw("/api/me")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let seen = upstream.last();
    assert_eq!(seen.headers.get("x-portcullis-subject"), Some(&user));
    let token1 = seen.headers.get("authorization").cloned().unwrap();
    assert!(token1.starts_with("Bearer eyJ"), "{token1}");
    assert!(!seen.headers.get("cookie").is_some_and(|c| c.contains("__Host-portcullis")), "session cookie stripped");
    assert_eq!(browser.get(&server.gw("/api/me")).await.status, 200);
    let token2 = upstream.last().headers.get("authorization").cloned().unwrap();
    assert_ne!(token1, token2, "an expiring access token is refreshed by the gateway");

    // Another instance of the deployment serves the same session (it lives in the store).
    let sibling = instance.sibling().with("PORTCULLIS_GATEWAY__LISTEN", "127.0.0.1:0");
    let other = sibling.serve();
    let resp = browser.get(&other.gw("/bff/user")).await;
    assert_eq!(resp.status, 200, "a second instance serves the session: {}", resp.body);
    assert_eq!(browser.get(&other.gw("/api/me")).await.status, 200);
    drop(other);

    // CSRF: state-changing calls need the header and, when sent, an allowed Origin.
    let http = crate::harness::http();
    let cookie = browser.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = http.post(server.gw("/api/items")).header("cookie", &cookie).body("{}");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    let origin = format!("http://127.0.0.1:{port}");
    for (what, headers) in [
        ("no CSRF header", vec![("origin", origin.clone())]),
        ("foreign origin", vec![("x-portcullis-csrf", "1".into()), ("origin", "https://evil.example".into())]),
        ("cross-site fetch", vec![("x-portcullis-csrf", "1".into()), ("sec-fetch-site", "cross-site".into())]),
    ] {
        let before = upstream.count();
        let resp = post(headers).await.unwrap();
        assert_eq!(resp.status(), 403, "{what}");
        assert_eq!(upstream.count(), before, "{what}: never reached the upstream");
    }
    let resp = post(vec![("x-portcullis-csrf", "1".into()), ("origin", origin.clone())]).await.unwrap();
    assert_eq!(resp.status(), 200);

    // A forged or tampered cookie is no session.
    let forged = http.get(server.gw("/api/me")).header("cookie", "__Host-portcullis-spa=forged").send().await.unwrap();
    assert_eq!(forged.status(), 401);

    // Logout: CSRF-checked, ends the session and its grant; the provider's logout URL ends
    // the SSO session.
    let resp = http.post(server.gw("/bff/logout")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), 403, "logout without the CSRF header");
    let resp = http
        .post(server.gw("/bff/logout"))
        .header("cookie", &cookie)
        .header("x-portcullis-csrf", "1")
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cleared = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cleared.starts_with("__Host-portcullis-spa=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let body: Value = resp.json().await.unwrap();
    let logout_url = body["logout_url"].as_str().unwrap();
    assert!(
        logout_url.starts_with(&server.url("/oauth2/logout")) && logout_url.contains("id_token_hint="),
        "{logout_url}"
    );
    let after = http.get(server.gw("/api/me")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(after.status(), 401, "the session is gone");
    // The refresh token was revoked with its family: the last access token is dead too.
    let resp = http.get(server.gw("/api/me")).header("authorization", &token2).send().await.unwrap();
    assert_eq!(resp.status(), 401, "a bff route does not take bearer tokens, and this one is revoked");
}

#[tokio::test]
async fn bff_callbacks_need_their_own_login_state() {
    let upstream = Upstream::start(None).await;
    let held = reserve_port();
    let port = held.port;
    let (instance, _) = bff_instance(&upstream.url(), &upstream.url(), port);
    let server = instance.serve();

    // A callback with no login cookie (a link someone sent), or with a wrong state.
    let stranger = Browser::new();
    let page = stranger.get(&server.gw("/bff/callback?code=x&state=y")).await;
    assert_eq!(page.status, 400);
    let browser = Browser::new();
    let start = browser.get(&server.gw("/bff/login")).await;
    assert_eq!(start.status, 303);
    let page = browser.get(&server.gw("/bff/callback?code=x&state=not-the-state")).await;
    assert_eq!(page.status, 400);
    assert!(page.headers.get("set-cookie").is_none(), "no session");
    // The provider's refusal (RFC 6749 §4.1.2.1) is no session either, whatever the state.
    let start = browser.get(&server.gw("/bff/login")).await;
    let state =
        url::Url::parse(&start.location()).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let page = browser.get(&server.gw(&format!("/bff/callback?error=access_denied&state={state}"))).await;
    assert_eq!(page.status, 400);
    assert!(page.headers.get("set-cookie").is_none(), "no session");
    // A return path that cannot be a Location header falls back to the configured landing.
    let start = browser.get(&server.gw("/bff/login?return_to=/caf%C3%A9")).await;
    assert_eq!(start.status, 303, "a non-ASCII return path is not an error");
    // An open redirect through return_to is not followed.
    let start = browser.get(&server.gw("/bff/login?return_to=//evil.example/x")).await;
    let page = browser.get(&start.location()).await;
    let page = browser.login(&server, &page, "alice", PASSWORD).await;
    let landed = browser.get(&page.location()).await;
    assert_eq!(landed.location(), "/app/", "the configured landing, not the foreign URL");
    // Signing in again gives a new session id and ends the one this browser had.
    let first = browser.cookies.lock().unwrap()["__Host-portcullis-spa"].clone();
    let start = browser.get(&server.gw("/bff/login")).await;
    let page = browser.get(&start.location()).await;
    assert_eq!(page.status, 303, "SSO session: straight back");
    browser.get(&page.location()).await;
    let second = browser.cookies.lock().unwrap()["__Host-portcullis-spa"].clone();
    assert_ne!(first, second);
    let http = crate::harness::http();
    let old = http.get(server.gw("/bff/user")).header("cookie", format!("__Host-portcullis-spa={first}")).send().await;
    assert_eq!(old.unwrap().status(), 401, "the previous session ended");
    // The incident command ends BFF sessions with the provider's.
    assert_eq!(browser.get(&server.gw("/bff/user")).await.status, 200);
    let out = instance.cli(&["user", "logout-everywhere", "alice"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(browser.get(&server.gw("/bff/user")).await.status, 401, "logout-everywhere ended the BFF session");
    // Wrong methods on the BFF endpoints.
    assert_eq!(browser.post(&server.gw("/bff/login"), &[]).await.status, 405);
    assert_eq!(browser.get(&server.gw("/bff/logout")).await.status, 405);
}

/// The test's single-page app: one HTML page with no tokens of its own, only `fetch`.
const SPA: &str = r#"<!doctype html><html><head><title>SPA</title></head><body><h1 id="app">SPA</h1></body></html>"#;

/// Serves the SPA under `/app/…` and a page of another origin at `/evil`.
async fn static_files() -> String {
    use axum::response::Html;
    let app =
        axum::Router::new().route("/evil", axum::routing::get(|| async { Html(SPA) })).fallback(|| async { Html(SPA) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// `fetch` in the page; resolves to "STATUS BODY" (or "blocked" when the browser refuses).
fn fetch_js(url: &str, method: &str, csrf: bool) -> String {
    let headers = if csrf { r#"{"X-Portcullis-CSRF": "1"}"# } else { "{}" };
    format!(
        r#"return fetch("{url}", {{method: "{method}", credentials: "include", headers: {headers}}})
             .then(r => r.text().then(t => r.status + " " + t)).catch(() => "blocked");"#
    )
}

#[tokio::test]
async fn chromium_spa_signs_in_through_the_bff_and_never_sees_a_token() {
    if let Some(reason) = webdriver::unavailable() {
        assert!(std::env::var_os("PORTCULLIS_TEST_REQUIRE_SERVICES").is_none(), "browser required on CI: {reason}");
        eprintln!("SKIPPED chromium_spa_signs_in_through_the_bff_and_never_sees_a_token: {reason}");
        return;
    }
    let upstream = Upstream::start(None).await;
    let files = static_files().await;
    let held = reserve_port();
    let port = held.port;
    let (instance, user) = bff_instance(&upstream.url(), &files, port);
    let server = instance.serve();
    let browser = webdriver::Browser::start().await;
    let text = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();

    // The app loads; nobody is signed in.
    browser.goto(&server.gw("/app/")).await;
    browser.find("#app").await;
    assert!(text(browser.script(&fetch_js("/bff/user", "GET", false)).await).starts_with("401 "));

    // Sign in: the BFF sends the browser to the provider's login page and back.
    browser.goto(&server.gw("/bff/login?return_to=/app/home")).await;
    browser.type_into("#username", "alice").await;
    browser.type_into("#password", PASSWORD).await;
    browser.click("#sign-in").await;
    browser.wait_for_url(&server.gw("/app/home")).await;
    browser.find("#app").await;

    // JavaScript sees no session cookie and no token in anything it receives.
    let cookies = text(browser.script("return document.cookie").await);
    assert!(!cookies.contains("portcullis"), "cookies visible to JS: {cookies:?}");
    let me = text(browser.script(&fetch_js("/bff/user", "GET", false)).await);
    assert!(me.starts_with("200 ") && me.contains("Alice Example"), "{me}");
    assert!(!me.contains("eyJ"), "{me}");

    // API calls through the gateway: the upstream sees the user; the 1 s access token is
    // refreshed server-side between calls.
    let before = upstream.count();
    let first = text(browser.script(&fetch_js("/api/me", "GET", false)).await);
    assert!(first.starts_with("200 "), "{first}");
    let seen = upstream.last();
    assert_eq!(seen.headers.get("x-portcullis-subject"), Some(&user));
    let token1 = seen.headers.get("authorization").cloned();
    assert!(text(browser.script(&fetch_js("/api/me", "GET", false)).await).starts_with("200 "));
    assert_ne!(upstream.last().headers.get("authorization").cloned(), token1, "refreshed server-side");
    // A state-changing call from the app itself, with the CSRF header.
    let posted = text(browser.script(&fetch_js("/api/items", "POST", true)).await);
    assert!(posted.starts_with("200 "), "{posted}");
    assert_eq!(upstream.count(), before + 3);

    // Another origin's page: a simple cross-origin POST carries the cookie but not the
    // header (refused), and with the header the browser's preflight fails.
    browser.goto(&format!("{files}/evil")).await;
    browser.find("#app").await;
    let api = server.gw("/api/items");
    let before = upstream.count();
    let simple = text(browser.script(&fetch_js(&api, "POST", false)).await);
    assert!(simple == "blocked" || simple.starts_with("403 "), "{simple}");
    let with_header = text(browser.script(&fetch_js(&api, "POST", true)).await);
    assert_eq!(with_header, "blocked", "no CORS grant for a foreign origin");
    assert_eq!(upstream.count(), before, "no cross-site request reached the upstream");

    // Logout: the app asks the BFF, then follows the provider's logout URL back to the app.
    browser.goto(&server.gw("/app/home")).await;
    browser.find("#app").await;
    let out = text(
        browser
            .script(r#"return fetch("/bff/logout", {method: "POST", headers: {"X-Portcullis-CSRF": "1"}}).then(r => r.json()).then(j => j.logout_url);"#)
            .await,
    );
    assert!(out.starts_with(&server.url("/oauth2/logout")), "{out}");
    browser.goto(&out).await;
    browser.wait_for_url(&server.gw("/app/bye")).await;
    assert!(text(browser.script(&fetch_js("/bff/user", "GET", false)).await).starts_with("401 "));
    assert!(text(browser.script(&fetch_js("/api/me", "GET", false)).await).starts_with("401 "));
}

/// Gateway configuration for BFF app `name` signing in at the external provider `issuer`
/// (also trusted for its tokens on `/api`, through `jwks_uri`).
fn external_bff_config(name: &str, issuer: &str, jwks_uri: &str, upstream: &str, client: &str, port: u16) -> String {
    format!(
        r#"
[[gateway.issuers]]
issuer = "{issuer}"
jwks_uri = "{jwks_uri}"
algorithms = ["ES256"]

[[gateway.routes]]
name = "api"
path_prefix = "/api"
upstreams = ["{upstream}"]
auth = "bff"
bff_app = "{name}"
issuers = ["{issuer}"]
audiences = ["{AUD}"]

[[gateway.bff]]
name = "{name}"
issuer = "{issuer}"
redirect_uri = "http://127.0.0.1:{port}/bff/callback"
{client}
"#
    )
}

/// The provider is another Portcullis (its own users, keys and issuer): the BFF discovers it,
/// signs the user in there, and the route verifies the provider's tokens through its JWKS.
#[tokio::test]
async fn bff_signs_in_with_an_external_provider() {
    let upstream = Upstream::start(None).await;
    let held = reserve_port();
    let port = held.port;
    let origin = format!("http://127.0.0.1:{port}");
    let provider = Instance::new();
    let bob = provider.create_user("bob", &["--name", "Bob External"]);
    let app = provider.create_app(
        "Partner SPA",
        &["--first-party", "--redirect-uri", &format!("{origin}/bff/callback"), "--audience", AUD],
    );
    let secret = app["client_secret"].as_str().unwrap();
    crate::harness::remember(secret);
    let op = provider.serve();
    let issuer = op.issuer.clone();
    let client = format!("client_id = \"{}\"\nclient_secret = \"{secret}\"", app["client_id"].as_str().unwrap());
    let config =
        external_bff_config("partner", &issuer, &format!("{issuer}/oauth2/jwks"), &upstream.url(), &client, port);
    let instance =
        Instance::new().with("PORTCULLIS_GATEWAY__LISTEN", &format!("127.0.0.1:{port}")).with_config(&config);
    let server = instance.serve();
    let browser = Browser::new();
    let start = browser.get(&server.gw("/bff/login")).await;
    assert_eq!(start.status, 303);
    assert!(start.location().starts_with(&op.url("/oauth2/authorize")), "{}", start.location());
    let page = browser.get(&start.location()).await;
    let page = browser.login(&op, &page, "bob", PASSWORD).await;
    assert_eq!(page.status, 303);
    let landed = browser.get(&page.location()).await;
    assert_eq!(landed.status, 303, "{}", landed.body);
    let me = browser.get(&server.gw("/bff/user")).await;
    assert_eq!(me.status, 200);
    let claims: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(claims["sub"], bob.as_str());
    assert_eq!(claims["name"], "Bob External");
    let resp = browser.get(&server.gw("/api/reports")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let seen = upstream.last();
    assert_eq!(seen.headers.get("x-portcullis-subject"), Some(&bob));
    assert_eq!(seen.headers.get("x-portcullis-issuer"), Some(&issuer));
}

/// A provider the test controls: its token endpoint hands out whatever ID token the test
/// put in `id_token`; its JWKS publishes one key.
#[derive(Clone, Default)]
struct FakeProvider {
    base: std::sync::Arc<std::sync::Mutex<String>>,
    jwks: std::sync::Arc<std::sync::Mutex<Value>>,
    id_token: std::sync::Arc<std::sync::Mutex<String>>,
}

async fn fake_provider() -> (FakeProvider, String) {
    use axum::extract::State;
    use axum::routing::{get, post};
    let p = FakeProvider::default();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(|State(p): State<FakeProvider>| async move {
                let base = p.base.lock().unwrap().clone();
                axum::Json(serde_json::json!({
                    "issuer": base, "authorization_endpoint": format!("{base}/authorize"),
                    "token_endpoint": format!("{base}/token"), "jwks_uri": format!("{base}/jwks"),
                }))
            }),
        )
        .route("/jwks", get(|State(p): State<FakeProvider>| async move { axum::Json(p.jwks.lock().unwrap().clone()) }))
        .route(
            "/token",
            post(|State(p): State<FakeProvider>| async move {
                let id_token = p.id_token.lock().unwrap().clone();
                axum::Json(serde_json::json!({
                    "access_token": "opaque-access", "token_type": "Bearer", "expires_in": 300, "id_token": id_token,
                }))
            }),
        )
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *p.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (p, base)
}

#[tokio::test]
async fn an_external_id_token_not_signed_by_the_providers_key_is_refused() {
    use domain::clock::Clock as _;
    use domain::jose::{Algorithm, Signer};
    let (provider, issuer) = fake_provider().await;
    let (good, _) = Signer::generate(Algorithm::ES256).unwrap();
    let (forger, _) = Signer::generate(Algorithm::ES256).unwrap();
    let jwk = good.public_jwk().unwrap();
    *provider.jwks.lock().unwrap() = serde_json::json!({ "keys": [jwk] });
    let upstream = Upstream::start(None).await;
    let held = reserve_port();
    let port = held.port;
    let config =
        external_bff_config("ext", &issuer, &format!("{issuer}/jwks"), &upstream.url(), "client_id = \"spa\"", port);
    let instance =
        Instance::new().with("PORTCULLIS_GATEWAY__LISTEN", &format!("127.0.0.1:{port}")).with_config(&config);
    let server = instance.serve();
    let sign = |signer: &Signer, nonce: &str| {
        let now = domain::clock::SystemClock.now();
        let claims = serde_json::json!({"iss": issuer, "aud": "spa", "sub": "ext-user", "iat": now, "exp": now + 300, "nonce": nonce});
        domain::jose::sign(signer, &jwk.kid, "JWT", &claims).unwrap()
    };
    for (what, signer, expected) in [("forged", &forger, 400), ("genuine", &good, 303)] {
        let browser = Browser::new();
        let start = browser.get(&server.gw("/bff/login")).await;
        let param = |name: &str| {
            url::Url::parse(&start.location()).unwrap().query_pairs().find(|(k, _)| k == name).unwrap().1.into_owned()
        };
        *provider.id_token.lock().unwrap() = sign(signer, &param("nonce"));
        let landed = browser.get(&server.gw(&format!("/bff/callback?code=c&state={}", param("state")))).await;
        assert_eq!(landed.status, expected, "{what}: {}", landed.body);
    }
}
