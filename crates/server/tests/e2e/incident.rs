//! Incident commands against a running server, each followed by requests proving the
//! revoked credential is refused — by the gateway (whose verified-token cache already held
//! it) and by introspection — while everybody else's keep working.

use std::time::{Duration, Instant};

use crate::harness::{
    Browser, Instance, PASSWORD, Server, http, introspect, post_form, remember_tokens, token, urlencode,
};
use crate::upstream::Upstream;

const AUD: &str = "https://api.example.com";
const REDIRECT: &str = "http://127.0.0.1:9/cb";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn gateway(upstream: &Upstream) -> String {
    format!(
        "[[gateway.routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstreams = [\"{}\"]\nauth = \"jwt\"\naudiences = [\"{AUD}\"]\n",
        upstream.url()
    )
}

async fn gw_status(server: &Server, token: &str) -> u16 {
    http().get(server.gw("/api/x")).bearer_auth(token).send().await.unwrap().status().as_u16()
}

/// Waits (at most 5 s: the store sync runs every 2 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} did not happen within 5 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn incident(instance: &Instance, args: &[&str]) -> String {
    let mut cmd = vec!["incident"];
    cmd.extend_from_slice(args);
    let out = instance.cli(&cmd);
    assert_eq!(out.status, 0, "{cmd:?}: {}", out.stderr);
    out.stdout
}

