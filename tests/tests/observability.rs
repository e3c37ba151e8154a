#![cfg(feature = "metrics")]
//! What operators see: the metrics a recorder receives (counters published
//! by `stampede_cache::metrics::report`, histograms of loads, waits and
//! backend round trips, breaker state), for a local and a shared cache, and
//! the span of a load.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use stampede_cache::{Cache, LocalBackend};
use stampede_cache_tests::bounded;
use tokio::time::sleep;

/// The process's one recorder (a global: installed once per test binary;
/// each test reads only its own cache's series).
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        snapshotter
    })
}

/// A snapshot drains every series: the tests that read them run one at a
/// time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `test` on a paused-clock runtime of its own, one test at a time.
fn serially(test: impl std::future::Future<Output = ()>) {
    let _turn = one_at_a_time();
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(test);
}

/// Every series, read once: a snapshot drains what it reads (histograms,
/// and counters and gauges too), so each test takes one and reads it all.
fn snapshot() -> Vec<(CompositeKey, DebugValue)> {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| (key, value))
        .collect()
}

/// The series of `snapshot` with `label = value`.
fn series<'a>(
    snapshot: &'a [(CompositeKey, DebugValue)],
    label: &str,
    value: &str,
) -> Vec<&'a (CompositeKey, DebugValue)> {
    snapshot
        .iter()
        .filter(|(key, _)| {
            key.key()
                .labels()
                .any(|l| l.key() == label && l.value() == value)
        })
        .collect()
}

fn counter(all: &[&(CompositeKey, DebugValue)], name: &str) -> Option<u64> {
    all.iter()
        .find_map(|(key, value)| match (key.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(n)) if key.key().name() == name => Some(*n),
            _ => None,
        })
}

fn gauge(all: &[&(CompositeKey, DebugValue)], name: &str) -> Option<f64> {
    all.iter().find_map(|(key, value)| match value {
        DebugValue::Gauge(g) if key.key().name() == name => Some(g.into_inner()),
        _ => None,
    })
}

