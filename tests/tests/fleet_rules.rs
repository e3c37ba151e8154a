//! Issue 14's faults, on pods sharing one `LocalBackend` on the paused
//! clock: one failure rule with and without `shared` (a failure answers the
//! callers that waited on that flight, not the calls that come after it),
//! tag invalidations that must reach every load and every write, and a
//! tagged cache that must not deadlock on itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::{Cache, LocalBackend, SharedBackend};
use stampede_cache_tests::bounded;
use stampede_cache_tests::scenarios::{self, RepoError};
use tokio::time::{advance, sleep};

/// Runs `test` on its own OS thread (paused-clock runtime) and fails if it
/// has not finished within a few wall-clock seconds: a thread blocked on a
/// mutex stops the paused clock too, so only a real-time bound sees it.
fn without_deadlock(name: &str, test: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(20)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("{name}: the test panicked"),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: deadlock — the cache never answered (its mutex is held)")
        }
    }
}

/// Two pods of cache `name` (`load_timeout` `bound`) on one LocalBackend,
/// and a call of key 1 on the first whose loader hangs (it holds the lock).
#[allow(clippy::type_complexity)]
fn a_hung_leader(
    name: &str,
    bound: Duration,
) -> (
    LocalBackend,
    Vec<Cache<u32, u32>>,
    tokio::task::JoinHandle<Result<u32, RepoError>>,
) {
    let fleet = LocalBackend::new();
    let pods: Vec<Cache<u32, u32>> = (0..2)
        .map(|_| {
            Cache::builder(name.to_owned())
                .load_timeout::<RepoError>(bound)
                .backend(fleet.clone())
                .build()
        })
        .collect();
    let hung = tokio::spawn({
        let pod = pods[0].clone();
        async move {
            pod.try_get_or_load(1, |_| std::future::pending::<Result<u32, RepoError>>())
                .await
        }
    });
    (fleet, pods, hung)
}

/// Two pods of cache `name` on one LocalBackend, remote failures as `RepoError`.
fn remote_errors_pods(name: &str) -> Vec<Cache<u32, u32>> {
    let fleet = LocalBackend::new();
    (0..2)
        .map(|_| {
            Cache::builder(name.to_owned())
                .remote_errors::<RepoError>()
                .backend(fleet.clone())
                .build()
        })
        .collect()
}

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Found 1: pod A's loader hangs past `load_timeout` (300 ms); pod B's
/// origin works. B is called every 50 ms for 3 s: every call is answered
/// with B's own value (v2: `Err(Timeout)` 55 times out of 55, for the whole
/// 5 s backoff). A timeout is not an error of B's origin.
#[tokio::test(start_paused = true)]
async fn a_timeout_in_one_pod_does_not_answer_another_pods_later_calls() {
    let backends = vec![SharedBackend::from(LocalBackend::new()); 2];
    scenarios::a_timeout_in_one_pod_does_not_answer_another_pods_later_calls(
        "rules.timeout_is_local",
        &backends,
    )
    .await;
}

/// Found 1, with `Err`: pod A's load fails; once that flight has ended, a
/// call in pod B (which has no value to serve) loads again — as the same
/// cache without `shared` would — with and without `remote_errors`.
#[tokio::test(start_paused = true)]
async fn a_transient_error_does_not_answer_the_calls_after_its_flight() {
    for remote_errors in [true, false] {
        let backends = vec![SharedBackend::from(LocalBackend::new()); 2];
        scenarios::a_transient_error_does_not_answer_the_calls_after_its_flight(
            &format!("rules.transient_err.{remote_errors}"),
            &backends,
            remote_errors,
        )
        .await;
    }
}

