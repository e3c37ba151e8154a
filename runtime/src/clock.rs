//! The clock a hit reads: nearly free, and tokio's own when tokio's clock
//! is paused (tests), found out by itself.
//!
//! Reading the system clock (`Instant::now()`, a vDSO `clock_gettime`) is
//! the largest single cost of a hit (~20 ns of ~47 on the development VM).
//! A hit needs no nanosecond precision: on Linux it reads the kernel's
//! *coarse* monotonic clock (`CLOCK_MONOTONIC_COARSE`: the time of the last
//! scheduler tick, also a vDSO read but without the hardware counter and
//! its arithmetic), on the same time base as `Instant`. So an entry may be
//! served up to one kernel tick ([`resolution`], 1–4 ms) past its ttl;
//! every write, load and timeout still uses the precise clock. Elsewhere
//! hits read the precise clock. No thread, nothing to wake up.
//!
//! Tokio's paused clock (`start_paused`, `time::pause`, `advance`, feature
//! `test-util`) is not the system's: a hit reading the coarse clock would
//! miss an `advance` and serve an entry the test expired. So every slow
//! path (a flight starting, an `insert`) checks whether tokio's clock
//! stands still while the system's moves; from the first time it does, the
//! process's hits read tokio's clock (`tokio::time::Instant::now()`), as
//! before — paused tests need no ceremony. A process can also opt in at
//! once with [`use_tokio_clock`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Set once tokio's clock was seen paused: hits read it from then on.
static TOKIO_CLOCK: AtomicBool = AtomicBool::new(false);

/// How far behind the precise clock the coarse one may be (Linux: the
/// kernel tick, `clock_getres(CLOCK_MONOTONIC_COARSE)`); zero where hits
/// read the precise clock.
pub fn resolution() -> Duration {
    coarse::resolution()
}

/// Now, as a hit sees it: the coarse clock (at most one [`resolution`]
/// behind), or tokio's once its clock was seen paused.
#[inline]
pub(crate) fn now() -> Instant {
    if TOKIO_CLOCK.load(Ordering::Relaxed) {
        return Instant::now();
    }
    coarse::now()
}

#[cfg(target_os = "linux")]
mod coarse {
    use std::sync::OnceLock;
    use std::time::Duration;

    use tokio::time::Instant;

    /// An `Instant` and `CLOCK_MONOTONIC` read back to back: the coarse
    /// clock shares that base (it is `CLOCK_MONOTONIC` as of the last
    /// tick), so a coarse reading is that `Instant` plus the difference —
    /// never ahead of the precise clock, at most a tick behind.
    struct Base {
        instant: std::time::Instant,
        nanos: u64,
    }

    fn read(clock: libc::clockid_t) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; a clock id the
        // kernel lacks only returns an error (then `ts` stays zero).
        unsafe { libc::clock_gettime(clock, &mut ts) };
        (ts.tv_sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec as u64)
    }

    fn base() -> &'static Base {
        static BASE: OnceLock<Base> = OnceLock::new();
        BASE.get_or_init(|| Base {
            instant: std::time::Instant::now(),
            nanos: read(libc::CLOCK_MONOTONIC),
        })
    }

    #[inline]
    pub(super) fn now() -> Instant {
        let base = base();
        let since = read(libc::CLOCK_MONOTONIC_COARSE).saturating_sub(base.nanos);
        Instant::from_std(base.instant + Duration::from_nanos(since))
    }

    pub(super) fn resolution() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `read`.
        unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

#[cfg(not(target_os = "linux"))]
mod coarse {
    use std::time::Duration;

    use tokio::time::Instant;

    #[inline]
    pub(super) fn now() -> Instant {
        Instant::now()
    }

    pub(super) fn resolution() -> Duration {
        Duration::ZERO
    }
}

/// Makes every hit of this process read tokio's clock (the precise one,
/// and the paused one in tests) instead of the coarse clock. Not needed
/// for tokio's paused clock — the cache switches by itself the first time a
/// load or `insert` finds it paused — but a test that wants the switch
/// before its first cache call (say, one that only ever `get`s) calls it.
pub fn use_tokio_clock() {
    TOKIO_CLOCK.store(true, Ordering::Relaxed);
}

/// A slow path's check (a flight starting, an `insert`): if tokio's clock
/// stands still while the system's moves, it is paused — hits read it from
/// now on. Costs two clock reads and at most a microsecond's spin, until
/// the switch.
pub(crate) fn watch() {
    if TOKIO_CLOCK.load(Ordering::Relaxed) {
        return;
    }
    let tokio_before = Instant::now();
    let system_before = std::time::Instant::now();
    // Wait for the system clock to move (within nanoseconds on common
    // clock sources; bounded, on a coarse one the check just waits for
    // the next slow path).
    let mut spins = 0;
    while std::time::Instant::now() <= system_before {
        spins += 1;
        if spins > 1000 {
            return;
        }
        std::hint::spin_loop();
    }
    if Instant::now() == tokio_before {
        TOKIO_CLOCK.store(true, Ordering::Relaxed);
        tracing::debug!(
            "tokio's clock is paused: cache hits read it from now on (instead of the coarse system clock)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_follows_the_system_clock_within_its_resolution() {
        let resolution = resolution();
        assert!(resolution <= Duration::from_millis(20), "{resolution:?}");
        for _ in 0..1000 {
            let before = std::time::Instant::now();
            let seen = coarse::now().into_std();
            let after = std::time::Instant::now();
            // Never ahead of the precise clock, never more than a tick behind
            // (plus the base's own offset of at most a tick).
            assert!(
                seen <= after + Duration::from_micros(1),
                "ahead by {:?}",
                seen - after
            );
            assert!(
                before.saturating_duration_since(seen)
                    <= resolution * 2 + Duration::from_micros(100)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_tokio_clock_is_found_and_read_by_hits_from_then_on() {
        watch();
        assert!(TOKIO_CLOCK.load(Ordering::Relaxed));
        let before = now();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(now() - before, Duration::from_secs(30));
    }
}
