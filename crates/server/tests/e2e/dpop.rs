//! Sender-constrained tokens end to end: DPoP (RFC 9449) with a client written here (its
//! own P-256 key, proofs signed with aws-lc-rs, not with Portcullis code) through the
//! client-credentials and authorization-code flows, the gateway and userinfo; every
//! tampering refused before the upstream; server nonces; and certificate-bound tokens
//! (RFC 8705) over mutual TLS.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::harness::{Browser, Instance, PASSWORD, Server, eventually, http, remember_tokens, urlencode};
use crate::upstream::Upstream;

const AUD: &str = "https://api.example.com";
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const PKCE_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// The test's DPoP client: a key pair and proofs signed by hand (RFC 9449 §4.2).
pub(crate) struct DpopKey {
    key: EcdsaKeyPair,
    jwk: Value,
}

fn now() -> i64 {
    use domain::clock::Clock as _;
    domain::clock::SystemClock.now()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl DpopKey {
    pub(crate) fn new() -> Self {
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = key.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..65])});
        Self { key, jwk }
    }

    /// RFC 7638 thumbprint, computed here independently.
    fn jkt(&self) -> String {
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#, self.jwk["x"], self.jwk["y"]);
        b64(&Sha256::digest(canonical.as_bytes()))
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk})
    }

    fn claims(htm: &str, htu: &str, token: Option<&str>) -> Value {
        let mut c = json!({"jti": b64(&rand_bytes()), "htm": htm, "htu": htu, "iat": now()});
        if let Some(t) = token {
            c["ath"] = json!(b64(&Sha256::digest(t.as_bytes())));
        }
        c
    }

    pub(crate) fn proof(&self, htm: &str, htu: &str, token: Option<&str>) -> String {
        self.sign(&self.header(), &Self::claims(htm, htu, token))
    }
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    b
}

pub(crate) fn payload(jwt: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[[gateway.routes]]
name = "invoices"
path_prefix = "/api"
upstreams = ["{upstream}"]
auth = "jwt"
audiences = ["{AUD}"]
{extra}
"#
    )
}

/// A client-credentials token request, with a proof when given.
async fn cc_token(server: &Server, id: &str, secret: &str, proof: Option<String>) -> reqwest::Response {
    let mut req = http()
        .post(server.url("/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")]);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    req.send().await.unwrap()
}

