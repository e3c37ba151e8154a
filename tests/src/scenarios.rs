//! Fleet scenarios written once and run against every backend: on pods of
//! one `LocalBackend` on the paused clock (`tests/tests/fleet_faults.rs`)
//! and on pods with their own `RedisBackend` connections to a real
//! `redis-server` (`tests/tests/fleet_redis_scenarios.rs`).
//!
//! A scenario takes one `SharedBackend` per pod (for Redis: each its own
//! connections and subscription, as separate processes have) and a `slack`
//! for timing bounds (zero on the paused clock, a few round trips on Redis).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::{Cache, LoadTimeout, RemoteLoadError, SharedBackend};
use tokio::time::{Instant, sleep};

use crate::bounded;

/// The load time of the scenarios' origin.
pub const LOAD: Duration = Duration::from_millis(50);

/// A repository error that can carry a timeout and another process's failure.
#[derive(Clone, Debug, PartialEq)]
pub enum RepoError {
    Down,
    Timeout,
    Remote(String),
}

impl From<LoadTimeout> for RepoError {
    fn from(_: LoadTimeout) -> Self {
        RepoError::Timeout
    }
}

impl From<RemoteLoadError> for RepoError {
    fn from(e: RemoteLoadError) -> Self {
        RepoError::Remote(e.message().to_owned())
    }
}

/// One cache per pod backend, all of one name.
pub fn pods(name: &str, backends: &[SharedBackend]) -> Vec<Cache<u32, String>> {
    backends
        .iter()
        .map(|backend| {
            Cache::builder(name.to_owned())
                .ttl(Duration::from_secs(30))
                .failed_refresh_backoff(Duration::from_secs(1))
                .remote_errors::<RepoError>()
                .backend(backend.clone())
                .build()
        })
        .collect()
}

/// Every pod × `callers` call key 1 at once; the origin fails after
/// [`LOAD`]. One origin call for the fleet, every caller answered within
/// about one load. A call after that flight ended, with no value to serve,
/// is not answered by its failure: it loads again (one flight per call
/// here, since each fails) — as the same cache without `shared` does.
pub async fn a_failing_origin_is_called_once_per_flight(
    name: &str,
    backends: &[SharedBackend],
    callers: usize,
    slack: Duration,
) {
    let pods = pods(name, backends);
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for pod in &pods {
        for _ in 0..callers {
            let (pod, calls) = (pod.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                let result = pod
                    .try_get_or_load(1, move |_| async move {
                        calls.fetch_add(1, SeqCst);
                        sleep(LOAD).await;
                        Err::<String, _>(RepoError::Down)
                    })
                    .await;
                (result, started.elapsed())
            }));
        }
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (result, took) = bounded(task).await.unwrap();
        assert!(
            matches!(result, Err(RepoError::Down | RepoError::Remote(_))),
            "{result:?}"
        );
        slowest = slowest.max(took);
    }
    assert_eq!(calls.load(SeqCst), 1, "one origin call for the fleet");
    assert!(slowest <= LOAD + slack, "slowest caller {slowest:?}");
    let remote: u64 = pods.iter().map(|p| p.stats().remote_failures).sum();
    assert_eq!(
        remote as usize,
        pods.len() - 1,
        "the others took the leader's failure"
    );
    for pod in &pods {
        let calls = calls.clone();
        let again = pod
            .try_get_or_load(1, move |_| async move {
                calls.fetch_add(1, SeqCst);
                Err::<String, _>(RepoError::Down)
            })
            .await;
        assert!(again.is_err());
    }
    assert_eq!(
        calls.load(SeqCst),
        1 + pods.len(),
        "a later call with nothing to serve loads; it is not answered by an older failure"
    );
}

