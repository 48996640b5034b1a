//! "A rotation never causes a single failed verification": the real key ring on SQLite with
//! a fixed clock runs through several scheduled rotations in ten-minute steps. A token is
//! issued at every step, and every live token is verified at every step both by the server
//! (introspection path) and by a strict external verifier that refetches the JWKS only when
//! its `Cache-Control: max-age` runs out and never on an unknown `kid`.

use std::collections::HashMap;
use std::sync::Arc;

use domain::client::{ClientCredentials, ClientRegistration, GrantType};
use domain::clock::{Clock, FixedClock};
use domain::jose::{self, Jwk, Verifier};
use domain::keyring::KeyRing;
use domain::keys::{KeyState, MasterKey, RotationPolicy};
use domain::request::TokenRequest;
use domain::scope::Scopes;
use domain::service::TokenService;
use domain::settings::{Issuer, TokenSettings};
use domain::token::AccessTokenClaims;

const DAY: i64 = 86_400;
const STEP: i64 = 600;

/// A verifier that behaves like a standards-following HTTP cache of the JWKS.
struct CachingVerifier {
    keys: HashMap<String, Verifier>,
    expires_at: i64,
}

impl CachingVerifier {
    fn fetch(ring: &KeyRing, now: i64) -> Self {
        let snapshot = ring.snapshot();
        let jwks: serde_json::Value = serde_json::from_str(snapshot.jwks_json()).unwrap();
        let keys = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                let jwk: Jwk = serde_json::from_value(k.clone()).unwrap();
                (jwk.kid.clone(), Verifier::from_jwk(&jwk).unwrap())
            })
            .collect();
        Self { keys, expires_at: now + snapshot.jwks_max_age() }
    }

    fn verify(&self, token: &str, now: i64) -> Result<AccessTokenClaims, String> {
        let v = jose::verify(token, |kid| self.keys.get(kid)).map_err(|e| e.to_string())?;
        let claims: AccessTokenClaims = serde_json::from_slice(&v.payload).unwrap();
        if claims.exp <= now {
            return Err("expired".into());
        }
        Ok(claims)
    }
}

#[tokio::test]
async fn scheduled_rotations_never_fail_a_verification() {
    let t0 = 1_700_000_000;
    let clock = Arc::new(FixedClock::new(t0));
    let store = Arc::new(store::SqliteStore::open_in_memory().await.unwrap());
    let stores = store.stores();
    let policy = RotationPolicy {
        algorithm: domain::jose::Algorithm::ES256,
        interval: 10 * DAY,
        announce: DAY,
        max_token_ttl: 3600,
        leeway: 30,
    };
    let master = MasterKey::from_bytes(&[3u8; 32]).unwrap();
    let ring = Arc::new(KeyRing::load(stores.keys.clone(), master, policy, clock.clone()).await.unwrap());
    let settings = TokenSettings {
        issuer: Issuer::parse("https://id.example.com").unwrap(),
        access_token_ttl: 3600,
        max_access_token_ttl: 3600,
        leeway: 30,
        flow: domain::settings::FlowSettings::default(),
    };
    let service = TokenService::new(settings, &stores, ring.clone(), clock.clone());
    let (client, secret) = ClientRegistration {
        name: "svc".into(),
        grant_types: vec![GrantType::ClientCredentials],
        allowed_scopes: Scopes::parse("a").unwrap(),
        default_scopes: None,
        audience: vec!["https://api.example.com".into()],
        ..ClientRegistration::default()
    }
    .into_client(t0)
    .unwrap();
    stores.clients.insert_client(&client).await.unwrap();
    let creds = ClientCredentials::Basic { client_id: client.id.clone(), client_secret: secret.unwrap().0.to_string() };

    let mut external = CachingVerifier::fetch(&ring, t0);
    let mut live: Vec<(String, i64)> = Vec::new();
    let mut signing_kids = Vec::new();
    let mut checks = 0u64;
    // Three and a half rotation intervals, in ten-minute steps.
    for _ in 0..(35 * DAY / STEP) {
        clock.advance(STEP);
        let now = clock.now();
        ring.maintain().await.unwrap();
        if now >= external.expires_at {
            external = CachingVerifier::fetch(&ring, now);
        }
        let issued = service.token(&creds, TokenRequest::ClientCredentials { scope: None }, None).await.unwrap();
        let kid = jose::peek_header(&issued.access_token).unwrap().kid.unwrap();
        if signing_kids.last() != Some(&kid) {
            signing_kids.push(kid);
        }
        live.push((issued.access_token, now + 3600));
        live.retain(|(_, exp)| *exp > now);
        for (token, _) in &live {
            external.verify(token, now).unwrap_or_else(|e| panic!("external verifier failed at t0+{}s: {e}", now - t0));
            service.verify(token).await.unwrap().unwrap_or_else(|e| panic!("server failed at t0+{}s: {e}", now - t0));
            checks += 1;
        }
    }
    assert_eq!(signing_kids.len(), 4, "three scheduled rotations happened: {signing_kids:?}");
    assert!(checks > 25_000, "{checks} verifications");
    let keys = stores.keys.list_keys().await.unwrap();
    let purged = keys.iter().filter(|k| k.state == KeyState::Purged).count();
    assert_eq!(purged, 3, "retired keys are purged once their tokens expired");
    assert!(keys.iter().filter(|k| k.state == KeyState::Purged).all(|k| k.sealed_private_key.is_empty()));
    assert_eq!(keys.iter().filter(|k| k.state == KeyState::Active).count(), 1);
}
