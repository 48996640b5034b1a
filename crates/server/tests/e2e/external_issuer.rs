//! Tokens from an external issuer, verified through its JWKS: a JWKS server started by
//! the test, keys rotated under the gateway's feet, and the issuer going down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use domain::jose::{self, Algorithm, Jwk, Signer};

use crate::harness::{Instance, http};
use crate::upstream::Upstream;

const EXT: &str = "https://ext-idp.example.com/";
const AUD: &str = "https://api.example.com";

#[derive(Clone, Default)]
struct Idp {
    keys: Arc<Mutex<Vec<Jwk>>>,
    up: Arc<Mutex<bool>>,
    fetches: Arc<AtomicUsize>,
}

async fn jwks(State(idp): State<Idp>) -> axum::response::Response {
    idp.fetches.fetch_add(1, Ordering::SeqCst);
    if !*idp.up.lock().unwrap() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(serde_json::json!({ "keys": *idp.keys.lock().unwrap() })).into_response()
}

fn key(alg: Algorithm) -> (Signer, Jwk) {
    let (signer, _) = Signer::generate(alg).unwrap();
    let mut jwk = signer.public_jwk().unwrap();
    jwk.kid = format!("ext-{}", &jwk.kid[..8]);
    (signer, jwk)
}

#[expect(clippy::disallowed_methods, reason = "tests build claims against the wall clock")]
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sign(signer: &Signer, kid: &str, extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({
        "iss": EXT, "sub": "auth0|alice", "aud": [AUD, "https://other"], "azp": "spa-client",
        "exp": now() + 300, "iat": now(), "scope": "invoices:read profile", "https://example.com/roles": ["editor", "viewer"],
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    jose::sign(signer, kid, "JWT", &claims).unwrap()
}

#[tokio::test]
async fn external_tokens_verified_through_a_cached_jwks() {
    let idp = Idp::default();
    *idp.up.lock().unwrap() = true;
    let (k1, jwk1) = key(Algorithm::ES256);
    idp.keys.lock().unwrap().push(jwk1.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp_addr = listener.local_addr().unwrap();
    let app = Router::new().route("/jwks", axum::routing::get(jwks)).with_state(idp.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let upstream = Upstream::start(None).await;
    let toml = format!(
        r#"
[[gateway.issuers]]
issuer = "{EXT}"
jwks_uri = "http://{idp_addr}/jwks"
algorithms = ["ES256"]
typ = ["JWT", "at+jwt"]
min_refetch_interval = "1s"
refresh_interval = "1h"
roles_claim = "https://example.com/roles"

[[gateway.routes]]
name = "ext"
path_prefix = "/ext"
upstreams = ["{up}"]
auth = "jwt"
issuers = ["{EXT}"]
audiences = ["{AUD}"]
scopes_all = ["invoices:read"]
roles_any = ["editor", "admin"]

[[gateway.routes]]
name = "self-only"
path_prefix = "/mine"
upstreams = ["{up}"]
auth = "jwt"
audiences = ["{AUD}"]
"#,
        up = upstream.url()
    );
    // Many bad tokens from one address would ban it; this test is about each token.
    let instance = Instance::new().with_config(&toml).with("PORTCULLIS_RATE_LIMIT__BANS", "{ enabled = false }");
    let server = instance.serve();
    let call = |t: String, path: &'static str| {
        let url = server.gw(path);
        async move { http().get(url).bearer_auth(t).send().await.unwrap().status().as_u16() }
    };

    assert_eq!(call(sign(&k1, &jwk1.kid, serde_json::json!({})), "/ext/a").await, 200);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-portcullis-subject"], "auth0|alice");
    assert_eq!(seen.headers["x-portcullis-client-id"], "spa-client");
    assert_eq!(seen.headers["x-portcullis-roles"], "editor viewer");
    assert_eq!(seen.headers["x-portcullis-issuer"], EXT);

    // Accepted issuer only where the route names it; typ, alg and role rules apply.
    assert_eq!(call(sign(&k1, &jwk1.kid, serde_json::json!({})), "/mine").await, 401);
    let wrong_typ =
        jose::sign(&k1, &jwk1.kid, "id+jwt", &serde_json::json!({"iss": EXT, "aud": AUD, "exp": now() + 60})).unwrap();
    assert_eq!(call(wrong_typ, "/ext/a").await, 401);
    let no_role = sign(&k1, &jwk1.kid, serde_json::json!({"https://example.com/roles": ["viewer"]}));
    assert_eq!(call(no_role, "/ext/a").await, 403);
    let (rsa, mut rsa_jwk) = key(Algorithm::RS256);
    rsa_jwk.kid = "rsa".into();
    idp.keys.lock().unwrap().push(rsa_jwk);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        call(sign(&rsa, "rsa", serde_json::json!({})), "/ext/a").await,
        401,
        "RS256 is not on this issuer's allow-list"
    );

    // A new key appears at the issuer: the first token with its kid triggers one refetch.
    let (k2, jwk2) = key(Algorithm::ES256);
    idp.keys.lock().unwrap().push(jwk2.clone());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(sign(&k2, &jwk2.kid, serde_json::json!({})), "/ext/b").await, 200, "refetched on unknown kid");

    // Unknown kids cannot make the gateway hammer the issuer.
    let before = idp.fetches.load(Ordering::SeqCst);
    let (k3, _) = key(Algorithm::ES256);
    for _ in 0..20 {
        assert_eq!(call(sign(&k3, "never-published", serde_json::json!({})), "/ext/c").await, 401);
    }
    assert!(idp.fetches.load(Ordering::SeqCst) - before <= 1, "at most one refetch per min_refetch_interval");

    // The issuer goes down: known keys keep working from the cache.
    *idp.up.lock().unwrap() = false;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(sign(&k3, "still-unknown", serde_json::json!({})), "/ext/c").await, 401);
    assert_eq!(
        call(sign(&k1, &jwk1.kid, serde_json::json!({"jti": "fresh"})), "/ext/d").await,
        200,
        "served from cached keys"
    );
}
