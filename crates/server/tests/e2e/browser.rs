//! A real browser (headless Chromium via chromedriver) performs the login and consent pages:
//! types into the labelled fields, clicks the buttons, follows the redirects to a real
//! callback server, and cannot read the session cookie from JavaScript. Skipped with the
//! reason printed only where Chromium is not installed, and never when
//! `PORTCULLIS_TEST_REQUIRE_SERVICES` is set (CI).

use crate::harness::{Instance, PASSWORD, http, urlencode};
use crate::upstream::Upstream;
use crate::webdriver;

const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

#[tokio::test]
async fn chromium_signs_in_through_the_login_and_consent_pages() {
    if let Some(reason) = webdriver::unavailable() {
        assert!(std::env::var_os("PORTCULLIS_TEST_REQUIRE_SERVICES").is_none(), "browser required on CI: {reason}");
        eprintln!("SKIPPED chromium_signs_in_through_the_login_and_consent_pages: {reason}");
        return;
    }
    let callback = Upstream::start(None).await;
    let redirect = format!("http://{}/cb", callback.addr.unwrap());
    let instance = Instance::new();
    instance.create_user("frank", &["--email", "frank@example.com"]);
    let app = instance.create_app("Browser App", &["--public", "--redirect-uri", &redirect]);
    let client_id = app["client_id"].as_str().unwrap();
    let server = instance.serve();
    let authorize = format!(
        "{}?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20email&state=br-1&code_challenge={CHALLENGE}&code_challenge_method=S256",
        server.url("/oauth2/authorize"),
        urlencode(&redirect)
    );

    let browser = webdriver::Browser::start().await;
    browser.goto(&authorize).await;
    // A wrong password first: the page says so, generically.
    browser.type_into("#username", "frank").await;
    browser.type_into("#password", "not the password").await;
    browser.click("#sign-in").await;
    let error = browser.find("#login-error").await;
    assert!(!error.is_empty());
    assert!(browser.source().await.contains("Incorrect username or password."));
    // The username is kept; type the password and sign in.
    browser.type_into("#password", PASSWORD).await;
    browser.click("#sign-in").await;
    browser.find("#allow").await;
    assert!(browser.source().await.contains("Browser App"));
    // JavaScript on Portcullis's own page cannot see the session cookie (HttpOnly).
    let cookies = browser.script("return document.cookie").await;
    assert!(!cookies.as_str().unwrap_or("").contains("portcullis_session"), "session cookie visible to JS: {cookies}");
    browser.click("#allow").await;
    let landed = browser.wait_for_url(&redirect).await;
    let url = url::Url::parse(&landed).unwrap();
    let param = |name: &str| url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    assert_eq!(param("state").as_deref(), Some("br-1"));
    assert_eq!(param("iss").as_deref(), Some(server.issuer.as_str()));
    let code = param("code").expect("a code at the callback");
    assert!(callback.seen.lock().unwrap().iter().any(|s| s.path == "/cb"), "the real callback server was reached");

    let tokens: serde_json::Value = http()
        .post(server.url("/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", client_id),
            ("redirect_uri", &redirect),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(tokens["id_token"].is_string() && tokens["refresh_token"].is_string(), "{tokens}");

    // Back again: the SSO session and the remembered consent skip both pages.
    browser.goto(&authorize.replace("br-1", "br-2")).await;
    let landed = browser.wait_for_url(&redirect).await;
    assert!(landed.contains("state=br-2") && landed.contains("code="), "{landed}");
}
