//! Batch loading across a fleet: the scenarios of
//! `stampede_cache_tests::batch_scenarios` on LocalBackend pods (paused
//! clock), on pods with their own connections to one real `redis-server`,
//! and on a Redis Cluster (each pod its own cluster connection).

use std::time::Duration;

use stampede_cache::{LocalBackend, SharedBackend};
use stampede_cache_tests::batch_scenarios as batch;

fn local(pods: usize) -> Vec<SharedBackend> {
    let fleet = LocalBackend::new();
    vec![SharedBackend::from(fleet); pods]
}

/// Local pods: the backend answers after one simulated round trip, so the
/// pods' flights interleave as over a network.
fn local_with_round_trip(pods: usize) -> Vec<SharedBackend> {
    let fleet = LocalBackend::with_round_trip(Duration::from_millis(1));
    vec![SharedBackend::from(fleet); pods]
}

#[tokio::test(start_paused = true)]
async fn local_overlapping_batches_load_each_key_once_fleet_wide() {
    batch::overlapping_batches_load_each_key_once("lb.overlap", &local(8), 6).await;
    batch::overlapping_batches_load_each_key_once("lb.overlap_rt", &local_with_round_trip(8), 6)
        .await;
}

#[tokio::test(start_paused = true)]
async fn local_a_write_during_a_batch_wins_fleet_wide() {
    let settle = Duration::from_millis(5);
    batch::a_write_during_a_batch_wins_fleet_wide("lb.write_wins", &local(3), settle).await;
}

#[tokio::test(start_paused = true)]
async fn local_a_failing_batch_answers_every_pod_once() {
    batch::a_failing_batch_answers_every_pod_once("lb.failing", &local(5)).await;
}

#[tokio::test(start_paused = true)]
async fn local_absent_rows_are_cached_fleet_wide() {
    let settle = Duration::from_millis(5);
    batch::absent_rows_are_cached_fleet_wide("lb.absent", &local(2), settle).await;
}

#[cfg(feature = "redis")]
mod redis {
    use std::time::Duration;

    use stampede_cache::SharedBackend;
    use stampede_cache::redis::RedisBackend;
    use stampede_cache_tests::batch_scenarios as batch;
    use stampede_cache_tests::redis_cluster::RedisCluster;
    use stampede_cache_tests::redis_server::RedisServer;

    /// Real time: a notice's trip through pub/sub, a write's landing.
    const SETTLE: Duration = Duration::from_millis(150);

    async fn single(server: &RedisServer, pods: usize) -> Vec<SharedBackend> {
        let mut backends = Vec::new();
        for _ in 0..pods {
            let backend = RedisBackend::connect(&server.url()).await.expect("connect");
            backends.push(backend.into());
        }
        backends
    }

    async fn cluster(cluster: &RedisCluster, pods: usize) -> Vec<SharedBackend> {
        let mut backends = Vec::new();
        for _ in 0..pods {
            let backend = RedisBackend::cluster_builder(cluster.urls())
                .connect()
                .await
                .expect("connect to the cluster");
            backends.push(backend.into());
        }
        backends
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_on_one_redis_server() {
        let server = RedisServer::start();
        let b = single(&server, 6).await;
        batch::overlapping_batches_load_each_key_once("rb.overlap", &b, 6).await;
        let b = single(&server, 3).await;
        batch::a_write_during_a_batch_wins_fleet_wide("rb.write_wins", &b, SETTLE).await;
        let b = single(&server, 4).await;
        batch::a_failing_batch_answers_every_pod_once("rb.failing", &b).await;
        let b = single(&server, 2).await;
        batch::absent_rows_are_cached_fleet_wide("rb.absent", &b, SETTLE).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_on_a_redis_cluster() {
        let nodes = RedisCluster::start(3, 0);
        let b = cluster(&nodes, 6).await;
        batch::overlapping_batches_load_each_key_once("cb.overlap", &b, 6).await;
        let b = cluster(&nodes, 3).await;
        batch::a_write_during_a_batch_wins_fleet_wide("cb.write_wins", &b, SETTLE).await;
        let b = cluster(&nodes, 4).await;
        batch::a_failing_batch_answers_every_pod_once("cb.failing", &b).await;
        let b = cluster(&nodes, 2).await;
        batch::absent_rows_are_cached_fleet_wide("cb.absent", &b, SETTLE).await;
    }
}
