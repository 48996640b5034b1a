//! The storage conformance suite: the full contract of every port, run against every
//! backend (hydra's `TestManagers` idea). Compiled only with the `conformance` feature,
//! which the crate's own tests (and later backends' tests) enable.
//!
//! Ids are random per run, so the suite can share a database with other runs.

#![cfg(feature = "conformance")]
#![allow(clippy::panic, clippy::indexing_slicing, reason = "assertions are the point of a test suite")]

use domain::StoreError;
use domain::apikey::{NewApiKey, rotate};
use domain::client::{Client, GrantType};
use domain::jose::Algorithm;
use domain::keys::{KeyState, MasterKey};
use domain::ports::Stores;
use domain::scope::Scopes;
use domain::secret::random_token;

const NOW: i64 = 1_700_000_000;

/// Runs every check; the first failure panics with a description.
///
/// # Errors
/// A store operation failed where it should have succeeded.
pub async fn run_all(stores: &Stores) -> Result<(), StoreError> {
    clients(stores).await?;
    keys(stores).await?;
    revocations(stores).await?;
    api_keys(stores).await?;
    stores.health.ping().await
}

fn client(id: &str) -> Client {
    Client {
        id: id.to_owned(),
        name: "billing".into(),
        secret_hash: Some("ab".repeat(32)),
        grant_types: vec![GrantType::ClientCredentials, GrantType::RefreshToken],
        allowed_scopes: Scopes::parse("invoices:read invoices:write").unwrap_or_default(),
        default_scopes: Scopes::parse("invoices:read").unwrap_or_default(),
        audience: vec!["https://a.example".into(), "https://b.example".into()],
        access_token_ttl: Some(600),
        disabled: false,
        created_at: NOW,
        updated_at: NOW,
    }
}

/// The client port.
///
/// # Errors
/// An operation failed that should have succeeded.
pub async fn clients(stores: &Stores) -> Result<(), StoreError> {
    let s = &stores.clients;
    let id = format!("c-{}", random_token(9));
    let c = client(&id);
    s.insert_client(&c).await?;
    assert_eq!(s.get_client(&id).await?.as_ref(), Some(&c), "client round trip");
    assert!(matches!(s.insert_client(&c).await, Err(StoreError::Conflict(_))), "duplicate id is a conflict");
    assert_eq!(s.get_client("missing-client").await?, None);

    let mut public = client(&format!("p-{}", random_token(9)));
    public.secret_hash = None;
    public.access_token_ttl = None;
    public.audience = vec![];
    public.allowed_scopes = Scopes::default();
    public.default_scopes = Scopes::default();
    public.created_at = NOW + 1;
    s.insert_client(&public).await?;
    assert_eq!(s.get_client(&public.id).await?.as_ref(), Some(&public), "empty and absent fields round trip");

    let listed: Vec<String> = s.list_clients().await?.into_iter().map(|c| c.id).collect();
    let pos = |x: &str| listed.iter().position(|l| l == x);
    assert!(pos(&id).is_some() && pos(&public.id).is_some(), "list contains both");
    assert!(pos(&id) < pos(&public.id), "list ordered by creation time");

    let mut changed = c.clone();
    changed.disabled = true;
    changed.name = "renamed".into();
    changed.secret_hash = Some("cd".repeat(32));
    changed.updated_at = NOW + 5;
    s.update_client(&changed).await?;
    assert_eq!(s.get_client(&id).await?.as_ref(), Some(&changed), "update round trip");
    assert!(matches!(s.update_client(&client("missing-client")).await, Err(StoreError::NotFound)));

    s.delete_client(&id).await?;
    s.delete_client(&public.id).await?;
    assert_eq!(s.get_client(&id).await?, None);
    assert!(matches!(s.delete_client(&id).await, Err(StoreError::NotFound)));
    Ok(())
}

/// The signing-key port.
///
/// # Errors
/// An operation failed that should have succeeded.
pub async fn keys(stores: &Stores) -> Result<(), StoreError> {
    let s = &stores.keys;
    let master = MasterKey::from_bytes(&[7u8; 32]).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut created = Vec::new();
    for (i, (alg, state)) in [
        (Algorithm::ES256, KeyState::Retired),
        (Algorithm::RS256, KeyState::Active),
        (Algorithm::EdDSA, KeyState::Announced),
    ]
    .into_iter()
    .enumerate()
    {
        let at = NOW + i64::try_from(i).unwrap_or_default();
        let (mut key, _) = master.new_key(alg, state, at, at + 10).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if state == KeyState::Retired {
            key.retired_at = Some(at + 20);
            key.purge_after = Some(at + 30);
        }
        s.insert_key(&key).await?;
        created.push(key);
    }
    let listed = s.list_keys().await?;
    for key in &created {
        let found = listed.iter().find(|k| k.kid == key.kid);
        assert_eq!(found, Some(key), "key round trip ({})", key.alg);
        assert!(master.signer(found.unwrap_or(key)).is_ok(), "sealed key still opens");
    }
    let order: Vec<usize> = created.iter().filter_map(|k| listed.iter().position(|l| l.kid == k.kid)).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "keys ordered by creation time");
    assert!(matches!(s.insert_key(&created[0]).await, Err(StoreError::Conflict(_))));

    let mut purged = created[0].clone();
    purged.state = KeyState::Purged;
    purged.sealed_private_key.clear();
    s.update_key(&purged).await?;
    let mut active = created[1].clone();
    active.state = KeyState::Retired;
    active.retired_at = Some(NOW + 100);
    active.purge_after = Some(NOW + 200);
    s.update_key(&active).await?;
    let listed = s.list_keys().await?;
    assert_eq!(listed.iter().find(|k| k.kid == purged.kid), Some(&purged), "purged key with empty material");
    assert_eq!(listed.iter().find(|k| k.kid == active.kid), Some(&active), "state change round trip");
    let mut ghost = created[2].clone();
    ghost.kid = format!("ghost-{}", random_token(6));
    assert!(matches!(s.update_key(&ghost).await, Err(StoreError::NotFound)));
    Ok(())
}

