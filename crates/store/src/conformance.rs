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
use domain::grant::{AuthCode, CodeRedemption, Consent, FamilyToken, GrantFamily, RefreshToken, Session};
use domain::jose::Algorithm;
use domain::keys::{KeyState, MasterKey};
use domain::pkce::CodeChallenge;
use domain::ports::{ClientStore, Stores};
use domain::scope::Scopes;
use domain::secret::random_token;
use domain::user::User;

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
    users(stores).await?;
    sessions(stores).await?;
    grants(stores).await?;
    bans(stores).await?;
    audit(stores).await?;
    bff_sessions(stores).await?;
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
        redirect_uris: vec!["https://app.example/cb".into(), "com.example.app:/cb".into()],
        post_logout_redirect_uris: vec!["https://app.example/bye".into()],
        first_party: true,
        dpop_bound_access_tokens: false,
        tls_client_auth_subject: None,
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
    let mut version = s.clients_version().await?;
    s.insert_client(&c).await?;
    assert_eq!(s.get_client(&id).await?.as_ref(), Some(&c), "client round trip");
    version = moved(s.as_ref(), version, "insert").await?;
    assert_eq!(s.clients_version().await?, version, "reads leave the version alone");
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
    version = s.clients_version().await?;
    s.update_client(&changed).await?;
    assert_eq!(s.get_client(&id).await?.as_ref(), Some(&changed), "update round trip");
    version = moved(s.as_ref(), version, "update").await?;
    assert!(matches!(s.update_client(&client("missing-client")).await, Err(StoreError::NotFound)));

    s.delete_client(&id).await?;
    moved(s.as_ref(), version, "delete").await?;
    s.delete_client(&public.id).await?;
    assert_eq!(s.get_client(&id).await?, None);
    assert!(matches!(s.delete_client(&id).await, Err(StoreError::NotFound)));
    Ok(())
}

/// Asserts that the clients' version moved past `before` (after a change); returns it.
async fn moved(s: &dyn ClientStore, before: i64, change: &str) -> Result<i64, StoreError> {
    let now = s.clients_version().await?;
    assert_ne!(now, before, "a client {change} changes the clients' version");
    Ok(now)
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

    // The rotation lease: one holder at a time, renewable by its holder, ending by itself.
    let (a, b) = (format!("a-{}", random_token(6)), format!("b-{}", random_token(6)));
    assert!(s.acquire_rotation_lease(&a, NOW, NOW + 30).await?, "a free lease is taken");
    assert!(!s.acquire_rotation_lease(&b, NOW + 1, NOW + 31).await?, "a held lease is refused");
    assert!(s.acquire_rotation_lease(&a, NOW + 2, NOW + 32).await?, "its holder renews it");
    s.release_rotation_lease(&b).await?;
    assert!(!s.acquire_rotation_lease(&b, NOW + 3, NOW + 33).await?, "only the holder releases it");
    assert!(s.acquire_rotation_lease(&b, NOW + 32, NOW + 60).await?, "an abandoned lease ends by itself");
    s.release_rotation_lease(&b).await?;
    let mut racers = Vec::new();
    for i in 0..32 {
        let s = s.clone();
        racers.push(tokio::spawn(async move { s.acquire_rotation_lease(&format!("r-{i}"), NOW, NOW + 30).await }));
    }
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.map_err(|e| StoreError::Unavailable(e.to_string()))??);
    }
    assert_eq!(winners, 1, "exactly one of many contenders takes the lease");
    assert!(s.acquire_rotation_lease(&a, NOW + 31, NOW + 40).await?, "free again once it ended");
    s.release_rotation_lease(&a).await?;
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
        owner: Some("team-ci".into()),
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

/// A new grant family of `u` at `c`, live for 1000 s.
fn family(c: &Client, u: &User, session: Option<&str>) -> GrantFamily {
    GrantFamily {
        id: random_token(16),
        client_id: c.id.clone(),
        user_id: u.id.clone(),
        session_hash: session.map(str::to_owned),
        scope: Scopes::parse("openid offline_access").unwrap_or_default(),
        auth_time: NOW - 5,
        amr: vec!["pwd".into()],
        created_at: NOW,
        expires_at: NOW + 1000,
        revoked_at: None,
    }
}

