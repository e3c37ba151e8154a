//! Single flight with detached loads: coalescing, cancellation, errors,
//! panics, abandoned loads and invalidation while loading.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::Cache;
use tokio::time::{Instant, sleep, timeout};

const BOUND: Duration = Duration::from_secs(60);

fn cache<V: Clone + Send + Sync + 'static>(name: &'static str) -> Cache<u64, V> {
    Cache::builder(name).ttl(Duration::from_secs(30)).build()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_on_a_cold_key_make_one_load() {
    let cache = cache::<u64>("cold");
    let loads = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..1000)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load(7, move |k| async move {
                        loads.fetch_add(1, SeqCst);
                        sleep(Duration::from_millis(100)).await;
                        k * 6
                    })
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(timeout(BOUND, caller).await.unwrap().unwrap(), 42);
    }
    assert_eq!(loads.load(SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.loads, stats.misses, stats.coalesced), (1, 1000, 999));
}

#[tokio::test(start_paused = true)]
async fn a_thousand_distinct_keys_make_a_thousand_loads() {
    let cache = cache::<u64>("distinct");
    let loads = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..1000u64)
        .map(|key| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load(key, move |k| async move {
                        loads.fetch_add(1, SeqCst);
                        sleep(Duration::from_millis(10)).await;
                        k + 1
                    })
                    .await
            })
        })
        .collect();
    for (key, caller) in callers.into_iter().enumerate() {
        assert_eq!(
            timeout(BOUND, caller).await.unwrap().unwrap(),
            key as u64 + 1
        );
    }
    assert_eq!(loads.load(SeqCst), 1000);
    assert_eq!(cache.stats().coalesced, 0);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_neither_cancels_nor_repeats_the_load() {
    let cache = cache::<&'static str>("cancelled-leader");
    let loads = Arc::new(AtomicUsize::new(0));
    let slow = {
        let loads = loads.clone();
        move |_| async move {
            loads.fetch_add(1, SeqCst);
            sleep(Duration::from_millis(100)).await;
            "loaded"
        }
    };
    let started = Instant::now();
    // The leader gives up after 10 ms, long before the 100 ms load ends.
    let leader = timeout(
        Duration::from_millis(10),
        cache.get_or_load(1, slow.clone()),
    );
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let (cache, slow) = (cache.clone(), slow.clone());
            tokio::spawn(async move { (cache.get_or_load(1, slow).await, Instant::now()) })
        })
        .collect();
    assert!(leader.await.is_err(), "the leader timed out");
    for waiter in waiters {
        let (value, done) = timeout(BOUND, waiter).await.unwrap().unwrap();
        assert_eq!(value, "loaded");
        // Waiters got the value of the one load, at its end: not a second 100 ms.
        assert_eq!(done - started, Duration::from_millis(100));
    }
    assert_eq!(loads.load(SeqCst), 1);
    assert_eq!(cache.get(&1), Some("loaded"));
}

#[tokio::test(start_paused = true)]
async fn a_never_polled_leader_does_not_wedge_the_key() {
    let cache = cache::<u32>("unpolled-leader");
    let loads = Arc::new(AtomicUsize::new(0));
    let loader = {
        let loads = loads.clone();
        move |_| async move {
            loads.fetch_add(1, SeqCst);
            sleep(Duration::from_millis(50)).await;
            5
        }
    };
    // Polled once (it starts the flight), then never again.
    let mut leader = Box::pin(cache.get_or_load(3, loader.clone()));
    assert!(futures_poll_once(leader.as_mut()).await.is_none());
    let value = timeout(BOUND, cache.get_or_load(3, loader)).await.unwrap();
    assert_eq!(value, 5);
    assert_eq!(loads.load(SeqCst), 1);
    drop(leader);
}

/// Polls a future exactly once.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut fut: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut fut).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_loader_error_reaches_every_caller_of_the_flight_and_is_not_cached() {
    let cache = cache::<u32>("errors");
    let loads = Arc::new(AtomicUsize::new(0));
    let failing = {
        let loads = loads.clone();
        move |_| async move {
            loads.fetch_add(1, SeqCst);
            sleep(Duration::from_millis(20)).await;
            Err::<u32, String>("db down".into())
        }
    };
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (cache, failing) = (cache.clone(), failing.clone());
            tokio::spawn(async move { cache.try_get_or_load(9, failing).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(
            timeout(BOUND, caller).await.unwrap().unwrap(),
            Err("db down".to_string())
        );
    }
    assert_eq!(loads.load(SeqCst), 1, "one flight, one origin call");
    assert_eq!(cache.get(&9), None, "errors are not cached");
    assert_eq!(cache.stats().load_errors, 1);
    // The next call loads again, and succeeds.
    let ok = cache
        .try_get_or_load(9, |_| async { Ok::<u32, String>(1) })
        .await;
    assert_eq!(ok, Ok(1));
}

