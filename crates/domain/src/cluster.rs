//! Changes every instance must see at once, not at its next poll of the store: revoked
//! access tokens (refused everywhere within a second) and key-set changes made outside the
//! schedule (`keys rotate`/`retire`, an emergency). The store stays the source of truth —
//! every instance still re-syncs from it periodically and whenever its subscription
//! (re)starts — so a lost message delays a change by one sync period, never loses it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::grant::FamilyToken;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// Access tokens put on the blocklist (already in the store).
    Revoked { tokens: Vec<FamilyToken> },
    /// The stored key set changed: reload it now.
    KeysChanged,
    /// A client was created, changed or deleted: drop it from client caches.
    ClientChanged { id: String },
    /// An API key was revoked or rotated: drop it from the gateways' key caches.
    ApiKeyChanged { id: String },
}

/// Publishes [`ClusterEvent`]s to the other instances (Redis pub/sub when configured).
#[async_trait]
pub trait ClusterBus: Send + Sync + std::fmt::Debug {
    /// Best effort: failures are logged, never returned (the periodic sync is the backstop).
    async fn publish(&self, event: &ClusterEvent);
}

/// One instance, nobody to tell.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOnly;

#[async_trait]
impl ClusterBus for LocalOnly {
    async fn publish(&self, _event: &ClusterEvent) {}
}