/// The other half of the rule: where a servable value exists (fail-safe),
/// a failure throttles new loads fleet-wide for the retry backoff, exactly
/// as in process: one origin call per backoff for the whole fleet.
#[tokio::test(start_paused = true)]
async fn with_fail_safe_a_failure_throttles_the_whole_fleet_for_the_backoff() {
    let backends = vec![SharedBackend::from(LocalBackend::new()); 4];
    scenarios::with_fail_safe_a_failure_throttles_the_fleet("rules.fail_safe_throttle", &backends)
        .await;
}

/// Found 2: a failing load of a tagged key, landing after another tag was
/// invalidated, took the flight map twice (v2: hung for good).
#[test]
fn a_failing_tagged_load_after_another_tags_invalidation_does_not_deadlock() {
    without_deadlock("failing tagged load", || {
        paused().block_on(async {
            let cache: Cache<u32, u32> = Cache::builder("rules.tag_deadlock")
                .ttl(Duration::from_secs(1))
                .fail_safe(Duration::from_secs(60))
                .tags(|_: &u32| ["rules.tag_deadlock.mine"])
                .build();
            cache.get_or_load(1, |k| async move { k }).await;
            advance(Duration::from_secs(2)).await;
            let failing = cache.try_get_or_load(1, |_| async {
                sleep(Duration::from_millis(10)).await;
                Err::<u32, _>("down")
            });
            let invalidate_other = async {
                sleep(Duration::from_millis(5)).await;
                stampede_cache::invalidate_tag("rules.tag_deadlock.other");
            };
            let (got, ()) = tokio::join!(failing, invalidate_other);
            assert_eq!(got, Ok(1), "the fail-safe value");
            let next = cache
                .try_get_or_load(2, |k| async move { Ok::<_, &str>(k) })
                .await;
            assert_eq!(next, Ok(2), "the cache still answers");
        });
    });
}

/// Found 2, user closures: `tags` and `ttl_for` that call back into the
/// cache ran under the flight map's lock.
#[test]
fn closures_that_call_back_into_the_cache_do_not_deadlock() {
    without_deadlock("re-entrant closures", || {
        paused().block_on(async {
            let slot: Arc<std::sync::OnceLock<Cache<u32, u32>>> = Arc::default();
            let (for_tags, for_ttl) = (slot.clone(), slot.clone());
            let cache: Cache<u32, u32> = Cache::builder("rules.reentrant")
                .tags(move |k: &u32| {
                    // Looks at a neighbour's entry: re-enters the cache.
                    let near = for_tags.get().and_then(|c| c.get(&(k + 1)));
                    [format!("rules.reentrant.{}", near.is_some())]
                })
                .ttl_for(move |k: &u32, _v: &u32| {
                    let known = for_ttl.get().map_or(0, |c| c.len());
                    Duration::from_secs(10 + (*k as u64) + known as u64)
                })
                .build();
            slot.set(cache.clone()).ok().unwrap();
            assert_eq!(cache.get_or_load(1, |k| async move { k * 2 }).await, 2);
            cache.insert(5, 50);
            stampede_cache::invalidate_tag("rules.reentrant.unrelated");
            assert_eq!(cache.get_or_load(5, |_| async { 0 }).await, 50);
            assert_eq!(cache.get_or_load(7, |k| async move { k }).await, 7);
        });
    });
}