async fn call(url: &str, authorization: &str, proof: Option<&str>) -> reqwest::Response {
    let mut req = http().get(url).header("authorization", authorization);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn dpop_client_credentials_through_the_gateway_and_every_tampering_refused() {
    let upstream = Upstream::start(None).await;
    let instance = Instance::new().with_config(&config(&upstream.url(), ""));
    let (id, secret) = instance.create_client("invoices:read", AUD);
    let server = instance.serve();
    let key = DpopKey::new();
    let token_url = server.url("/oauth2/token");

    // Discovery advertises DPoP.
    let doc: Value =
        http().get(server.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["dpop_signing_alg_values_supported"], json!(["ES256", "EdDSA", "RS256"]));

    // A token request with a proof: a DPoP token bound to our key.
    let resp = cc_token(&server, &id, &secret, Some(key.proof("POST", &token_url, None))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    remember_tokens(&body);
    assert_eq!(body["token_type"], "DPoP");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(payload(&token)["cnf"]["jkt"], json!(key.jkt()), "cnf.jkt is the RFC 7638 thumbprint of our key");

    // Introspection reports the binding.
    let resp = http()
        .post(server.url("/oauth2/introspect"))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    let info: Value = resp.json().await.unwrap();
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "DPoP");
    assert_eq!(info["cnf"]["jkt"], json!(key.jkt()));

    // The gateway: DPoP scheme plus a fresh proof for this request.
    let url = server.gw("/api/invoices?page=2");
    let htu = server.gw("/api/invoices");
    let good = key.proof("GET", &htu, Some(&token));
    let resp = call(&url, &format!("DPoP {token}"), Some(&good)).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    assert_eq!(upstream.last().headers.get("x-portcullis-client-id"), Some(&id));
    let upstream_headers = upstream.last().headers;
    assert!(!upstream_headers.contains_key("dpop"), "the proof is not forwarded");

    // Every tampering is refused without reaching the upstream.
    let other = DpopKey::new();
    let claims = |htm: &str, htu: &str| DpopKey::claims(htm, htu, Some(&token));
    let mut stale = claims("GET", &htu);
    stale["iat"] = json!(now() - 600);
    let mut no_ath = claims("GET", &htu);
    no_ath.as_object_mut().unwrap().remove("ath");
    let mut private = key.header();
    private["jwk"]["d"] = json!(b64(&[7u8; 32]));
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk}).to_string().as_bytes()),
        b64(claims("GET", &htu).to_string().as_bytes())
    );
    let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"a shared secret of thirty-two b!");
    let hs_input = format!(
        "{}.{}",
        b64(json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64(b"a shared secret of thirty-two b!")}})
            .to_string()
            .as_bytes()),
        b64(claims("GET", &htu).to_string().as_bytes())
    );
    let symmetric = format!("{hs_input}.{}", b64(aws_lc_rs::hmac::sign(&hmac_key, hs_input.as_bytes()).as_ref()));
    let dpop_auth = format!("DPoP {token}");
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("wrong htm", dpop_auth.clone(), Some(key.sign(&key.header(), &claims("POST", &htu)))),
        ("wrong htu", dpop_auth.clone(), Some(key.sign(&key.header(), &claims("GET", &server.gw("/api/other"))))),
        ("stale iat", dpop_auth.clone(), Some(key.sign(&key.header(), &stale))),
        ("replayed proof", dpop_auth.clone(), Some(good.clone())),
        ("proof by another key", dpop_auth.clone(), Some(other.proof("GET", &htu, Some(&token)))),
        ("missing ath", dpop_auth.clone(), Some(key.sign(&key.header(), &no_ath))),
        ("ath of another token", dpop_auth.clone(), Some(key.proof("GET", &htu, Some("another.token.value")))),
        ("downgraded to Bearer", format!("Bearer {token}"), None),
        ("downgraded to Bearer, proof attached", format!("Bearer {token}"), Some(key.proof("GET", &htu, Some(&token)))),
        ("no proof", dpop_auth.clone(), None),
        ("alg none", dpop_auth.clone(), Some(unsigned)),
        ("symmetric alg", dpop_auth.clone(), Some(symmetric)),
        ("private key in the proof", dpop_auth.clone(), Some(key.sign(&private, &claims("GET", &htu)))),
        (
            "typ not dpop+jwt",
            dpop_auth.clone(),
            Some(key.sign(&json!({"typ": "JWT", "alg": "ES256", "jwk": key.jwk}), &claims("GET", &htu))),
        ),
    ];
    for (what, authorization, proof) in cases {
        let before = upstream.count();
        let resp = call(&url, &authorization, proof.as_deref()).await;
        assert_eq!(resp.status(), 401, "{what}");
        let challenge = resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
        assert!(challenge.as_deref().is_some_and(|c| c.contains("error=")), "{what}: {challenge:?}");
        assert_eq!(upstream.count(), before, "{what}: never reached the upstream");
    }
    // A proof error says so in the DPoP scheme (RFC 9449 §7.1).
    let resp = call(&url, &dpop_auth, Some(&good)).await;
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("DPoP ") && challenge.contains("invalid_dpop_proof"), "{challenge}");

    // A bearer token still works as one, and cannot pretend to be DPoP-bound.
    let bearer: Value = cc_token(&server, &id, &secret, None).await.json().await.unwrap();
    remember_tokens(&bearer);
    assert_eq!(bearer["token_type"], "Bearer");
    let plain = bearer["access_token"].as_str().unwrap();
    assert!(payload(plain).get("cnf").is_none());
    assert_eq!(call(&url, &format!("Bearer {plain}"), None).await.status(), 200);
    let before = upstream.count();
    let resp = call(&url, &format!("DPoP {plain}"), Some(&key.proof("GET", &htu, Some(plain)))).await;
    assert_eq!(resp.status(), 401, "an unbound token under the DPoP scheme");
    assert_eq!(upstream.count(), before);

    // Client authentication comes first: a wrong secret does not spend the proof.
    let proof = key.proof("POST", &token_url, None);
    let resp = cc_token(&server, &id, "not-the-secret", Some(proof.clone())).await;
    assert_eq!(resp.status(), 401);
    let resp = cc_token(&server, &id, &secret, Some(proof)).await;
    assert_eq!(resp.status(), 200, "the proof was not spent by the failed request");
    remember_tokens(&resp.json().await.unwrap());

    // Token endpoint: a bad proof is `invalid_dpop_proof` (RFC 9449 §5), and a proof may
    // not be replayed there either.
    let replayed = key.proof("POST", &token_url, None);
    assert_eq!(cc_token(&server, &id, &secret, Some(replayed.clone())).await.status(), 200);
    for (what, proof) in [
        ("replayed", replayed),
        ("wrong htu", key.proof("POST", &server.url("/oauth2/other"), None)),
        ("wrong htm", key.proof("GET", &token_url, None)),
    ] {
        let resp = cc_token(&server, &id, &secret, Some(proof)).await;
        assert_eq!(resp.status(), 400, "{what}");
        assert!(resp.headers().contains_key("dpop-nonce"), "{what}: a nonce for the next try");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_dpop_proof", "{what}");
    }
    let resp = http()
        .post(&token_url)
        .basic_auth(&id, Some(&secret))
        .header("DPoP", key.proof("POST", &token_url, None))
        .header("DPoP", key.proof("POST", &token_url, None))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "two DPoP headers");

    // A client registered with --dpop-bound must send a proof.
    let bound = instance.create_service("bound", "invoices:read", AUD, &["--dpop-bound"]);
    let (bid, bsecret) = (bound["client_id"].as_str().unwrap(), bound["client_secret"].as_str().unwrap());
    let shown = instance.cli(&["client", "show", bid, "--json"]);
    let shown: Value = serde_json::from_str(shown.stdout.trim()).unwrap();
    assert_eq!(shown["dpop_bound_access_tokens"], true);
    let resp = cc_token(&server, bid, bsecret, None).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_dpop_proof");
    let resp = cc_token(&server, bid, bsecret, Some(key.proof("POST", &token_url, None))).await;
    assert_eq!(resp.status(), 200);
    remember_tokens(&resp.json().await.unwrap());

    // `client update` turns the rule off and on again for a running server.
    let off = instance.cli(&["client", "update", bid, "--dpop-bound", "false", "--json"]);
    assert_eq!(off.status, 0, "{}", off.stderr);
    assert_eq!(serde_json::from_str::<Value>(off.stdout.trim()).unwrap()["dpop_bound_access_tokens"], false);
    // Running servers see the change within their client-cache poll.
    let server = &server;
    let settles_to = |want: u16| async move {
        let what = format!("not {want} after the CLI change");
        eventually(std::time::Duration::from_secs(5), &what, || async {
            let resp = cc_token(server, bid, bsecret, None).await;
            let status = resp.status().as_u16();
            if status == 200 {
                remember_tokens(&resp.json().await.unwrap());
            }
            status == want
        })
        .await;
    };
    settles_to(200).await;
    assert_eq!(instance.cli(&["client", "update", bid, "--dpop-bound", "true"]).status, 0);
    settles_to(400).await;
    assert_ne!(instance.cli(&["client", "update", bid]).status, 0, "nothing to update");
    assert_ne!(instance.cli(&["client", "update", bid, "--dpop-bound", "maybe"]).status, 0);
}

