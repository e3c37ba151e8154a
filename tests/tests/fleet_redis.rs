#![cfg(feature = "redis")]
//! Fleet behaviour over a real redis-server, with `Cache` instances as pods
//! (each pod group on its own `RedisBackend`, i.e. its own connections and
//! notice subscription, as separate processes would have).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stampede_cache::redis::RedisBackend;
use stampede_cache::{Cache, LocalBackend, SharedBackend, Strategy};
use stampede_cache_tests::redis_server::RedisServer;
use stampede_cache_tests::scenarios::stampede;
use tokio::time::{Instant, sleep, timeout};

const BOUND: Duration = Duration::from_secs(30);

async fn backend(server: &RedisServer) -> RedisBackend {
    RedisBackend::connect(&server.url())
        .await
        .expect("connect to the test redis-server")
}

fn pod<V: stampede_cache::SharedValue>(
    name: &str,
    ttl: Duration,
    strategy: Strategy,
    lock_ttl: Duration,
    backend: impl Into<SharedBackend>,
) -> Cache<String, V> {
    Cache::builder(name.to_owned())
        .ttl(ttl)
        .strategy(strategy)
        .lock_ttl(lock_ttl)
        .backend(backend)
        .build()
}

/// Four `lock` pods on `server`, each with its own connection and `command_timeout`.
async fn lock_pods_with_timeout(
    server: &RedisServer,
    name: &str,
    ttl: Duration,
    command_timeout: Duration,
) -> Vec<Cache<String, String>> {
    let mut pods = Vec::new();
    for _ in 0..4 {
        let backend = RedisBackend::builder(&server.url())
            .command_timeout(command_timeout)
            .connect()
            .await
            .unwrap();
        pods.push(pod(
            name,
            ttl,
            Strategy::Lock,
            Duration::from_secs(2),
            backend,
        ));
    }
    pods
}

