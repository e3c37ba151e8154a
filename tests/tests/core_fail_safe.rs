//! Fail-safe, soft timeout and load timeout (issue 8): a failing, panicking,
//! hung or slow origin never holds callers hostage, for every strategy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::{Cache, LoadTimeout, Strategy};
use tokio::time::{Instant, advance, sleep, timeout};

const TTL: Duration = Duration::from_secs(1);
const LOAD: Duration = Duration::from_millis(50);
const BACKOFF: Duration = Duration::from_millis(500);
const BOUND: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq)]
enum RepoError {
    Down,
    Timeout,
}

impl From<LoadTimeout> for RepoError {
    fn from(_: LoadTimeout) -> Self {
        RepoError::Timeout
    }
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    Error,
    Panic,
    Timeout,
}

fn strategies() -> [Strategy; 3] {
    [
        Strategy::Lock,
        Strategy::XFetch { beta: 1.0 },
        Strategy::Swr {
            stale: Duration::from_millis(200),
        },
    ]
}

fn fail_safe_cache(name: String, strategy: Strategy) -> Cache<u32, u32> {
    Cache::builder(name)
        .ttl(TTL)
        .strategy(strategy)
        .fail_safe(Duration::from_secs(600))
        .failed_refresh_backoff(BACKOFF)
        .load_timeout::<RepoError>(Duration::from_secs(2))
        .build()
}

/// A loader that fails the way `failure` says, counting its calls.
async fn failing(failure: Failure, calls: Arc<AtomicUsize>) -> Result<u32, RepoError> {
    calls.fetch_add(1, SeqCst);
    sleep(LOAD).await;
    match failure {
        Failure::Error => Err(RepoError::Down),
        Failure::Panic => panic!("origin bug"),
        Failure::Timeout => std::future::pending().await,
    }
}

/// Every strategy × every failure: the last good value is served instead of
/// the failure, counted; the origin is retried once per backoff, not once per
/// call; and the key recovers as soon as the origin does.
#[tokio::test(start_paused = true)]
async fn fail_safe_serves_the_last_good_value_for_every_strategy_and_failure() {
    for strategy in strategies() {
        for failure in [Failure::Error, Failure::Panic, Failure::Timeout] {
            let case = format!("{strategy:?} × {failure:?}");
            let cache = fail_safe_cache(format!("fail_safe.{case}"), strategy);
            cache
                .try_get_or_load(1, |_| async { Ok::<_, RepoError>(10) })
                .await
                .unwrap();
            // Past the ttl and any stale window: a load is due, and it fails.
            advance(TTL + Duration::from_secs(1)).await;
            let calls = Arc::new(AtomicUsize::new(0));
            let callers: Vec<_> = (0..20)
                .map(|_| {
                    let (cache, calls) = (cache.clone(), calls.clone());
                    tokio::spawn(async move {
                        cache
                            .try_get_or_load(1, move |_| failing(failure, calls))
                            .await
                    })
                })
                .collect();
            for caller in callers {
                let served = timeout(BOUND, caller).await.unwrap().unwrap();
                assert_eq!(served, Ok(10), "{case}: the fail-safe value");
            }
            assert_eq!(calls.load(SeqCst), 1, "{case}: one origin call");
            let stats = cache.stats();
            assert_eq!(stats.fail_safe_hits, 20, "{case}: every caller counted");
            match failure {
                Failure::Error => assert_eq!(stats.load_errors, 1, "{case}"),
                Failure::Panic => assert_eq!(stats.load_panics, 1, "{case}"),
                Failure::Timeout => assert_eq!(stats.load_timeouts, 1, "{case}"),
            }

            // Within the backoff: served without touching the origin.
            for _ in 0..50 {
                let served = cache
                    .try_get_or_load(1, {
                        let calls = calls.clone();
                        move |_| failing(failure, calls)
                    })
                    .await;
                assert_eq!(served, Ok(10), "{case}");
            }
            assert_eq!(calls.load(SeqCst), 1, "{case}: no retry inside the backoff");

            // After the backoff the origin is back: one load, the new value.
            advance(BACKOFF).await;
            let recovered = cache
                .try_get_or_load(1, |_| async { Ok::<_, RepoError>(11) })
                .await;
            assert_eq!(recovered, Ok(11), "{case}: recovers with the origin");
            assert_eq!(cache.get(&1), Some(11), "{case}");
        }
    }
}