fn user(id: &str) -> User {
    let mut attributes = serde_json::Map::new();
    attributes.insert("tenant".into(), serde_json::json!("acme"));
    attributes.insert("level".into(), serde_json::json!(3));
    User {
        id: id.to_owned(),
        username: format!("user-{}", id.to_ascii_lowercase()),
        email: Some(format!("{}@example.com", id.to_ascii_lowercase())),
        email_verified: true,
        name: Some("Alice Example".into()),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        roles: vec!["editor".into()],
        groups: vec!["finance".into(), "staff".into()],
        attributes,
        disabled: false,
        created_at: NOW,
        updated_at: NOW,
    }
}

/// The user port, with consents.
///
/// # Errors
/// An operation failed that should have succeeded.
pub async fn users(stores: &Stores) -> Result<(), StoreError> {
    let s = &stores.users;
    let u = user(&random_token(9));
    s.insert_user(&u).await?;
    assert_eq!(s.get_user(&u.id).await?.as_ref(), Some(&u), "user round trip");
    assert_eq!(s.get_user_by_username(&u.username).await?.as_ref(), Some(&u), "lookup by username");
    let mut twin = user(&random_token(9));
    twin.username.clone_from(&u.username);
    assert!(matches!(s.insert_user(&twin).await, Err(StoreError::Conflict(_))), "usernames are unique");
    assert!(s.list_users().await?.iter().any(|x| x.id == u.id));

    let mut changed = u.clone();
    changed.disabled = true;
    changed.email = None;
    changed.roles = vec![];
    changed.updated_at = NOW + 9;
    s.update_user(&changed).await?;
    assert_eq!(s.get_user(&u.id).await?.as_ref(), Some(&changed), "update round trip");
    assert!(matches!(s.update_user(&user("missing-user")).await, Err(StoreError::NotFound)));

    let c = client(&format!("c-{}", random_token(9)));
    stores.clients.insert_client(&c).await?;
    assert_eq!(s.get_consent(&u.id, &c.id).await?, None);
    let consent = Consent {
        user_id: u.id.clone(),
        client_id: c.id.clone(),
        scope: Scopes::parse("openid profile").unwrap_or_default(),
        granted_at: NOW,
    };
    s.put_consent(&consent).await?;
    let wider = Consent { scope: Scopes::parse("openid profile email").unwrap_or_default(), ..consent.clone() };
    s.put_consent(&wider).await?;
    assert_eq!(s.get_consent(&u.id, &c.id).await?.as_ref(), Some(&wider), "consent replaced");
    assert_eq!(s.list_consents(&u.id).await?, vec![wider]);
    assert!(s.delete_consent(&u.id, &c.id).await?);
    assert!(!s.delete_consent(&u.id, &c.id).await?);

    s.delete_user(&u.id).await?;
    assert_eq!(s.get_user(&u.id).await?, None);
    assert!(matches!(s.delete_user(&u.id).await, Err(StoreError::NotFound)));
    stores.clients.delete_client(&c.id).await?;
    Ok(())
}

/// The session port.
///
/// # Errors
/// An operation failed that should have succeeded.
pub async fn sessions(stores: &Stores) -> Result<(), StoreError> {
    let s = &stores.sessions;
    let u = user(&random_token(9));
    stores.users.insert_user(&u).await?;
    let session = |n: i64| Session {
        id_hash: random_token(32),
        user_id: u.id.clone(),
        auth_time: NOW,
        amr: vec!["pwd".into()],
        created_at: NOW,
        last_seen_at: NOW,
        expires_at: NOW + n,
    };
    let (a, b) = (session(100), session(10));
    s.insert_session(&a).await?;
    s.insert_session(&b).await?;
    assert_eq!(s.get_session(&a.id_hash).await?.as_ref(), Some(&a), "session round trip");
    s.touch_session(&a.id_hash, NOW + 50).await?;
    s.touch_session(&a.id_hash, NOW + 20).await?;
    assert_eq!(s.get_session(&a.id_hash).await?.map(|x| x.last_seen_at), Some(NOW + 50), "never backwards");
    assert!(s.purge_sessions(NOW + 10).await? >= 1);
    assert_eq!(s.get_session(&b.id_hash).await?, None, "expired session purged");
    assert!(s.get_session(&a.id_hash).await?.is_some(), "live session kept");
    s.insert_session(&session(100)).await?;
    let listed = s.list_user_sessions(&u.id, NOW + 20).await?;
    assert_eq!(listed.len(), 2, "the user's live sessions");
    assert!(listed.iter().all(|x| x.user_id == u.id));
    assert_eq!(s.list_user_sessions(&u.id, NOW + 100).await?.len(), 0, "none past its end");
    assert_eq!(s.delete_user_sessions(&u.id).await?, 2);
    assert!(!s.delete_session(&a.id_hash).await?);
    stores.users.delete_user(&u.id).await?;
    Ok(())
}