#[tokio::test(start_paused = true)]
async fn a_loader_panic_reaches_the_leader_and_waiters_retry_once() {
    let cache = cache::<u32>("panic-once");
    let loads = Arc::new(AtomicUsize::new(0));
    let panicking = |loads: Arc<AtomicUsize>| {
        move |_| async move {
            loads.fetch_add(1, SeqCst);
            sleep(Duration::from_millis(10)).await;
            panic!("loader exploded");
        }
    };
    let healthy = |loads: Arc<AtomicUsize>| {
        move |_| async move {
            loads.fetch_add(1, SeqCst);
            sleep(Duration::from_millis(10)).await;
            11
        }
    };
    let leader = {
        let (cache, loads) = (cache.clone(), loads.clone());
        tokio::spawn(async move { cache.get_or_load(4, panicking(loads)).await })
    };
    tokio::task::yield_now().await;
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move { cache.get_or_load(4, healthy(loads)).await })
        })
        .collect();
    let leader = timeout(BOUND, leader).await.unwrap().unwrap_err();
    let payload = leader.into_panic();
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"loader exploded"),
        "the leader gets the loader's own panic"
    );
    for waiter in waiters {
        assert_eq!(
            timeout(BOUND, waiter).await.unwrap().unwrap(),
            11,
            "waiters retried as one new flight"
        );
    }
    assert_eq!(
        loads.load(SeqCst),
        2,
        "the panicked flight and one retry flight"
    );
    assert_eq!(cache.stats().load_panics, 1);
    assert_eq!(cache.get(&4), Some(11));
}

#[tokio::test(start_paused = true)]
async fn a_loader_that_always_panics_fails_every_caller_fast_and_poisons_nothing() {
    let cache = cache::<u32>("panic-always");
    let loads = Arc::new(AtomicUsize::new(0));
    let panicking = {
        let loads = loads.clone();
        move |_| async move {
            loads.fetch_add(1, SeqCst);
            sleep(Duration::from_millis(10)).await;
            panic!("always");
        }
    };
    let callers: Vec<_> = (0..20)
        .map(|_| {
            let (cache, panicking) = (cache.clone(), panicking.clone());
            tokio::spawn(async move { cache.get_or_load(5, panicking).await })
        })
        .collect();
    let mut panics = 0;
    for caller in callers {
        let error = timeout(BOUND, caller)
            .await
            .expect("no caller hangs")
            .unwrap_err();
        assert!(error.is_panic());
        panics += 1;
    }
    assert_eq!(panics, 20, "every caller learns the load failed");
    assert_eq!(
        loads.load(SeqCst),
        2,
        "at most one retry flight: no herd of retries"
    );
    // Nothing is poisoned: the key loads again.
    assert_eq!(
        timeout(BOUND, cache.get_or_load(5, |_| async { 1 }))
            .await
            .unwrap(),
        1
    );
}

/// A caller of `key` whose load takes 100 ms and answers `value`.
fn spawn_slow_load(cache: &Cache<u64, u32>, key: u64, value: u32) -> tokio::task::JoinHandle<u32> {
    let cache = cache.clone();
    tokio::spawn(async move {
        cache
            .get_or_load(key, move |_| async move {
                sleep(Duration::from_millis(100)).await;
                value
            })
            .await
    })
}

#[tokio::test(start_paused = true)]
async fn invalidate_during_a_load_answers_its_callers_but_caches_nothing() {
    let cache = cache::<u32>("invalidate-in-flight");
    let caller = spawn_slow_load(&cache, 1, 1);
    sleep(Duration::from_millis(10)).await;
    cache.invalidate(&1);
    assert_eq!(timeout(BOUND, caller).await.unwrap().unwrap(), 1);
    assert_eq!(
        cache.get(&1),
        None,
        "the invalidated load's value is dropped"
    );
    // The next caller starts a new load rather than joining the detached one.
    assert_eq!(cache.get_or_load(1, |_| async { 2 }).await, 2);
}

#[tokio::test(start_paused = true)]
async fn insert_wins_over_a_load_in_flight() {
    let cache = cache::<u32>("insert-in-flight");
    let caller = spawn_slow_load(&cache, 1, 1);
    sleep(Duration::from_millis(10)).await;
    cache.insert(1, 99);
    assert_eq!(timeout(BOUND, caller).await.unwrap().unwrap(), 1);
    assert_eq!(cache.get(&1), Some(99));
    assert_eq!(cache.get_or_load(1, |_| async { 2 }).await, 99);
}

/// A load whose runtime shuts down (its task is dropped, never finished)
/// releases the key: a caller on another runtime loads instead of hanging.
#[test]
fn a_load_dropped_with_its_runtime_releases_the_key() {
    let cache = cache::<u32>("abandoned");
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    first.block_on(async {
        let gave_up = timeout(
            Duration::from_millis(10),
            cache.get_or_load(1, |_| async {
                std::future::pending::<()>().await; // never finishes on its own
                1
            }),
        )
        .await;
        assert!(gave_up.is_err());
    });
    drop(first); // drops the load task mid-flight
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let value = second.block_on(async {
        timeout(
            Duration::from_secs(5),
            cache.get_or_load(1, |_| async { 2 }),
        )
        .await
    });
    assert_eq!(value, Ok(2));
}

#[tokio::test(start_paused = true)]
async fn capacity_is_respected_after_ten_times_capacity_inserts() {
    let cache: Cache<u64, u64> = Cache::builder("bounded")
        .ttl(Duration::from_secs(30))
        .capacity(100)
        .build();
    for key in 0..1000 {
        cache.insert(key, key);
        assert!(
            cache.len() <= 100,
            "len {} after {} inserts",
            cache.len(),
            key + 1
        );
    }
    for key in 1000..2000 {
        cache.get_or_load(key, |k| async move { k }).await;
    }
    assert!(
        cache.len() <= 100 && cache.len() >= 50,
        "len {}",
        cache.len()
    );
}
