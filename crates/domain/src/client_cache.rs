//! A read-through cache in front of the [`ClientStore`]: the token endpoint looks its client
//! up on every request, and that lookup was the largest single cost of a token (a hand-off
//! to the database's worker thread; a third of the CPU on PostgreSQL, `docs/benchmarks.md`).
//!
//! Staleness is bounded three ways. Changes made through this cache drop their entry at
//! once. Changes made elsewhere — another instance, the CLI in another process, SQL — move
//! the store's [`ClientStore::clients_version`], which the server polls every 2 s
//! ([`CachedClients::refresh_if_changed`]) and, with Redis, are also announced on the
//! cluster bus (`ClusterEvent::ClientChanged`). And no entry lives longer than `ttl`
//! seconds whatever happens ([`CachedClients::max_staleness`]). Unknown ids are cached too
//! (a flood of made-up ids does not reach the database), within a bounded number of entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::client::Client;
use crate::clock::{Clock, UnixTime};
use crate::error::StoreError;
use crate::ports::ClientStore;

/// The most entries kept; past it the cache starts over (cheap, and rare: ids are few).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug)]
pub struct CachedClients {
    inner: Arc<dyn ClientStore>,
    clock: Arc<dyn Clock>,
    ttl: i64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, (UnixTime, Option<Client>)>,
    /// Bumped by every invalidation: a lookup that started before one does not store what
    /// it read (it may be the old value).
    generation: u64,
    /// The store's clients' version the entries were read under (`None`: not polled yet).
    version: Option<i64>,
}

impl State {
    /// Drops every entry; lookups in flight do not store what they read.
    fn forget_all(&mut self) {
        self.entries.clear();
        self.generation += 1;
    }
}

impl CachedClients {
    #[must_use]
    pub fn new(inner: Arc<dyn ClientStore>, clock: Arc<dyn Clock>, ttl: i64) -> Self {
        Self { inner, clock, ttl, state: Mutex::new(State::default()) }
    }

    /// Forgets `id` (a change announced by another instance or the CLI).
    pub fn invalidate(&self, id: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.entries.remove(id);
            s.generation += 1;
        }
    }

    /// The cached entry (`Ok`), or the generation to store a fresh read under (`Err`).
    fn lookup(&self, id: &str, now: UnixTime) -> Result<Option<Client>, Option<u64>> {
        let s = self.state.lock().map_err(|_| None)?;
        match s.entries.get(id) {
            Some((until, client)) if *until > now => Ok(client.clone()),
            _ => Err(Some(s.generation)),
        }
    }

    /// Keeps what a lookup read, unless an invalidation came in meanwhile.
    fn store(&self, id: &str, now: UnixTime, generation: Option<u64>, found: &Option<Client>) {
        if let Ok(mut s) = self.state.lock()
            && Some(s.generation) == generation
        {
            if s.entries.len() >= MAX_ENTRIES {
                s.entries.clear();
            }
            s.entries.insert(id.to_owned(), (now + self.ttl, found.clone()));
        }
    }

    /// Forgets everything (the bus reconnected: changes may have been missed).
    pub fn clear(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.forget_all();
        }
    }

    /// The longest a cached entry may lag the store, in seconds, whatever else fails.
    #[must_use]
    pub fn max_staleness(&self) -> i64 {
        self.ttl
    }

    /// Polls the store's clients' version and forgets everything when it moved since the
    /// last poll (some client changed somewhere), or on the first poll; returns whether it
    /// moved.
    ///
    /// # Errors
    /// The store could not be read; the entries stay (their TTL still bounds them).
    pub async fn refresh_if_changed(&self) -> Result<bool, StoreError> {
        let version = self.inner.clients_version().await?;
        let Ok(mut s) = self.state.lock() else { return Ok(false) };
        let changed = s.version.is_some_and(|seen| seen != version);
        if s.version != Some(version) {
            // The first poll clears too: entries read before it carry no known version.
            s.forget_all();
        }
        s.version = Some(version);
        Ok(changed)
    }
}

#[async_trait]
impl ClientStore for CachedClients {
    async fn insert_client(&self, client: &Client) -> Result<(), StoreError> {
        let done = self.inner.insert_client(client).await;
        self.invalidate(&client.id);
        done
    }

    async fn get_client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        let now = self.clock.now();
        let generation = match self.lookup(id, now) {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        let found = self.inner.get_client(id).await?;
        self.store(id, now, generation, &found);
        Ok(found)
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.inner.list_clients().await
    }

