//! Every rejection of the users issue, each over HTTP against the real binary: the exact
//! status, error code, and that nothing leaked (no redirect to an unverified URI, no session,
//! no tokens).

use crate::harness::{Browser, Instance, PASSWORD, Server, http, urlencode};

const REDIRECT: &str = "http://127.0.0.1:9/cb";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// An authorization URL with good defaults; `extra` overrides (empty value removes).
fn authorize(server: &Server, client_id: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile"),
        ("state", "st-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect();
    format!("{}?{}", server.url("/oauth2/authorize"), query.join("&"))
}

async fn token(server: &Server, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let resp = http().post(server.url("/oauth2/token")).form(form).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Signs in through the pages (first-party app: no consent) and returns a fresh code.
async fn code_for(server: &Server, browser: &Browser, client_id: &str) -> String {
    let page = browser.get(&authorize(server, client_id, &[])).await;
    let page = if page.status == 200 { browser.login(server, &page, "carol", PASSWORD).await } else { page };
    assert_eq!(page.status, 303, "{}", page.body);
    page.redirect_param("code").unwrap()
}

#[tokio::test]
async fn authorization_requests_are_refused_exactly() {
    let instance = Instance::new();
    let app = instance.create_app("App", &["--public", "--first-party", "--redirect-uri", REDIRECT]);
    let id = app["client_id"].as_str().unwrap();
    let server = instance.serve();
    let browser = Browser::new();

    // The client or the redirect URI cannot be trusted: an error page, never a redirect.
    for bad in [
        "http://127.0.0.1:9/cb/",
        "http://127.0.0.1:9/CB",
        "http://127.0.0.1:90/cb",
        "http://localhost:9/cb",
        "http://127.0.0.1:9/cb?x=1",
        "http://127.0.0.1:9/c",
        "http://127.0.0.1:9/cbx",
        "https://127.0.0.1:9/cb",
        "https://evil.example/cb",
    ] {
        let page = browser.get(&authorize(&server, id, &[("redirect_uri", bad)])).await;
        assert_eq!(page.status, 400, "{bad}");
        assert!(page.headers.get("location").is_none(), "{bad}: never redirected");
        assert!(page.body.contains("Cannot continue"));
    }
    let page = browser.get(&authorize(&server, "no-such-client", &[])).await;
    assert_eq!((page.status, page.headers.get("location").is_none()), (400, true));

    // Everything else goes back to the verified redirect URI, with state and iss.
    for (extra, code) in [
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("response_type", "code id_token")], "unsupported_response_type"),
        (vec![("response_type", "")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("code_challenge", "tooshort")], "invalid_request"),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("prompt", "none")], "login_required"),
        (vec![("prompt", "none login")], "invalid_request"),
        (vec![("request", "eyJhbGciOiJub25lIn0.e30.")], "request_not_supported"),
        (vec![("state", "st-1"), ("state", "st-2")], "invalid_request"),
    ] {
        let url = authorize(&server, id, &[]);
        let url = if extra.len() == 2 { format!("{url}&state=st-2") } else { authorize(&server, id, &extra) };
        let page = browser.get(&url).await;
        assert_eq!(page.status, 303, "{extra:?}: {}", page.body);
        assert!(page.location().starts_with(REDIRECT), "{extra:?}");
        assert_eq!(page.redirect_param("error").as_deref(), Some(code), "{extra:?}");
        assert_eq!(page.redirect_param("iss").as_deref(), Some(server.issuer.as_str()), "{extra:?}");
        assert!(page.redirect_param("code").is_none());
        if extra.len() == 1 {
            assert_eq!(page.redirect_param("state").as_deref(), Some("st-1"), "{extra:?}");
        }
    }
    assert!(browser.cookies.lock().unwrap().get("portcullis_session").is_none(), "no session from any of it");
}

