//! Where the service's time comes from. The core takes `now` as an argument; the
//! hub reads it from one [`Clock`] given at open, so tests (and, later, schedules
//! and retention) can drive time instead of waiting for it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use twinhub_core::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        now()
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    nanos: AtomicI64,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            nanos: AtomicI64::new(start.unix_nanos()),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// The wall clock's current time, for callers without a hub at hand (error
/// bodies' timestamps, tests).
pub fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_unix_nanos(nanos)
}