/// The grant port: families, single-use codes, refresh rotation and family revocation.
///
/// # Errors
/// An operation failed that should have succeeded.
#[expect(clippy::too_many_lines, reason = "one grant's life, from code to purge, reads best in order")]
pub async fn grants(stores: &Stores) -> Result<(), StoreError> {
    let g = &stores.grants;
    let u = user(&random_token(9));
    stores.users.insert_user(&u).await?;
    let c = client(&format!("c-{}", random_token(9)));
    stores.clients.insert_client(&c).await?;
    let family = |session: &str| family(&c, &u, Some(session));
    let session = random_token(32);
    let f = family(&session);
    g.insert_family(&f).await?;
    assert_eq!(g.get_family(&f.id).await?.as_ref(), Some(&f), "family round trip");

    // A code is spent exactly once, even when many redeem it at the same time.
    let code = AuthCode {
        code_hash: random_token(32),
        family_id: f.id.clone(),
        client_id: c.id.clone(),
        redirect_uri: "https://app.example/cb".into(),
        redirect_uri_given: true,
        challenge: CodeChallenge::from_stored("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        nonce: Some("n-1".into()),
        dpop_jkt: Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into()),
        created_at: NOW,
        expires_at: NOW + 60,
    };
    g.insert_code(&code).await?;
    let mut racers = Vec::new();
    for _ in 0..100 {
        let (g, hash) = (g.clone(), code.code_hash.clone());
        racers.push(tokio::spawn(async move { g.redeem_code(&hash, NOW + 1).await }));
    }
    let mut first = 0;
    for racer in racers {
        let result = racer.await.map_err(|e| StoreError::Unavailable(e.to_string()))?;
        match result? {
            Some(CodeRedemption::First(found)) => {
                first += 1;
                assert_eq!(found, code, "code round trip");
            }
            Some(CodeRedemption::Replayed(_)) => {}
            None => panic!("code vanished"),
        }
    }
    assert_eq!(first, 1, "exactly one redemption wins");
    assert_eq!(g.redeem_code("no-such-code", NOW).await?, None);

    // Refresh rotation: one winner, the successor is stored, the loser changes nothing.
    let rt = RefreshToken {
        token_hash: random_token(32),
        family_id: f.id.clone(),
        client_id: c.id.clone(),
        created_at: NOW,
        expires_at: NOW + 500,
        used_at: None,
        successor: None,
        dpop_jkt: Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".into()),
    };
    g.insert_refresh_token(&rt).await?;
    let found = g.get_refresh_token(&rt.token_hash).await?;
    assert_eq!(found.as_ref().map(|l| &l.token), Some(&rt), "refresh token round trip");
    assert_eq!(found.map(|l| l.family), Some(f.clone()), "joined with its family");
    let next = |n: u8| RefreshToken { token_hash: random_token(32), created_at: NOW + i64::from(n), ..rt.clone() };
    let (s1, s2) = (next(1), next(2));
    assert!(g.rotate_refresh_token(&rt.token_hash, NOW + 1, b"sealed-1", &s1).await?);
    assert!(!g.rotate_refresh_token(&rt.token_hash, NOW + 2, b"sealed-2", &s2).await?, "second rotation loses");
    let old = g.get_refresh_token(&rt.token_hash).await?.map(|l| l.token);
    assert_eq!(old.as_ref().and_then(|t| t.used_at), Some(NOW + 1));
    assert_eq!(old.and_then(|t| t.successor), Some(b"sealed-1".to_vec()), "winner's successor kept");
    let stored_successor = g.get_refresh_token(&s1.token_hash).await?.map(|l| l.token);
    assert_eq!(stored_successor, Some(s1.clone()), "successor stored whole, DPoP binding included");
    assert!(g.get_refresh_token(&s2.token_hash).await?.is_none(), "loser inserted nothing");

    // A hundred clients presenting the same refresh token at once: exactly one rotation.
    let mut racers = Vec::new();
    for n in 0..100u8 {
        let (g, old, successor) = (g.clone(), s1.token_hash.clone(), next(n.saturating_add(3)));
        racers.push(tokio::spawn(async move {
            let won = g.rotate_refresh_token(&old, NOW + 3, &[n], &successor).await?;
            Ok::<_, StoreError>((won, successor.token_hash))
        }));
    }
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for racer in racers {
        let (won, hash) = racer.await.map_err(|e| StoreError::Unavailable(e.to_string()))??;
        if won { winners.push(hash) } else { losers.push(hash) }
    }
    assert_eq!(winners.len(), 1, "exactly one concurrent rotation wins");
    for hash in winners.iter().chain(&losers) {
        let stored = g.get_refresh_token(hash).await?.is_some();
        assert_eq!(stored, winners.contains(hash), "only the winner's successor is stored");
    }

    // Family revocation returns the live access tokens, once.
    let live = FamilyToken { jti: random_token(12), expires_at: NOW + 900 };
    assert!(g.record_access_token(&f.id, &live).await?);
    assert!(g.record_access_token(&f.id, &FamilyToken { jti: random_token(12), expires_at: NOW - 1 }).await?);
    assert_eq!(g.revoke_family(&f.id, NOW).await?, vec![live.clone()]);
    let late = FamilyToken { jti: random_token(12), expires_at: NOW + 900 };
    assert!(!g.record_access_token(&f.id, &late).await?, "a revoked family takes no new access tokens");
    let revoked = g.get_family(&f.id).await?;
    assert_eq!(revoked.as_ref().and_then(|x| x.revoked_at), Some(NOW));
    assert_eq!(g.get_refresh_token(&s1.token_hash).await?.and_then(|l| l.family.revoked_at), Some(NOW));

    // Access tokens recorded while the family is revoked: each either made it in before the
    // revocation (and the revocation returned it) or was refused — none slips through.
    let f5 = family(&random_token(32));
    g.insert_family(&f5).await?;
    let mut recorders = Vec::new();
    for _ in 0..40 {
        let (g, id, t) = (g.clone(), f5.id.clone(), FamilyToken { jti: random_token(12), expires_at: NOW + 900 });
        recorders.push(tokio::spawn(async move { g.record_access_token(&id, &t).await.map(|ok| (ok, t)) }));
    }
    let revoked = g.revoke_family(&f5.id, NOW).await?;
    for r in recorders {
        let (recorded, t) = r.await.map_err(|e| StoreError::Unavailable(e.to_string()))??;
        if recorded {
            assert!(revoked.contains(&t), "a token recorded before the revocation committed is returned by it");
        }
    }
    // By session, by user, by client.
    let other_session = random_token(32);
    let (f2, f3) = (family(&other_session), family(&random_token(32)));
    g.insert_family(&f2).await?;
    g.insert_family(&f3).await?;
    let t2 = FamilyToken { jti: random_token(12), expires_at: NOW + 900 };
    g.record_access_token(&f2.id, &t2).await?;
    assert_eq!(g.revoke_session_families(&other_session, NOW).await?, vec![t2]);
    assert_eq!(g.get_family(&f3.id).await?.and_then(|x| x.revoked_at), None, "other sessions untouched");
    g.revoke_user_families(&u.id, NOW + 1).await?;
    assert_eq!(g.get_family(&f3.id).await?.and_then(|x| x.revoked_at), Some(NOW + 1));
    let f4 = family(&session);
    g.insert_family(&f4).await?;
    g.revoke_client_families(&c.id, NOW + 2).await?;
    assert_eq!(g.get_family(&f4.id).await?.and_then(|x| x.revoked_at), Some(NOW + 2));

    assert!(g.purge_grants(NOW + 1000 + 86_400).await? >= 4);
    assert_eq!(g.get_family(&f.id).await?, None, "ended families purged");
    stores.users.delete_user(&u.id).await?;
    stores.clients.delete_client(&c.id).await?;
    Ok(())
}

