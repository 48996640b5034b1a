//! The server's background tasks: the revocation mirror's and the client cache's sync
//! (store poll and Redis bus), the ban list's sync, the CORS origins, and the scheduled
//! key lifecycle and purges.

use std::sync::Arc;
use std::time::Duration;

use domain::cluster::ClusterEvent;
use domain::keyring::KeyRing;

use crate::app::Runtime;

/// Keeps the in-memory revocation mirror, the key ring and the client cache in step with
/// the store (other instances, CLI): pushed through Redis when configured, and polled every
/// 2 s either way.
pub(crate) fn spawn_revocation_sync(
    runtime: &Runtime,
    revoked: Arc<domain::revoked::RevokedSet>,
    keys: Arc<KeyRing>,
    gateway: Option<Arc<gateway::Gateway>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(bus) = &runtime.redis_bus {
        tasks.extend(spawn_cluster_subscriber(runtime, bus.clone(), revoked.clone(), keys.clone(), gateway));
    }
    let store = runtime.stores.revocations.clone();
    let clock = runtime.clock.clone();
    let ring = keys.clone();
    let clients = runtime.client_cache.clone();
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            // Clients first: once a revocation shows, so does the client change made with it.
            match clients.refresh_if_changed().await {
                Ok(true) => tracing::debug!("clients changed in the store; cached clients dropped"),
                Ok(false) => {}
                Err(e) => tracing::warn!(cause = %e, "client version check failed; cached clients expire by age"),
            }
            let now = clock.now();
            match store.list_active(now).await {
                Ok(active) => revoked.sync(active, now),
                Err(e) => tracing::warn!(cause = %e, "revocation sync failed; keeping the current set"),
            }
            match ring.refresh_if_changed().await {
                Ok(true) => tracing::info!("signing keys changed in the store; key set reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(cause = %e, "key check failed; keeping the current key set"),
            }
        }
    }));
    tasks
}

/// Applies the other instances' events: revoked tokens go into the mirror at once, a key
/// change reloads the key ring, and every (re)subscription re-syncs both from the store
/// (whatever was published while this instance was not listening).
fn spawn_cluster_subscriber(
    runtime: &Runtime,
    bus: Arc<store::RedisBus>,
    revoked: Arc<domain::revoked::RevokedSet>,
    keys: Arc<KeyRing>,
    gateway: Option<Arc<gateway::Gateway>>,
) -> [tokio::task::JoinHandle<()>; 2] {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let clients = runtime.client_cache.clone();
    let max_ttl = runtime.config.tokens.max_access_token_ttl.as_i64() + runtime.config.tokens.leeway.as_i64();
    let store = runtime.stores.revocations.clone();
    let clock = runtime.clock.clone();
    let apply = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            match event {
                Some(ClusterEvent::Revoked { tokens }) => {
                    let taken = revoked.insert_announced(&tokens, clock.now() + max_ttl);
                    tracing::debug!(taken, announced = tokens.len(), "revocations from another instance applied");
                }
                Some(ClusterEvent::KeysChanged) => reload_keys(&keys).await,
                Some(ClusterEvent::ClientChanged { id }) => clients.invalidate(&id),
                Some(ClusterEvent::ApiKeyChanged { id }) => {
                    if let Some(gw) = &gateway {
                        gw.api_keys().invalidate(&id);
                    }
                }
                None => {
                    clients.clear();
                    if let Some(gw) = &gateway {
                        gw.api_keys().clear();
                    }
                    let now = clock.now();
                    match store.list_active(now).await {
                        Ok(active) => revoked.sync(active, now),
                        Err(e) => tracing::warn!(cause = %e, "revocation re-sync failed; the periodic sync retries"),
                    }
                    reload_keys(&keys).await;
                }
            }
        }
    });
    [tokio::spawn(bus.run_subscriber(tx)), apply]
}

async fn reload_keys(keys: &KeyRing) {
    if let Err(e) = keys.maintain().await {
        tracing::error!(cause = %e, "reloading the key set failed; keeping the current one");
    }
}

/// Keeps the in-memory ban list in step with the store (`ban remove`, other instances).
pub(crate) fn spawn_ban_sync(guard: Arc<domain::abuse::AbuseGuard>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = guard.sync().await {
                tracing::warn!(cause = %e, "ban sync failed; keeping the current list");
            }
        }
    })
}

/// Keeps the CORS origins (those of registered redirect URIs) current, CLI changes included.
pub(crate) fn spawn_web_origins(
    runtime: &Runtime,
    origins: Arc<authserver::cors::WebOrigins>,
) -> tokio::task::JoinHandle<()> {
    let clients = runtime.stores.clients.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match clients.list_clients().await {
                Ok(list) => origins.replace(domain::client::web_origins(&list)),
                Err(e) => tracing::warn!(cause = %e, "refreshing CORS origins failed; keeping the current set"),
            }
        }
    })
}

/// Key lifecycle on schedule (also picks up CLI changes), and purging of expired
/// revocation entries.
pub(crate) fn spawn_maintenance(runtime: &Runtime, keys: Arc<KeyRing>) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs(runtime.config.keys.refresh_interval.0.max(1));
    let revocations = runtime.stores.revocations.clone();
    let sessions = runtime.stores.sessions.clone();
    let grants = runtime.stores.grants.clone();
    let bff_sessions = runtime.stores.bff_sessions.clone();
    let clock = runtime.clock.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(e) = keys.maintain().await {
                tracing::error!(cause = %e, "key maintenance failed; keeping the current key set");
            }
            ticks += 1;
            if ticks.is_multiple_of(120) {
                match revocations.purge_expired(clock.now()).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(purged = n, "expired revocation entries purged")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(cause = %e, "purging revocation entries failed"),
                }
                let now = clock.now();
                let purged = match (
                    sessions.purge_sessions(now).await,
                    grants.purge_grants(now).await,
                    bff_sessions.purge_bff_sessions(now).await,
                ) {
                    (Ok(a), Ok(b), Ok(c)) => a + b + c,
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        tracing::warn!(cause = %e, "purging ended sessions and grants failed");
                        0
                    }
                };
                if purged > 0 {
                    tracing::info!(purged, "ended sessions, codes and grants purged");
                }
            }
        }
    })
}

/// Probes the store every 5 s: `portcullis_store_ping_seconds` (latency of one round trip)
/// and `portcullis_store_up` (1 or 0), so a slow or lost database shows on a dashboard
/// before requests fail.
pub(crate) fn spawn_store_probe(runtime: &Runtime) -> tokio::task::JoinHandle<()> {
    let health = runtime.stores.health.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            let up = tokio::time::timeout(Duration::from_secs(5), health.ping()).await.is_ok_and(|r| r.is_ok());
            metrics::histogram!("portcullis_store_ping_seconds").record(started.elapsed().as_secs_f64());
            metrics::gauge!("portcullis_store_up").set(if up { 1.0 } else { 0.0 });
        }
    })
}
