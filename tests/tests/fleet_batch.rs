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

// ---- found in review: each failed before its fix ---------------------------

mod review {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use stampede_cache::{Cache, LocalBackend, SharedBackend, Strategy};
    use stampede_cache_tests::bounded;
    use stampede_cache_tests::scenarios::RepoError;
    use tokio::time::{advance, sleep};

    /// A key whose own earlier write has not landed (the backend is down)
    /// waits up to a second to settle it; the batch's other keys do not
    /// wait for it, nor time out behind it.
    #[tokio::test(start_paused = true)]
    async fn one_key_with_an_unlanded_write_does_not_time_out_the_rest_of_its_batch() {
        let fleet = LocalBackend::new();
        let cache: Cache<u32, String> = Cache::builder("review.settle")
            .ttl(Duration::from_secs(60))
            .load_timeout::<RepoError>(Duration::from_millis(500))
            .backend(SharedBackend::from(fleet.clone()))
            .build();
        fleet.set_outage(true);
        cache.invalidate(&1); // queued: cannot land while the backend is down
        let asked = Arc::new(Mutex::new(Vec::<u32>::new()));
        let loader = {
            let asked = asked.clone();
            move |ids: Vec<u32>| {
                asked.lock().unwrap().extend(ids.iter().copied());
                async move {
                    sleep(Duration::from_millis(50)).await;
                    Ok::<_, RepoError>(
                        ids.into_iter()
                            .map(|id| (id, format!("row {id}")))
                            .collect::<HashMap<_, _>>(),
                    )
                }
            }
        };
        let rows = bounded(cache.try_get_many_or_load([1, 2, 3], loader)).await;
        assert!(
            asked.lock().unwrap().contains(&2),
            "keys 2 and 3 were never asked for"
        );
        // Key 1 waited past its bound for its write (as a single call of it
        // would): the call reports that; keys 2 and 3 loaded meanwhile.
        assert_eq!(rows, Err(RepoError::Timeout));
        assert_eq!(cache.get(&2).as_deref(), Some("row 2"));
        assert_eq!(cache.get(&3).as_deref(), Some("row 3"));
    }

    /// An early refresh whose loader no longer finds the row: the row is
    /// gone for the fleet too, never read back from the shared tier.
    #[tokio::test(start_paused = true)]
    async fn a_row_an_early_refresh_found_gone_is_not_read_back_from_the_shared_tier() {
        let cache: Cache<u32, String> = Cache::builder("review.gone_l2")
            .ttl(Duration::from_secs(30))
            .strategy(Strategy::XFetch { beta: 1.0 })
            .backend(SharedBackend::from(LocalBackend::new()))
            .build();
        let slow_row = |ids: Vec<u32>| async move {
            sleep(Duration::from_secs(2)).await; // δ = 2 s: the refresh lead is ≥ 2 s
            ids.into_iter()
                .map(|id| (id, format!("row {id}")))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(
            bounded(cache.get_many_or_load([1], slow_row)).await[&1],
            "row 1"
        );
        advance(Duration::from_millis(28_500)).await; // past the refresh instant
        let gone = |_ids: Vec<u32>| async { HashMap::<u32, String>::new() };
        assert_eq!(
            bounded(cache.get_many_or_load([1], gone)).await[&1],
            "row 1"
        );
        sleep(Duration::from_millis(10)).await; // the early refresh found nothing
        assert_eq!(cache.get(&1), None, "L1 dropped the row");
        let again = bounded(cache.get_many_or_load([1], gone)).await;
        assert!(again.is_empty(), "the deleted row came back: {again:?}");
    }

    /// Pods waiting on another pod's batch that found no row take that as
    /// their answer: the row is looked for once, not once per pod in turn.
    #[tokio::test(start_paused = true)]
    async fn pods_waiting_on_a_batch_that_found_no_row_take_its_answer() {
        let fleet = LocalBackend::new();
        let pods: Vec<Cache<u32, String>> = (0..3)
            .map(|_| {
                Cache::builder("review.nf_fleet")
                    .ttl(Duration::from_secs(60))
                    .backend(SharedBackend::from(fleet.clone()))
                    .build()
            })
            .collect();
        let reads = Arc::new(AtomicUsize::new(0));
        let loader = {
            let reads = reads.clone();
            move |ids: Vec<u32>| {
                reads.fetch_add(ids.len(), SeqCst);
                async {
                    sleep(Duration::from_millis(50)).await;
                    HashMap::<u32, String>::new()
                }
            }
        };
        let calls: Vec<_> = pods
            .iter()
            .map(|pod| {
                let (pod, loader) = (pod.clone(), loader.clone());
                tokio::spawn(async move { pod.get_many_or_load([7], loader).await })
            })
            .collect();
        for call in calls {
            assert!(bounded(call).await.unwrap().is_empty());
        }
        assert_eq!(reads.load(SeqCst), 1, "row 7 was looked for once per pod");
    }
}