/// The samples of histogram `name` whose labels include every one of `with`.
fn histogram(all: &[&(CompositeKey, DebugValue)], name: &str, with: &[(&str, &str)]) -> Vec<f64> {
    all.iter()
        .filter(|(key, _)| key.key().name() == name)
        .filter(|(key, _)| {
            with.iter()
                .all(|(k, v)| key.key().labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .flat_map(|(_, value)| match value {
            DebugValue::Histogram(samples) => samples.iter().map(|s| s.into_inner()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

#[test]
fn a_local_cache_reports_its_counters_gauges_loads_and_waits() {
    serially(async {
        snapshotter(); // installed before anything is recorded
        let name = "obs.local";
        let cache: Cache<u32, u32> = Cache::builder(name).ttl(Duration::from_secs(30)).build();
        // 1 load of 100 ms with 9 callers waiting on it, then 5 hits.
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    cache
                        .get_or_load(1, |k| async move {
                            sleep(Duration::from_millis(100)).await;
                            k
                        })
                        .await
                })
            })
            .collect();
        for caller in callers {
            bounded(caller).await.unwrap();
        }
        for _ in 0..5 {
            cache.get_or_load(1, |k| async move { k }).await;
        }
        let failed = cache
            .try_get_or_load(2, |_| async { Err::<u32, _>("down") })
            .await;
        assert_eq!(failed, Err("down"));
        stampede_cache::metrics::report();
        let snap = snapshot();
        let all = series(&snap, "cache", name);
        assert_eq!(counter(&all, "stampede_cache_loads_total"), Some(2));
        assert_eq!(counter(&all, "stampede_cache_hits_total"), Some(5));
        assert_eq!(counter(&all, "stampede_cache_misses_total"), Some(11));
        assert_eq!(counter(&all, "stampede_cache_coalesced_total"), Some(9));
        assert_eq!(counter(&all, "stampede_cache_load_errors_total"), Some(1));
        assert_eq!(gauge(&all, "stampede_cache_entries"), Some(1.0));
        assert_eq!(gauge(&all, "stampede_cache_loads_in_flight"), Some(0.0));
        let ok = histogram(
            &all,
            "stampede_cache_load_seconds",
            &[("outcome", "ok"), ("batch", "false")],
        );
        assert_eq!(ok, vec![0.1], "one load of 100 ms");
        let errors = histogram(&all, "stampede_cache_load_seconds", &[("outcome", "error")]);
        assert_eq!(errors.len(), 1);
        // Every caller of the cold key waited the load's 100 ms (the starter
        // included); the failed call waited for its own load.
        let waits = histogram(&all, "stampede_cache_wait_seconds", &[("answer", "value")]);
        assert_eq!(waits, vec![0.1; 10]);
        let failures = histogram(
            &all,
            "stampede_cache_wait_seconds",
            &[("answer", "failure")],
        );
        assert_eq!(failures.len(), 1);
    });
}

#[test]
fn timeouts_soft_timeouts_and_batches_are_told_apart() {
    serially(async {
        #[derive(Clone, Debug, PartialEq)]
        struct Timeout;
        impl From<stampede_cache::LoadTimeout> for Timeout {
            fn from(_: stampede_cache::LoadTimeout) -> Self {
                Timeout
            }
        }
        snapshotter();
        let name = "obs.timeouts";
        let cache: Cache<u32, u32> = Cache::builder(name)
            .ttl(Duration::from_secs(1))
            .fail_safe(Duration::from_secs(60))
            .soft_timeout(Duration::from_millis(50))
            .load_timeout::<Timeout>(Duration::from_millis(200))
            .build();
        cache.insert(1, 10);
        sleep(Duration::from_secs(2)).await;
        // Expired, with a fail-safe value: the caller gets it at the soft
        // timeout; the hung load is cut at the load timeout.
        let got = cache
            .try_get_or_load(1, |_| async {
                sleep(Duration::from_secs(3600)).await;
                Ok::<u32, Timeout>(0)
            })
            .await;
        assert_eq!(got, Ok(10));
        sleep(Duration::from_secs(1)).await;
        let rows = cache
            .get_many_or_load([5, 6], |ids: Vec<u32>| async move {
                sleep(Duration::from_millis(30)).await;
                ids.into_iter()
                    .map(|id| (id, id))
                    .collect::<HashMap<_, _>>()
            })
            .await;
        assert_eq!(rows.len(), 2);
        stampede_cache::metrics::report();
        let snap = snapshot();
        let all = series(&snap, "cache", name);
        let soft = histogram(
            &all,
            "stampede_cache_wait_seconds",
            &[("answer", "soft_timeout")],
        );
        assert_eq!(soft, vec![0.05]);
        let cut = histogram(
            &all,
            "stampede_cache_load_seconds",
            &[("outcome", "timeout")],
        );
        assert_eq!(cut, vec![0.2]);
        let batch = histogram(
            &all,
            "stampede_cache_load_seconds",
            &[("batch", "true"), ("outcome", "ok")],
        );
        assert_eq!(batch, vec![0.03], "one loader call for the two keys");
        assert_eq!(counter(&all, "stampede_cache_batch_calls_total"), Some(1));
        assert_eq!(counter(&all, "stampede_cache_soft_timeouts_total"), Some(1));
        assert_eq!(counter(&all, "stampede_cache_load_timeouts_total"), Some(1));
    });
}

#[test]
fn a_shared_cache_reports_its_fleet_counters_and_backend() {
    serially(async {
        snapshotter();
        let name = "obs.shared";
        let fleet = LocalBackend::new();
        let pods: Vec<Cache<u32, u32>> = (0..3)
            .map(|_| {
                Cache::builder(name)
                    .ttl(Duration::from_secs(30))
                    .backend(fleet.clone())
                    .build()
            })
            .collect();
        let calls: Vec<_> = pods
            .iter()
            .map(|pod| {
                let pod = pod.clone();
                tokio::spawn(async move {
                    pod.get_or_load(7, |k| async move {
                        sleep(Duration::from_millis(100)).await;
                        k
                    })
                    .await
                })
            })
            .collect();
        for call in calls {
            assert_eq!(bounded(call).await.unwrap(), 7);
        }
        stampede_cache::metrics::report();
        let snap = snapshot();
        let all = series(&snap, "cache", name);
        // Three pods of one name report into the same series (absolute values
        // of each in turn): read the fleet through the pods' stats instead.
        let loads: u64 = pods.iter().map(|p| p.stats().loads).sum();
        let lock_acquired: u64 = pods.iter().map(|p| p.stats().lock_acquired).sum();
        assert_eq!((loads, lock_acquired), (1, 1), "one load for the fleet");
        assert!(counter(&all, "stampede_cache_lock_contended_total").is_some());
        let loaded = histogram(&all, "stampede_cache_load_seconds", &[("outcome", "ok")]);
        assert_eq!(loaded, vec![0.1], "one origin call, fleet-wide");
        // The backend's health series exist, breaker closed.
        let backends: Vec<_> = snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "stampede_cache_backend_breaker_open")
            .collect();
        assert!(!backends.is_empty());
        assert!(
            backends
                .iter()
                .all(|(_, _, _, v)| matches!(v, DebugValue::Gauge(g) if g.into_inner() == 0.0))
        );
    });
}

/// A span per load, with the fields an operator filters on, and the
/// caller's wait span.
#[test]
fn a_load_has_a_span_with_its_cache_role_outcome_and_duration() {
    use stampede_cache_tests::Captured;

    // tracing caches each callsite's interest process-wide: a test of this
    // binary hitting the same callsites on another thread, without this
    // thread's subscriber, could make it skip them. One at a time.
    let _turn = one_at_a_time();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let cache: Cache<u32, u32> = Cache::builder("obs.span").build();
            let waiter = tokio::spawn({
                let cache = cache.clone();
                async move {
                    sleep(Duration::from_millis(10)).await; // mid-load: it waits
                    cache.get_or_load(1, |_| async { 0 }).await
                }
            });
            let got = cache
                .get_or_load(1, |k| async move {
                    sleep(Duration::from_millis(40)).await;
                    k
                })
                .await;
            assert_eq!(got, 1);
            assert_eq!(waiter.await.unwrap(), 1);
        });
    });
    let text = captured.text();
    let load = text
        .lines()
        .find(|l| l.contains("stampede_cache.load{"))
        .unwrap_or_else(|| panic!("no load span in:\n{text}"));
    for field in [
        "cache=obs.span",
        "strategy=Lock",
        "refresh=false",
        "role=\"local\"",
        "outcome=\"loaded\"",
        "duration_ms=40",
    ] {
        assert!(load.contains(field), "{field} missing in {load}");
    }
    assert!(
        text.contains("stampede_cache.wait{cache=obs.span}"),
        "a caller's wait span:\n{text}"
    );
}

