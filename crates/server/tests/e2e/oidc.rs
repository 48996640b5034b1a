//! The users issue's story with an independent relying party (the `openidconnect` crate):
//! discovery → authorize → login form over HTTP → consent → code → tokens → ID token
//! validated by the library (signature, nonce, at_hash) → userinfo → refresh twice → reuse
//! of the first refresh token kills the family → RP-initiated logout; and SSO across apps.

use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType, CoreUserInfoClaims};
use openidconnect::{
    AccessTokenHash, AuthenticationFlow, AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse as _,
};

use crate::harness::{Browser, Instance, PASSWORD, Server, http, urlencode};

const REDIRECT: &str = "http://127.0.0.1:9/cb";
const LOGGED_OUT: &str = "http://127.0.0.1:9/bye";

fn rp_http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn openid_connect_code_flow_refresh_reuse_and_logout() {
    // No grace window here: the reuse below must be detected at once.
    let instance = Instance::new().with("PORTCULLIS_SIGNIN__REFRESH_GRACE", "0");
    let user_id = instance.create_user(
        "alice",
        &[
            "--email",
            "alice@example.com",
            "--email-verified",
            "--name",
            "Alice",
            "--role",
            "editor",
            "--attributes",
            r#"{"tenant":"acme","department":"r&d","sub":"mallory","roles":["admin"]}"#,
        ],
    );
    let app = instance
        .create_app("Web App", &["--public", "--redirect-uri", REDIRECT, "--post-logout-redirect-uri", LOGGED_OUT]);
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    assert!(app.get("client_secret").is_none(), "public clients get no secret");
    let server = instance.serve();
    let rp = rp_http();

    // Discovery, by the library.
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(server.issuer.clone()).unwrap(), &rp)
        .await
        .expect("discovery");
    let client = CoreClient::from_provider_metadata(metadata, ClientId::new(client_id.clone()), None)
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The browser: login page, form, consent page, redirect with the code.
    let browser = Browser::new();
    let page = browser.get(url.as_str()).await;
    assert_eq!(page.status, 200);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(page.body.contains("<label for=\"username\">") && page.body.contains("Web App"));
    let page = browser.login(&server, &page, "alice", PASSWORD).await;
    assert_eq!(page.status, 200, "consent page: {}", page.body);
    let session_cookie = browser.cookies.lock().unwrap().get("portcullis_session").cloned();
    assert!(session_cookie.is_some(), "SSO session cookie set");
    let page = browser.consent(&server, &page, "allow").await;
    assert_eq!(page.status, 303);
    assert!(page.location().starts_with(REDIRECT), "{}", page.location());
    assert_eq!(page.redirect_param("state").as_deref(), Some(state.secret().as_str()));
    assert_eq!(page.redirect_param("iss").as_deref(), Some(server.issuer.as_str()), "RFC 9207");
    let code = page.redirect_param("code").unwrap();

    // Code → tokens; the library validates the ID token.
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&rp)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("an ID token for scope openid");
    let verifier = client.id_token_verifier();
    let claims = id_token.claims(&verifier, &nonce).expect("ID token valid for the library");
    assert_eq!(claims.subject().as_str(), user_id);
    assert!(claims.auth_time().is_some());
    let expected_hash = claims.access_token_hash().expect("at_hash");
    let actual = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(&actual, expected_hash, "at_hash binds the access token");
    let first_refresh = tokens.refresh_token().expect("a refresh token").clone();

    // The access token is an RFC 9068 JWT for the user, with roles.
    let at: serde_json::Value = {
        let payload = tokens.access_token().secret().split('.').nth(1).unwrap().to_owned();
        use base64::Engine as _;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    assert_eq!(at["sub"], user_id.as_str());
    assert_eq!(at["client_id"], client_id.as_str());
    assert_eq!(at["roles"], serde_json::json!(["editor"]));
    // The user record's attributes, for policies; never over a claim of ours.
    assert_eq!((at["tenant"].as_str(), at["department"].as_str()), (Some("acme"), Some("r&d")));
    let raw = tokens.access_token().secret().split('.').nth(1).unwrap().to_owned();
    let raw = {
        use base64::Engine as _;
        String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).unwrap()).unwrap()
    };
    assert_eq!(raw.matches("\"sub\"").count(), 1, "one sub claim: {raw}");
    assert!(!raw.contains("mallory") && !raw.contains("admin"), "attributes cannot set sub or roles: {raw}");

    // Userinfo, by the library.
    let info: CoreUserInfoClaims =
        client.user_info(tokens.access_token().clone(), None).unwrap().request_async(&rp).await.expect("userinfo");
    assert_eq!(info.subject().as_str(), user_id);
    assert_eq!(info.email().map(|e| e.as_str()), Some("alice@example.com"));
    assert_eq!(info.email_verified(), Some(true));
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some("alice"));

    // The code is single use: a replay fails and revokes what it issued.
    let replay = http()
        .post(server.url("/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &"a".repeat(43)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    assert_eq!(replay.json::<serde_json::Value>().await.unwrap()["error"], "invalid_grant");
    let after_replay = userinfo_status(&server, tokens.access_token().secret()).await;
    assert_eq!(after_replay, 401, "tokens issued from a replayed code are revoked");
    server.logs_once("token.code_replay");

    // A fresh sign-in (the SSO session skips the password and the remembered consent).
    let (tokens, _) = sign_in_again(&client, &browser).await;
    let r1 = tokens.refresh_token().unwrap().clone();
    assert_ne!(r1.secret(), first_refresh.secret());

    // Refresh twice: each use rotates.
    let t2 = client.exchange_refresh_token(&r1).unwrap().request_async(&rp).await.expect("first refresh");
    let r2 = t2.refresh_token().expect("rotated").clone();
    assert_ne!(r2.secret(), r1.secret());
    let t3 = client
        .exchange_refresh_token(&r2)
        .unwrap()
        .add_scope(Scope::new("openid".into()))
        .request_async(&rp)
        .await
        .expect("second refresh, narrowed scope");
    assert_eq!(t3.scopes().unwrap().len(), 1, "scope narrowed to openid");
    let r3 = t3.refresh_token().unwrap().clone();
    assert_eq!(userinfo_status(&server, t3.access_token().secret()).await, 200);

    // Reusing the first refresh token kills the whole family.
    let reuse = client.exchange_refresh_token(&r1).unwrap().request_async(&rp).await;
    assert!(reuse.is_err(), "a rotated refresh token is refused");
    let logs = server.logs_once("token.refresh_reuse");
    assert!(logs.iter().any(|l| l.contains("token.refresh_reuse")));
    assert!(client.exchange_refresh_token(&r3).unwrap().request_async(&rp).await.is_err(), "descendants die too");
    assert_eq!(userinfo_status(&server, t3.access_token().secret()).await, 401, "access tokens of the family die");

    // RP-initiated logout: ends the SSO session and revokes its refresh tokens.
    let (tokens, id_token) = sign_in_again(&client, &browser).await;
    let live_refresh = tokens.refresh_token().unwrap().clone();
    let logout = format!(
        "{}?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye-1",
        server.url("/oauth2/logout"),
        urlencode(LOGGED_OUT)
    );
    let page = browser.get(&logout).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location(), format!("{LOGGED_OUT}?state=bye-1"));
    assert!(browser.cookies.lock().unwrap().get("portcullis_session").is_none(), "cookie cleared");
    assert!(client.exchange_refresh_token(&live_refresh).unwrap().request_async(&rp).await.is_err());
    assert_eq!(userinfo_status(&server, tokens.access_token().secret()).await, 401);
    // The old session cookie no longer signs anyone in.
    browser.cookies.lock().unwrap().insert("portcullis_session".into(), session_cookie.unwrap());
    let (url, _, _) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(PkceCodeChallenge::new_random_sha256().0)
        .url();
    let page = browser.get(url.as_str()).await;
    assert!(page.body.contains("id=\"password\""), "login page again");

    // An unregistered post-logout URI is never followed.
    let page = browser
        .get(&format!(
            "{}?post_logout_redirect_uri={}&client_id={client_id}",
            server.url("/oauth2/logout"),
            urlencode("https://evil.example/")
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.headers.get("location").is_none());

    let logs = server.logs();
    assert!(!logs.iter().any(|l| l.contains(PASSWORD)), "no password in any log line");
    assert!(!logs.iter().any(|l| l.contains(tokens.access_token().secret())), "no token in any log line");
    assert!(!logs.iter().any(|l| l.contains(live_refresh.secret())), "no refresh token in any log line");
}

/// Signs in again through the existing SSO session; returns the tokens and the raw ID token.
async fn sign_in_again(
    client: &openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    browser: &Browser,
) -> (openidconnect::core::CoreTokenResponse, String) {
    let rp = rp_http();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, _, nonce) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let page = browser.get(url.as_str()).await;
    assert_eq!(page.status, 303, "SSO: no login page, no consent page: {}", page.body);
    let code = page.redirect_param("code").unwrap();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&rp)
        .await
        .unwrap();
    let id_token = tokens.id_token().unwrap();
    id_token.claims(&client.id_token_verifier(), &nonce).unwrap();
    let raw = id_token.to_string();
    (tokens, raw)
}