/// Found 3: a waiter that re-took the lock after tag invalidation #1 was not
/// recorded under its tag again, so invalidation #2 missed it and its load
/// (of the row as it was before write #2) landed in the shared tier.
#[tokio::test(start_paused = true)]
async fn a_second_tag_invalidation_reaches_a_load_that_retook_the_lock() {
    let fleet = LocalBackend::new();
    let tag = "rules.double_tag.t";
    let pods: Vec<Cache<u32, u32>> = (0..3)
        .map(|_| {
            Cache::builder("rules.double_tag")
                .tags(move |_: &u32| [tag])
                .backend(fleet.clone())
                .build()
        })
        .collect();
    let row = Arc::new(AtomicU32::new(1));
    let load = |row: Arc<AtomicU32>| {
        move |_| async move {
            let read = row.load(SeqCst);
            sleep(Duration::from_millis(100)).await;
            read
        }
    };
    let a = tokio::spawn({
        let (pod, load) = (pods[0].clone(), load(row.clone()));
        async move { pod.get_or_load(1, load).await }
    });
    sleep(Duration::from_millis(10)).await;
    let b = tokio::spawn({
        let (pod, load) = (pods[1].clone(), load(row.clone()));
        async move { pod.get_or_load(1, load).await }
    });
    sleep(Duration::from_millis(10)).await;
    row.store(2, SeqCst);
    stampede_cache::invalidate_tag(tag);
    sleep(Duration::from_millis(30)).await;
    row.store(3, SeqCst);
    stampede_cache::invalidate_tag(tag);
    assert_eq!(bounded(a).await.unwrap(), 1, "A answers with what it read");
    bounded(b).await.unwrap();
    sleep(Duration::from_millis(200)).await;
    let seen = pods[2].get_or_load(1, load(row.clone())).await;
    assert_eq!(
        seen, 3,
        "pod C must not be served a row from before write #2"
    );
}

/// Found 4 (FusionCache's "remove by tag", ported): an `insert` of a tagged
/// key was not recorded under its tags in the shared tier, so
/// `invalidate_tag` left the shared copy for a pod that never held it.
#[tokio::test(start_paused = true)]
async fn an_inserted_tagged_key_is_invalidated_by_its_tag_fleet_wide() {
    let fleet = LocalBackend::new();
    let pods: Vec<Cache<String, u32>> = (0..3)
        .map(|_| {
            Cache::builder("rules.insert_tagged")
                .tags(|key: &String| {
                    if key == "foo" {
                        vec!["rules.insert_tagged.x"]
                    } else {
                        vec![]
                    }
                })
                .backend(fleet.clone())
                .build()
        })
        .collect();
    pods[0].insert("foo".to_owned(), 1);
    sleep(Duration::from_millis(1)).await;
    assert_eq!(pods[0].get(&"foo".to_owned()), Some(1));
    stampede_cache::invalidate_tag("rules.insert_tagged.x");
    sleep(Duration::from_millis(1)).await;
    let seen = pods[2].get_or_load("foo".to_owned(), |_| async { 2 }).await;
    assert_eq!(seen, 2, "the tag dropped the shared copy too");
}

/// LocalBackend's tag records follow the live entries: 10 000 short-lived
/// keys under 1000 distinct tags leave neither every member nor every
/// emptied tag behind (v2: a set swept only when its size hit a multiple of
/// 64 — O(n) per re-tag at that size — and emptied sets kept for ever).
#[tokio::test(start_paused = true)]
async fn local_tag_records_follow_the_live_entries() {
    let fleet = LocalBackend::new();
    let cache: Cache<u32, u32> = Cache::builder("rules.tag_growth")
        .ttl(Duration::from_millis(50))
        .load_timeout::<RepoError>(Duration::from_millis(100))
        .tags(|key: &u32| [format!("rules.tag_growth.{}", key / 10)])
        .backend(fleet.clone())
        .build();
    for key in 0..10_000u32 {
        let got = cache
            .try_get_or_load(key, |k| async move { Ok::<_, RepoError>(k) })
            .await;
        assert_eq!(got, Ok(key));
        sleep(Duration::from_millis(1)).await;
    }
    // Values (50 ms) and tag records (100 ms hold + 50 ms) of the last
    // ~150 ms are live: ~150 keys in ~15 tags. Amortised sweeps keep at most
    // about twice the live sets (at least 64) of at most 10 records each, and
    // the values' sweep twice theirs (v2 kept all 10 000 tag records).
    assert!(fleet.len() <= 1500, "{} entries held", fleet.len());
}