/// Lets the key expire and stampedes it until an expiry costs one load (the
/// fleet is coordinated again). Unbounded: callers wrap it in a timeout.
async fn until_one_load_per_expiry(
    pods: &[Cache<String, String>],
    origin: &Arc<AtomicU64>,
    ttl: Duration,
    load: Duration,
) {
    loop {
        sleep(ttl + Duration::from_millis(20)).await;
        let before = origin.load(Ordering::SeqCst);
        stampede(pods, origin, load).await;
        if origin.load(Ordering::SeqCst) - before == 1 {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let b = backend(&server).await;
    timeout(
        BOUND,
        stampede_cache::testing::backend_conformance(b.into()),
    )
    .await
    .expect("bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pods_in_process_locks_vs_shared() {
    let server = RedisServer::start();
    let ttl = Duration::from_secs(30);
    let load = Duration::from_millis(100);

    let origin = Arc::new(AtomicU64::new(0));
    let isolated: Vec<Cache<String, String>> = (0..200)
        .map(|_| Cache::builder("fleet.200.isolated").ttl(ttl).build())
        .collect();
    stampede(&isolated, &origin, load).await;
    let in_process = origin.swap(0, Ordering::SeqCst);

    let mut backends = Vec::new();
    for _ in 0..8 {
        backends.push(backend(&server).await);
    }
    let shared: Vec<Cache<String, String>> = (0..200)
        .map(|i| {
            pod(
                "fleet.200.redis",
                ttl,
                Strategy::Lock,
                Duration::from_secs(5),
                backends[i % 8].clone(),
            )
        })
        .collect();
    let values = stampede(&shared, &origin, load).await;
    let over_redis = origin.swap(0, Ordering::SeqCst);

    let local = LocalBackend::new();
    let simulated: Vec<Cache<String, String>> = (0..200)
        .map(|_| {
            pod(
                "fleet.200.local",
                ttl,
                Strategy::Lock,
                Duration::from_secs(5),
                local.clone(),
            )
        })
        .collect();
    stampede(&simulated, &origin, load).await;
    let over_local = origin.load(Ordering::SeqCst);

    eprintln!(
        "200 pods: in-process locks {in_process} loads, shared over Redis {over_redis}, over LocalBackend {over_local}"
    );
    assert_eq!(in_process, 200);
    assert_eq!(over_redis, 1);
    assert_eq!(over_local, 1);
    assert!(values.iter().all(|v| v == "value-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loader_slower_than_three_leases_keeps_its_lock() {
    let server = RedisServer::start();
    let lock_ttl = Duration::from_millis(150);
    let ttl = Duration::from_secs(30);
    let mut pods = Vec::new();
    for _ in 0..4 {
        pods.push(pod(
            "fleet.slow",
            ttl,
            Strategy::Lock,
            lock_ttl,
            backend(&server).await,
        ));
    }
    let origin = Arc::new(AtomicU64::new(0));
    let values = stampede(&pods, &origin, lock_ttl * 4).await; // 600 ms > 3 x 150 ms
    assert_eq!(
        origin.load(Ordering::SeqCst),
        1,
        "the lease was renewed: nobody took over"
    );
    assert!(values.iter().all(|v| v == "value-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_lapsed_cannot_overwrite_the_newer_value() {
    let server = RedisServer::start();
    let ttl = Duration::from_secs(30);
    let lock_ttl = Duration::from_secs(5);
    let a: Cache<String, String> = pod(
        "fleet.fence",
        ttl,
        Strategy::Lock,
        lock_ttl,
        backend(&server).await,
    );
    let b: Cache<String, String> = pod(
        "fleet.fence",
        ttl,
        Strategy::Lock,
        lock_ttl,
        backend(&server).await,
    );
    let (release_a, hold_a) = tokio::sync::oneshot::channel::<()>();
    let (a_loading, loading) = tokio::sync::oneshot::channel::<()>();
    let a_call = tokio::spawn({
        let a = a.clone();
        async move {
            a.get_or_load("k".to_owned(), move |_| async move {
                let _ = a_loading.send(());
                let _ = hold_a.await;
                "old".to_owned()
            })
            .await
        }
    });
    timeout(BOUND, loading).await.unwrap().unwrap();
    // A's lease lapses (as after a long pause): its lock is gone.
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let locks: Vec<String> = redis::cmd("KEYS")
        .arg("stampede:{fleet.fence:*}:lock")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(locks.len(), 1, "A holds the lock: {locks:?}");
    let _: i64 = redis::cmd("DEL")
        .arg(&locks)
        .query_async(&mut raw)
        .await
        .unwrap();
    // B takes the key over and writes the newer value.
    let b_value = timeout(
        BOUND,
        b.get_or_load("k".to_owned(), |_| async { "new".to_owned() }),
    )
    .await
    .unwrap();
    assert_eq!(b_value, "new");
    // A finishes late: its fenced write must be refused.
    release_a.send(()).unwrap();
    assert_eq!(
        timeout(BOUND, a_call).await.unwrap().unwrap(),
        "old",
        "A's callers still get A's answer"
    );
    assert_eq!(
        a.stats().superseded_loads,
        1,
        "the refused write is counted"
    );
    let c: Cache<String, String> = pod(
        "fleet.fence",
        ttl,
        Strategy::Lock,
        lock_ttl,
        backend(&server).await,
    );
    let seen = c
        .get_or_load("k".to_owned(), |_| async { "reloaded".to_owned() })
        .await;
    assert_eq!(seen, "new", "the shared tier kept the newer value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_foreign_values_in_redis_are_a_miss_not_a_panic() {
    let server = RedisServer::start();
    let ttl = Duration::from_secs(30);
    let lock_ttl = Duration::from_secs(5);
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // A value of another type under the same cache name and key.
    let numbers: Cache<String, u64> = pod(
        "fleet.garbage",
        ttl,
        Strategy::Lock,
        lock_ttl,
        backend(&server).await,
    );
    assert_eq!(
        numbers
            .get_or_load("k".to_owned(), |_| async { 42u64 })
            .await,
        42
    );
    // As after a deploy that changed the type (one process cannot hold two
    // live shared caches of one name with different types: that panics).
    drop(numbers);
    let strings: Cache<String, String> = pod(
        "fleet.garbage",
        ttl,
        Strategy::Lock,
        lock_ttl,
        backend(&server).await,
    );
    let v = strings
        .get_or_load("k".to_owned(), |_| async { "reloaded".to_owned() })
        .await;
    assert_eq!(v, "reloaded");
    assert_eq!(strings.stats().loads, 1);
    assert!(strings.stats().backend_errors >= 1);

    // Garbage bytes.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("stampede:{fleet.garbage:*}:value")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(&b"\xc1\xff garbage \x00"[..])
        .query_async(&mut raw)
        .await
        .unwrap();
    let fresh: Cache<String, String> = pod(
        "fleet.garbage",
        ttl,
        Strategy::Lock,
        lock_ttl,
        backend(&server).await,
    );
    let v = fresh
        .get_or_load("k".to_owned(), |_| async { "again".to_owned() })
        .await;
    assert_eq!(v, "again");
    assert_eq!(fresh.stats().loads, 1);
    assert!(fresh.stats().backend_errors >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_in_one_pod_makes_the_others_reload() {
    let server = RedisServer::start();
    let ttl = Duration::from_secs(30);
    let mut pods = Vec::new();
    for _ in 0..3 {
        pods.push(pod(
            "fleet.inval",
            ttl,
            Strategy::Lock,
            Duration::from_secs(5),
            backend(&server).await,
        ));
    }
    let origin = Arc::new(AtomicU64::new(0));
    stampede(&pods, &origin, Duration::from_millis(20)).await;
    assert_eq!(origin.load(Ordering::SeqCst), 1);
    pods[0].invalidate(&"k".to_owned());
    timeout(BOUND, async {
        while pods.iter().any(|p| p.get(&"k".to_owned()).is_some()) {
            sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("every pod dropped its copy");
    let values = stampede(&pods, &origin, Duration::from_millis(20)).await;
    assert_eq!(origin.load(Ordering::SeqCst), 2, "one reload for the fleet");
    assert!(values.iter().all(|v| v == "value-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_fails_open_and_recovers() {
    let mut server = RedisServer::start();
    let ttl = Duration::from_millis(100);
    let pods = lock_pods_with_timeout(&server, "fleet.kill", ttl, Duration::from_millis(100)).await;
    let origin = Arc::new(AtomicU64::new(0));
    let load = Duration::from_millis(20);
    let mut calls = 0;
    for round in 0..30 {
        if round == 10 {
            server.kill();
        }
        let values = stampede(&pods, &origin, load).await;
        calls += values.len();
        sleep(Duration::from_millis(30)).await;
    }
    let fallbacks: u64 = pods.iter().map(|p| p.stats().fallbacks).sum();
    eprintln!("redis killed: {calls} calls completed, {fallbacks} fallbacks");
    assert_eq!(calls, 120, "no call failed");
    assert!(fallbacks > 0, "fallbacks counted");

    server.restart();
    // Coordination resumes by itself: wait (bounded) for a cycle with one load.
    let recovered = timeout(BOUND, until_one_load_per_expiry(&pods, &origin, ttl, load)).await;
    assert!(
        recovered.is_ok(),
        "coordination did not resume after the restart"
    );
    // And it stays coordinated on the next expiries — once every pod's
    // notice subscription is back too: it reconnects with a backoff of up
    // to 1 s, and its return is a gap (L1 dropped, flights begun before it
    // cache nothing), which a cycle may straddle (seen once in CI: 2 loads).
    sleep(Duration::from_millis(1500)).await;
    for _ in 0..3 {
        sleep(ttl + Duration::from_millis(20)).await;
        let before = origin.load(Ordering::SeqCst);
        stampede(&pods, &origin, load).await;
        assert_eq!(
            origin.load(Ordering::SeqCst) - before,
            1,
            "one load per expiry after recovery"
        );
    }
}

/// Four pods read one key every 5 ms for five TTL cycles. Returns the
/// origin-call instants and the longest call.
async fn steady_traffic(
    server: &RedisServer,
    name: &str,
    strategy: Strategy,
) -> (Vec<Instant>, Duration) {
    let ttl = Duration::from_secs(1);
    let load = Duration::from_millis(50);
    let mut pods = Vec::new();
    for _ in 0..4 {
        pods.push(pod::<String>(
            name,
            ttl,
            strategy,
            Duration::from_secs(2),
            backend(server).await,
        ));
    }
    let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let call = |pod: Cache<String, String>, starts: Arc<std::sync::Mutex<Vec<Instant>>>| async move {
        pod.get_or_load("k".to_owned(), move |_| async move {
            starts.lock().unwrap().push(Instant::now());
            sleep(load).await;
            "v".to_owned()
        })
        .await
    };
    for pod in &pods {
        call(pod.clone(), starts.clone()).await; // warm-up
    }
    let mut longest = Duration::ZERO;
    let end = Instant::now() + ttl * 5;
    while Instant::now() < end {
        for pod in &pods {
            let at = Instant::now();
            timeout(BOUND, call(pod.clone(), starts.clone()))
                .await
                .unwrap();
            longest = longest.max(at.elapsed());
        }
        sleep(Duration::from_millis(5)).await;
    }
    let starts = starts.lock().unwrap().clone();
    (starts, longest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swr_and_xfetch_refresh_once_per_cycle_fleet_wide_and_readers_never_wait() {
    let server = RedisServer::start();
    for (name, strategy) in [
        (
            "fleet.swr",
            Strategy::Swr {
                stale: Duration::from_secs(5),
            },
        ),
        ("fleet.xfetch", Strategy::XFetch { beta: 1.0 }),
    ] {
        let (starts, longest) = steady_traffic(&server, name, strategy).await;
        eprintln!(
            "{name}: {} origin calls over 5 cycles (warm-up included), longest call {longest:?}",
            starts.len()
        );
        assert!(
            starts.len() >= 5,
            "{name}: refreshes happened: {}",
            starts.len()
        );
        // XFetch refreshes ahead of expiry (about 0.2 s here), so a cycle is
        // shorter than the TTL; two refreshes of one value would be < 50 ms apart.
        for pair in starts.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_millis(400),
                "{name}: two refreshes in one cycle ({gap:?} apart)"
            );
        }
        assert!(
            longest < Duration::from_millis(50),
            "{name}: a reader waited {longest:?} (a load takes 50 ms)"
        );
    }
}

/// A Redis that hangs (SIGSTOP: connections open, nothing answered) costs a
/// call at most about one command timeout before it loads in process; when
/// Redis answers again, coordination resumes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_a_command_timeout_then_recovers() {
    let server = RedisServer::start();
    let ttl = Duration::from_millis(100);
    let command_timeout = Duration::from_millis(100);
    let pods = lock_pods_with_timeout(&server, "fleet.hung", ttl, command_timeout).await;
    let origin = Arc::new(AtomicU64::new(0));
    let load = Duration::from_millis(20);
    stampede(&pods, &origin, load).await;
    assert_eq!(
        origin.load(Ordering::SeqCst),
        1,
        "coordinated while Redis answers"
    );

    server.freeze();
    for _ in 0..3 {
        sleep(ttl + Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        let values = timeout(BOUND, stampede(&pods, &origin, load))
            .await
            .expect("no call hangs on a hung Redis");
        let took = started.elapsed();
        eprintln!("redis frozen: 4 pods answered in {took:?}");
        assert_eq!(values.len(), 4, "every call answered");
        // One timed-out round trip, then the local load (generous slack for a loaded machine).
        assert!(
            took < command_timeout * 5 + load,
            "a call took {took:?} with a {command_timeout:?} command timeout"
        );
    }
    let fallbacks: u64 = pods.iter().map(|p| p.stats().fallbacks).sum();
    assert!(fallbacks >= 4, "fallbacks counted: {fallbacks}");

    server.thaw();
    let recovered = timeout(BOUND, until_one_load_per_expiry(&pods, &origin, ttl, load)).await;
    assert!(
        recovered.is_ok(),
        "coordination did not resume after Redis thawed"
    );
}