/// Pod A leads a slow load that read the old row; pod B inserts the new row
/// meanwhile. A's callers get A's answer; the fleet keeps B's write.
pub async fn an_insert_wins_over_a_load_running_elsewhere(
    name: &str,
    backends: &[SharedBackend],
    settle: Duration,
) {
    let pods = pods(name, backends);
    let (a, b, c) = (pods[0].clone(), pods[1].clone(), pods[2].clone());
    let a_call = tokio::spawn(async move {
        a.get_or_load(1, |_| async {
            sleep(LOAD * 3).await;
            "old row".to_owned()
        })
        .await
    });
    sleep(LOAD / 2).await;
    b.insert(1, "new row".to_owned());
    assert_eq!(
        bounded(a_call).await.unwrap(),
        "old row",
        "A's callers get A's answer"
    );
    sleep(settle).await;
    let seen = c.get_or_load(1, |_| async { "reloaded".to_owned() }).await;
    assert_eq!(seen, "new row");
    assert_eq!(pods[0].get(&1), None, "A did not cache the superseded row");
    assert_eq!(pods[0].stats().superseded_loads, 1);
}

/// `invalidate` (or `invalidate_all`) from pod B while pod A loads: A's load
/// never becomes the fleet's value.
pub async fn an_invalidation_wins_over_a_load_running_elsewhere(
    name: &str,
    backends: &[SharedBackend],
    all: bool,
    settle: Duration,
) {
    let pods = pods(name, backends);
    let (a, b, c) = (pods[0].clone(), pods[1].clone(), pods[2].clone());
    let a_call = tokio::spawn(async move {
        a.get_or_load(1, |_| async {
            sleep(LOAD * 3).await;
            "old row".to_owned()
        })
        .await
    });
    sleep(LOAD / 2).await;
    if all {
        b.invalidate_all();
    } else {
        b.invalidate(&1);
    }
    sleep(settle).await;
    let seen = c.get_or_load(1, |_| async { "new row".to_owned() }).await;
    assert_eq!(seen, "new row", "all = {all}");
    assert_eq!(bounded(a_call).await.unwrap(), "old row");
    sleep(settle).await;
    for (i, pod) in pods.iter().enumerate() {
        let seen = pod
            .get_or_load(1, |_| async { "reloaded".to_owned() })
            .await;
        assert_ne!(seen, "old row", "pod {i}, all = {all}");
    }
}

/// With `load_timeout`, a hung leader's load ends at the bound for the whole
/// fleet: every pod's callers get the timeout at about the same time.
pub async fn a_load_timeout_ends_the_flight_fleet_wide(
    name: &str,
    backends: &[SharedBackend],
    slack: Duration,
) {
    const BOUND: Duration = Duration::from_millis(500);
    let pods: Vec<Cache<u32, String>> = backends
        .iter()
        .map(|backend| {
            Cache::builder(name.to_owned())
                .load_timeout::<RepoError>(BOUND)
                .backend(backend.clone())
                .build()
        })
        .collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = pods
        .iter()
        .map(|pod| {
            let (pod, calls) = (pod.clone(), calls.clone());
            tokio::spawn(async move {
                let result = pod
                    .try_get_or_load(1, move |_| async move {
                        calls.fetch_add(1, SeqCst);
                        std::future::pending::<Result<String, RepoError>>().await
                    })
                    .await;
                (result, started.elapsed())
            })
        })
        .collect();
    for task in tasks {
        let (result, took) = bounded(task).await.unwrap();
        assert_eq!(result, Err(RepoError::Timeout));
        assert!(took <= BOUND + slack, "{took:?}");
    }
    assert_eq!(calls.load(SeqCst), 1);
}

