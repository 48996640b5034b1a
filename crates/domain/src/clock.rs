//! The `Clock` port: every expiry decision takes its time from here, so tests use a
//! [`FixedClock`] and never sleep.

use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds since the Unix epoch (the unit of JWT `exp`/`iat`/`nbf`, RFC 7519 §2 NumericDate).
pub type UnixTime = i64;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> UnixTime;
}

/// The wall clock; the one place allowed to read it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[expect(clippy::disallowed_methods, reason = "the single sanctioned wall-clock read")]
    fn now(&self) -> UnixTime {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    #[must_use]
    pub fn new(now: UnixTime) -> Self {
        Self(AtomicI64::new(now))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn set(&self, now: UnixTime) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst)
    }
}