    async fn update_client(&self, client: &Client) -> Result<(), StoreError> {
        let done = self.inner.update_client(client).await;
        self.invalidate(&client.id);
        done
    }

    async fn delete_client(&self, id: &str) -> Result<(), StoreError> {
        let done = self.inner.delete_client(id).await;
        self.invalidate(id);
        done
    }

    async fn clients_version(&self) -> Result<i64, StoreError> {
        self.inner.clients_version().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    struct Counting {
        client: Mutex<Option<Client>>,
        reads: AtomicUsize,
        version: std::sync::atomic::AtomicI64,
    }

    #[async_trait]
    impl ClientStore for Counting {
        async fn insert_client(&self, c: &Client) -> Result<(), StoreError> {
            *self.client.lock().unwrap() = Some(c.clone());
            self.version.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn get_client(&self, _id: &str) -> Result<Option<Client>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self.client.lock().unwrap().clone())
        }
        async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
            Ok(Vec::new())
        }
        async fn update_client(&self, c: &Client) -> Result<(), StoreError> {
            self.insert_client(c).await
        }
        async fn delete_client(&self, _id: &str) -> Result<(), StoreError> {
            *self.client.lock().unwrap() = None;
            self.version.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn clients_version(&self) -> Result<i64, StoreError> {
            Ok(self.version.load(Ordering::SeqCst))
        }
    }

    fn client(disabled: bool) -> Client {
        Client {
            id: "c1".into(),
            name: "c".into(),
            secret_hash: None,
            grant_types: Vec::new(),
            allowed_scopes: crate::scope::Scopes::default(),
            default_scopes: crate::scope::Scopes::default(),
            audience: Vec::new(),
            access_token_ttl: None,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            first_party: false,
            dpop_bound_access_tokens: false,
            tls_client_auth_subject: None,
            disabled,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[tokio::test]
    async fn hits_expire_and_changes_invalidate() {
        let inner = Arc::new(Counting::default());
        let clock = Arc::new(FixedClock::new(1000));
        let cache = CachedClients::new(inner.clone(), clock.clone(), 5);
        assert_eq!(cache.get_client("c1").await.unwrap(), None, "unknown ids are cached too");
        cache.insert_client(&client(false)).await.unwrap();
        assert_eq!(cache.get_client("c1").await.unwrap(), Some(client(false)), "an insert invalidates");
        assert_eq!(cache.get_client("c1").await.unwrap(), Some(client(false)));
        assert_eq!(inner.reads.load(Ordering::SeqCst), 2, "the second lookup was a hit");
        // Changed behind the cache's back (another instance): stale until told or expired.
        inner.insert_client(&client(true)).await.unwrap();
        assert_eq!(cache.get_client("c1").await.unwrap(), Some(client(false)));
        cache.invalidate("c1");
        assert_eq!(cache.get_client("c1").await.unwrap(), Some(client(true)), "the bus message drops it");
        inner.insert_client(&client(false)).await.unwrap();
        clock.advance(5);
        assert_eq!(cache.get_client("c1").await.unwrap(), Some(client(false)), "the TTL bounds a lost message");
    }

    #[tokio::test]
    async fn a_change_made_elsewhere_is_seen_at_the_next_poll() {
        let inner = Arc::new(Counting::default());
        let cache = CachedClients::new(inner.clone(), Arc::new(FixedClock::new(1000)), 3600);
        assert!(!cache.refresh_if_changed().await.unwrap(), "the first poll only notes the version");
        inner.insert_client(&client(false)).await.unwrap();
        assert!(cache.refresh_if_changed().await.unwrap());
        assert_eq!(cache.get_client("c1").await.unwrap(), Some(client(false)));
        assert!(!cache.refresh_if_changed().await.unwrap(), "no change, entries kept");
        assert_eq!(cache.get_client("c1").await.unwrap(), Some(client(false)));
        assert_eq!(inner.reads.load(Ordering::SeqCst), 1, "kept entries are hits");
        // Another process disables the client: stale until the poll, never after it.
        inner.insert_client(&client(true)).await.unwrap();
        assert_eq!(cache.get_client("c1").await.unwrap(), Some(client(false)));
        assert!(cache.refresh_if_changed().await.unwrap());
        assert_eq!(cache.get_client("c1").await.unwrap(), Some(client(true)));
        inner.delete_client("c1").await.unwrap();
        assert!(cache.refresh_if_changed().await.unwrap());
        assert_eq!(cache.get_client("c1").await.unwrap(), None, "a deletion elsewhere is seen too");
    }
}