/// The revocation port.
///
/// # Errors
/// An operation failed that should have succeeded.
pub async fn revocations(stores: &Stores) -> Result<(), StoreError> {
    let s = &stores.revocations;
    let jti = random_token(12);
    assert!(!s.is_revoked(&jti, NOW).await?);
    s.revoke(&jti, NOW + 100).await?;
    assert!(s.is_revoked(&jti, NOW).await?);
    assert!(s.is_revoked(&jti, NOW + 99).await?);
    assert!(!s.is_revoked(&jti, NOW + 100).await?, "an entry ends when the token would have expired");
    s.revoke(&jti, NOW + 50).await?;
    assert!(s.is_revoked(&jti, NOW + 99).await?, "revoking again never shortens the entry");
    s.revoke(&jti, NOW + 300).await?;
    assert!(s.is_revoked(&jti, NOW + 299).await?, "revoking again keeps the later expiry");

    let active = s.list_active(NOW + 299).await?;
    assert!(active.iter().any(|(j, exp)| *j == jti && *exp == NOW + 300), "listed while in force");
    assert!(!s.list_active(NOW + 300).await?.iter().any(|(j, _)| *j == jti), "not listed once expired");

    let short = random_token(12);
    s.revoke(&short, NOW + 10).await?;
    // Other runs may share the table: purge counts at least ours, and removes only expired.
    let purged = s.purge_expired(NOW + 10).await?;
    assert!(purged >= 1, "the expired entry is purged");
    assert!(!s.is_revoked(&short, NOW).await?, "purged entries are gone");
    assert!(s.is_revoked(&jti, NOW + 11).await?, "live entries survive a purge");
    Ok(())
}

/// The API-key port.
///
/// # Errors
/// An operation failed that should have succeeded.
pub async fn api_keys(stores: &Stores) -> Result<(), StoreError> {
    let s = &stores.api_keys;
    let issued = NewApiKey {
        name: "ci-bot".into(),
        scopes: Scopes::parse("invoices:read").unwrap_or_default(),
        roles: vec!["ci".into(), "deploy".into()],
        lifetime: Some(3_600),
    }
    .issue(NOW);
    let key = issued.stored;
    s.insert_api_key(&key).await?;
    assert_eq!(s.get_api_key(&key.id).await?.as_ref(), Some(&key), "api key round trip");
    assert!(matches!(s.insert_api_key(&key).await, Err(StoreError::Conflict(_))), "duplicate id is a conflict");
    assert_eq!(s.get_api_key("0000000000000000").await?, None);
    assert!(s.list_api_keys().await?.iter().any(|k| k.id == key.id));

    s.touch_api_key(&key.id, NOW + 10).await?;
    s.touch_api_key(&key.id, NOW + 5).await?;
    assert_eq!(s.get_api_key(&key.id).await?.and_then(|k| k.last_used_at), Some(NOW + 10), "never backwards");

    let (retiring, successor) = rotate(&key, 60, NOW + 20);
    s.insert_api_key(&successor.stored).await?;
    s.update_api_key(&retiring).await?;
    let stored = s.get_api_key(&key.id).await?;
    assert_eq!(stored.and_then(|k| k.expires_at), Some(NOW + 80), "rotation cut the old key's expiry");
    let stored = s.get_api_key(&successor.stored.id).await?;
    assert_eq!(stored.and_then(|k| k.rotated_from), Some(key.id.clone()));

    let mut revoked = retiring;
    revoked.revoked_at = Some(NOW + 30);
    s.update_api_key(&revoked).await?;
    assert_eq!(s.get_api_key(&key.id).await?.and_then(|k| k.revoked_at), Some(NOW + 30));
    let mut missing = revoked;
    missing.id = "ffffffffffffffff".into();
    assert!(matches!(s.update_api_key(&missing).await, Err(StoreError::NotFound)));
    Ok(())
}