#[tokio::test]
async fn revoking_a_client_refuses_every_token_it_holds() {
    let upstream = Upstream::start(None).await;
    let instance = Instance::new().with_config(&gateway(&upstream));
    let (victim, victim_secret) = instance.create_client("invoices:read", AUD);
    let (other, other_secret) = instance.create_client("invoices:read", AUD);
    let server = instance.serve();
    let stolen = token(&server, &victim, &victim_secret, None).await["access_token"].as_str().unwrap().to_owned();
    let fine = token(&server, &other, &other_secret, None).await["access_token"].as_str().unwrap().to_owned();
    assert_eq!(gw_status(&server, &stolen).await, 200, "cached as verified by the gateway");
    assert_eq!(introspect(&server, &other, &other_secret, &stolen).await["active"], true);

    let incident_started = crate::gateway::now();
    let out = incident(&instance, &["revoke-client", &victim]);
    let incident_ended = crate::gateway::now();
    assert!(out.contains("revoked everything of client"), "{out}");
    eventually("the gateway refusing the client's token", || async { gw_status(&server, &stolen).await == 401 }).await;
    let before = upstream.count();
    assert_eq!(gw_status(&server, &stolen).await, 401);
    assert_eq!(upstream.count(), before, "refused before the upstream");
    assert_eq!(introspect(&server, &other, &other_secret, &stolen).await["active"], false);
    let again =
        post_form(&server.url("/oauth2/token"), &victim, &victim_secret, &[("grant_type", "client_credentials")]).await;
    assert_eq!(again.status(), 401, "the client is disabled: no new tokens");
    assert_eq!(gw_status(&server, &fine).await, 200, "another client's token still works");

    // Re-enabled after the incident, the client gets tokens again as soon as the server's
    // client cache sees the change (the 2 s poll). The cut-off reaches the cache's staleness
    // bound (5 s) past the incident — an instance with a stale copy may have issued tokens
    // until then — so tokens issued within it are refused and those issued after it work.
    assert_eq!(instance.cli(&["client", "enable", &victim]).status, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp =
            post_form(&server.url("/oauth2/token"), &victim, &victim_secret, &[("grant_type", "client_credentials")])
                .await;
        if resp.status() == 200 {
            let fresh = resp.json::<serde_json::Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
            let iat = crate::dpop::payload(&fresh)["iat"].as_i64().unwrap();
            let status = gw_status(&server, &fresh).await;
            if iat <= incident_started + STALENESS {
                assert_eq!(status, 401, "issued within the cut-off window (iat {iat}, incident {incident_started})");
            } else if iat > incident_ended + STALENESS {
                assert_eq!(status, 200, "tokens issued after the cut-off are valid");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the re-enabled client never got a working token");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How far past an incident a client's cut-off reaches (the client cache's bound).
const STALENESS: i64 = 5;

#[tokio::test]
async fn revoking_a_user_ends_sessions_refresh_and_access_tokens() {
    let instance = Instance::new();
    instance.create_user("carol", &[]);
    let app = instance.create_app("App", &["--public", "--first-party", "--redirect-uri", REDIRECT]);
    let app_id = app["client_id"].as_str().unwrap().to_owned();
    let (rs, rs_secret) = instance.create_client("invoices:read", AUD);
    let server = instance.serve();
    let browser = Browser::new();
    let query = [
        ("response_type", "code"),
        ("client_id", app_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile"),
        ("state", "s"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={}", urlencode(v)))
    .collect::<Vec<_>>()
    .join("&");
    let page = browser.get(&format!("{}?{query}", server.url("/oauth2/authorize"))).await;
    let page = browser.login(&server, &page, "carol", PASSWORD).await;
    let code = page.redirect_param("code").expect("a code");
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", app_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    let tokens: serde_json::Value =
        http().post(server.url("/oauth2/token")).form(&form).send().await.unwrap().json().await.unwrap();
    remember_tokens(&tokens);
    let access = tokens["access_token"].as_str().expect("access token").to_owned();
    let refresh = tokens["refresh_token"].as_str().expect("refresh token").to_owned();
    assert_eq!(introspect(&server, &rs, &rs_secret, &access).await["active"], true);

    let sessions: serde_json::Value =
        serde_json::from_str(&incident(&instance, &["sessions", "carol", "--json"])).unwrap();
    assert_eq!(sessions.as_array().unwrap().len(), 1, "one browser signed in: {sessions}");
    assert_eq!(sessions[0]["amr"][0], "pwd");

    let out = incident(&instance, &["revoke-user", "carol", "--disable"]);
    assert!(out.contains("1 session(s)") && out.contains("sign-ins refused"), "{out}");
    assert_eq!(introspect(&server, &rs, &rs_secret, &access).await["active"], false, "access token refused");
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", app_id.as_str())];
    let refreshed = http().post(server.url("/oauth2/token")).form(&form).send().await.unwrap();
    assert_eq!(refreshed.status(), 400, "refresh token revoked");
    let sessions: serde_json::Value =
        serde_json::from_str(&incident(&instance, &["sessions", "carol", "--json"])).unwrap();
    assert_eq!(sessions, serde_json::json!([]), "no sessions left");
    let unknown = instance.cli(&["incident", "revoke-user", "nobody"]);
    assert_eq!(unknown.status, 2, "an unknown user is a usage error");
}

#[tokio::test]
async fn a_compromised_key_is_refused_at_once_and_replaced() {
    let upstream = Upstream::start(None).await;
    let instance = Instance::new().with_config(&gateway(&upstream));
    let (id, secret) = instance.create_client("invoices:read", AUD);
    let server = instance.serve();
    let signed = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    let kid = jsonwebtoken::decode_header(&signed).unwrap().kid.unwrap();
    assert_eq!(gw_status(&server, &signed).await, 200, "cached as verified by the gateway");

    let out = incident(&instance, &["revoke-key", &kid]);
    assert!(out.contains(&format!("purged key {kid}")), "{out}");
    eventually("the gateway refusing the key's token", || async { gw_status(&server, &signed).await == 401 }).await;
    assert_eq!(introspect(&server, &id, &secret, &signed).await["active"], false);
    let jwks: serde_json::Value = http().get(server.url("/oauth2/jwks")).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(!kids.contains(&kid.as_str()) && !kids.is_empty(), "gone from the JWKS, a successor published: {kids:?}");
    let fresh = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    assert_ne!(jsonwebtoken::decode_header(&fresh).unwrap().kid.unwrap(), kid, "signed by the successor");
    assert_eq!(gw_status(&server, &fresh).await, 200);
    let twice = instance.cli(&["incident", "revoke-key", &kid]);
    assert_eq!(twice.status, 1, "a purged key cannot be revoked again: {}", twice.stderr);

    let audit = instance.cli(&["audit", "search", "--event", "incident.", "--json"]);
    let record: serde_json::Value =
        serde_json::from_str(audit.stdout.lines().next().expect("an incident record")).unwrap();
    assert_eq!(record["event"], "incident.key_revoked");
    assert!(record["fields"]["actor"].as_str().unwrap().starts_with("cli:"));
}

#[tokio::test]
async fn revoking_an_owners_api_keys_refuses_all_of_them_and_only_them() {
    let upstream = Upstream::start(None).await;
    let config = format!(
        "[gateway]\napi_key_cache_ttl = \"1s\"\n\n[[gateway.routes]]\nname = \"r\"\npath_prefix = \"/r\"\n\
         upstreams = [\"{}\"]\nauth = \"api_key\"\n",
        upstream.url()
    );
    let instance = Instance::new().with_config(&config);
    let key = |name: &str, owner: &str| {
        let out = instance.cli(&["apikey", "create", "--name", name, "--owner", owner, "--json"]);
        assert_eq!(out.status, 0, "{}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        v["api_key"].as_str().unwrap().to_owned()
    };
    let (leaked_a, leaked_b, other) = (key("a", "team-x"), key("b", "team-x"), key("c", "team-y"));
    let server = instance.serve();
    let status = |k: String| {
        let url = server.gw("/r/x");
        async move { http().get(url).header("x-api-key", k).send().await.unwrap().status().as_u16() }
    };
    for k in [&leaked_a, &leaked_b, &other] {
        assert_eq!(status(k.clone()).await, 200);
    }
    let shown = instance.cli(&["apikey", "list", "--json"]);
    assert!(shown.stdout.contains("\"owner\":\"team-x\""), "{}", shown.stdout);

    let out = incident(&instance, &["revoke-apikeys", "--owner", "team-x"]);
    assert!(out.starts_with("revoked 2 API key(s) of team-x"), "{out}");
    for k in [&leaked_a, &leaked_b] {
        eventually("the gateway refusing the owner's key", || {
            let s = status(k.clone());
            async move { s.await == 401 }
        })
        .await;
    }
    assert_eq!(status(other.clone()).await, 200, "another owner's key still works");
}