async fn userinfo_status(server: &Server, token: &str) -> u16 {
    http().get(server.url("/oauth2/userinfo")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_second_app_signs_in_without_a_password_and_refresh_retries_get_the_same_pair() {
    let instance = Instance::new();
    instance.create_user("bob", &[]);
    let first = instance.create_app("First", &["--public", "--first-party", "--redirect-uri", REDIRECT]);
    let second = instance.create_app("Second", &["--redirect-uri", "http://127.0.0.1:9/second"]);
    let server = instance.serve();
    let browser = Browser::new();
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let authorize = |client_id: &str, redirect: &str| {
        format!(
            "{}?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid&state=s&code_challenge={challenge}&code_challenge_method=S256",
            server.url("/oauth2/authorize"),
            urlencode(redirect)
        )
    };
    // First-party app: login, no consent.
    let page = browser.get(&authorize(first["client_id"].as_str().unwrap(), REDIRECT)).await;
    let page = browser.login(&server, &page, "bob", PASSWORD).await;
    assert_eq!(page.status, 303, "first-party: no consent page");
    let code = page.redirect_param("code").unwrap();

    // Second app (confidential, third-party): no password, but consent.
    let second_id = second["client_id"].as_str().unwrap();
    let page = browser.get(&authorize(second_id, "http://127.0.0.1:9/second")).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("id=\"password\""), "SSO: no password prompt");
    let page = browser.consent(&server, &page, "allow").await;
    assert_eq!(page.status, 303);
    assert!(page.redirect_param("code").is_some());
    // Consent is remembered.
    let page = browser.get(&authorize(second_id, "http://127.0.0.1:9/second")).await;
    assert_eq!(page.status, 303, "remembered consent");

    // Two tabs refresh with the same token at once: both get the same successor pair.
    let first_id = first["client_id"].as_str().unwrap();
    let tokens: serde_json::Value = http()
        .post(server.url("/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", first_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let refresh_once = || async {
        http()
            .post(server.url("/oauth2/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", first_id)])
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let (a, b) = tokio::join!(refresh_once(), refresh_once());
    assert!(a["refresh_token"].is_string(), "{a}");
    assert_eq!(a["refresh_token"], b["refresh_token"], "same successor within the grace window");
    assert_eq!(a["access_token"], b["access_token"]);
    let c = refresh_once().await;
    assert_eq!(a["refresh_token"], c["refresh_token"], "a retry gets the same pair too");
    assert!(server.logs_once("token.refresh_retry").iter().any(|l| l.contains("token.refresh_retry")));
}
