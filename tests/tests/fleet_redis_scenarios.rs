#![cfg(feature = "redis")]
//! The fleet scenarios of `stampede_cache_tests::scenarios`, on pods that
//! each have their own `RedisBackend` (own connections and subscription, as
//! separate processes have) against one real `redis-server`. The same
//! scenarios run on LocalBackend pods on the paused clock in `fleet_faults`.

use std::time::Duration;

use stampede_cache::SharedBackend;
use stampede_cache::redis::RedisBackend;
use stampede_cache_tests::redis_server::RedisServer;
use stampede_cache_tests::scenarios;

/// Real time: a few round trips and a notice's trip through pub/sub.
const SLACK: Duration = Duration::from_millis(150);
const SETTLE: Duration = Duration::from_millis(100);

async fn pod_backends(server: &RedisServer, pods: usize) -> Vec<SharedBackend> {
    let mut backends = Vec::new();
    for _ in 0..pods {
        let backend = RedisBackend::connect(&server.url())
            .await
            .expect("connect to the test redis-server");
        backends.push(backend.into());
    }
    backends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_origin_is_called_once_per_flight_fleet_wide() {
    let server = RedisServer::start();
    let backends = pod_backends(&server, 10).await;
    scenarios::a_failing_origin_is_called_once_per_flight("redis.failing", &backends, 10, SLACK)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_wins_over_a_load_running_elsewhere() {
    let server = RedisServer::start();
    let backends = pod_backends(&server, 3).await;
    scenarios::an_insert_wins_over_a_load_running_elsewhere("redis.insert_wins", &backends, SETTLE)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidations_win_over_a_load_running_elsewhere() {
    let server = RedisServer::start();
    for all in [false, true] {
        let backends = pod_backends(&server, 3).await;
        let name = format!("redis.invalidate_wins.{all}");
        scenarios::an_invalidation_wins_over_a_load_running_elsewhere(
            &name, &backends, all, SETTLE,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_timeout_ends_the_flight_fleet_wide() {
    let server = RedisServer::start();
    let backends = pod_backends(&server, 5).await;
    scenarios::a_load_timeout_ends_the_flight_fleet_wide("redis.timeout", &backends, SLACK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_reaches_every_pod() {
    let server = RedisServer::start();
    let backends = pod_backends(&server, 3).await;
    scenarios::a_tag_reaches_every_pod("redis.tags", &backends, SETTLE).await;
}

/// Issue 14's failure rule on Redis pods: a timeout in one pod does not
/// answer another pod's later calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_in_one_pod_does_not_answer_another_pods_later_calls() {
    let server = RedisServer::start();
    let backends = pod_backends(&server, 2).await;
    scenarios::a_timeout_in_one_pod_does_not_answer_another_pods_later_calls(
        "redis.timeout_is_local",
        &backends,
    )
    .await;
}

/// A transient `Err` in one pod does not answer another pod's later calls,
/// with and without `remote_errors`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_error_does_not_answer_the_calls_after_its_flight() {
    let server = RedisServer::start();
    for remote_errors in [true, false] {
        let backends = pod_backends(&server, 2).await;
        scenarios::a_transient_error_does_not_answer_the_calls_after_its_flight(
            &format!("redis.transient_err.{remote_errors}"),
            &backends,
            remote_errors,
        )
        .await;
    }
}

/// Fail-safe + shared on Redis pods: the last good value is served and the
/// fleet makes one origin call per backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_fail_safe_a_failure_throttles_the_whole_fleet_for_the_backoff() {
    let server = RedisServer::start();
    let backends = pod_backends(&server, 4).await;
    scenarios::with_fail_safe_a_failure_throttles_the_fleet("redis.fail_safe_throttle", &backends)
        .await;
}
