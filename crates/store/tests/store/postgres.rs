//! PostgreSQL: the conformance suite (races included) on a scratch database of its own,
//! migrations idempotent and safe from several instances at once, the schema check.

use std::sync::Arc;
use std::time::Duration;

use portcullis_store::postgres::{drop_scratch_database, scratch_database};
use portcullis_store::{PgSettings, PgStore, conformance};

/// The server's URL, or `None` (printing that the test skipped) when it is not configured.
#[expect(clippy::disallowed_methods, reason = "the test's own service switch, as in the e2e harness")]
fn admin_url(test: &str) -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("PORTCULLIS_TEST_REQUIRE_SERVICES").is_none(),
                "{test}: PORTCULLIS_TEST_POSTGRES_URL is required on CI"
            );
            eprintln!("{test}: skipped (set PORTCULLIS_TEST_POSTGRES_URL to run it against PostgreSQL)");
            None
        }
    }
}

fn settings(url: &str) -> PgSettings {
    PgSettings { url: url.to_owned(), max_connections: 16, acquire_timeout: Duration::from_secs(10) }
}

#[tokio::test]
async fn conformance_on_postgres() {
    let Some(admin) = admin_url("conformance_on_postgres") else { return };
    let url = scratch_database(&admin).await.unwrap();
    let store = Arc::new(PgStore::connect(&settings(&url)).await.unwrap());
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    assert_eq!(store.pending_migrations().await.unwrap().len(), shipped, "a new database has every migration pending");
    store.migrate().await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    conformance::run_all(&store.clone().stores()).await.unwrap();
    // A second instance on the same database, writing at the same time as the first.
    let second = Arc::new(PgStore::connect(&settings(&url)).await.unwrap());
    conformance::two_instances(&store.clone().stores(), &second.clone().stores()).await.unwrap();
    second.close().await;
    store.close().await;
    drop_scratch_database(&admin, &url).await.unwrap();
}

#[tokio::test]
async fn concurrent_migrations_from_many_instances() {
    let Some(admin) = admin_url("concurrent_migrations_from_many_instances") else { return };
    let url = scratch_database(&admin).await.unwrap();
    let mut starts = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        starts.push(tokio::spawn(async move {
            let store = PgStore::connect(&settings(&url)).await?;
            store.migrate().await?;
            store.close().await;
            Ok::<_, domain::StoreError>(())
        }));
    }
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let store = PgStore::connect(&settings(&url)).await.unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());
    store.migrate().await.unwrap();
    store.close().await;
    drop_scratch_database(&admin, &url).await.unwrap();
}

#[tokio::test]
async fn unreachable_server_is_unavailable_not_a_hang() {
    let s = PgSettings {
        url: "postgres://postgres@127.0.0.1:1/none".into(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(2),
    };
    let err = PgStore::connect(&s).await.unwrap_err();
    assert!(matches!(err, domain::StoreError::Unavailable(_)), "{err:?}");
}
