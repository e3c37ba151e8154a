//! Counters of a cache, and the plain snapshot users read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// A snapshot of a cache's counters, from [`Cache::stats`](crate::Cache::stats).
///
/// Every field is a count since the cache was built. The fleet fields stay 0
/// on caches that are not `shared`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use stampede_cache::Cache;
///
/// let cache: Cache<u32, u32> = Cache::builder("doc.stats").ttl(Duration::from_secs(30)).build();
/// cache.get_or_load(1, |k| async move { k * 10 }).await;
/// cache.get_or_load(1, |k| async move { k * 10 }).await;
/// let stats = cache.stats();
/// assert_eq!((stats.misses, stats.loads, stats.hits), (1, 1, 1));
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Calls answered from a fresh entry.
    pub hits: u64,
    /// Calls answered with a stale entry (`swr`) while a refresh ran or started.
    pub stale_hits: u64,
    /// Calls that found no usable entry and waited for a load.
    pub misses: u64,
    /// Origin loads made by this process, per key: a single loader call
    /// counts one, a batch loader call one per key it was asked for.
    pub loads: u64,
    /// Batch loader calls (`get_many_or_load`) made by this process: each
    /// loaded up to `max_batch` keys at once (also counted in `loads`).
    pub batch_calls: u64,
    /// Loads that returned `Err` (foreground or background).
    pub load_errors: u64,
    /// Loads that panicked.
    pub load_panics: u64,
    /// Callers that waited on a load another caller started.
    pub coalesced: u64,
    /// XFetch refreshes started before expiry.
    pub early_refreshes: u64,
    /// Detached refreshes started while a value was served (XFetch early + `swr` stale).
    pub background_refreshes: u64,
    /// Calls served the last good value instead of a failed, panicked or
    /// timed-out load, or while the key's retry backoff ran after one
    /// (`fail_safe`), or at the soft timeout.
    pub fail_safe_hits: u64,
    /// Calls that stopped waiting at the soft timeout and took the fail-safe
    /// or stale value (also counted in `fail_safe_hits`).
    pub soft_timeouts: u64,
    /// Loads dropped at the `load_timeout`.
    pub load_timeouts: u64,
    /// `shared`: distributed locks this process acquired.
    pub lock_acquired: u64,
    /// `shared`: lock attempts that found another process's lock.
    pub lock_contended: u64,
    /// `shared`: misses answered from the shared tier (L2) without a load here.
    pub remote_hits: u64,
    /// `shared`: failed or undecodable backend operations.
    pub backend_errors: u64,
    /// `shared`: calls that degraded to the in-process path because the backend failed.
    pub fallbacks: u64,
    /// `shared`: flights answered with the failure of a load in another
    /// process (its error, panic or timeout) instead of calling the origin.
    pub remote_failures: u64,
    /// `shared`: loads whose value was not written to the shared tier
    /// because a write (`insert`, `invalidate`) superseded them or their
    /// lease lapsed (their callers still got it).
    pub superseded_loads: u64,
}

/// One counter per cache line and per thread slot, so that the hit path on
/// several cores does not fight over one cache line.
const STRIPES: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A counter striped across threads: cheap to bump from many cores, summed on read.
#[derive(Default)]
pub(crate) struct StripedCounter([Padded; STRIPES]);

impl StripedCounter {
    #[inline]
    pub(crate) fn incr(&self) {
        self.0[thread_stripe()].0.fetch_add(1, Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Relaxed)).sum()
    }
}

#[inline]
fn thread_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// A plain relaxed counter for the paths that already do real work.
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn incr(&self) {
        self.0.fetch_add(1, Relaxed);
    }

    pub(crate) fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// The live counters of one cache.
#[derive(Default)]
pub(crate) struct Counters {
    pub hits: StripedCounter,
    pub stale_hits: StripedCounter,
    pub misses: Counter,
    pub loads: Counter,
    pub batch_calls: Counter,
    pub load_errors: Counter,
    pub load_panics: Counter,
    pub coalesced: Counter,
    pub early_refreshes: Counter,
    pub background_refreshes: Counter,
    pub fail_safe_hits: Counter,
    pub soft_timeouts: Counter,
    pub load_timeouts: Counter,
    pub lock_acquired: Counter,
    pub lock_contended: Counter,
    pub remote_hits: Counter,
    pub backend_errors: Counter,
    pub fallbacks: Counter,
    pub remote_failures: Counter,
    pub superseded_loads: Counter,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.sum(),
            stale_hits: self.stale_hits.sum(),
            misses: self.misses.get(),
            loads: self.loads.get(),
            batch_calls: self.batch_calls.get(),
            load_errors: self.load_errors.get(),
            load_panics: self.load_panics.get(),
            coalesced: self.coalesced.get(),
            early_refreshes: self.early_refreshes.get(),
            background_refreshes: self.background_refreshes.get(),
            fail_safe_hits: self.fail_safe_hits.get(),
            soft_timeouts: self.soft_timeouts.get(),
            load_timeouts: self.load_timeouts.get(),
            lock_acquired: self.lock_acquired.get(),
            lock_contended: self.lock_contended.get(),
            remote_hits: self.remote_hits.get(),
            backend_errors: self.backend_errors.get(),
            fallbacks: self.fallbacks.get(),
            remote_failures: self.remote_failures.get(),
            superseded_loads: self.superseded_loads.get(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_counter_sums_across_threads() {
        let counter = std::sync::Arc::new(StripedCounter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| c.incr()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.sum(), 40_000);
    }
}