/// Signs in `alice` through the login form and returns an authorization code for `client_id`.
async fn code_for(server: &Server, client_id: &str, challenge: &str, extra: &str) -> String {
    let browser = Browser::new();
    let url = format!(
        "{}?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20profile&state=s&code_challenge={challenge}&code_challenge_method=S256{extra}",
        server.url("/oauth2/authorize"),
        urlencode(REDIRECT)
    );
    let page = browser.get(&url).await;
    let page = browser.login(server, &page, "alice", PASSWORD).await;
    assert_eq!(page.status, 303, "first-party app: no consent page");
    page.redirect_param("code").unwrap()
}

#[tokio::test]
async fn dpop_code_flow_binds_a_public_clients_refresh_token_and_userinfo_checks_proofs() {
    let upstream = Upstream::start(None).await;
    let instance = Instance::new().with_config(&config(&upstream.url(), ""));
    let user_id = instance.create_user("alice", &["--name", "Alice"]);
    let app = instance.create_app("SPA", &["--public", "--first-party", "--redirect-uri", REDIRECT, "--audience", AUD]);
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    let server = instance.serve();
    let key = DpopKey::new();
    let token_url = server.url("/oauth2/token");
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let code = code_for(&server, &client_id, PKCE_CHALLENGE, "").await;

    let redeem = |proof: Option<String>, form: Vec<(&'static str, String)>| {
        let mut req = http().post(&token_url).form(&form);
        if let Some(p) = proof {
            req = req.header("DPoP", p);
        }
        req.send()
    };
    let form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", REDIRECT.to_owned()),
        ("client_id", client_id.clone()),
        ("code_verifier", verifier.to_owned()),
    ];
    let resp = redeem(Some(key.proof("POST", &token_url, None)), form).await.unwrap();
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    remember_tokens(&tokens);
    assert_eq!(tokens["token_type"], "DPoP");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(payload(&access)["cnf"]["jkt"], json!(key.jkt()));

    // The user's DPoP token through the gateway: the upstream sees the user.
    let api = server.gw("/api/me");
    let resp = call(&api, &format!("DPoP {access}"), Some(&key.proof("GET", &api, Some(&access)))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.last().headers.get("x-portcullis-subject"), Some(&user_id));
    let before = upstream.count();
    assert_eq!(call(&api, &format!("Bearer {access}"), None).await.status(), 401, "no downgrade to Bearer");
    assert_eq!(upstream.count(), before);

    // Userinfo is a protected resource: DPoP scheme and a proof by the bound key.
    let userinfo = server.url("/oauth2/userinfo");
    let resp = call(&userinfo, &format!("DPoP {access}"), Some(&key.proof("GET", &userinfo, Some(&access)))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["name"], "Alice");
    let resp = call(&userinfo, &format!("Bearer {access}"), None).await;
    assert_eq!(resp.status(), 401, "a DPoP-bound token is no bearer token");
    let resp =
        call(&userinfo, &format!("DPoP {access}"), Some(&DpopKey::new().proof("GET", &userinfo, Some(&access)))).await;
    assert_eq!(resp.status(), 401, "proof by another key");
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("DPoP ") && challenge.contains("error="), "{challenge}");

    // The public client's refresh token is bound to the key: no proof, or another key's,
    // cannot redeem it — and does not spend it.
    let refresh_form = || {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh.clone()),
            ("client_id", client_id.clone()),
        ]
    };
    for (what, proof) in [("no proof", None), ("another key", Some(DpopKey::new().proof("POST", &token_url, None)))] {
        let resp = redeem(proof, refresh_form()).await.unwrap();
        assert_eq!(resp.status(), 400, "{what}");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_dpop_proof", "{what}");
    }
    let resp = redeem(Some(key.proof("POST", &token_url, None)), refresh_form()).await.unwrap();
    assert_eq!(resp.status(), 200, "the bound key refreshes");
    let next: Value = resp.json().await.unwrap();
    remember_tokens(&next);
    assert_eq!(next["token_type"], "DPoP");
    assert_eq!(payload(next["access_token"].as_str().unwrap())["cnf"]["jkt"], json!(key.jkt()));
    // The successor is bound too.
    let successor = next["refresh_token"].as_str().unwrap().to_owned();
    let resp = redeem(
        None,
        vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", successor),
            ("client_id", client_id.clone()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400, "the successor keeps the binding");

    // RFC 9449 §10: a code bound at the authorization request (dpop_jkt) is redeemed only
    // with a proof by that key.
    let code_form = |code: String| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            ("redirect_uri", REDIRECT.to_owned()),
            ("client_id", client_id.clone()),
            ("code_verifier", verifier.to_owned()),
        ]
    };
    let bound = format!("&dpop_jkt={}", key.jkt());
    let code = code_for(&server, &client_id, PKCE_CHALLENGE, &bound).await;
    let resp = redeem(Some(DpopKey::new().proof("POST", &token_url, None)), code_form(code)).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let code = code_for(&server, &client_id, PKCE_CHALLENGE, &bound).await;
    let resp = redeem(None, code_form(code)).await.unwrap();
    assert_eq!(resp.status(), 400, "no proof at all");
    let code = code_for(&server, &client_id, PKCE_CHALLENGE, &bound).await;
    let resp = redeem(Some(key.proof("POST", &token_url, None)), code_form(code)).await.unwrap();
    assert_eq!(resp.status(), 200, "the bound key redeems it");
    remember_tokens(&resp.json().await.unwrap());
    // A malformed dpop_jkt is refused at the authorization endpoint (reported to the client).
    let url = format!(
        "{}?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid&state=s&code_challenge={PKCE_CHALLENGE}&code_challenge_method=S256&dpop_jkt=short",
        server.url("/oauth2/authorize"),
        urlencode(REDIRECT)
    );
    let page = Browser::new().get(&url).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.redirect_param("error").as_deref(), Some("invalid_request"));
}