/// A tag invalidated in one pod drops every pod's tagged copy and the
/// shared value — the fleet reloads once — and supersedes a load of a
/// tagged key running in another pod: no pod is served that load's value.
pub async fn a_tag_reaches_every_pod(name: &str, backends: &[SharedBackend], settle: Duration) {
    let pods: Vec<Cache<(String, u32), String>> = backends
        .iter()
        .map(|backend| {
            Cache::builder(name.to_owned())
                .tags(|(category, _): &(String, u32)| [category.clone()])
                .backend(backend.clone())
                .build()
        })
        .collect();
    let tag = format!("{name}.books");
    let key = (tag.clone(), 1);
    let loads = Arc::new(AtomicUsize::new(0));
    for pod in &pods {
        let loads = loads.clone();
        pod.get_or_load(key.clone(), move |_| async move {
            loads.fetch_add(1, SeqCst);
            "v1".to_owned()
        })
        .await;
    }
    assert_eq!(loads.load(SeqCst), 1);
    stampede_cache::invalidate_tag(&tag);
    sleep(settle).await;
    for pod in &pods {
        let loads = loads.clone();
        let seen = pod
            .get_or_load(key.clone(), move |_| async move {
                loads.fetch_add(1, SeqCst);
                "v2".to_owned()
            })
            .await;
        assert_eq!(seen, "v2");
    }
    assert_eq!(loads.load(SeqCst), 2, "one reload for the fleet");

    // Pod 0 reloads a row it read before a write to the category...
    pods[0].invalidate(&key);
    sleep(settle).await;
    let stale_read = tokio::spawn({
        let (pod, key) = (pods[0].clone(), key.clone());
        async move {
            pod.get_or_load(key, |_| async {
                sleep(LOAD * 3).await;
                "v2 (read before the write)".to_owned()
            })
            .await
        }
    });
    sleep(LOAD).await;
    // ...when the write invalidates the tag: that load is superseded.
    stampede_cache::invalidate_tag(&tag);
    sleep(settle).await;
    let fresh = pods[pods.len() - 1]
        .get_or_load(key.clone(), |_| async { "v3".to_owned() })
        .await;
    assert_eq!(fresh, "v3");
    assert_eq!(
        bounded(stale_read).await.unwrap(),
        "v2 (read before the write)"
    );
    sleep(settle).await;
    for (i, pod) in pods.iter().enumerate() {
        let seen = pod
            .get_or_load(key.clone(), |_| async { "v4".to_owned() })
            .await;
        assert_ne!(seen, "v2 (read before the write)", "pod {i}");
    }
}

/// Found 1: pod A's loader hangs past `load_timeout` (300 ms); pod B's
/// origin works. B is called every 50 ms for 3 s: every call is answered
/// with B's own value (v2: `Err(Timeout)` 55 times out of 55, for the whole
/// 5 s backoff). A timeout is not an error of B's origin.
pub async fn a_timeout_in_one_pod_does_not_answer_another_pods_later_calls(
    name: &str,
    backends: &[SharedBackend],
) {
    let pod = |backend: &SharedBackend| {
        Cache::<u32, String>::builder(name.to_owned())
            .ttl(Duration::from_secs(60))
            .load_timeout::<RepoError>(Duration::from_millis(300))
            .remote_errors::<RepoError>()
            .backend(backend.clone())
            .build()
    };
    let (a, b) = (pod(&backends[0]), pod(&backends[1]));
    let hung = tokio::spawn(async move {
        a.try_get_or_load(1, |_| async {
            std::future::pending::<()>().await;
            Ok::<String, RepoError>("never".to_owned())
        })
        .await
    });
    // A leads: its flight holds the key's lock when B's calls begin.
    sleep(Duration::from_millis(20)).await;
    let b_calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut answers = Vec::new();
    while started.elapsed() < Duration::from_secs(3) {
        let calls = b_calls.clone();
        let call = b.try_get_or_load(1, move |_| async move {
            calls.fetch_add(1, SeqCst);
            sleep(Duration::from_millis(10)).await;
            Ok::<_, RepoError>("from B".to_owned())
        });
        answers.push(bounded(call).await);
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bounded(hung).await.unwrap(), Err(RepoError::Timeout));
    let failed = answers.iter().filter(|a| a.is_err()).count();
    assert_eq!(failed, 0, "B's answers: {answers:?}");
    assert_eq!(b_calls.load(SeqCst), 1, "B loaded once, then hit its L1");
}