/// Bans: one row per IP (the latest), listed while in force, deleted, purged after the
/// strike memory.
async fn bff_sessions(stores: &Stores) -> Result<(), StoreError> {
    use domain::bff::BffSession;
    let b = &stores.bff_sessions;
    let subject = format!("user-{}", random_token(6));
    let session = BffSession {
        id_hash: random_token(32),
        app: "spa".into(),
        subject: subject.clone(),
        sealed: vec![1, 2, 3, 0, 255],
        created_at: NOW,
        last_seen_at: NOW,
        expires_at: NOW + 100,
    };
    b.insert_bff_session(&session).await?;
    assert!(b.get_bff_session(&session.id_hash).await? == Some(session.clone()), "bff session round trip");
    assert!(b.update_bff_session(&session.id_hash, &[9, 9], NOW + 5).await?, "bff session updated");
    let updated = b.get_bff_session(&session.id_hash).await?;
    assert!(updated.as_ref().map(|s| (s.sealed.clone(), s.last_seen_at)) == Some((vec![9, 9], NOW + 5)), "bff update");
    assert!(!b.update_bff_session("no-such", &[1], NOW).await?, "update of a missing session");
    let second = BffSession { id_hash: random_token(32), ..session.clone() };
    b.insert_bff_session(&second).await?;
    assert!(b.delete_bff_session(&session.id_hash).await?, "bff session deleted");
    assert!(!b.delete_bff_session(&session.id_hash).await?, "deleted once");
    assert!(b.delete_user_bff_sessions(&subject).await? == 1, "every session of the user");
    let old = BffSession { id_hash: random_token(32), expires_at: NOW - 1, ..session };
    b.insert_bff_session(&old).await?;
    assert!(b.purge_bff_sessions(NOW).await? >= 1, "expired sessions purged");
    assert!(b.get_bff_session(&old.id_hash).await?.is_none(), "purged");
    Ok(())
}