/// Issue 14, review item 3: a flight that started with a fail-safe value
/// (so another pod's failure record may answer it) but whose cache has no
/// `remote_errors`, and whose fail-safe window ends while it waits on that
/// other pod's failing load (v2.x: the caller panicked with the remote
/// failure it could not express). With nothing left to serve, the flight
/// loads in process, as the same cache without `shared` would.
#[tokio::test(start_paused = true)]
async fn a_remote_failure_after_the_fail_safe_window_ends_is_loaded_not_panicked() {
    let fleet = LocalBackend::new();
    let pods: Vec<Cache<u32, u32>> = (0..2)
        .map(|_| {
            Cache::builder("rules.window_ends_in_wait")
                .ttl(Duration::from_secs(1))
                .fail_safe(Duration::from_secs(2))
                .backend(fleet.clone())
                .build()
        })
        .collect();
    let calls = Arc::new(AtomicU32::new(0));
    assert_eq!(pods[0].get_or_load(1, |_| async { 1 }).await, 1);
    assert_eq!(pods[1].get_or_load(1, |_| async { 9 }).await, 1);
    advance(Duration::from_millis(2500)).await;
    let failing = tokio::spawn({
        let pod = pods[1].clone();
        async move {
            pod.try_get_or_load(1, |_| async {
                sleep(Duration::from_secs(1)).await;
                Err::<u32, _>(RepoError::Down)
            })
            .await
        }
    });
    sleep(Duration::from_millis(100)).await;
    let waiter = tokio::spawn({
        let (pod, calls) = (pods[0].clone(), calls.clone());
        async move {
            pod.try_get_or_load(1, move |_| async move {
                calls.fetch_add(1, SeqCst);
                Ok::<u32, RepoError>(2)
            })
            .await
        }
    });
    assert_eq!(bounded(failing).await.unwrap(), Err(RepoError::Down));
    let got = bounded(waiter).await;
    assert!(got.is_ok(), "the waiting pod panicked: {got:?}");
    assert_eq!(
        got.unwrap(),
        Ok(2),
        "its own load, not a failure it cannot express"
    );
    assert_eq!(calls.load(SeqCst), 1);
}

/// Issue 14, review item 3, the other door: the cache converts remote
/// failures into `RepoError`, but this call (`get_or_load`) cannot return
/// an error at all. Another pod's failure must not reach it (v2.x: it
/// panicked with that failure); it loads in process.
#[tokio::test(start_paused = true)]
async fn a_call_that_cannot_express_a_remote_failure_loads_instead() {
    let pods = remote_errors_pods("rules.inexpressible");
    let failing = tokio::spawn({
        let pod = pods[1].clone();
        async move {
            pod.try_get_or_load(1, |_| async {
                sleep(Duration::from_millis(100)).await;
                Err::<u32, _>(RepoError::Down)
            })
            .await
        }
    });
    sleep(Duration::from_millis(10)).await;
    let infallible = tokio::spawn({
        let pod = pods[0].clone();
        async move { pod.get_or_load(1, |_| async { 2 }).await }
    });
    assert_eq!(bounded(failing).await.unwrap(), Err(RepoError::Down));
    let got = bounded(infallible).await;
    assert!(got.is_ok(), "the infallible call panicked: {got:?}");
    assert_eq!(got.unwrap(), 2);
}