/// Without a fail-safe value, the failure itself reaches the callers:
/// the error, the leader's panic, or `E::from(LoadTimeout)`.
#[tokio::test(start_paused = true)]
async fn without_a_fail_safe_value_callers_get_the_failure() {
    let cache: Cache<u32, u32> = Cache::builder("fail_safe.none")
        .ttl(TTL)
        .fail_safe(Duration::from_secs(600))
        .load_timeout::<RepoError>(Duration::from_secs(2))
        .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let error = cache
        .try_get_or_load(1, {
            let calls = calls.clone();
            move |_| failing(Failure::Error, calls)
        })
        .await;
    assert_eq!(error, Err(RepoError::Down));
    let started = Instant::now();
    let timed_out = cache
        .try_get_or_load(2, {
            let calls = calls.clone();
            move |_| failing(Failure::Timeout, calls)
        })
        .await;
    assert_eq!(timed_out, Err(RepoError::Timeout));
    assert_eq!(started.elapsed(), Duration::from_secs(2), "at the bound");
    // Nothing was throttled: no value to serve meanwhile, so the next call loads.
    assert_eq!(
        cache
            .try_get_or_load(1, |_| async { Ok::<_, RepoError>(1) })
            .await,
        Ok(1)
    );
    assert_eq!(cache.stats().fail_safe_hits, 0);
}

/// The fail-safe window ends: past it, the failure is returned again.
#[tokio::test(start_paused = true)]
async fn the_fail_safe_window_is_bounded() {
    let cache: Cache<u32, u32> = Cache::builder("fail_safe.window")
        .ttl(TTL)
        .fail_safe(Duration::from_secs(10))
        .failed_refresh_backoff(Duration::ZERO)
        .build();
    cache.get_or_load(1, |_| async { 1 }).await;
    advance(TTL + Duration::from_secs(9)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let within = cache
        .try_get_or_load(1, {
            let calls = calls.clone();
            move |_| failing(Failure::Error, calls)
        })
        .await;
    assert_eq!(within, Ok(1));
    advance(Duration::from_secs(2)).await;
    let beyond = cache
        .try_get_or_load(1, {
            let calls = calls.clone();
            move |_| failing(Failure::Error, calls)
        })
        .await;
    assert_eq!(beyond, Err(RepoError::Down), "past ttl + fail_safe");
    assert_eq!(calls.load(SeqCst), 2, "zero backoff: each call retried");
}

/// An invalidated value is never served as fail-safe.
#[tokio::test(start_paused = true)]
async fn fail_safe_never_serves_an_invalidated_value() {
    let cache = fail_safe_cache("fail_safe.invalidated".into(), Strategy::Lock);
    cache
        .try_get_or_load(1, |_| async { Ok::<_, RepoError>(1) })
        .await
        .unwrap();
    advance(TTL * 2).await;
    cache.invalidate(&1);
    let calls = Arc::new(AtomicUsize::new(0));
    let served = cache
        .try_get_or_load(1, move |_| failing(Failure::Error, calls))
        .await;
    assert_eq!(served, Err(RepoError::Down));
}

/// Soft timeout: callers return at the soft bound with the old value; the
/// load goes on and its value lands for the next callers.
#[tokio::test(start_paused = true)]
async fn soft_timeout_returns_the_old_value_at_the_bound_and_the_load_lands() {
    for strategy in strategies() {
        let cache: Cache<u32, u32> = Cache::builder(format!("soft.{strategy:?}"))
            .ttl(TTL)
            .strategy(strategy)
            .fail_safe(Duration::from_secs(600))
            .soft_timeout(Duration::from_millis(200))
            .build();
        cache.get_or_load(1, |_| async { 1 }).await;
        advance(TTL + Duration::from_secs(1)).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    let value = cache
                        .get_or_load(1, move |_| async move {
                            calls.fetch_add(1, SeqCst);
                            sleep(Duration::from_secs(3)).await;
                            2
                        })
                        .await;
                    (value, Instant::now())
                })
            })
            .collect();
        for caller in callers {
            let (value, at) = caller.await.unwrap();
            assert_eq!(value, 1, "{strategy:?}: the old value");
            assert_eq!(at - started, Duration::from_millis(200), "{strategy:?}");
        }
        assert_eq!(cache.stats().soft_timeouts, 10, "{strategy:?}");
        sleep(Duration::from_secs(3)).await;
        assert_eq!(cache.get(&1), Some(2), "{strategy:?}: the load landed");
        assert_eq!(calls.load(SeqCst), 1, "{strategy:?}");
    }
}

