//! `portcullis keys list | rotate | retire` against a running server: the server picks the
//! change up on its refresh interval, and tokens signed before a retirement keep verifying.

use std::time::{Duration, Instant};

use crate::harness::{Instance, Server, http, introspect, token};

async fn jwks_kids(server: &Server) -> Vec<String> {
    let jwks: serde_json::Value = http().get(server.url("/oauth2/jwks")).send().await.unwrap().json().await.unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

/// Polls until the server's JWKS satisfies `pred` (the server refreshes every second here).
async fn wait_for_jwks(server: &Server, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kids = jwks_kids(server).await;
        if pred(&kids) {
            return kids;
        }
        assert!(Instant::now() < deadline, "JWKS never reached the expected state: {kids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test]
async fn rotate_and_retire_through_the_cli() {
    let instance =
        Instance::new().with("PORTCULLIS_KEYS__REFRESH_INTERVAL", "1s").with("PORTCULLIS_KEYS__ANNOUNCE_PERIOD", "1h");
    let (id, secret) = instance.create_client("a", "https://api.example.com");
    let server = instance.serve();
    let first = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
    let first_kid = kid_of(&first);

    let list: serde_json::Value = serde_json::from_str(&instance.cli(&["keys", "list", "--json"]).stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["state"], "active");
    assert_eq!(list[0]["kid"], first_kid.as_str());

    // rotate: a successor is announced (published, not signing yet).
    let out = instance.cli(&["keys", "rotate"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let kids = wait_for_jwks(&server, |k| k.len() == 2).await;
    let successor = kids.iter().find(|k| **k != first_kid).unwrap().clone();
    assert_eq!(
        kid_of(token(&server, &id, &secret, None).await["access_token"].as_str().unwrap()),
        first_kid,
        "announced keys do not sign"
    );
    let again = instance.cli(&["keys", "rotate"]);
    assert_eq!(again.status, 1, "only one announced successor at a time");
    assert!(again.stderr.contains("already announced"), "{}", again.stderr);

    // retire the active key: the successor signs at once, the old key stays published and
    // its tokens stay valid.
    let out = instance.cli(&["keys", "retire", &first_kid]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = token(&server, &id, &secret, None).await["access_token"].as_str().unwrap().to_owned();
        if kid_of(&t) == successor {
            break;
        }
        assert!(Instant::now() < deadline, "the successor never started signing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(jwks_kids(&server).await.contains(&first_kid), "a retired key stays in the JWKS");
    assert_eq!(introspect(&server, &id, &secret, &first).await["active"], true, "tokens of a retired key still verify");

    let list: serde_json::Value = serde_json::from_str(&instance.cli(&["keys", "list", "--json"]).stdout).unwrap();
    let state = |kid: &str| list.as_array().unwrap().iter().find(|k| k["kid"] == kid).unwrap()["state"].clone();
    assert_eq!(state(&first_kid), "retired");
    assert_eq!(state(&successor), "active");
    let out = instance.cli(&["keys", "retire", &first_kid]);
    assert_eq!(out.status, 1, "retiring twice is refused");
    let out = instance.cli(&["keys", "retire", "no-such-kid"]);
    assert_eq!(out.status, 1);
}

#[tokio::test]
async fn private_keys_are_encrypted_at_rest() {
    let instance = Instance::new();
    let server = instance.serve();
    drop(server);
    // The database holds only sealed key material: opening it with another master key fails.
    let other = instance
        .sibling()
        .without("PORTCULLIS_KEYS__MASTER_KEY_FILE")
        .with("PORTCULLIS_KEYS__MASTER_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let out = other.cli(&["keys", "rotate"]);
    assert_eq!(out.status, 1);
    assert!(out.stderr.contains("cannot open signing key"), "{}", out.stderr);
    for key in instance.stores().await.keys.list_keys().await.unwrap() {
        let sealed = &key.sealed_private_key;
        assert!(!sealed.windows(5).any(|w| w == b"\"d\":\""), "no private JWK member stored in clear");
    }
    if !instance.on_postgres() {
        let db = std::fs::read(instance.data_dir().join("portcullis.db")).unwrap();
        assert!(!db.windows(5).any(|w| w == b"\"d\":\""), "no private JWK member stored in clear");
    }
}