/// Issue 14, review item 1: a tag invalidation took the tag's members out
/// of its record, so a load recorded under the tag just before it — whose
/// lock attempt landed just after — was in no record when the next
/// invalidation came, and its load, read before that second write, landed
/// in the shared tier. Swept over every instant invalidation #1 can land
/// at, on a backend whose operations take a round trip (paused clock).
#[tokio::test(start_paused = true)]
async fn a_load_recorded_before_a_tag_invalidation_is_reached_by_the_next() {
    let step = Duration::from_micros(250);
    for offset in 0..48u32 {
        let fleet = LocalBackend::with_round_trip(Duration::from_millis(2));
        let tag: &'static str = format!("rules.recorded_before.{offset}").leak();
        let pods: Vec<Cache<u32, u32>> = (0..2)
            .map(|_| {
                Cache::builder(format!("rules.recorded_before.{offset}"))
                    .tags(move |_: &u32| [tag])
                    .backend(fleet.clone())
                    .build()
            })
            .collect();
        let row = Arc::new(AtomicU32::new(1));
        let load = |row: Arc<AtomicU32>| {
            move |_| async move {
                let read = row.load(SeqCst);
                sleep(Duration::from_millis(30)).await;
                read
            }
        };
        let started = tokio::time::Instant::now();
        let a = tokio::spawn({
            let (pod, load) = (pods[0].clone(), load(row.clone()));
            async move { pod.get_or_load(1, load).await }
        });
        sleep(step * offset).await;
        row.store(2, SeqCst);
        stampede_cache::invalidate_tag(tag);
        tokio::time::sleep_until(started + Duration::from_millis(25)).await;
        row.store(3, SeqCst);
        stampede_cache::invalidate_tag(tag);
        bounded(a).await.unwrap();
        sleep(Duration::from_millis(200)).await;
        let seen = pods[1].get_or_load(1, load(row.clone())).await;
        assert_eq!(
            seen,
            3,
            "invalidation #1 at {:?}: pod B was served a row from before write #2",
            step * offset
        );
    }
}

/// Found by the fleet model once its backend took round trips: after a
/// notice gap a pod forgets its cache generation, and the first envelope
/// it decoded — one written before an `invalidate_all` — set it to that
/// envelope's older generation, so every value from before the
/// `invalidate_all` became servable again on that pod. Swept over every
/// instant the gap can fall at during the pod's first flight.
#[tokio::test(start_paused = true)]
async fn a_gap_does_not_let_an_old_envelope_lower_the_generation() {
    for offset in 0..40u64 {
        let fleet = LocalBackend::with_round_trip(Duration::from_millis(10));
        let name = format!("rules.gap_generation.{offset}");
        let pods: Vec<Cache<u32, String>> = (0..2)
            .map(|_| Cache::builder(name.clone()).backend(fleet.clone()).build())
            .collect();
        for key in [2, 3] {
            let old = pods[0]
                .get_or_load(key, |k| async move { format!("old {k}") })
                .await;
            assert_eq!(old, format!("old {key}"));
        }
        pods[0].invalidate_all();
        sleep(Duration::from_millis(50)).await;
        let first = tokio::spawn({
            let pod = pods[1].clone();
            async move {
                pod.get_or_load(2, |k| async move { format!("new {k}") })
                    .await
            }
        });
        sleep(Duration::from_millis(offset)).await;
        fleet.set_outage(true);
        fleet.set_outage(false);
        assert_eq!(bounded(first).await.unwrap(), "new 2");
        let later = pods[1]
            .get_or_load(3, |k| async move { format!("new {k}") })
            .await;
        assert_eq!(
            later, "new 3",
            "gap {offset} ms into the flight: a value from before invalidate_all was served"
        );
    }
}

/// Issue 14, review item 2: a loaded value's tag record was kept for the
/// lock hold + the cache's ttl + stale window, whatever the entry's own
/// life (`ttl_for`, jitter). An entry that outlived its record was missed
/// by `invalidate_tag`: another pod read it back from the shared tier.
#[tokio::test(start_paused = true)]
async fn a_long_lived_entry_stays_reachable_by_its_tag() {
    let fleet = LocalBackend::new();
    let tag = "rules.long_lived.t";
    let pods: Vec<Cache<u32, String>> = (0..2)
        .map(|_| {
            Cache::builder("rules.long_lived")
                .ttl(Duration::from_millis(100))
                .ttl_for(|_: &u32, _: &String| Duration::from_secs(600))
                .load_timeout::<RepoError>(Duration::from_millis(100))
                .tags(move |_: &u32| [tag])
                .backend(fleet.clone())
                .build()
        })
        .collect();
    let old = pods[0].get_or_load(1, |_| async { "old".to_owned() }).await;
    assert_eq!(old, "old");
    sleep(Duration::from_secs(60)).await;
    stampede_cache::invalidate_tag(tag);
    assert!(
        SharedBackend::from(fleet.clone())
            .flush(Duration::from_secs(5))
            .await
    );
    let seen = pods[1].get_or_load(1, |_| async { "new".to_owned() }).await;
    assert_eq!(seen, "new", "the tag must reach an entry that lives 600 s");
}

