//! The circuit breaker: after [`BREAKER_THRESHOLD`] consecutive command
//! timeouts, commands fail at once for a cool-down, then one probe goes
//! through.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::BREAKER_THRESHOLD;
use crate::backend::{BackendError, BackendResult};

// Circuit breaker
// ---------------------------------------------------------------------------

pub(super) enum BreakerState {
    /// Commands go through; `timeouts` consecutive ones timed out.
    Closed { timeouts: u32 },
    /// Commands fail at once until `until`.
    Open { until: Instant },
    /// One probe went through at `since`; the others fail at once.
    Probing { since: Instant },
}

/// How a command was let through.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    Normal,
    Probe,
}

pub(super) struct Breaker {
    pub(super) state: Mutex<BreakerState>,
    pub(super) cooldown: Duration,
    pub(super) trips: AtomicU64,
    pub(super) rejected: AtomicU64,
}

impl Breaker {
    pub(super) fn new(cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(BreakerState::Closed { timeouts: 0 }),
            cooldown,
            trips: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a command through, or fails it at once while open.
    pub(super) fn admit(&self) -> BackendResult<Pass> {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => return Ok(Pass::Normal),
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::Probing { since: now };
                return Ok(Pass::Probe);
            }
            // A probe whose outcome never came (its caller was dropped):
            // let another through.
            BreakerState::Probing { since } if now >= since + self.cooldown => {
                *state = BreakerState::Probing { since: now };
                return Ok(Pass::Probe);
            }
            BreakerState::Open { .. } | BreakerState::Probing { .. } => {}
        }
        drop(state);
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Err(BackendError::new(format!(
            "redis: circuit breaker open after {BREAKER_THRESHOLD} consecutive command timeouts (a probe goes through every {:?})",
            self.cooldown
        )))
    }

    /// Records the outcome of a command let through as `pass`.
    pub(super) fn settle<T>(&self, pass: Pass, result: &BackendResult<T>) {
        let timed_out = matches!(result, Err(error) if error.is_timeout());
        let mut state = self.lock();
        match (pass, &mut *state) {
            (Pass::Probe, BreakerState::Probing { .. }) if timed_out => {
                *state = BreakerState::Open {
                    until: Instant::now() + self.cooldown,
                };
                tracing::debug!(cooldown = ?self.cooldown, "redis circuit breaker probe timed out; open for another cool-down");
            }
            (Pass::Probe, BreakerState::Probing { .. }) => {
                *state = BreakerState::Closed { timeouts: 0 };
                tracing::info!("redis answers again: circuit breaker closed");
            }
            (Pass::Normal, BreakerState::Closed { timeouts }) if timed_out => {
                *timeouts += 1;
                if *timeouts >= BREAKER_THRESHOLD {
                    *state = BreakerState::Open {
                        until: Instant::now() + self.cooldown,
                    };
                    self.trips.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        cooldown = ?self.cooldown,
                        "redis: {BREAKER_THRESHOLD} consecutive command timeouts: circuit breaker open; calls run their loaders in process without waiting, one probe per cool-down"
                    );
                }
            }
            (Pass::Normal, BreakerState::Closed { timeouts }) => *timeouts = 0,
            // Outcomes of commands let through before the state changed.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_consecutive_timeouts_and_probes_once_per_cooldown() {
        let cooldown = Duration::from_secs(2);
        let breaker = Breaker::new(cooldown);
        let timeout: BackendResult<()> = Err(BackendError::timeout(Duration::from_millis(1)));
        let answered: BackendResult<()> = Ok(());
        let failed: BackendResult<()> = Err(BackendError::new("refused"));

        // Timeouts must be consecutive; an answer or a fast error resets.
        for _ in 0..BREAKER_THRESHOLD - 1 {
            breaker.settle(breaker.admit().unwrap(), &timeout);
        }
        breaker.settle(breaker.admit().unwrap(), &answered);
        for _ in 0..BREAKER_THRESHOLD - 1 {
            breaker.settle(breaker.admit().unwrap(), &timeout);
        }
        breaker.settle(breaker.admit().unwrap(), &failed);
        assert_eq!(breaker.trips.load(Ordering::Relaxed), 0);

        for _ in 0..BREAKER_THRESHOLD {
            breaker.settle(breaker.admit().unwrap(), &timeout);
        }
        assert_eq!(breaker.trips.load(Ordering::Relaxed), 1, "open");
        let error = breaker.admit().err().expect("fails at once while open");
        assert!(!error.is_timeout());

        tokio::time::sleep(cooldown).await;
        let probe = breaker.admit().unwrap();
        assert!(probe == Pass::Probe, "one probe after the cool-down");
        assert!(breaker.admit().is_err(), "only one");
        breaker.settle(probe, &timeout);
        assert!(breaker.admit().is_err(), "a failed probe re-opens it");
        assert_eq!(breaker.trips.load(Ordering::Relaxed), 1, "not a new trip");

        tokio::time::sleep(cooldown).await;
        let probe = breaker.admit().unwrap();
        breaker.settle(probe, &answered);
        assert!(
            breaker.admit().unwrap() == Pass::Normal,
            "an answer closes it"
        );
        assert_eq!(breaker.rejected.load(Ordering::Relaxed), 3);

        // A probe whose outcome never comes does not keep it open forever.
        for _ in 0..BREAKER_THRESHOLD {
            breaker.settle(breaker.admit().unwrap(), &timeout);
        }
        tokio::time::sleep(cooldown).await;
        let _lost = breaker.admit().unwrap();
        assert!(breaker.admit().is_err());
        tokio::time::sleep(cooldown).await;
        assert!(breaker.admit().unwrap() == Pass::Probe);
    }
}
