//! Fleet faults of v1 (issue 9), on pods sharing one `LocalBackend` on the
//! paused clock: a failing origin called once per pod in turn, a write
//! undone by an older in-flight load, `invalidate_all` undone the same way,
//! a hung loader holding the key for the whole fleet, an unbounded backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::{Cache, DEFAULT_MAX_LOCK_HOLD, LocalBackend, SharedBackend};
use stampede_cache_tests::scenarios::{self, RepoError};
use tokio::time::{Instant, advance, sleep, timeout};

const BOUND: Duration = Duration::from_secs(600);
const LOAD: Duration = scenarios::LOAD;
/// A write's background task has reached the backend this long after the call.
const SETTLE: Duration = Duration::from_millis(1);

fn pods(n: usize, name: &str, fleet: &LocalBackend) -> Vec<Cache<u32, String>> {
    (0..n)
        .map(|_| {
            Cache::builder(name.to_owned())
                .ttl(Duration::from_secs(30))
                .failed_refresh_backoff(Duration::from_secs(1))
                .remote_errors::<RepoError>()
                .backend(fleet.clone())
                .build()
        })
        .collect()
}

/// 10 pods × 10 callers on one key, the origin fails after 50 ms: one
/// origin call for the whole fleet, and every caller has its answer after
/// about one load (v1: 10 calls, one pod after another, slowest ≈ 500 ms).
/// Then the backoff: inside it nobody calls the origin; after it, one retry.
#[tokio::test(start_paused = true)]
async fn a_failing_origin_is_called_once_per_flight_fleet_wide() {
    let fleet = LocalBackend::new();
    let backends = vec![SharedBackend::from(fleet); 10];
    scenarios::a_failing_origin_is_called_once_per_flight(
        "faults.failing_origin",
        &backends,
        10,
        Duration::ZERO,
    )
    .await;
    let pods = scenarios::pods("faults.failing_origin", &backends);
    advance(Duration::from_secs(1)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    for pod in &pods {
        let calls = calls.clone();
        let back = pod
            .try_get_or_load(1, move |_| async move {
                calls.fetch_add(1, SeqCst);
                Ok::<_, RepoError>("back".to_owned())
            })
            .await;
        assert_eq!(back.as_deref(), Ok("back"));
    }
    assert_eq!(
        calls.load(SeqCst),
        1,
        "after the backoff: one retry, which recovers the key"
    );
}

/// A failure in another process is served the fail-safe value where there is one.
#[tokio::test(start_paused = true)]
async fn a_remote_failure_serves_the_fail_safe_value() {
    let fleet = LocalBackend::new();
    let pods: Vec<Cache<u32, String>> = (0..3)
        .map(|_| {
            Cache::builder("faults.remote_fail_safe")
                .ttl(Duration::from_secs(1))
                .fail_safe(Duration::from_secs(600))
                .remote_errors::<RepoError>()
                .backend(fleet.clone())
                .build()
        })
        .collect();
    for pod in &pods {
        pod.get_or_load(1, |_| async { "good".to_owned() }).await;
    }
    advance(Duration::from_secs(2)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = pods
        .iter()
        .map(|pod| {
            let (pod, calls) = (pod.clone(), calls.clone());
            tokio::spawn(async move {
                pod.try_get_or_load(1, move |_| async move {
                    calls.fetch_add(1, SeqCst);
                    sleep(LOAD).await;
                    Err::<String, _>(RepoError::Down)
                })
                .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().as_deref(), Ok("good"));
    }
    assert_eq!(calls.load(SeqCst), 1);
    let fail_safe: u64 = pods.iter().map(|p| p.stats().fail_safe_hits).sum();
    assert_eq!(fail_safe, 3);
}

/// Pod A leads a 150 ms load that read the old row; pod B inserts the new
/// row at 25 ms. A's callers get A's answer, but the fleet keeps B's write:
/// pod C is served the new row (v1: the old one, for a whole ttl).
#[tokio::test(start_paused = true)]
async fn an_insert_wins_over_a_load_already_running_elsewhere() {
    let backends = vec![SharedBackend::from(LocalBackend::new()); 3];
    scenarios::an_insert_wins_over_a_load_running_elsewhere(
        "faults.insert_wins",
        &backends,
        SETTLE,
    )
    .await;
}

/// The same with `invalidate` and `invalidate_all`: a load that started
/// before them never becomes the fleet's value.
#[tokio::test(start_paused = true)]
async fn invalidations_win_over_a_load_already_running_elsewhere() {
    for all in [false, true] {
        let backends = vec![SharedBackend::from(LocalBackend::new()); 3];
        let name = format!("faults.invalidate_wins.{all}");
        scenarios::an_invalidation_wins_over_a_load_running_elsewhere(
            &name, &backends, all, SETTLE,
        )
        .await;
    }
}

/// A pod whose loader hangs (no `load_timeout`) holds the key only up to
/// the lease cap; then another pod takes over (v1: renewed forever).
#[tokio::test(start_paused = true)]
async fn a_hung_loader_holds_the_key_only_up_to_the_lease_cap() {
    let fleet = LocalBackend::new();
    let lock_ttl = Duration::from_secs(2);
    let pods: Vec<Cache<u32, String>> = (0..2)
        .map(|_| {
            Cache::builder("faults.hung_holder")
                .lock_ttl(lock_ttl)
                .backend(fleet.clone())
                .build()
        })
        .collect();
    let hung = pods[0].clone();
    tokio::spawn(async move {
        hung.get_or_load(1, |_| std::future::pending::<String>())
            .await
    });
    sleep(Duration::from_millis(10)).await;
    let started = Instant::now();
    let value = timeout(
        BOUND,
        pods[1].get_or_load(1, |_| async { "taken over".to_owned() }),
    )
    .await
    .unwrap();
    assert_eq!(value, "taken over");
    let waited = started.elapsed();
    assert!(
        waited <= DEFAULT_MAX_LOCK_HOLD + lock_ttl + Duration::from_secs(1),
        "waited {waited:?}"
    );
    assert!(waited >= DEFAULT_MAX_LOCK_HOLD - Duration::from_secs(1));
}

/// With `load_timeout`, the hung leader's load is dropped at the bound and
/// its waiters in other pods get the timeout at about the same time.
#[tokio::test(start_paused = true)]
async fn a_load_timeout_ends_the_flight_for_the_whole_fleet() {
    let backends = vec![SharedBackend::from(LocalBackend::new()); 5];
    scenarios::a_load_timeout_ends_the_flight_fleet_wide(
        "faults.fleet_timeout",
        &backends,
        Duration::ZERO,
    )
    .await;
}

/// A tag invalidated in one pod reaches every pod and the shared tier.
#[tokio::test(start_paused = true)]
async fn a_tag_reaches_every_pod() {
    let backends = vec![SharedBackend::from(LocalBackend::new()); 3];
    scenarios::a_tag_reaches_every_pod("faults.tags", &backends, SETTLE).await;
}

/// LocalBackend's memory follows the live entries, not every key ever written.
#[tokio::test(start_paused = true)]
async fn the_local_backend_sweeps_expired_entries() {
    let fleet = LocalBackend::new();
    let pod: Cache<u32, u32> = Cache::builder("faults.sweep")
        .ttl(Duration::from_millis(100))
        .capacity(100)
        .backend(fleet.clone())
        .build();
    for round in 0..50u32 {
        for key in 0..1000 {
            pod.insert(round * 1000 + key, key);
        }
        sleep(Duration::from_millis(200)).await; // every one of them expires
    }
    assert!(fleet.len() <= 4000, "{} entries held", fleet.len());
}

/// One pod's `invalidate_all` drops every pod's copies at once, in O(1)
/// per pod (a generation, not a scan), and the other caches keep theirs.
#[tokio::test(start_paused = true)]
async fn invalidate_all_reaches_every_pod_and_only_its_cache() {
    let fleet = LocalBackend::new();
    let pods = pods(3, "faults.clear", &fleet);
    let other: Cache<u32, String> = Cache::builder("faults.clear.other")
        .backend(fleet.clone())
        .build();
    for key in 0..100 {
        pods[0]
            .get_or_load(key, |k| async move { format!("v{k}") })
            .await;
        other
            .get_or_load(key, |k| async move { format!("o{k}") })
            .await;
    }
    for pod in &pods {
        assert_eq!(pod.get_or_load(5, |_| async { "x".to_owned() }).await, "v5");
    }
    pods[1].invalidate_all();
    sleep(Duration::from_millis(1)).await;
    for pod in &pods {
        assert_eq!(pod.get(&5), None);
        assert_eq!(
            pod.get_or_load(5, |_| async { "new".to_owned() }).await,
            "new"
        );
    }
    assert_eq!(other.get(&5).as_deref(), Some("o5"));
    let loads: u64 = pods.iter().map(|p| p.stats().loads).sum();
    assert_eq!(loads, 101, "100 warm-up loads + one reload for the fleet");
}
