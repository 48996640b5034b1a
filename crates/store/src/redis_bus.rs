//! The Redis [`ClusterBus`]: instances publish [`ClusterEvent`]s on one channel
//! (`<prefix>events`) and each subscribes to it, so a token revoked on one instance is
//! refused by every other within the time a Redis message takes (well under the one-second
//! goal), and a key-set change made by the CLI or another instance is loaded at once.
//!
//! Delivery is at most once: Redis pub/sub keeps nothing for a subscriber that is away. The
//! subscriber therefore reports every (re)subscription (`None` on its channel) and the
//! server re-syncs from the store then; the store's periodic sync covers the rest.
//! Anyone who can publish on the channel can revoke tokens (denial of service, never access)
//! or make instances reload their keys from the database: protect Redis like the database.

use std::time::Duration;

use async_trait::async_trait;
use domain::cluster::{ClusterBus, ClusterEvent};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[derive(Debug)]
pub struct RedisBus {
    client: redis::Client,
    manager: ConnectionManager,
    channel: String,
    /// This instance's id: its own messages come back to it and are skipped.
    origin: String,
    timeout: Duration,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    #[serde(flatten)]
    event: ClusterEvent,
}

impl RedisBus {
    /// Connects lazily (a Redis that is down at start is retried like one that goes down).
    ///
    /// # Errors
    /// `url` is not a Redis URL, or there is no Tokio runtime.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, String> {
        tokio::runtime::Handle::try_current().map_err(|_| "the Redis bus needs a Tokio runtime".to_owned())?;
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        let manager = crate::redis_limiter::lazy_manager(client.clone(), timeout)?;
        Ok(Self { client, manager, channel: format!("{prefix}events"), origin: domain::secret::random_hex(8), timeout })
    }

    /// Subscribes and forwards every event of another instance to `events`, and `None`
    /// after each (re)subscription (re-sync from the store then: messages sent while this
    /// instance was not subscribed are gone). Reconnects by itself, once a second, logging
    /// one alert when the subscription is lost and one when it is back. Returns when the
    /// receiver is dropped.
    pub async fn run_subscriber(self: std::sync::Arc<Self>, events: mpsc::Sender<Option<ClusterEvent>>) {
        let mut down = false;
        loop {
            match self.subscribe().await {
                Ok(mut pubsub) => {
                    if down {
                        tracing::warn!(
                            target: "portcullis::audit", event = "cluster.bus_recovered",
                            "redis subscription is back; revocations reach this instance at once again"
                        );
                    }
                    down = false;
                    if events.send(None).await.is_err() {
                        return;
                    }
                    let mut stream = std::pin::pin!(pubsub.on_message());
                    while let Some(msg) =
                        std::future::poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx)).await
                    {
                        match serde_json::from_slice::<Envelope>(msg.get_payload_bytes()) {
                            Ok(envelope) if envelope.origin == self.origin => {}
                            Ok(envelope) => {
                                if events.send(Some(envelope.event)).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => tracing::warn!(cause = %e, "unreadable message on the cluster channel; ignored"),
                        }
                    }
                }
                Err(e) if !down => {
                    tracing::error!(
                        target: "portcullis::audit", event = "cluster.bus_down", alert = true, error = %e,
                        "redis subscription lost; other instances' revocations arrive with the periodic store sync"
                    );
                    down = true;
                }
                Err(_) => {}
            }
            if !down {
                // The stream ended: the connection dropped.
                tracing::error!(
                    target: "portcullis::audit", event = "cluster.bus_down", alert = true,
                    "redis subscription lost; other instances' revocations arrive with the periodic store sync"
                );
                down = true;
            }
            if events.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, String> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(self.timeout * 4, connect).await {
            Ok(Ok(pubsub)) => Ok(pubsub),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

#[async_trait]
impl ClusterBus for RedisBus {
    async fn publish(&self, event: &ClusterEvent) {
        let envelope = Envelope { origin: self.origin.clone(), event: event.clone() };
        let Ok(payload) = serde_json::to_string(&envelope) else { return };
        let mut conn = self.manager.clone();
        let started = std::time::Instant::now();
        let sent: Result<i64, _> = redis::cmd("PUBLISH").arg(&self.channel).arg(payload).query_async(&mut conn).await;
        let outcome = if sent.is_ok() { "ok" } else { "error" };
        metrics::histogram!("portcullis_redis_duration_seconds", "op" => "publish", "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = sent {
            metrics::counter!("portcullis_redis_errors_total", "op" => "publish").increment(1);
            tracing::warn!(
                cause = %e,
                "publishing to the other instances failed; they pick the change up with their periodic store sync"
            );
        }
    }
}
