//! Faults of the v1 core that wedged a key or panicked where a value was due
//! (issue 8, "Found"), each reproduced with the v1 API only: a call outside a
//! runtime, a refresh whose runtime is dropped before it runs, per-test
//! runtimes sharing a static cache, and "never expire" durations.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use stampede_cache::{Cache, LocalBackend, Strategy};
use tokio::runtime::Runtime;
use tokio::time::{advance, timeout};

/// Generous against the loads below (all a few ms), so only a wedged key trips it.
const BOUND: Duration = Duration::from_secs(60);

fn paused_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Polls `future` once, outside any tokio runtime, catching a panic.
fn poll_once_outside_a_runtime<F: Future>(future: F) -> Result<Poll<F::Output>, String> {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn a_call_outside_a_runtime_panics_clearly_and_leaves_the_key_usable() {
    let cache: Cache<u32, u32> = Cache::builder("faults.no_runtime").build();
    let outside = poll_once_outside_a_runtime(cache.get_or_load(1, |k| async move { k }));
    let message = outside.expect_err("a load outside a runtime cannot start");
    assert!(
        message.contains("faults.no_runtime") && message.contains("tokio runtime"),
        "the panic names the cache and the fix: {message}"
    );
    // The same key, now inside a runtime, loads at once (v1: waited forever
    // on the flight registered before the failed spawn).
    let value = paused_runtime()
        .block_on(async { timeout(BOUND, cache.get_or_load(1, |k| async move { k + 10 })).await });
    assert_eq!(value, Ok(11));
}

#[test]
fn a_refresh_whose_runtime_is_dropped_before_it_runs_does_not_wedge_the_key() {
    let cache: Cache<u32, u32> = Cache::builder("faults.dropped_refresh")
        .ttl(Duration::from_secs(1))
        .strategy(Strategy::Swr {
            stale: Duration::from_secs(1),
        })
        .build();
    let first = paused_runtime();
    let stale = first.block_on(async {
        cache.get_or_load(1, |_| async { 1 }).await;
        advance(Duration::from_millis(1500)).await;
        // Stale: served at once; the refresh is spawned and never polled,
        // because block_on returns here and the runtime is dropped.
        cache.get_or_load(1, |_| async { 2 }).await
    });
    assert_eq!(stale, 1);
    drop(first);

    // A new runtime (as the next #[tokio::test] gets), past the stale window.
    let value = paused_runtime().block_on(async {
        advance(Duration::from_secs(5)).await;
        timeout(BOUND, cache.get_or_load(1, |_| async { 3 })).await
    });
    assert_eq!(value, Ok(3), "a call past the stale window loads again");
}

/// A macro-style static cache used from many short-lived runtimes, one per
/// "test", with loads still running when each runtime ends.
#[test]
fn a_static_cache_survives_many_short_lived_runtimes() {
    static CACHE: LazyLock<Cache<u32, u32>> = LazyLock::new(|| {
        Cache::builder("faults.static")
            .ttl(Duration::from_millis(100))
            .build()
    });
    static LOADS: AtomicUsize = AtomicUsize::new(0);
    for round in 0..20u32 {
        let runtime = paused_runtime();
        let value = runtime.block_on(async {
            advance(Duration::from_secs(1)).await; // whatever was cached expired
            let slow = tokio::spawn(CACHE.get_or_load(round % 3, |k| async move {
                LOADS.fetch_add(1, SeqCst);
                std::future::pending::<()>().await;
                k
            }));
            tokio::task::yield_now().await;
            // This round's runtime ends with that load in flight on key round % 3.
            drop(slow);
            timeout(
                BOUND,
                CACHE.get_or_load(round % 3 + 100, |k| async move { k * 2 }),
            )
            .await
        });
        assert_eq!(value, Ok((round % 3 + 100) * 2), "round {round}");
        drop(runtime);
    }
    // Every round's key was free again in the next round that used it.
    assert_eq!(LOADS.load(SeqCst), 20);
    paused_runtime().block_on(async {
        assert_eq!(
            timeout(BOUND, CACHE.get_or_load(0, |_| async { 7 })).await,
            Ok(7)
        );
    });
}

#[test]
fn never_expiring_durations_saturate_instead_of_overflowing() {
    paused_runtime().block_on(async {
        let forever: Cache<u32, u32> = Cache::builder("faults.forever").ttl(Duration::MAX).build();
        assert_eq!(forever.get_or_load(1, |_| async { 1 }).await, 1);
        advance(Duration::from_secs(10 * 365 * 24 * 3600)).await;
        assert_eq!(
            forever.get_or_load(1, |_| async { 2 }).await,
            1,
            "still fresh ten years on"
        );
        assert_eq!(forever.stats().loads, 1);

        let stale_forever: Cache<u32, u32> = Cache::builder("faults.stale_forever")
            .ttl(Duration::from_secs(1))
            .strategy(Strategy::Swr {
                stale: Duration::MAX,
            })
            .build();
        assert_eq!(stale_forever.get_or_load(1, |_| async { 1 }).await, 1);
        advance(Duration::from_secs(3600)).await;
        assert_eq!(stale_forever.get_or_load(1, |_| async { 2 }).await, 1);

        let shared_forever: Cache<u32, u32> = Cache::builder("faults.shared_forever")
            .ttl(Duration::MAX)
            .strategy(Strategy::Swr {
                stale: Duration::MAX,
            })
            .backend(LocalBackend::new())
            .lock_ttl(Duration::MAX)
            .build();
        assert_eq!(
            timeout(BOUND, shared_forever.get_or_load(1, |_| async { 5 })).await,
            Ok(5)
        );
        assert_eq!(shared_forever.get_or_load(1, |_| async { 6 }).await, 5);
    });
}

#[test]
fn two_shared_caches_with_one_name_and_other_types_fail_at_build() {
    let backend = LocalBackend::new();
    let users: Cache<u32, String> = Cache::builder("faults.same_name")
        .backend(backend.clone())
        .build();
    let same_types: Cache<u32, String> = Cache::builder("faults.same_name")
        .backend(backend.clone())
        .build();
    let other_types = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Cache::<String, String>::builder("faults.same_name")
            .backend(backend.clone())
            .build()
    }));
    let message = other_types.expect_err("same name, other key type: loud");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("faults.same_name") && message.contains("another name"),
        "{message}"
    );
    // Once both holders are gone, the name is free for other types.
    drop((users, same_types));
    let _products: Cache<String, String> =
        Cache::builder("faults.same_name").backend(backend).build();
}
