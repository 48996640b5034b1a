//! The issue's end-to-end story with independent client libraries: `openidconnect` obtains
//! a token (client_credentials) and fetches the JWKS, `jsonwebtoken` verifies it, then
//! introspection, revocation, and a restart that remembers both keys and revocations.

use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
use openidconnect::core::{CoreClient, CoreJsonWebKeySet};
use openidconnect::{ClientId, ClientSecret, IssuerUrl, JsonWebKeySetUrl, OAuth2TokenResponse as _, Scope, TokenUrl};

use crate::harness::{Instance, Server, http, introspect, post_form};

const AUD: &str = "https://api.example.com";

async fn token_with_openidconnect(server: &Server, id: &str, secret: &str) -> (String, u64, String) {
    let http_client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let jwks_url = JsonWebKeySetUrl::new(server.url("/oauth2/jwks")).unwrap();
    let jwks = CoreJsonWebKeySet::fetch_async(&jwks_url, &http_client).await.unwrap();
    let client = CoreClient::new(ClientId::new(id.into()), IssuerUrl::new(server.issuer.clone()).unwrap(), jwks)
        .set_client_secret(ClientSecret::new(secret.into()))
        .set_token_uri(TokenUrl::new(server.url("/oauth2/token")).unwrap());
    let response = client
        .exchange_client_credentials()
        .add_scope(Scope::new("invoices:read".into()))
        .request_async(&http_client)
        .await
        .unwrap();
    let scopes = response.scopes().unwrap().iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ");
    (response.access_token().secret().clone(), response.expires_in().unwrap().as_secs(), scopes)
}

/// Verifies with a JWT library that shares no code with Portcullis.
async fn verify_independently(server: &Server, token: &str) -> serde_json::Value {
    let jwks: JwkSet = http().get(server.url("/oauth2/jwks")).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("kid is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[AUD]);
    validation.set_issuer(&[server.issuer.as_str()]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).unwrap().claims
}

#[tokio::test]
async fn client_credentials_introspect_revoke_restart() {
    // A fixed issuer: the port changes across the restart, and a default issuer
    // (http://<bound address>) would change with it, rightly invalidating old tokens.
    let instance = Instance::new().with("PORTCULLIS_SERVER__ISSUER", "http://localhost:9");
    let (id, secret) = instance.create_client("invoices:read invoices:write", AUD);
    let server = instance.serve();

    let (token, expires_in, scope) = token_with_openidconnect(&server, &id, &secret).await;
    assert_eq!(expires_in, 900, "15 minutes by default");
    assert_eq!(scope, "invoices:read");

    let claims = verify_independently(&server, &token).await;
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["aud"], AUD);
    assert_eq!(claims["scope"], "invoices:read");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
    assert!(claims["jti"].as_str().unwrap().len() >= 16);
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);

    let active = introspect(&server, &id, &secret, &token).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], id.as_str());
    assert_eq!(active["scope"], "invoices:read");
    assert_eq!(active["token_type"], "Bearer");

    // Revoke: 200 with no body of consequence; afterwards inactive.
    let resp = post_form(
        &server.url("/oauth2/revoke"),
        &id,
        &secret,
        &[("token", &token), ("token_type_hint", "access_token")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(introspect(&server, &id, &secret, &token).await, serde_json::json!({"active": false}));

    // A token issued before the restart still verifies after it (same keys), and the
    // revocation is remembered.
    let (second, _, _) = token_with_openidconnect(&server, &id, &secret).await;
    let kid_before = jsonwebtoken::decode_header(&second).unwrap().kid;
    assert_eq!(server.stop(), 0, "clean exit on SIGTERM");
    let server = instance.serve();
    assert_eq!(introspect(&server, &id, &secret, &token).await["active"], false);
    assert_eq!(introspect(&server, &id, &secret, &second).await["active"], true);
    let (third, _, _) = token_with_openidconnect(&server, &id, &secret).await;
    assert_eq!(jsonwebtoken::decode_header(&third).unwrap().kid, kid_before, "signing key reused");
}

#[tokio::test]
async fn discovery_and_jwks_describe_what_is_supported() {
    let instance = Instance::new();
    let server = instance.serve();
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let resp = http().get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let doc: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(doc["issuer"], server.issuer.as_str());
        assert_eq!(doc["token_endpoint"], server.url("/oauth2/token"));
        assert_eq!(doc["jwks_uri"], server.url("/oauth2/jwks"));
        assert_eq!(doc["introspection_endpoint"], server.url("/oauth2/introspect"));
        assert_eq!(doc["revocation_endpoint"], server.url("/oauth2/revoke"));
        assert_eq!(
            doc["grant_types_supported"],
            serde_json::json!(["authorization_code", "client_credentials", "refresh_token"])
        );
        let methods = serde_json::json!(["client_secret_basic", "client_secret_post", "none"]);
        assert_eq!(doc["token_endpoint_auth_methods_supported"], methods);
        assert_eq!(
            doc["introspection_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post"])
        );
        assert_eq!(doc["authorization_endpoint"], server.url("/oauth2/authorize"));
        assert_eq!(doc["userinfo_endpoint"], server.url("/oauth2/userinfo"));
        assert_eq!(doc["end_session_endpoint"], server.url("/oauth2/logout"));
        assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]), "no implicit flow");
        assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]), "no plain PKCE");
        assert_eq!(doc["id_token_signing_alg_values_supported"], serde_json::json!(["ES256"]));
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    }
    let resp = http().get(server.url("/oauth2/jwks")).send().await.unwrap();
    let cache = resp.headers()["cache-control"].to_str().unwrap().to_owned();
    assert!(cache.starts_with("public, max-age="), "{cache}");
    let max_age: i64 = cache.trim_start_matches("public, max-age=").parse().unwrap();
    assert!(max_age > 0 && max_age * 2 <= 86_400, "max-age {max_age} must be at most half the announce period");
    let jwks: serde_json::Value = resp.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(key.get(private).is_none(), "private member {private} published");
    }
    // kid = RFC 7638 thumbprint, recomputed here independently.
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        key["x"].as_str().unwrap(),
        key["y"].as_str().unwrap()
    );
    use base64::Engine as _;
    use sha2::Digest as _;
    let thumb = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(canonical.as_bytes()));
    assert_eq!(key["kid"], thumb.as_str());
}

#[tokio::test]
async fn rs256_and_eddsa_are_selectable() {
    for (alg, expected) in [("RS256", jsonwebtoken::Algorithm::RS256), ("EdDSA", jsonwebtoken::Algorithm::EdDSA)] {
        let instance = Instance::new().with("PORTCULLIS_KEYS__ALGORITHM", alg);
        let (id, secret) = instance.create_client("invoices:read", AUD);
        let server = instance.serve();
        let body = crate::harness::token(&server, &id, &secret, None).await;
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(jsonwebtoken::decode_header(token).unwrap().alg, expected);
        let claims = verify_independently(&server, token).await;
        assert_eq!(claims["scope"], "invoices:read", "no scope requested: the client's defaults");
        assert_eq!(introspect(&server, &id, &secret, token).await["active"], true);
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let instance = Instance::new();
    let server = instance.serve();
    let h = http().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let r = http().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let nf = http().get(server.url("/nope")).send().await.unwrap();
    assert_eq!(nf.status(), 404);
    assert_eq!(nf.headers()["content-type"], "application/problem+json");
}