/// Issue 14, review item 4: `load_timeout` bounds a call, with `shared` as
/// without. Pod A's loader hangs; pod B's call (bound 300 ms) waits on A's
/// lock, and when A's load is cut, B takes over — v2.x with a whole new
/// bound, so B answered 450 ms after its call began. B's own load now gets
/// only what is left of B's bound: B answers within it.
#[tokio::test(start_paused = true)]
async fn a_waiter_that_takes_over_stays_within_its_load_timeout() {
    let bound = Duration::from_millis(300);
    let (_fleet, pods, hung) = a_hung_leader("rules.takeover_bound", bound);
    sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let waiter = pods[1]
        .try_get_or_load(1, |_| async {
            sleep(Duration::from_millis(250)).await;
            Ok::<u32, RepoError>(2)
        })
        .await;
    let waited = started.elapsed();
    assert_eq!(bounded(hung).await.unwrap(), Err(RepoError::Timeout));
    assert!(
        waited <= bound,
        "pod B's call took {waited:?} with a load_timeout of {bound:?} ({waiter:?})"
    );
    assert_eq!(waiter, Err(RepoError::Timeout));
}

/// Issue 14, review item 7: a load that outlives the lock hold (60 s
/// without a `load_timeout`) loses its lease, and its refused fenced write
/// cannot be told from a write that superseded it — so it is not cached
/// (caching a value a write replaced is worse than loading again; a review
/// found the first fix, "cache it where it ran", serving a replaced value).
/// The documented remedy: a `load_timeout` at least as long as the loads
/// (it is the lock hold too) — then the 90 s load is cached and reused.
#[tokio::test(start_paused = true)]
async fn a_load_longer_than_the_default_lock_hold_is_cached_with_a_long_enough_load_timeout() {
    let fleet = LocalBackend::new();
    let calls = Arc::new(AtomicU32::new(0));
    let load = |calls: Arc<AtomicU32>| {
        move |_| async move {
            calls.fetch_add(1, SeqCst);
            sleep(Duration::from_secs(90)).await;
            Ok::<u32, RepoError>(7)
        }
    };
    for (bound, expected_calls) in [(None, 2), (Some(Duration::from_secs(120)), 1)] {
        calls.store(0, SeqCst);
        let mut builder = Cache::builder(format!("rules.long_load.{}", bound.is_some()))
            .ttl(Duration::from_secs(600))
            .lock_ttl(Duration::from_secs(1))
            .backend(fleet.clone());
        if let Some(bound) = bound {
            builder = builder.load_timeout::<RepoError>(bound);
        }
        let pod: Cache<u32, u32> = builder.build();
        assert_eq!(pod.try_get_or_load(1, load(calls.clone())).await, Ok(7));
        assert_eq!(pod.try_get_or_load(1, load(calls.clone())).await, Ok(7));
        assert_eq!(
            calls.load(SeqCst),
            expected_calls,
            "load_timeout {bound:?}: origin calls for two calls of a 90 s load"
        );
    }
}