/// With nothing to serve, a soft timeout does not cut the wait short.
#[tokio::test(start_paused = true)]
async fn soft_timeout_without_a_value_waits_for_the_load() {
    let cache: Cache<u32, u32> = Cache::builder("soft.cold")
        .fail_safe(Duration::from_secs(600))
        .soft_timeout(Duration::from_millis(200))
        .build();
    let started = Instant::now();
    let value = cache
        .get_or_load(1, |_| async {
            sleep(Duration::from_secs(1)).await;
            5
        })
        .await;
    assert_eq!((value, started.elapsed()), (5, Duration::from_secs(1)));
}

/// A hung origin without a load timeout holds its callers as long as it
/// hangs; with one, the load is dropped at the bound, the callers get the
/// timeout error, and the next call starts a fresh load.
#[tokio::test(start_paused = true)]
async fn load_timeout_drops_a_hung_load_and_frees_the_key() {
    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }

    let unbounded: Cache<u32, u32> = Cache::builder("timeout.none").build();
    let hung = timeout(
        Duration::from_secs(3600),
        unbounded.try_get_or_load(1, |_| std::future::pending::<Result<u32, RepoError>>()),
    )
    .await;
    assert!(
        hung.is_err(),
        "without load_timeout a hung origin holds the key"
    );

    let bounded: Cache<u32, u32> = Cache::builder("timeout.bounded")
        .load_timeout::<RepoError>(Duration::from_secs(5))
        .build();
    let dropped = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let (cache, dropped) = (bounded.clone(), dropped.clone());
            tokio::spawn(async move {
                cache
                    .try_get_or_load(1, move |_| async move {
                        let _guard = SetOnDrop(dropped);
                        std::future::pending::<Result<u32, RepoError>>().await
                    })
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap(), Err(RepoError::Timeout));
    }
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert!(dropped.load(SeqCst), "the hung load's future was dropped");
    let stats = bounded.stats();
    assert_eq!((stats.loads, stats.load_timeouts), (1, 1));
    let fresh = bounded
        .try_get_or_load(1, |_| async { Ok::<_, RepoError>(9) })
        .await;
    assert_eq!(fresh, Ok(9), "the next call starts a fresh load");
}

/// `get_or_load` cannot report a timeout: with no fail-safe value it panics
/// with a message naming the cache and the fix, and the key stays usable.
#[tokio::test(start_paused = true)]
async fn an_infallible_call_that_times_out_says_how_to_report_it() {
    let cache: Cache<u32, u32> = Cache::builder("timeout.infallible")
        .load_timeout::<RepoError>(Duration::from_secs(1))
        .build();
    let call = tokio::spawn({
        let cache = cache.clone();
        async move { cache.get_or_load(1, |_| std::future::pending()).await }
    });
    let panic = call.await.expect_err("no way to report the timeout");
    let message = panic.into_panic();
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("timeout.infallible")
            && message.contains("try_get_or_load")
            && message.contains("RepoError"),
        "{message}"
    );
    assert_eq!(cache.get_or_load(1, |_| async { 3 }).await, 3);
}
