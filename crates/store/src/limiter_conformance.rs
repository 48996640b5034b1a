//! The rate-limiter conformance suite: the in-memory and the Redis limiter must give the
//! same answers to the same sequence of checks. Keys are random per run (`tag`), so runs can
//! share one Redis.

#![cfg(feature = "conformance")]
#![allow(clippy::panic, clippy::indexing_slicing, reason = "assertions are the point of a test suite")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use domain::clock::MICROS_PER_SECOND;
use domain::ratelimit::{Counter, Decision, Quota, RateLimiter};
use domain::settings::Seconds;

const S: i64 = MICROS_PER_SECOND;
const T0: i64 = 1_700_000_000 * S;

fn counter(tag: &str, key: &str, requests: u32, per: u64, burst: Option<u32>) -> Counter {
    let quota = Quota::new(requests, Seconds(per), burst).unwrap_or_else(|| panic!("quota"));
    Counter { key: format!("{tag}/{key}"), quota }
}

async fn check(limiter: &dyn RateLimiter, now: i64, counters: &[Counter]) -> Decision {
    limiter.check(now, counters).await.unwrap_or_else(|e| panic!("check: {e}"))
}

/// Runs every check against `limiter`; `tag` must be unique to this run.
pub async fn run_all(limiter: Arc<dyn RateLimiter>, tag: &str) {
    exact_window(&*limiter, tag).await;
    keys_are_independent(&*limiter, tag).await;
    all_or_nothing(&*limiter, tag).await;
    concurrent_checks_are_exact(limiter, tag).await;
}

/// The N+1th request in the window is refused, `Retry-After` is right, the window reopens.
async fn exact_window(limiter: &dyn RateLimiter, tag: &str) {
    let c = [counter(tag, "exact", 5, 10, None)];
    for i in 0..5u32 {
        let d = check(limiter, T0, &c).await;
        assert!(d.allowed, "request {i} of 5");
        assert_eq!(d.states[0].remaining, 4 - i, "remaining after request {i}");
    }
    let refused = check(limiter, T0 + S, &c).await;
    assert!(!refused.allowed, "the 6th request within the window");
    assert_eq!(refused.states[0].retry_after, S, "one interval (2 s) after T0, less the second waited");
    assert_eq!(refused.retry_after_seconds(), 1);
    // A refusal charges nothing: asking again at once gives the same wait.
    assert_eq!(check(limiter, T0 + S, &c).await.states[0].retry_after, S);
    assert!(check(limiter, T0 + 2 * S, &c).await.allowed, "one request per interval comes back");
    assert!(!check(limiter, T0 + 2 * S, &c).await.allowed);
    // A whole window after the last allowed request the full burst is back.
    for i in 0..5 {
        assert!(check(limiter, T0 + 12 * S, &c).await.allowed, "reopened window, request {i}");
    }
    assert!(!check(limiter, T0 + 12 * S, &c).await.allowed);
}

async fn keys_are_independent(limiter: &dyn RateLimiter, tag: &str) {
    let a = [counter(tag, "ip=10.0.0.1", 1, 60, None)];
    let b = [counter(tag, "ip=10.0.0.2", 1, 60, None)];
    assert!(check(limiter, T0, &a).await.allowed);
    assert!(!check(limiter, T0, &a).await.allowed);
    assert!(check(limiter, T0, &b).await.allowed, "another key has its own quota");
}

/// Several counters (e.g. 2/s and 3/min) answer together; a refusal charges none.
async fn all_or_nothing(limiter: &dyn RateLimiter, tag: &str) {
    let c = [counter(tag, "both/second", 2, 1, None), counter(tag, "both/minute", 3, 60, None)];
    assert!(check(limiter, T0, &c).await.allowed);
    assert!(check(limiter, T0, &c).await.allowed);
    let d = check(limiter, T0, &c).await;
    assert!(!d.allowed, "2/s exhausted");
    assert!(d.states[1].allowed, "the minute quota would still allow");
    assert_eq!(d.states[1].remaining, 0, "3/min: the third would be the last");
    let d = check(limiter, T0 + S, &c).await;
    assert!(d.allowed, "the refused request did not charge the minute quota");
    let d = check(limiter, T0 + 2 * S, &c).await;
    assert!(!d.allowed, "3/min exhausted");
    assert!(d.states[0].allowed && !d.states[1].allowed);
    assert_eq!(d.binding().map(|(i, _)| i), Some(1));
}

/// 50 concurrent checks of a burst of 20: exactly 20 pass.
async fn concurrent_checks_are_exact(limiter: Arc<dyn RateLimiter>, tag: &str) {
    let allowed = Arc::new(AtomicU32::new(0));
    let c = Arc::new([counter(tag, "race", 20, 3600, None)]);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (limiter, allowed, c) = (Arc::clone(&limiter), Arc::clone(&allowed), Arc::clone(&c));
            tokio::spawn(async move {
                if check(&*limiter, T0, &*c).await.allowed {
                    allowed.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("task: {e}"));
    }
    assert_eq!(allowed.load(Ordering::SeqCst), 20);
}