#[tokio::test]
async fn token_requests_with_a_code_are_refused_exactly() {
    let instance = Instance::new();
    instance.create_user("carol", &[]);
    let app = instance.create_app("App", &["--public", "--first-party", "--redirect-uri", REDIRECT]);
    let other = instance.create_app("Other", &["--first-party", "--redirect-uri", REDIRECT]);
    let id = app["client_id"].as_str().unwrap();
    let (other_id, other_secret) = (other["client_id"].as_str().unwrap(), other["client_secret"].as_str().unwrap());
    let server = instance.serve();
    let browser = Browser::new();

    let good = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("client_id", id.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
        ]
    };
    let with = |base: Vec<(&'static str, String)>, key: &str, value: Option<&str>| {
        let mut f: Vec<(&str, String)> = base.into_iter().filter(|(k, _)| *k != key).collect();
        if let Some(v) = value {
            f.push((Box::leak(key.to_owned().into_boxed_str()), v.to_owned()));
        }
        f
    };
    let send = |form: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token(server, &pairs).await
        }
    };

    // Each case spends a fresh code, and each code is dead afterwards (one chance only).
    let wrong_verifier = "A".repeat(43);
    let cases: Vec<(&str, Option<&str>, u16, &str)> = vec![
        ("code_verifier", Some(&wrong_verifier), 400, "invalid_grant"),
        ("code_verifier", None, 400, "invalid_request"),
        ("code_verifier", Some("short"), 400, "invalid_request"),
        ("redirect_uri", Some("http://127.0.0.1:9/cb/"), 400, "invalid_grant"),
        ("redirect_uri", None, 400, "invalid_grant"),
    ];
    for (key, value, status, error) in cases {
        let code = code_for(&server, &browser, id).await;
        let (s, body) = send(with(good(&code), key, value)).await;
        assert_eq!((s, body["error"].as_str().unwrap()), (status, error), "{key}={value:?}: {body}");
        if status == 400 && error == "invalid_grant" {
            let (s, body) = send(good(&code)).await;
            assert_eq!((s, body["error"].as_str().unwrap()), (400, "invalid_grant"), "spent by the failed try");
        }
    }

    // A code of one client is useless to another, even with the right verifier.
    let code = code_for(&server, &browser, id).await;
    let resp = http()
        .post(server.url("/oauth2/token"))
        .basic_auth(other_id, Some(other_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["error"], "invalid_grant");

    // A confidential client must authenticate; a public one must not pretend to.
    let code = code_for(&server, &browser, other_id).await;
    let (s, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", other_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!((s, body["error"].as_str().unwrap()), (401, "invalid_client"));
    let (s, _) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", id),
            ("client_secret", "guess"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(s, 401);

    // Refresh tokens: bound to their client, scope never widened.
    let code = code_for(&server, &browser, id).await;
    let (s, tokens) = send(good(&code)).await;
    assert_eq!(s, 200, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp = http()
        .post(server.url("/oauth2/token"))
        .basic_auth(other_id, Some(other_secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_grant",
        "another client's refresh token"
    );
    let (s, body) = token(
        &server,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", id), ("scope", "openid email")],
    )
    .await;
    assert_eq!((s, body["error"].as_str().unwrap()), (400, "invalid_scope"), "scope never widened");
    let (s, body) =
        token(&server, &[("grant_type", "refresh_token"), ("refresh_token", "made-up"), ("client_id", id)]).await;
    assert_eq!((s, body["error"].as_str().unwrap()), (400, "invalid_grant"));
    let (s, _) =
        token(&server, &[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", id)]).await;
    assert_eq!(s, 200, "the failed attempts did not spend it");

    // Revoking a refresh token (RFC 7009) kills its family.
    let code = code_for(&server, &browser, id).await;
    let (_, tokens) = send(good(&code)).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let resp =
        http().post(server.url("/oauth2/revoke")).form(&[("token", refresh), ("client_id", id)]).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (s, _) =
        token(&server, &[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", id)]).await;
    assert_eq!(s, 400);
    let info = http()
        .get(server.url("/oauth2/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 401, "its access token too");
}

#[tokio::test]
async fn login_csrf_lockout_and_no_enumeration() {
    let instance = Instance::new().with("PORTCULLIS_SIGNIN__LOCKOUT_ACCOUNT_FAILURES", "3");
    instance.create_user("carol", &[]);
    instance.create_user("dave", &[]);
    assert_eq!(instance.cli(&["user", "disable", "dave"]).status, 0);
    let app = instance.create_app("App", &["--public", "--redirect-uri", REDIRECT]);
    let id = app["client_id"].as_str().unwrap();
    let server = instance.serve();
    let browser = Browser::new();
    let login_page = browser.get(&authorize(&server, id, &[])).await;
    let request = login_page.field("request");
    let csrf = login_page.field("csrf");
    let post = |user: &'static str, password: &'static str, csrf: Option<String>| {
        let (server, browser, request) = (&server, &browser, request.clone());
        async move {
            let mut form = vec![("request", request), ("username", user.to_owned()), ("password", password.to_owned())];
            if let Some(c) = csrf {
                form.push(("csrf", c));
            }
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            browser.post(&server.url("/oauth2/login"), &pairs).await
        }
    };

    // Without the CSRF token (or with another), nothing happens.
    let page = post("carol", PASSWORD, None).await;
    assert_eq!(page.status, 403);
    let page = post("carol", PASSWORD, Some("x".repeat(43))).await;
    assert_eq!(page.status, 403);
    assert!(browser.cookies.lock().unwrap().get("portcullis_session").is_none());
    // An oversized form: an error page, not a bare transport error.
    let huge = "a".repeat(100_000);
    let page = browser.post(&server.url("/oauth2/login"), &[("username", huge.as_str())]).await;
    assert_eq!(page.status, 413);
    assert!(page.body.contains("Cannot continue"), "{}", page.body);

    // Unknown user, wrong password, disabled account: one answer.
    let unknown = post("nobody", "wrong password!!", Some(csrf.clone())).await;
    let wrong = post("carol", "wrong password!!", Some(csrf.clone())).await;
    let disabled = post("dave", PASSWORD, Some(csrf.clone())).await;
    for page in [&unknown, &wrong, &disabled] {
        assert_eq!(page.status, 403);
        assert!(page.body.contains("Incorrect username or password."), "{}", page.body);
    }
    let strip = |b: &str| b.replace("nobody", "").replace("carol", "").replace("dave", "");
    let without_csrf = |b: String| b.lines().filter(|l| !l.contains("name=\"csrf\"")).collect::<String>();
    assert_eq!(
        without_csrf(strip(&unknown.body)),
        without_csrf(strip(&wrong.body)),
        "same page apart from the name typed"
    );

    // Lockout after 3 failures, for existing and unknown names alike; even the right password waits.
    post("carol", "wrong password!!", Some(csrf.clone())).await;
    let third = post("carol", "wrong password!!", Some(csrf.clone())).await;
    assert_eq!(third.status, 403, "the third failure is still answered, and starts the lock");
    let locked = post("carol", PASSWORD, Some(csrf.clone())).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(locked.headers.get("retry-after").is_some());
    assert!(browser.cookies.lock().unwrap().get("portcullis_session").is_none());
    for _ in 0..2 {
        post("nobody", "wrong password!!", Some(csrf.clone())).await;
    }
    let ghost = post("nobody", "wrong password!!", Some(csrf.clone())).await;
    assert_eq!(ghost.status, 429, "unknown names lock the same way: no enumeration");
    let logs = server.logs_once("login.lockout");
    assert!(logs.iter().any(|l| l.contains("\"event\":\"login.failed\"") && l.contains("wrong_password")));
    assert!(logs.iter().any(|l| l.contains("\"event\":\"login.lockout\"")));
    assert!(logs.iter().any(|l| l.contains("\"event\":\"login.locked_out\"")));
    assert!(!logs.iter().any(|l| l.contains("wrong password!!") || l.contains(PASSWORD)), "no password in logs");
}

#[tokio::test]
async fn consent_denial_userinfo_errors_and_logout_everywhere() {
    let instance = Instance::new();
    instance.create_user("carol", &[]);
    let app = instance.create_app("Third Party", &["--public", "--redirect-uri", REDIRECT]);
    let id = app["client_id"].as_str().unwrap();
    let (svc, svc_secret) = instance.create_client("invoices:read", "https://api.example.com");
    let server = instance.serve();
    let browser = Browser::new();

    let page = browser.get(&authorize(&server, id, &[])).await;
    let page = browser.login(&server, &page, "carol", PASSWORD).await;
    let page = browser.consent(&server, &page, "deny").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.redirect_param("error").as_deref(), Some("access_denied"));
    assert_eq!(page.redirect_param("state").as_deref(), Some("st-1"));
    // Consent form without CSRF token.
    let page = browser.get(&authorize(&server, id, &[])).await;
    let request = page.field("request");
    let bad = browser.post(&server.url("/oauth2/consent"), &[("request", &request), ("decision", "allow")]).await;
    assert_eq!(bad.status, 403);
    let page = browser.consent(&server, &page, "allow").await;
    let code = page.redirect_param("code").unwrap();
    let (_, tokens) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    let access = tokens["access_token"].as_str().unwrap();

    // Userinfo: RFC 6750 challenges.
    let resp = http().get(server.url("/oauth2/userinfo")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"portcullis\", DPoP realm=\"portcullis\", algs=\"ES256 EdDSA RS256\""
    );
    let resp = http().get(server.url("/oauth2/userinfo")).bearer_auth("not.a.token").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("error=\"invalid_token\""));
    let machine = crate::harness::token(&server, &svc, &svc_secret, None).await;
    let resp = http()
        .get(server.url("/oauth2/userinfo"))
        .bearer_auth(machine["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "a token without openid");
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("insufficient_scope"));
    let resp = http()
        .post(server.url("/oauth2/userinfo"))
        .header("authorization", format!("bearer {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "scheme is case-insensitive; POST works");

    // Consents are listed and revocable; revoking brings the consent page back.
    let out = instance.cli(&["user", "consents", "carol", "--json"]);
    assert!(out.stdout.contains(id), "{}", out.stdout);
    assert_eq!(instance.cli(&["user", "revoke-consent", "carol", id]).status, 0);
    let page = browser.get(&authorize(&server, id, &[])).await;
    assert!(page.body.contains("Allow access?"), "consent asked again");

    // Logout without an id_token_hint asks first: a link from another site signs nobody out,
    // and the confirmation form needs its CSRF token.
    let confirm = browser.get(&server.url("/oauth2/logout")).await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains("Sign out?"), "{}", confirm.body);
    let forged = browser.post(&server.url("/oauth2/logout"), &[("confirm", "yes")]).await;
    assert!(forged.body.contains("Sign out?"), "no CSRF token: still only the question");
    let page = browser.get(&authorize(&server, id, &[])).await;
    assert!(!page.body.contains("id=\"password\""), "still signed in after both (consent page, no login)");

    // The incident command: every session and token of the user, at once.
    let out = instance.cli(&["user", "logout-everywhere", "carol"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("ended 1 session"), "{}", out.stdout);
    let resp = http().get(server.url("/oauth2/userinfo")).bearer_auth(access).send().await.unwrap();
    assert_eq!(resp.status(), 401, "access token revoked");
    let (s, _) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("client_id", id),
        ],
    )
    .await;
    assert_eq!(s, 400, "refresh token revoked");
    let page = browser.get(&authorize(&server, id, &[])).await;
    assert!(page.body.contains("id=\"password\""), "session ended: login page");
}

#[tokio::test]
async fn single_page_apps_get_cors_from_their_registered_origin_only() {
    let instance = Instance::new();
    instance.create_app("SPA", &["--public", "--redirect-uri", "http://localhost:5173/callback"]);
    let server = instance.serve();
    let preflight = |origin: &'static str| {
        let url = server.url("/oauth2/token");
        async move {
            http()
                .request(reqwest::Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
                .await
                .unwrap()
        }
    };
    // The origin set is loaded right after start; allow it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let resp = loop {
        let resp = preflight("http://localhost:5173").await;
        if resp.headers().contains_key("access-control-allow-origin") || std::time::Instant::now() > deadline {
            break resp;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(resp.status(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], "http://localhost:5173");
    assert!(resp.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(resp.headers().get("access-control-allow-credentials").is_none(), "no cookies cross-origin");
    let evil = preflight("https://evil.example").await;
    assert!(evil.headers().get("access-control-allow-origin").is_none(), "unregistered origin");

    // The actual request carries the header too; errors included, so the app can read them.
    let resp = http()
        .post(server.url("/oauth2/token"))
        .header("origin", "http://localhost:5173")
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["access-control-allow-origin"], "http://localhost:5173");
    // Public documents: any origin; pages and forms: none.
    let jwks = http().get(server.url("/oauth2/jwks")).header("origin", "https://any.example").send().await.unwrap();
    assert_eq!(jwks.headers()["access-control-allow-origin"], "*");
    let page =
        http().get(server.url("/oauth2/authorize")).header("origin", "http://localhost:5173").send().await.unwrap();
    assert!(page.headers().get("access-control-allow-origin").is_none());
}
