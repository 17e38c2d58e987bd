//! A byte-rate limit shared by the tasks of one kind of background work
//! (repair copies, scrub reads), so they never take more than their share
//! of a disk or a link.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Spaces out byte transfers so that, over time, they stay under a rate.
/// A single transfer may exceed the rate for a moment (one chunk's worth);
/// the next ones wait for it.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: u64,
    next_free: Mutex<Instant>,
}

impl Throttle {
    /// A throttle of `bytes_per_sec`, which must be at least 1.
    pub fn new(bytes_per_sec: u64) -> Throttle {
        Throttle {
            bytes_per_sec: bytes_per_sec.max(1),
            next_free: Mutex::new(Instant::now()),
        }
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Waits until `bytes` more may be moved under the rate.
    pub async fn take(&self, bytes: u64) {
        let wait = {
            // The critical section only reads and writes one Instant.
            let mut next_free = self
                .next_free
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let now = Instant::now();
            let start = (*next_free).max(now);
            *next_free = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
            start - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_transfers_to_the_rate() {
        let throttle = Throttle::new(1_000);
        let started = tokio::time::Instant::now();
        for _ in 0..5 {
            throttle.take(500).await;
        }
        // The first transfer starts at once; the other four wait 0.5 s each.
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1_990) && elapsed <= Duration::from_millis(2_100),
            "{elapsed:?}"
        );
    }
}
