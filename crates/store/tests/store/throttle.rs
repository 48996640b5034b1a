//! The login throttle: one scenario for the in-memory and the Redis counters (the Redis
//! script must be the same state machine), two instances sharing Redis counting together,
//! and a dead Redis falling back to local counting.

use std::time::Duration;

use domain::throttle::{Gate, LoginThrottle, Throttle, ThrottleKey, ThrottlePolicy};
use portcullis_store::RedisThrottle;

use crate::limiter::{Toggle, prefix, redis_url};

fn policy() -> ThrottlePolicy {
    ThrottlePolicy {
        account_free_failures: 3,
        ip_free_failures: 5,
        base_lock: 10,
        max_lock: 60,
        window: 100,
        capacity: 10,
    }
}

/// Locks start at the free allowance, double, cap, report their end once, reset on success
/// and are forgotten after the window. Times are far from the wall clock on purpose: the
/// backends must use the caller's time only.
async fn scenario(t: &dyn Throttle) {
    let a = ThrottleKey::Account("alice");
    for n in 1..=2 {
        let f = t.fail(a, 1_000).await;
        assert_eq!((f.failures, f.locked_for), (n, None));
    }
    assert_eq!(t.check(a, 1_000).await, Gate::Open);
    assert_eq!(t.fail(a, 1_000).await.locked_for, Some(10));
    assert_eq!(t.check(a, 1_005).await, Gate::Locked { retry_after: 5 });
    assert_eq!(t.check(ThrottleKey::Account("bob"), 1_005).await, Gate::Open, "per account");
    assert_eq!(t.check(a, 1_010).await, Gate::Unlocked);
    assert_eq!(t.check(a, 1_010).await, Gate::Open, "the end of a lock is reported once");
    assert_eq!(t.fail(a, 1_010).await.locked_for, Some(20));
    assert_eq!(t.fail(a, 1_030).await.locked_for, Some(40));
    assert_eq!(t.fail(a, 1_070).await.locked_for, Some(60), "capped");
    assert!(t.succeed("alice").await);
    assert!(!t.succeed("alice").await, "nothing left to clear");
    assert_eq!(t.check(a, 1_071).await, Gate::Open);
    assert_eq!(t.fail(a, 1_071).await.failures, 1);

    let ip = ThrottleKey::Ip("10.0.0.1");
    t.fail(ip, 2_000).await;
    assert_eq!(t.fail(ip, 2_000).await.failures, 2);
    assert_eq!(t.fail(ip, 2_200).await.failures, 1, "failures older than the window are forgotten");
    for _ in 0..3 {
        assert_eq!(t.fail(ip, 2_200).await.locked_for, None, "addresses get a larger allowance");
    }
    assert_eq!(t.fail(ip, 2_200).await.locked_for, Some(10));
}

#[tokio::test]
async fn memory_throttle() {
    scenario(&LoginThrottle::new(policy())).await;
}

#[tokio::test]
async fn redis_throttle_is_the_same_state_machine() {
    let Some(url) = redis_url("redis_throttle_is_the_same_state_machine") else { return };
    let throttle = RedisThrottle::new(&url, &prefix(), Duration::from_secs(2), policy()).unwrap();
    scenario(&throttle).await;
}

/// Two instances on one Redis: failures on either count towards one lock.
#[tokio::test]
async fn instances_sharing_redis_count_together() {
    let Some(url) = redis_url("instances_sharing_redis_count_together") else { return };
    let prefix = prefix();
    let a = RedisThrottle::new(&url, &prefix, Duration::from_secs(2), policy()).unwrap();
    let b = RedisThrottle::new(&url, &prefix, Duration::from_secs(2), policy()).unwrap();
    let key = ThrottleKey::Account("carol");
    assert_eq!(a.fail(key, 500).await.failures, 1);
    assert_eq!(b.fail(key, 500).await.failures, 2);
    assert_eq!(a.fail(key, 500).await.locked_for, Some(10), "the third failure, on either instance, locks");
    assert_eq!(b.check(key, 501).await, Gate::Locked { retry_after: 9 });
    assert!(b.succeed("carol").await);
    assert_eq!(a.check(key, 501).await, Gate::Open, "a success anywhere clears the account");
}

/// No Redis: each instance counts on its own (logins keep working, lockout still applies).
#[tokio::test]
async fn dead_redis_counts_locally() {
    let dead = RedisThrottle::new("redis://127.0.0.1:1", &prefix(), Duration::from_millis(200), policy()).unwrap();
    scenario(&dead).await;
}

/// Redis goes away in the middle: failures are counted locally meanwhile (a second between
/// tries), and once it is back the shared counters are used again.
#[tokio::test]
async fn redis_outage_and_recovery() {
    let Some(url) = redis_url("redis_outage_and_recovery") else { return };
    let proxy = Toggle::start(&url).await;
    let throttle = RedisThrottle::new(&proxy.url(), &prefix(), Duration::from_millis(300), policy()).unwrap();
    let key = ThrottleKey::Account("frank");
    assert_eq!(throttle.fail(key, 100).await.failures, 1, "counted in Redis");
    proxy.cut(true);
    assert_eq!(throttle.fail(key, 100).await.failures, 1, "Redis gone: the local count starts");
    assert_eq!(throttle.fail(key, 100).await.failures, 2);
    proxy.cut(false);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(throttle.fail(key, 100).await.failures, 2, "back on the shared count, which Redis kept");
}
