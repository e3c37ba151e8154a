//! The clock a hit reads: nearly free, and tokio's own when tokio's clock
//! is paused (tests), found out by itself.
//!
//! Reading the system clock (`Instant::now()`, a vDSO `clock_gettime`) is
//! the largest single cost of a hit (~20 ns of ~47 on the development VM).
//! A hit needs no nanosecond precision: it reads a *coarse* clock instead —
//! one atomic load of an instant a background thread refreshes every
//! [`RESOLUTION`] (quanta's `Clock::recent`, Caffeine's ticker). So an entry
//! may be served up to about one resolution past its ttl; every write,
//! load and timeout still uses the precise clock.
//!
//! Tokio's paused clock (`start_paused`, `time::pause`, `advance`, feature
//! `test-util`) is not the system's: a hit reading the coarse clock would
//! miss an `advance` and serve an entry the test expired. So every slow
//! path (a flight starting, an `insert`) checks whether tokio's clock
//! stands still while the system's moves; from the first time it does, the
//! process's hits read tokio's clock (`tokio::time::Instant::now()`), as
//! before — paused tests need no ceremony. A process can also opt in at
//! once with [`use_tokio_clock`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How often the coarse clock is refreshed.
pub const RESOLUTION: Duration = Duration::from_millis(1);

/// Set once tokio's clock was seen paused: hits read it from then on.
static TOKIO_CLOCK: AtomicBool = AtomicBool::new(false);

/// The coarse clock: an origin, and nanoseconds since it.
struct Coarse {
    origin: std::time::Instant,
    since: AtomicU64,
}

fn coarse() -> &'static Coarse {
    static COARSE: OnceLock<&'static Coarse> = OnceLock::new();
    COARSE.get_or_init(|| {
        let coarse: &'static Coarse = Box::leak(Box::new(Coarse {
            origin: std::time::Instant::now(),
            since: AtomicU64::new(0),
        }));
        let spawned = std::thread::Builder::new()
            .name("stampede-cache-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(RESOLUTION);
                    let since = coarse.origin.elapsed().as_nanos() as u64;
                    coarse.since.store(since, Ordering::Relaxed);
                }
            });
        if spawned.is_err() {
            // No thread: hits read the precise clock.
            TOKIO_CLOCK.store(true, Ordering::Relaxed);
        }
        coarse
    })
}

/// Now, as a hit sees it: the coarse clock (at most about [`RESOLUTION`]
/// behind), or tokio's once its clock was seen paused.
#[inline]
pub(crate) fn now() -> Instant {
    if TOKIO_CLOCK.load(Ordering::Relaxed) {
        return Instant::now();
    }
    let coarse = coarse();
    let at = coarse.origin + Duration::from_nanos(coarse.since.load(Ordering::Relaxed));
    Instant::from_std(at)
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
        let _ = coarse();
        std::thread::sleep(Duration::from_millis(20));
        if TOKIO_CLOCK.load(Ordering::Relaxed) {
            return; // another test of this binary paused tokio's clock
        }
        let system = Instant::now();
        let seen = now();
        assert!(seen <= system);
        // Generous: the refresher thread may be descheduled on a busy machine.
        assert!(
            system - seen < Duration::from_millis(500),
            "{:?}",
            system - seen
        );
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
