//! The `Clock` port: every expiry decision takes its time from here, so tests use a
//! [`FixedClock`] and never sleep.

use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds since the Unix epoch (the unit of JWT `exp`/`iat`/`nbf`, RFC 7519 §2 NumericDate).
pub type UnixTime = i64;

/// Microseconds since the Unix epoch (rate limits need sub-second time; still exact in a
/// Lua number, which Redis scripts use, until the year 2255).
pub type UnixMicros = i64;

pub const MICROS_PER_SECOND: i64 = 1_000_000;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> UnixTime;

    /// The same instant with microseconds.
    fn now_micros(&self) -> UnixMicros {
        self.now().saturating_mul(MICROS_PER_SECOND)
    }
}

/// The wall clock; the one place allowed to read it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    #[expect(clippy::disallowed_methods, reason = "the single sanctioned wall-clock read")]
    fn since_epoch() -> std::time::Duration {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        i64::try_from(Self::since_epoch().as_secs()).unwrap_or(i64::MAX)
    }

    fn now_micros(&self) -> UnixMicros {
        i64::try_from(Self::since_epoch().as_micros()).unwrap_or(i64::MAX)
    }
}

/// A clock that only moves when told to (kept in microseconds).
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    #[must_use]
    pub fn new(now: UnixTime) -> Self {
        Self(AtomicI64::new(now.saturating_mul(MICROS_PER_SECOND)))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds.saturating_mul(MICROS_PER_SECOND), Ordering::SeqCst);
    }

    pub fn advance_micros(&self, micros: i64) {
        self.0.fetch_add(micros, Ordering::SeqCst);
    }

    pub fn set(&self, now: UnixTime) {
        self.0.store(now.saturating_mul(MICROS_PER_SECOND), Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst).div_euclid(MICROS_PER_SECOND)
    }

    fn now_micros(&self) -> UnixMicros {
        self.0.load(Ordering::SeqCst)
    }
}