async fn bans(stores: &Stores) -> Result<(), StoreError> {
    use domain::abuse::Ban;
    use std::net::IpAddr;
    let tag = random_token(4);
    // Distinct addresses per run (documentation prefixes, random low bytes).
    let octet = u8::try_from(tag.bytes().map(u32::from).sum::<u32>() % 250).unwrap_or(0);
    let a: IpAddr = IpAddr::from([192, 0, 2, octet]);
    let b: IpAddr = format!("2001:db8::{octet:x}").parse().unwrap_or(IpAddr::from([0u8; 16]));
    let ban = |ip, until, strikes| Ban { ip, created_at: NOW, until, strikes, reason: "auth_failures".into() };
    stores.bans.put_ban(&ban(a, NOW + 300, 1)).await?;
    stores.bans.put_ban(&ban(b, NOW + 60, 1)).await?;
    assert_eq!(stores.bans.get_ban(a).await?, Some(ban(a, NOW + 300, 1)));
    stores.bans.put_ban(&ban(a, NOW + 600, 2)).await?;
    assert_eq!(stores.bans.get_ban(a).await?.map(|b| b.strikes), Some(2), "the latest ban replaces the earlier");
    let listed: Vec<IpAddr> = stores.bans.list_bans(NOW + 100).await?.into_iter().map(|b| b.ip).collect();
    assert!(listed.contains(&a) && !listed.contains(&b), "only bans in force are listed: {listed:?}");
    assert_eq!(stores.bans.get_ban(b).await?.map(|b| b.until), Some(NOW + 60), "kept past its end");
    assert!(stores.bans.delete_ban(a).await?);
    assert!(!stores.bans.delete_ban(a).await?);
    assert!(stores.bans.purge_bans(NOW + 61).await? >= 1);
    assert_eq!(stores.bans.get_ban(b).await?, None);
    Ok(())
}

/// Two instances on one database — a server and the CLI beside it, or two servers sharing
/// a data directory — writing at once. `first` revokes a client's grant families again and
/// again (a transaction that reads the families, then writes), while `second` keeps adding
/// families for that client. On SQLite this needs write transactions that take the write
/// lock with their first statement (`BEGIN IMMEDIATE`): a deferred one fails at once with
/// "database is locked" when the other instance commits between its read and its write.
///
/// # Errors
/// An operation failed that should have succeeded.
pub async fn two_instances(first: &Stores, second: &Stores) -> Result<(), StoreError> {
    const FAMILIES: usize = 200;
    let u = user(&random_token(9));
    first.users.insert_user(&u).await?;
    let c = client(&format!("c-{}", random_token(9)));
    first.clients.insert_client(&c).await?;
    let families: Vec<GrantFamily> = (0..FAMILIES).map(|_| family(&c, &u, None)).collect();
    let adder = {
        let (grants, families) = (second.grants.clone(), families.clone());
        tokio::spawn(async move {
            for f in &families {
                grants.insert_family(f).await?;
            }
            Ok::<(), StoreError>(())
        })
    };
    let revoker = {
        let (grants, client_id) = (first.grants.clone(), c.id.clone());
        tokio::spawn(async move {
            for _ in 0..FAMILIES {
                grants.revoke_client_families(&client_id, NOW + 1).await?;
            }
            Ok::<(), StoreError>(())
        })
    };
    let joined = |e: tokio::task::JoinError| StoreError::Unavailable(e.to_string());
    adder.await.map_err(joined)??;
    revoker.await.map_err(joined)??;
    first.grants.revoke_client_families(&c.id, NOW + 2).await?;
    for f in &families {
        let stored = second.grants.get_family(&f.id).await?;
        assert!(stored.and_then(|f| f.revoked_at).is_some(), "family {} revoked", f.id);
    }
    first.clients.delete_client(&c.id).await?;
    first.users.delete_user(&u.id).await?;
    Ok(())
}