/// Issue 14, review item 8: a loader that panics. Without `shared`, the
/// callers that waited on it (not its own caller, which gets the panic)
/// start a new flight and load — the panic is a bug of that one call, not
/// an answer. With `shared`, a waiting pod was answered with
/// `Err(Remote { panicked })`. It now takes over and loads, as in process.
#[tokio::test(start_paused = true)]
async fn a_remote_panic_makes_the_waiting_pods_load_as_in_process() {
    let pods = remote_errors_pods("rules.remote_panic");
    let panicking = tokio::spawn({
        let pod = pods[0].clone();
        async move {
            pod.try_get_or_load(1, |_| async {
                sleep(Duration::from_millis(100)).await;
                panic!("bug in the loader");
                #[allow(unreachable_code)]
                Ok::<u32, RepoError>(0)
            })
            .await
        }
    });
    sleep(Duration::from_millis(10)).await;
    let waiter = pods[1]
        .try_get_or_load(1, |_| async { Ok::<u32, RepoError>(2) })
        .await;
    assert!(
        bounded(panicking).await.is_err(),
        "the panicking call panics"
    );
    assert_eq!(
        waiter,
        Ok(2),
        "the waiting pod loads, as a waiter in process does"
    );
}

/// Found by the fleet model once it drew pods without `remote_errors`: pod
/// A's load fails while pods B and C wait on its lock. Neither can return
/// A's failure, so each loads itself — and both did so at once, beside
/// each other in process, without the lock. They now take the lock in turn:
/// never two loads of the key at once.
#[tokio::test(start_paused = true)]
async fn waiters_that_cannot_return_a_remote_failure_load_one_at_a_time() {
    let fleet = LocalBackend::new();
    let pods: Vec<Cache<u32, u32>> = (0..3)
        .map(|_| {
            Cache::builder("rules.inexpressible_takeover")
                .backend(fleet.clone())
                .build()
        })
        .collect();
    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let failing = tokio::spawn({
        let pod = pods[0].clone();
        async move {
            pod.try_get_or_load(1, |_| async {
                sleep(Duration::from_millis(100)).await;
                Err::<u32, _>(RepoError::Down)
            })
            .await
        }
    });
    sleep(Duration::from_millis(10)).await;
    let waiters: Vec<_> = pods[1..]
        .iter()
        .map(|pod| {
            let (pod, running, most) = (pod.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                pod.try_get_or_load(1, move |_| async move {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    sleep(Duration::from_millis(50)).await;
                    running.fetch_sub(1, SeqCst);
                    Ok::<u32, RepoError>(2)
                })
                .await
            })
        })
        .collect();
    assert_eq!(bounded(failing).await.unwrap(), Err(RepoError::Down));
    for waiter in waiters {
        assert_eq!(bounded(waiter).await.unwrap(), Ok(2));
    }
    assert_eq!(most.load(SeqCst), 1, "two loads of the key ran at once");
}

/// Review of the fleet protocol: a waiter whose backend fails near the end
/// of its `load_timeout` falls back to loading in process — with a whole
/// new bound before, so the call took about twice its bound. Every load a
/// flight makes is bounded by the flight's deadline now.
#[tokio::test(start_paused = true)]
async fn a_waiter_that_falls_back_stays_within_its_load_timeout() {
    let bound = Duration::from_millis(300);
    let (fleet, pods, hung) = a_hung_leader("rules.fallback_bound", bound);
    sleep(Duration::from_millis(100)).await;
    let outage = tokio::spawn({
        let fleet = fleet.clone();
        async move {
            sleep(Duration::from_millis(150)).await;
            fleet.set_outage(true);
        }
    });
    let started = tokio::time::Instant::now();
    let waiter = pods[1]
        .try_get_or_load(1, |_| async {
            sleep(Duration::from_millis(250)).await;
            Ok::<u32, RepoError>(2)
        })
        .await;
    let waited = started.elapsed();
    bounded(outage).await.unwrap();
    fleet.set_outage(false);
    let _ = bounded(hung).await;
    assert!(
        waited <= bound,
        "pod B's call took {waited:?} with a load_timeout of {bound:?} ({waiter:?})"
    );
}
