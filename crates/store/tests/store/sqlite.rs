//! SQLite: the conformance suite, two instances on one file, persistence across reopen,
//! idempotent migrations.

use std::sync::Arc;

use domain::client::{ClientRegistration, GrantType};
use domain::scope::Scopes;
use portcullis_store::{SqliteStore, conformance};

#[tokio::test]
async fn conformance_in_memory() {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    conformance::run_all(&store.stores()).await.unwrap();
}

#[tokio::test]
async fn conformance_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("p.db")).await.unwrap());
    conformance::run_all(&store.stores()).await.unwrap();
}

#[tokio::test]
async fn data_survives_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let (client, _) = ClientRegistration {
        name: "billing".into(),
        grant_types: vec![GrantType::ClientCredentials],
        allowed_scopes: Scopes::parse("a").unwrap(),
        default_scopes: None,
        audience: vec!["https://api.example.com".into()],
        ..ClientRegistration::default()
    }
    .into_client(1)
    .unwrap();
    {
        let stores = Arc::new(SqliteStore::open(&path).await.unwrap()).stores();
        stores.clients.insert_client(&client).await.unwrap();
        stores.revocations.revoke("jti-1", i64::MAX).await.unwrap();
    }
    let stores = Arc::new(SqliteStore::open(&path).await.unwrap()).stores();
    assert_eq!(stores.clients.get_client(&client.id).await.unwrap(), Some(client));
    assert!(stores.revocations.is_revoked("jti-1", 0).await.unwrap());
}

#[tokio::test]
async fn unreadable_file_is_unavailable_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(&dir.path().join("missing-dir/x/p.db")).await.unwrap_err();
    assert!(matches!(err, domain::StoreError::Unavailable(_)), "{err:?}");
}

/// A server and the CLI beside it (or two servers) on one database file, writing at once.
#[tokio::test]
async fn two_instances_on_one_file_write_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    let first = Arc::new(SqliteStore::open(&path).await.unwrap()).stores();
    let second = Arc::new(SqliteStore::open(&path).await.unwrap()).stores();
    conformance::two_instances(&first, &second).await.unwrap();
}
