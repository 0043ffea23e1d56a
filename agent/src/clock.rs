//! The agent's wall clock as a seam: [`SystemClock`] in production, `FakeClock` in tests, so
//! time-dependent logic (validity windows, standby deadlines, event stamps) can be tested
//! without waiting.

use std::sync::Arc;
#[cfg(any(test, feature = "test-util"))]
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the agent reads the time of day.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Unix milliseconds now (0 before the epoch).
    fn now_ms(&self) -> i64;

    /// Unix seconds now (0 before the epoch).
    fn now_unix(&self) -> i64 {
        self.now_ms() / 1000
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_ms(SystemTime::now())
    }
}

/// The clock components get when none is given.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// Unix milliseconds of `t` (0 before the epoch, saturating far in the future).
pub fn system_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unix milliseconds now, from the system clock (for code without a clock of its own, such as
/// the front door process).
pub fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// Unix seconds now, from the system clock.
pub fn unix_now() -> i64 {
    SystemClock.now_unix()
}

/// A clock that moves only when told to. Cheap to clone; clones share the time.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    ms: Arc<AtomicI64>,
}

#[cfg(any(test, feature = "test-util"))]
impl FakeClock {
    /// A clock showing `ms` Unix milliseconds.
    pub fn at_ms(ms: i64) -> Self {
        Self {
            ms: Arc::new(AtomicI64::new(ms)),
        }
    }

    /// Moves the clock forward by `ms` milliseconds.
    pub fn advance_ms(&self, ms: i64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for FakeClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_clock_moves_only_when_told_and_clones_share_it() {
        let clock = FakeClock::at_ms(1_700_000_000_500);
        let other = clock.clone();
        assert_eq!(clock.now_unix(), 1_700_000_000);
        other.advance_ms(1_500);
        assert_eq!(clock.now_ms(), 1_700_000_002_000);
    }

    #[test]
    fn the_system_clock_is_past_2020() {
        assert!(SystemClock.now_unix() > 1_577_836_800);
        assert_eq!(system_ms(UNIX_EPOCH - std::time::Duration::from_secs(1)), 0);
    }
}
