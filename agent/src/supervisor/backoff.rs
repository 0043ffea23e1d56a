//! Restart pacing: exponential backoff and crash-loop detection.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How a crashed instance is restarted.
///
/// The n-th restart within `window` waits `initial * 2^(n-1)`, capped at `max`; once
/// `crash_loop_after` restarts happened within `window`, the next exit is a crash loop and the
/// instance is not restarted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Longest delay between restarts.
    pub max: Duration,
    /// Restarts allowed within `window`; one more exit is a crash loop.
    pub crash_loop_after: u32,
    /// The sliding window restarts are counted in.
    pub window: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 30 s; a crash loop after 5 restarts within 60 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            crash_loop_after: 5,
            window: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before a restart when `recent` restarts already happened within the window.
    pub fn delay(&self, recent: u32) -> Duration {
        let factor = 1u32.checked_shl(recent.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// When the recent restarts happened.
#[derive(Debug, Default)]
pub(super) struct RestartHistory {
    times: VecDeque<Instant>,
}

impl RestartHistory {
    /// Forgets restarts older than `window` and returns how many remain.
    pub(super) fn recent(&mut self, now: Instant, window: Duration) -> u32 {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.times.pop_front();
        }
        u32::try_from(self.times.len()).unwrap_or(u32::MAX)
    }

    /// Records a restart.
    pub(super) fn push(&mut self, now: Instant) {
        self.times.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            crash_loop_after: 3,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn delay_doubles_up_to_max() {
        let b = backoff();
        let delays: Vec<u128> = (0..6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500, 500]);
        assert_eq!(b.delay(u32::MAX), b.max);
    }

    #[test]
    fn history_forgets_restarts_outside_the_window() {
        let start = Instant::now();
        let mut h = RestartHistory::default();
        h.push(start);
        h.push(start + Duration::from_secs(5));
        assert_eq!(
            h.recent(start + Duration::from_secs(6), Duration::from_secs(10)),
            2
        );
        assert_eq!(
            h.recent(start + Duration::from_secs(11), Duration::from_secs(10)),
            1
        );
        assert_eq!(
            h.recent(start + Duration::from_secs(16), Duration::from_secs(10)),
            0
        );
    }
}