/// Found 1, with `Err`: pod A's load fails; once that flight has ended, a
/// call in pod B (which has no value to serve) loads again — as the same
/// cache without `shared` would — with and without `remote_errors`.
pub async fn a_transient_error_does_not_answer_the_calls_after_its_flight(
    name: &str,
    backends: &[SharedBackend],
    remote_errors: bool,
) {
    {
        let pod = |backend: &SharedBackend| {
            let builder = Cache::<u32, String>::builder(name.to_owned())
                .ttl(Duration::from_secs(60))
                .failed_refresh_backoff(Duration::from_secs(5))
                .backend(backend.clone());
            if remote_errors {
                builder.remote_errors::<RepoError>().build()
            } else {
                builder.build()
            }
        };
        let (a, b) = (pod(&backends[0]), pod(&backends[1]));
        let failed = a
            .try_get_or_load(1, |_| async { Err::<String, _>(RepoError::Down) })
            .await;
        assert_eq!(failed, Err(RepoError::Down));
        sleep(Duration::from_millis(100)).await;
        let loaded =
            bounded(b.try_get_or_load(1, |_| async { Ok::<_, RepoError>("ok".to_owned()) })).await;
        assert_eq!(
            loaded.as_deref(),
            Ok("ok"),
            "remote_errors = {remote_errors}"
        );
        // ...and so does pod A itself, the one whose load failed.
        let again = a
            .try_get_or_load(1, |_| async { Ok::<_, RepoError>("a".to_owned()) })
            .await;
        assert_eq!(
            again.as_deref(),
            Ok("ok"),
            "B's value reached the shared tier"
        );
    }
}

/// The other half of the rule: where a servable value exists (fail-safe),
/// a failure throttles new loads fleet-wide for the retry backoff, exactly
/// as in process: one origin call per backoff for the whole fleet.
pub async fn with_fail_safe_a_failure_throttles_the_fleet(name: &str, backends: &[SharedBackend]) {
    let pods: Vec<Cache<u32, String>> = backends
        .iter()
        .map(|backend| {
            Cache::builder(name.to_owned())
                .ttl(Duration::from_secs(1))
                .fail_safe(Duration::from_secs(600))
                .failed_refresh_backoff(Duration::from_secs(2))
                .remote_errors::<RepoError>()
                .backend(backend.clone())
                .build()
        })
        .collect();
    for pod in &pods {
        pod.get_or_load(1, |_| async { "good".to_owned() }).await;
    }
    sleep(Duration::from_millis(1500)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = |calls: Arc<AtomicUsize>| {
        move |_| async move {
            calls.fetch_add(1, SeqCst);
            Err::<String, _>(RepoError::Down)
        }
    };
    // Pod 0 fails first; the others, each missing later, are throttled by its record.
    for pod in &pods {
        let got = bounded(pod.try_get_or_load(1, failing(calls.clone()))).await;
        assert_eq!(got.as_deref(), Ok("good"));
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        calls.load(SeqCst),
        1,
        "one origin call for the fleet in the backoff"
    );
    sleep(Duration::from_secs(3)).await;
    for pod in &pods {
        let got = bounded(pod.try_get_or_load(1, failing(calls.clone()))).await;
        assert_eq!(got.as_deref(), Ok("good"));
    }
    assert_eq!(
        calls.load(SeqCst),
        2,
        "after the backoff: one retry for the fleet"
    );
}

/// Every pod calls key `"k"` at once; the loader counts origin calls in
/// `origin`, takes `load`, and returns `value-<its call number>`. Each call
/// is bounded (a hang fails the test).
pub async fn stampede(
    pods: &[Cache<String, String>],
    origin: &Arc<AtomicU64>,
    load: Duration,
) -> Vec<String> {
    let calls: Vec<_> = pods
        .iter()
        .map(|pod| {
            let (pod, origin) = (pod.clone(), origin.clone());
            tokio::spawn(async move {
                pod.get_or_load("k".to_owned(), move |_| async move {
                    let n = origin.fetch_add(1, SeqCst) + 1;
                    sleep(load).await;
                    format!("value-{n}")
                })
                .await
            })
        })
        .collect();
    let mut values = Vec::new();
    for call in calls {
        values.push(bounded(call).await.expect("call completed"));
    }
    values
}