#[tokio::test]
async fn server_nonces_are_required_when_configured() {
    let upstream = Upstream::start(None).await;
    let instance = Instance::new()
        .with_config(&config(&upstream.url(), "\n[dpop]\nnonce_at_token_endpoint = true\nnonce_at_resources = true\n"));
    let (id, secret) = instance.create_client("invoices:read", AUD);
    let server = instance.serve();
    let key = DpopKey::new();
    let token_url = server.url("/oauth2/token");

    // RFC 9449 §8: the first request learns the nonce from a use_dpop_nonce error.
    let resp = cc_token(&server, &id, &secret, Some(key.proof("POST", &token_url, None))).await;
    assert_eq!(resp.status(), 400);
    let nonce = resp.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "use_dpop_nonce");
    let mut claims = DpopKey::claims("POST", &token_url, None);
    claims["nonce"] = json!(nonce);
    let resp = cc_token(&server, &id, &secret, Some(key.sign(&key.header(), &claims))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    remember_tokens(&body);
    let token = body["access_token"].as_str().unwrap().to_owned();

    // The gateway too (RFC 9449 §9): 401 use_dpop_nonce with the nonce, then through.
    let htu = server.gw("/api/x");
    let before = upstream.count();
    let resp = call(&htu, &format!("DPoP {token}"), Some(&key.proof("GET", &htu, Some(&token)))).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("use_dpop_nonce"));
    let nonce = resp.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(upstream.count(), before);
    let mut claims = DpopKey::claims("GET", &htu, Some(&token));
    claims["nonce"] = json!(nonce);
    let resp = call(&htu, &format!("DPoP {token}"), Some(&key.sign(&key.header(), &claims))).await;
    assert_eq!(resp.status(), 200);
    // A nonce that is not ours is refused like a missing one.
    let mut claims = DpopKey::claims("GET", &htu, Some(&token));
    claims["nonce"] = json!("bm90LW91cnM");
    let resp = call(&htu, &format!("DPoP {token}"), Some(&key.sign(&key.header(), &claims))).await;
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn certificate_bound_tokens_need_the_same_certificate_at_the_gateway() {
    use crate::mtls::{client_cert, https, mtls_instance};
    let upstream = Upstream::start(None).await;
    let (instance, clients, server_ca) = mtls_instance(&config(&upstream.url(), ""));
    let subject = "spiffe://example.org/billing";
    let client = instance.create_service("billing", "invoices:read", AUD, &["--tls-client-auth-subject", subject]);
    assert!(client.get("client_secret").is_none(), "tls_client_auth: no secret to leak");
    let id = client["client_id"].as_str().unwrap().to_owned();
    let server = instance.serve();

    let doc: Value = https(&server_ca, None)
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["tls_client_certificate_bound_access_tokens"], true);
    assert!(doc["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("tls_client_auth")));

    // The client authenticates with its certificate: no secret, a token bound to the cert.
    let (identity, der) = client_cert(&clients, "billing", Some(subject));
    let billing = https(&server_ca, Some(identity));
    let form = [("grant_type", "client_credentials"), ("client_id", id.as_str())];
    let resp = billing.post(server.url("/oauth2/token")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    remember_tokens(&body);
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(payload(&token)["cnf"]["x5t#S256"], json!(b64(&Sha256::digest(&der))));

    // Another certificate of the same CA, or none, does not authenticate the client.
    let (other_identity, _) = client_cert(&clients, "reports", Some("spiffe://example.org/reports"));
    let reports = https(&server_ca, Some(other_identity));
    let resp = reports.post(server.url("/oauth2/token")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 401, "certificate of another subject");
    let anonymous = https(&server_ca, None);
    let resp = anonymous.post(server.url("/oauth2/token")).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 401, "no certificate");

    // At the gateway the token works only with the certificate it is bound to.
    let url = server.gw("/api/invoices");
    let bearer = format!("Bearer {token}");
    let resp = billing.get(&url).header("authorization", &bearer).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for (what, client) in [("another certificate", &reports), ("no certificate", &anonymous)] {
        let before = upstream.count();
        let resp = client.get(&url).header("authorization", &bearer).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        assert_eq!(upstream.count(), before, "{what}: never reached the upstream");
    }
}