/// The audit port: concurrent appenders build one unbroken chain; queries filter by subject,
/// event prefix (pattern characters taken literally), time and sequence.
///
/// # Errors
/// An operation failed that should have succeeded.
pub async fn audit(stores: &Stores) -> Result<(), StoreError> {
    use domain::audit::{AuditChain, AuditEntry, AuditQuery, ChainVerifier};
    let chain = std::sync::Arc::new(AuditChain::from_secret(&[3; 32]));
    let run = random_token(6);
    let entry = |event: &str, n: i64| AuditEntry {
        at_ms: NOW * 1000 + n,
        event: event.to_owned(),
        subject: Some(format!("{run}-{}", n % 2)),
        fields: format!("{{\"n\":{n}}}"),
    };
    stores.audit.append_audit(&[], &chain).await?;
    // 8 appenders × 5 batches of 3, at once.
    let mut appenders = Vec::new();
    for a in 0..8_i64 {
        let (audit, chain) = (stores.audit.clone(), chain.clone());
        let batches: Vec<Vec<AuditEntry>> =
            (0..5).map(|b| (0..3).map(|i| entry("token.issued", a * 100 + b * 10 + i)).collect()).collect();
        appenders.push(tokio::spawn(async move {
            for batch in batches {
                audit.append_audit(&batch, &chain).await?;
            }
            Ok::<(), StoreError>(())
        }));
    }
    for a in appenders {
        a.await.map_err(|e| StoreError::Unavailable(e.to_string()))??;
    }
    stores.audit.append_audit(&[entry("login_failed", 1), entry("login.failed", 3)], &chain).await?;

    let mut verifier = ChainVerifier::new(&chain);
    let mut after = None;
    loop {
        let page =
            stores.audit.list_audit(&AuditQuery { after_seq: after, limit: 50, ..AuditQuery::default() }).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for r in &page {
            verifier.check(r).unwrap_or_else(|e| panic!("chain broken after concurrent appends: {e}"));
        }
    }
    let head = stores.audit.audit_head().await?;
    let checked = verifier.finish(head.as_ref()).unwrap_or_else(|e| panic!("head: {e}"));
    assert!(checked >= 122, "every appended record is in the chain ({checked})");

    audit_queries(stores, &run).await
}

/// Filters of `list_audit`, on the records [`audit`] appended.
async fn audit_queries(stores: &Stores, run: &str) -> Result<(), StoreError> {
    use domain::audit::AuditQuery;
    let odd = format!("{run}-1");
    let mine = |q: AuditQuery| {
        let audit = stores.audit.clone();
        async move { audit.list_audit(&q).await }
    };
    let all_odd = mine(AuditQuery { subject: Some(odd.clone()), limit: 1000, ..AuditQuery::default() }).await?;
    assert_eq!(all_odd.len(), 42, "one per batch of three (n = …1), plus the two login events");
    assert!(all_odd.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    let failed = mine(AuditQuery {
        subject: Some(odd.clone()),
        event_prefix: Some("login.".into()),
        limit: 10,
        ..AuditQuery::default()
    })
    .await?;
    assert_eq!(failed.len(), 1, "`.` is literal and `login_failed` does not match `login.`");
    assert_eq!(failed[0].entry.event, "login.failed");
    let underscore = mine(AuditQuery {
        event_prefix: Some("login_".into()),
        subject: Some(odd.clone()),
        limit: 10,
        ..AuditQuery::default()
    })
    .await?;
    assert_eq!(underscore.len(), 1, "`_` is literal, not a wildcard");
    let newest =
        mine(AuditQuery { subject: Some(odd.clone()), limit: 2, newest_first: true, ..AuditQuery::default() }).await?;
    assert_eq!(newest[0].entry.event, "login.failed", "newest first");
    assert!(newest[0].seq > newest[1].seq);
    let window = mine(AuditQuery {
        subject: Some(odd),
        since_ms: Some(NOW * 1000 + 100),
        until_ms: Some(NOW * 1000 + 200),
        limit: 1000,
        ..AuditQuery::default()
    })
    .await?;
    assert_eq!(window.len(), 5, "appender 1's odd entries: 101, 111, 121, 131, 141");
    Ok(())
}
