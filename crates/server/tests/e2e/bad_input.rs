//! Every rejection path of the token, introspection and revocation endpoints: exact status,
//! RFC 6749 §5.2 error code and headers; forged tokens come back inactive.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::harness::{Instance, Server, http, introspect, post_form, token};

const AUD: &str = "https://api.example.com";

async fn expect_error(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status().as_u16(), status, "expected {status} {code}");
    let headers = resp.headers().clone();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_eq!(headers["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()));
    if code == "invalid_client" {
        assert!(headers["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    }
}

fn raw(server: &Server, path: &str) -> reqwest::RequestBuilder {
    http().post(server.url(path))
}

#[tokio::test]
async fn token_endpoint_rejections() {
    let instance = Instance::new();
    let (id, secret) = instance.create_client("invoices:read invoices:write", AUD);
    let server = instance.serve();
    let url = server.url("/oauth2/token");
    let cc = [("grant_type", "client_credentials")];

    expect_error(post_form(&url, &id, "wrong-secret", &cc).await, 401, "invalid_client").await;
    expect_error(post_form(&url, "no-such-client", &secret, &cc).await, 401, "invalid_client").await;
    expect_error(raw(&server, "/oauth2/token").form(&cc).send().await.unwrap(), 401, "invalid_client").await;
    // client_secret_post works, and mixing it with Basic is refused.
    let post = [("grant_type", "client_credentials"), ("client_id", id.as_str()), ("client_secret", secret.as_str())];
    assert_eq!(raw(&server, "/oauth2/token").form(&post).send().await.unwrap().status(), 200);
    expect_error(post_form(&url, &id, &secret, &post).await, 400, "invalid_request").await;
    // A Bearer header is not client authentication.
    let bearer = raw(&server, "/oauth2/token").bearer_auth("x").form(&cc).send().await.unwrap();
    expect_error(bearer, 401, "invalid_client").await;

    expect_error(post_form(&url, &id, &secret, &[]).await, 400, "invalid_request").await;
    expect_error(
        post_form(&url, &id, &secret, &[("grant_type", "client_credentials"), ("grant_type", "client_credentials")])
            .await,
        400,
        "invalid_request",
    )
    .await;
    expect_error(
        post_form(&url, &id, &secret, &[("grant_type", "client_credentials"), ("scope", "a"), ("scope", "b")]).await,
        400,
        "invalid_request",
    )
    .await;
    for grant in ["password", "implicit", "urn:ietf:params:oauth:grant-type:jwt-bearer", "nonsense"] {
        expect_error(post_form(&url, &id, &secret, &[("grant_type", grant)]).await, 400, "unsupported_grant_type")
            .await;
    }
    expect_error(
        post_form(&url, &id, &secret, &[("grant_type", "client_credentials"), ("scope", "admin")]).await,
        400,
        "invalid_scope",
    )
    .await;

    // Bodies that are not forms.
    let json = raw(&server, "/oauth2/token")
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#)
        .send()
        .await
        .unwrap();
    expect_error(json, 400, "invalid_request").await;
    let no_type = raw(&server, "/oauth2/token")
        .basic_auth(&id, Some(&secret))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    expect_error(no_type, 400, "invalid_request").await;
    let utf8 = raw(&server, "/oauth2/token")
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(b"grant_type=client_credentials&scope=%FF%FE".to_vec())
        .send()
        .await
        .unwrap();
    expect_error(utf8, 400, "invalid_request").await;
    let raw_utf8 = raw(&server, "/oauth2/token")
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a', b'=', 0xC3, 0x28])
        .send()
        .await
        .unwrap();
    expect_error(raw_utf8, 400, "invalid_request").await;
    let huge = raw(&server, "/oauth2/token")
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 10 * 1024 * 1024])
        .send()
        .await;
    // The server may answer 413 before reading everything, or close the connection early.
    if let Ok(resp) = huge {
        expect_error(resp, 413, "invalid_request").await;
    }
    // Wrong method on the token endpoint: problem+json, not a 5xx.
    let get = http().get(&url).send().await.unwrap();
    assert_eq!(get.status(), 405);

    // The server is still healthy after all of that.
    assert_eq!(token(&server, &id, &secret, Some("invoices:write")).await["scope"], "invoices:write");
}

/// Builds `header.payload.signature` from JSON parts (signature is arbitrary bytes).
fn compact(header: &serde_json::Value, payload: &serde_json::Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

#[tokio::test]
async fn forged_tokens_are_inactive() {
    let instance = Instance::new();
    let (id, secret) = instance.create_client("invoices:read", AUD);
    let server = instance.serve();
    let good = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = good.split('.').collect();
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let jwks: serde_json::Value = http().get(server.url("/oauth2/jwks")).send().await.unwrap().json().await.unwrap();
    let public_jwk = jwks["keys"][0].clone();

    let mut forged: Vec<(&str, String)> = Vec::new();
    forged.push((
        "alg none",
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(serde_json::json!({"alg":"none","typ":"at+jwt","kid":kid}).to_string()),
            parts[1]
        ),
    ));
    // HS256 keyed with our public key (the classic algorithm-confusion attack).
    let hs_header = serde_json::json!({"alg":"HS256","typ":"at+jwt","kid":kid});
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(hs_header.to_string()), parts[1]);
    let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public_jwk.to_string().as_bytes());
    let tag = aws_lc_rs::hmac::sign(&hmac_key, signing_input.as_bytes());
    forged.push(("HS256 with public key", format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))));
    let mut unknown = header.clone();
    unknown["kid"] = "unknown-kid".into();
    forged.push(("unknown kid", format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(unknown.to_string()), parts[1], parts[2])));
    for (name, extra) in [
        ("jwk", public_jwk.clone()),
        ("jku", "https://evil.example/jwks".into()),
        ("x5u", "https://evil.example/cert".into()),
    ] {
        let mut h = header.clone();
        h[name] = extra;
        forged.push((name, compact(&h, &payload, &URL_SAFE_NO_PAD.decode(parts[2]).unwrap())));
    }
    let mut tampered = payload.clone();
    tampered["scope"] = "admin".into();
    forged.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(tampered.to_string()), parts[2]),
    ));
    forged.push(("truncated", good[..good.len() - 10].to_owned()));
    forged.push(("two parts", format!("{}.{}", parts[0], parts[1])));
    forged.push(("garbage", "not-a-token".into()));
    forged.push(("1 MB", "a".repeat(1024 * 1024)));

    for (name, token) in &forged {
        let resp = post_form(&server.url("/oauth2/introspect"), &id, &secret, &[("token", token)]).await;
        assert_eq!(resp.status(), 200, "{name}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"active": false}), "{name}");
    }
    // Revoking garbage is not an error either (RFC 7009 §2.2) …
    let resp = post_form(&server.url("/oauth2/revoke"), &id, &secret, &[("token", "garbage")]).await;
    assert_eq!(resp.status(), 200);
    // … and the genuine token is unaffected by all of the above.
    assert_eq!(introspect(&server, &id, &secret, &good).await["active"], true);
}

#[tokio::test]
async fn introspection_and_revocation_need_client_authentication() {
    let instance = Instance::new();
    let (id, secret) = instance.create_client("invoices:read", AUD);
    let (other_id, other_secret) = instance.create_client("invoices:read", AUD);
    let server = instance.serve();
    let t = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        let resp = raw(&server, path).form(&[("token", t.as_str())]).send().await.unwrap();
        expect_error(resp, 401, "invalid_client").await;
        expect_error(post_form(&server.url(path), &id, "bad", &[("token", &t)]).await, 401, "invalid_client").await;
        expect_error(post_form(&server.url(path), &id, &secret, &[]).await, 400, "invalid_request").await;
    }
    // Another client may introspect (it is a resource server) but not revoke this token.
    assert_eq!(introspect(&server, &other_id, &other_secret, &t).await["active"], true);
    let resp = post_form(&server.url("/oauth2/revoke"), &other_id, &other_secret, &[("token", &t)]).await;
    expect_error(resp, 400, "unauthorized_client").await;
    assert_eq!(introspect(&server, &id, &secret, &t).await["active"], true);
}
