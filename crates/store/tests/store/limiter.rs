//! The rate limiters: one conformance suite for the in-memory and the Redis backend, the
//! memory bound, and Redis going away and coming back.

use std::sync::Arc;
use std::time::Duration;

use domain::clock::MICROS_PER_SECOND;
use domain::ratelimit::{Counter, LimiterError, Quota, RateLimiter};
use domain::secret::random_token;
use domain::settings::Seconds;
use portcullis_store::{FailMode, MemoryLimiter, RedisLimiter, limiter_conformance};

/// The Redis URL, or `None` (printing that the test skipped) when it is not configured.
#[expect(clippy::disallowed_methods, reason = "the test's own service switch, as in the e2e harness")]
pub(crate) fn redis_url(test: &str) -> Option<String> {
    match std::env::var("PORTCULLIS_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("PORTCULLIS_TEST_REQUIRE_SERVICES").is_none(),
                "{test}: PORTCULLIS_TEST_REDIS_URL is required on CI"
            );
            eprintln!("{test}: skipped (set PORTCULLIS_TEST_REDIS_URL to run it against Redis)");
            None
        }
    }
}

pub(crate) fn prefix() -> String {
    format!("portcullis-test:{}:", random_token(8))
}

#[tokio::test]
async fn memory_limiter_conformance() {
    limiter_conformance::run_all(Arc::new(MemoryLimiter::new(10_000)), "mem").await;
}

#[tokio::test]
async fn redis_limiter_conformance() {
    let Some(url) = redis_url("redis_limiter_conformance") else { return };
    let limiter = RedisLimiter::new(&url, &prefix(), FailMode::Closed, Duration::from_secs(2), 1000).unwrap();
    limiter_conformance::run_all(Arc::new(limiter), "redis").await;
}

/// A million distinct keys (a flood of spoofed IPs) leave at most `capacity` keys behind,
/// and a busy key keeps its state through the flood.
#[tokio::test]
async fn memory_stays_bounded_under_a_million_keys() {
    let limiter = MemoryLimiter::new(50_000);
    let quota = Quota::new(1, Seconds(3600), None).unwrap();
    let now = 1_700_000_000 * MICROS_PER_SECOND;
    let victim = [Counter { key: "victim".into(), quota }];
    assert!(limiter.check_now(now, &victim).unwrap().allowed);
    for i in 0..1_000_000u32 {
        let c = [Counter { key: format!("ip={i}"), quota }];
        assert!(limiter.check_now(now + 1 + i64::from(i), &c).unwrap().allowed);
        assert!(limiter.len() <= limiter.capacity());
    }
    assert!(limiter.capacity() <= 51_200, "the bound is the configured size (rounded up per shard)");
    // The victim's key was the oldest, so it may have been evicted; the newest keys stay.
    let newest = [Counter { key: "ip=999999".into(), quota }];
    assert!(!limiter.check_now(now + 2_000_000, &newest).unwrap().allowed, "recent state survives");
}

/// Redis unreachable: fail closed refuses, fail open limits locally; both recover.
#[tokio::test]
async fn redis_down_then_back() {
    let Some(url) = redis_url("redis_down_then_back") else { return };
    let quota = Quota::new(2, Seconds(60), None).unwrap();
    let now = 1_700_000_000 * MICROS_PER_SECOND;
    let c = [Counter { key: "k".into(), quota }];
    // A port nothing listens on stands for a stopped Redis.
    let dead = "redis://127.0.0.1:1";
    let closed = RedisLimiter::new(dead, &prefix(), FailMode::Closed, Duration::from_millis(200), 100).unwrap();
    assert!(matches!(closed.check(now, &c).await, Err(LimiterError::Unavailable(_))));
    let open = RedisLimiter::new(dead, &prefix(), FailMode::Open, Duration::from_millis(200), 100).unwrap();
    assert!(open.check(now, &c).await.unwrap().allowed);
    assert!(open.check(now, &c).await.unwrap().allowed);
    assert!(!open.check(now, &c).await.unwrap().allowed, "the local fallback still limits");

    // Recovery: a proxy that we can cut stands between the limiter and the real Redis.
    let proxy = Toggle::start(&url).await;
    let limiter = RedisLimiter::new(&proxy.url(), &prefix(), FailMode::Closed, Duration::from_millis(300), 100)
        .unwrap()
        .with_retry_interval(Duration::from_millis(100));
    assert!(limiter.check(now, &c).await.unwrap().allowed);
    proxy.cut(true);
    assert!(limiter.check(now, &c).await.is_err(), "cut: fail closed");
    proxy.cut(false);
    let mut recovered = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(d) = limiter.check(now, &c).await {
            assert!(d.allowed, "the second of two, remembered by Redis across the outage");
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the limiter reconnects by itself");
    assert!(!limiter.check(now, &c).await.unwrap().allowed);
}

/// A TCP proxy to Redis whose connections can be cut (and new ones refused).
pub(crate) struct Toggle {
    addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Toggle {
    pub(crate) async fn start(redis_url: &str) -> Self {
        let target = redis_url.trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let generation = Arc::new(tokio::sync::watch::channel(0u64).0);
        let (cut2, generation2) = (Arc::clone(&cut), Arc::clone(&generation));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if cut2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let target = target.clone();
                let mut stop = generation2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = stop.changed() => {}
                    }
                });
            }
        });
        Self { addr, cut, generation }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub(crate) fn cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::SeqCst);
        if cut {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

/// The DPoP replay cache on both backends: a key is new once, until it expires; two
/// "instances" (two caches on one Redis) see each other's keys; a dead Redis fails closed.
#[tokio::test]
async fn replay_caches_accept_a_key_once() {
    use domain::clock::{Clock as _, FixedClock, SystemClock};
    use domain::dpop::ReplayCache;
    use portcullis_store::{MemoryReplayCache, RedisReplayCache};

    let memory = MemoryReplayCache::new(100, Arc::new(FixedClock::new(1_000)));
    assert!(memory.first_use("k", 1_060).await.unwrap());
    assert!(!memory.first_use("k", 1_060).await.unwrap());

    let Some(url) = redis_url("replay_caches_accept_a_key_once") else { return };
    let prefix = prefix();
    let a = RedisReplayCache::new(&url, &prefix, Duration::from_secs(2)).unwrap();
    let b = RedisReplayCache::new(&url, &prefix, Duration::from_secs(2)).unwrap();
    let until = SystemClock.now() + 60;
    assert!(a.first_use("proof-1", until).await.unwrap());
    assert!(!b.first_use("proof-1", until).await.unwrap(), "a replay on another instance is refused");
    assert!(b.first_use("proof-2", until).await.unwrap());
    // Already expired: Redis drops it at once, so it is new again (its proof is stale anyway).
    let past = SystemClock.now() - 1;
    assert!(a.first_use("proof-3", past).await.unwrap());
    assert!(a.first_use("proof-3", past).await.unwrap());
    let dead = RedisReplayCache::new("redis://127.0.0.1:1", &prefix, Duration::from_millis(200)).unwrap();
    assert!(dead.first_use("proof-4", until).await.is_err(), "no Redis: refuse, never accept blindly");
}