/// A shared cache on a real `redis-server` that freezes: the calls fall
/// back to the process, the breaker opens — and the dashboards say so.
#[cfg(feature = "redis")]
#[test]
fn a_frozen_redis_shows_as_fallbacks_timeouts_and_an_open_breaker() {
    use stampede_cache::redis::RedisBackend;
    use stampede_cache_tests::redis_server::RedisServer;

    let _turn = one_at_a_time();
    snapshotter();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = RedisServer::start();
        let backend = RedisBackend::builder(&server.url())
            .command_timeout(Duration::from_millis(100))
            .breaker_cooldown(Duration::from_secs(30))
            .connect()
            .await
            .expect("connect");
        let name = "obs.frozen";
        let cache: Cache<u32, u32> = Cache::builder(name)
            .ttl(Duration::from_secs(60))
            .backend(backend.clone())
            .build();
        assert_eq!(cache.get_or_load(0, |k| async move { k }).await, 0);
        server.freeze();
        for key in 1..=10 {
            assert_eq!(cache.get_or_load(key, |k| async move { k }).await, key);
        }
        assert!(backend.breaker_is_open());
        stampede_cache::metrics::report();
        let snap = snapshot();
        let all = series(&snap, "cache", name);
        assert_eq!(counter(&all, "stampede_cache_fallbacks_total"), Some(10));
        assert_eq!(
            counter(&all, "stampede_cache_lock_acquired_total"),
            Some(1),
            "the warm-up"
        );
        assert_eq!(counter(&all, "stampede_cache_loads_total"), Some(11));
        let open: Vec<_> = snap
            .iter()
            .filter(|(key, value)| {
                key.key().name() == "stampede_cache_backend_breaker_open"
                    && matches!(value, DebugValue::Gauge(g) if g.into_inner() == 1.0)
            })
            .collect();
        assert_eq!(open.len(), 1, "this backend's breaker shows open");
        let label = open[0]
            .0
            .key()
            .labels()
            .find(|l| l.key() == "backend")
            .map(|l| l.value().to_owned())
            .expect("a backend label");
        assert!(label.starts_with("redis-"), "{label}");
        let backend_series = series(&snap, "backend", &label);
        assert_eq!(
            counter(
                &backend_series,
                "stampede_cache_backend_breaker_trips_total"
            ),
            Some(1)
        );
        let timeouts = histogram(
            &backend_series,
            "stampede_cache_backend_round_trip_seconds",
            &[("outcome", "timeout")],
        );
        assert!(
            !timeouts.is_empty(),
            "the timed-out round trips are recorded"
        );
        assert!(timeouts.iter().all(|t| *t >= 0.09), "{timeouts:?}");
        server.thaw();
    });
}
