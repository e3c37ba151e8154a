//! `fail_safe`, `soft_timeout` and `load_timeout` through `#[stampede_cached]`: the
//! arguments reach the cache, and a failing, slow or hung origin behaves as the crate docs' "Failure semantics" say.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::{LoadTimeout, stampede_cached};
use tokio::time::{Instant, advance, sleep, timeout};

const BOUND: Duration = Duration::from_secs(3600);

async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(BOUND, f).await.expect("call hung")
}

#[derive(Clone, Debug, PartialEq)]
pub enum RepoError {
    Down,
    Timeout { cache: String, after: Duration },
}

impl From<LoadTimeout> for RepoError {
    fn from(t: LoadTimeout) -> Self {
        RepoError::Timeout {
            cache: t.cache().to_string(),
            after: t.after(),
        }
    }
}

mod error {
    pub type Result<T> = std::result::Result<T, super::RepoError>;
}

// ---- load_timeout: a hung origin is dropped at the bound ---------------------------------

static HUNG_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Hangs on its first call, answers afterwards.
#[stampede_cached(ttl = "30s", load_timeout = "5s")]
async fn hangs_once(id: u64) -> Result<u64, RepoError> {
    if HUNG_CALLS.fetch_add(1, SeqCst) == 0 {
        std::future::pending::<()>().await;
    }
    Ok(id * 2)
}

#[tokio::test(start_paused = true)]
async fn load_timeout_reports_err_from_load_timeout_and_frees_the_key() {
    let started = Instant::now();
    let callers: Vec<_> = (0..10).map(|_| tokio::spawn(hangs_once(1))).collect();
    for c in callers {
        let r = bounded(c).await.unwrap();
        assert_eq!(
            r,
            Err(RepoError::Timeout {
                cache: hangs_once_cache().name().to_string(),
                after: Duration::from_secs(5),
            })
        );
    }
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(HUNG_CALLS.load(SeqCst), 1, "one load for ten callers");
    assert_eq!(hangs_once_cache().stats().load_timeouts, 1);
    assert_eq!(
        bounded(hangs_once(1)).await,
        Ok(2),
        "the next call loads afresh"
    );
    assert_eq!(HUNG_CALLS.load(SeqCst), 2);
}

/// The same through a one-parameter `Result` alias (the error type comes from `IsResult`).
#[stampede_cached(ttl = "30s", load_timeout = "250ms")]
async fn hangs_alias(id: u64) -> error::Result<u64> {
    let _ = id;
    std::future::pending().await
}

#[tokio::test(start_paused = true)]
async fn load_timeout_through_a_result_alias() {
    let started = Instant::now();
    let r = bounded(hangs_alias(1)).await;
    assert!(
        matches!(r, Err(RepoError::Timeout { after, .. }) if after == Duration::from_millis(250))
    );
    assert_eq!(started.elapsed(), Duration::from_millis(250));
}

// ---- fail_safe: the last good value stands in for a failure ------------------------------

static FLAKY_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Answers on its first call, fails afterwards.
#[stampede_cached(ttl = "1s", fail_safe = "10m")]
async fn fails_after_first(id: u64) -> Result<u64, RepoError> {
    if FLAKY_CALLS.fetch_add(1, SeqCst) == 0 {
        Ok(id * 10)
    } else {
        Err(RepoError::Down)
    }
}

#[tokio::test(start_paused = true)]
async fn fail_safe_serves_the_last_good_value_when_the_load_fails() {
    assert_eq!(bounded(fails_after_first(1)).await, Ok(10));
    advance(Duration::from_secs(2)).await;
    assert_eq!(
        bounded(fails_after_first(1)).await,
        Ok(10),
        "the last good value instead of Err"
    );
    assert_eq!(
        FLAKY_CALLS.load(SeqCst),
        2,
        "the expired value was reloaded once"
    );
    assert!(fails_after_first_cache().stats().fail_safe_hits >= 1);
    // a key with no good value yet gets the error
    assert_eq!(bounded(fails_after_first(2)).await, Err(RepoError::Down));
}

// ---- soft_timeout: a slow reload does not hold callers past the soft bound --------------

static SLOW_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Fast on its first call, 3 s on later ones.
#[stampede_cached(ttl = "1s", fail_safe = "10m", soft_timeout = "200ms")]
async fn slow_reload(id: u64) -> u64 {
    let n = SLOW_CALLS.fetch_add(1, SeqCst);
    if n > 0 {
        sleep(Duration::from_secs(3)).await;
    }
    id + n as u64
}

#[tokio::test(start_paused = true)]
async fn soft_timeout_serves_the_old_value_and_the_load_lands() {
    assert_eq!(bounded(slow_reload(1)).await, 1);
    advance(Duration::from_secs(2)).await;
    let started = Instant::now();
    assert_eq!(
        bounded(slow_reload(1)).await,
        1,
        "the old value at the soft bound"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert_eq!(slow_reload_cache().stats().soft_timeouts, 1);
    sleep(Duration::from_secs(3)).await;
    assert_eq!(slow_reload_cache().get(&1), Some(2), "the slow load landed");
    assert_eq!(SLOW_CALLS.load(SeqCst), 2);
}

/// `swr` is enough for `soft_timeout`: its stale value is the one served.
#[stampede_cached(ttl = "1s", strategy = "swr", stale = "1m", soft_timeout = "100ms")]
async fn swr_soft(id: u64) -> u64 {
    id
}

#[tokio::test(start_paused = true)]
async fn the_arguments_reach_the_cache() {
    assert_eq!(bounded(swr_soft(3)).await, 3);
    let cache = swr_soft_cache();
    assert_eq!(cache.ttl(), Duration::from_secs(1));
    assert!(matches!(
        cache.strategy(),
        stampede_cache::Strategy::Swr { stale } if stale == Duration::from_secs(60)
    ));
    assert_eq!(
        hangs_once_cache().name(),
        concat!(module_path!(), "::hangs_once")
    );
}
