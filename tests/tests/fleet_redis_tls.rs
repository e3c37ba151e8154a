#![cfg(feature = "redis")]
//! Fleet mode over TLS with an ACL user, on a real `redis-server` started
//! with `--tls-port` and a certificate signed by a CA the harness makes: the
//! fleet still loads once, and every bad credential or certificate is a
//! clear error at `connect` naming its cause; a permission revoked at run
//! time fails open (every call answered, the fallback counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stampede_cache::redis::{DEFAULT_PREFIX, RedisBackend, RedisTls, acl_rules};
use stampede_cache::{Cache, SharedBackend, Strategy};
use stampede_cache_tests::redis_server::{RedisServer, make_ca, temp_dir};
use stampede_cache_tests::scenarios::stampede;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(30);

/// Creates the ACL user `app` with exactly [`acl_rules`] for the default prefix.
fn add_app_user(server: &RedisServer, password: &str) {
    let mut args = vec![
        "ACL".to_owned(),
        "SETUSER".to_owned(),
        "app".to_owned(),
        "on".to_owned(),
        format!(">{password}"),
    ];
    args.extend(acl_rules(DEFAULT_PREFIX).split(' ').map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(
        server.command(&args),
        "+OK",
        "ACL SETUSER accepted the rules"
    );
}

async fn app_backend(server: &RedisServer, password: &str) -> Result<RedisBackend, String> {
    RedisBackend::builder(&server.tls_url())
        .tls(RedisTls::new().ca_pem(server.ca_pem()))
        .credentials(Some("app"), password)
        .connect()
        .await
        .map_err(|error| error.to_string())
}

fn pod(name: &str, backend: &RedisBackend) -> Cache<String, String> {
    Cache::builder(name.to_owned())
        .ttl(Duration::from_secs(60))
        .strategy(Strategy::Lock)
        .lock_ttl(Duration::from_secs(5))
        .backend(backend.clone())
        .build()
}

#[tokio::test]
async fn a_fleet_over_tls_as_an_acl_user_with_only_the_documented_rules_loads_once() {
    let server = RedisServer::start_tls();
    add_app_user(&server, "s3cret");
    // Two backends = two pods' connections and notice subscriptions.
    let (a, b) = (
        app_backend(&server, "s3cret").await.expect("connect a"),
        app_backend(&server, "s3cret").await.expect("connect b"),
    );
    let pods: Vec<_> = (0..6)
        .map(|i| pod("users", if i % 2 == 0 { &a } else { &b }))
        .collect();
    let origin = Arc::new(AtomicU64::new(0));
    let values = stampede(&pods, &origin, Duration::from_millis(300)).await;
    assert!(values.iter().all(|v| v == "value-1"), "{values:?}");
    assert_eq!(origin.load(Ordering::SeqCst), 1, "one load for the fleet");
    for pod in &pods {
        let stats = pod.stats();
        assert_eq!(
            (stats.backend_errors, stats.fallbacks),
            (0, 0),
            "no command of the backend was denied by the ACL rules"
        );
    }
    // And the value reached Redis: a third pod on a new connection reads it.
    let c = app_backend(&server, "s3cret").await.expect("connect c");
    let late = pod("users", &c)
        .get_or_load("k".to_owned(), |_| async { "reloaded".to_owned() })
        .await;
    assert_eq!(late, "value-1");
}

#[tokio::test]
async fn credentials_in_a_rediss_url_work_too() {
    let server = RedisServer::start_tls();
    add_app_user(&server, "pw");
    let url = server.tls_url().replace("rediss://", "rediss://app:pw@");
    let backend = RedisBackend::builder(&url)
        .tls(RedisTls::new().ca_pem(server.ca_pem()))
        .connect()
        .await
        .expect("connect with the URL's user");
    let cache = pod("url", &backend);
    let value = cache
        .get_or_load("k".to_owned(), |_| async { "v".to_owned() })
        .await;
    assert_eq!(value, "v");
    assert_eq!(cache.stats().fallbacks, 0);
}

#[tokio::test]
async fn a_wrong_password_fails_connect_naming_authentication() {
    let server = RedisServer::start_tls();
    add_app_user(&server, "right");
    let error = timeout(BOUND, app_backend(&server, "hunter2-not-it"))
        .await
        .expect("connect answered")
        .expect_err("a wrong password must not connect");
    assert!(
        error.contains("authentication failed"),
        "the error names the cause: {error}"
    );
    assert!(
        !error.contains("hunter2"),
        "the password is not echoed: {error}"
    );
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_fails_connect_naming_tls() {
    let server = RedisServer::start_tls();
    add_app_user(&server, "pw");
    let other = temp_dir("other-ca");
    make_ca(&other, "other");
    let untrusted = std::fs::read(other.join("other.crt")).expect("read other CA");
    let error = timeout(
        BOUND,
        RedisBackend::builder(&server.tls_url())
            .tls(RedisTls::new().ca_pem(untrusted))
            .credentials(Some("app"), "pw")
            .connect(),
    )
    .await
    .expect("connect answered")
    .expect_err("an untrusted certificate must not connect")
    .to_string();
    assert!(
        error.contains("TLS handshake failed"),
        "the error names the cause: {error}"
    );
}

#[tokio::test]
async fn a_permission_revoked_at_run_time_fails_open_and_is_counted() {
    let server = RedisServer::start_tls();
    add_app_user(&server, "pw");
    let backend = app_backend(&server, "pw").await.expect("connect");
    let cache = pod("revoked", &backend);
    let origin = Arc::new(AtomicU64::new(0));
    let load = |origin: Arc<AtomicU64>| {
        move |_: String| async move { format!("v{}", origin.fetch_add(1, Ordering::SeqCst) + 1) }
    };
    assert_eq!(
        cache
            .get_or_load("a".to_owned(), load(origin.clone()))
            .await,
        "v1"
    );
    // The operator takes every command away from the user.
    assert_eq!(
        server.command(&["ACL", "SETUSER", "app", "-@all"]),
        "+OK",
        "permissions revoked"
    );
    for (key, expected) in [("b", "v2"), ("c", "v3")] {
        let value = timeout(
            BOUND,
            cache.get_or_load(key.to_owned(), load(origin.clone())),
        )
        .await
        .expect("a denied command does not hang the call");
        assert_eq!(value, expected, "loaded in process");
    }
    let stats = cache.stats();
    assert_eq!(
        stats.fallbacks, 2,
        "each denied call is counted as loaded without the shared tier: {stats:?}"
    );
}

/// Every write path as the ACL user with only [`acl_rules`]: a tagged load,
/// `insert`, `invalidate`, `invalidate_tag` (its record, snapshot and
/// chunked deletes), `invalidate_all` — each lands (nothing retried or
/// lost) and reaches the other pod, with no command denied.
#[tokio::test]
async fn every_write_path_works_as_an_acl_user_with_only_the_documented_rules() {
    let server = RedisServer::start_tls();
    add_app_user(&server, "s3cret");
    let (a, b) = (
        app_backend(&server, "s3cret").await.expect("connect a"),
        app_backend(&server, "s3cret").await.expect("connect b"),
    );
    let tagged = |backend: &RedisBackend| -> Cache<String, String> {
        Cache::builder("acl.writes")
            .ttl(Duration::from_secs(60))
            .tags(|_: &String| ["acl.writes.tag"])
            .backend(backend.clone())
            .build()
    };
    let (pa, pb) = (tagged(&a), tagged(&b));
    let load = |v: &'static str| move |_: String| async move { v.to_owned() };
    assert_eq!(
        pa.get_or_load("k".to_owned(), load("loaded")).await,
        "loaded"
    );
    let flush = |backend: &RedisBackend| {
        let shared = SharedBackend::from(backend.clone());
        async move { shared.flush(BOUND).await }
    };
    stampede_cache::invalidate_tag("acl.writes.tag");
    assert!(flush(&a).await && flush(&b).await, "invalidate_tag landed");
    assert_eq!(
        pb.get_or_load("k".to_owned(), load("after tag")).await,
        "after tag"
    );
    pa.insert("k".to_owned(), "inserted".to_owned());
    assert!(flush(&a).await, "insert landed");
    assert_eq!(
        timeout(BOUND, async {
            loop {
                if let Some(v) = pb.get(&"k".to_owned()).filter(|v| v == "inserted") {
                    return v;
                }
                let v = pb.get_or_load("k".to_owned(), load("stale")).await;
                if v == "inserted" {
                    return v;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("pod b sees the insert"),
        "inserted"
    );
    pa.invalidate(&"k".to_owned());
    pa.invalidate_all();
    assert!(flush(&a).await, "invalidate and invalidate_all landed");
    assert_eq!(pb.get_or_load("k".to_owned(), load("fresh")).await, "fresh");
    for (name, backend) in [("a", &a), ("b", &b)] {
        let shared = SharedBackend::from(backend.clone());
        assert_eq!(
            (shared.write_retries(), shared.writes_lost()),
            (0, 0),
            "pod {name}: a write was refused"
        );
    }
    for pod in [&pa, &pb] {
        let stats = pod.stats();
        assert_eq!(
            (stats.backend_errors, stats.fallbacks),
            (0, 0),
            "no command was denied by the ACL rules"
        );
    }
}

/// The whole conformance suite, and the fleet scenarios written once for
/// every backend, over TLS as the ACL user with exactly `acl_rules`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_as_an_acl_user_the_conformance_suite_and_the_fleet_scenarios_hold() {
    use stampede_cache_tests::scenarios;
    let server = RedisServer::start_tls();
    add_app_user(&server, "s3cret");
    let backend = app_backend(&server, "s3cret").await.expect("connect");
    timeout(
        BOUND,
        stampede_cache::testing::backend_conformance(backend.into()),
    )
    .await
    .expect("the conformance suite finished");
    let pods = |n: usize| {
        let server = &server;
        async move {
            let mut backends = Vec::new();
            for _ in 0..n {
                let backend = app_backend(server, "s3cret").await.expect("connect");
                backends.push(SharedBackend::from(backend));
            }
            backends
        }
    };
    let (slack, settle) = (Duration::from_millis(150), Duration::from_millis(100));
    scenarios::a_failing_origin_is_called_once_per_flight("tls.failing", &pods(6).await, 6, slack)
        .await;
    scenarios::an_insert_wins_over_a_load_running_elsewhere(
        "tls.insert_wins",
        &pods(3).await,
        settle,
    )
    .await;
    for all in [false, true] {
        let name = format!("tls.invalidate_wins.{all}");
        scenarios::an_invalidation_wins_over_a_load_running_elsewhere(
            &name,
            &pods(3).await,
            all,
            settle,
        )
        .await;
    }
    scenarios::a_load_timeout_ends_the_flight_fleet_wide("tls.timeout", &pods(3).await, slack)
        .await;
    scenarios::a_tag_reaches_every_pod("tls.tags", &pods(3).await, settle).await;
    scenarios::with_fail_safe_a_failure_throttles_the_fleet("tls.fail_safe", &pods(3).await).await;
}
