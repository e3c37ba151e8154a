//! The fleet on a real Redis Cluster (issue 15): three primaries with a
//! replica each, started by the harness on free ports; every pod has its
//! own `RedisBackend` (its own cluster connection and notice connection).
//! Faults are real: a primary killed and its replica promoted, a slot
//! migrated between primaries mid-traffic, the node a pod's notices come
//! from killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stampede_cache::redis::RedisBackend;
use stampede_cache::{Cache, SharedBackend};
use stampede_cache_tests::bounded;
use stampede_cache_tests::redis_cluster::RedisCluster;
use tokio::time::{Instant, sleep};

async fn backend(cluster: &RedisCluster) -> RedisBackend {
    RedisBackend::cluster_builder(cluster.urls())
        .command_timeout(Duration::from_millis(300))
        .breaker_cooldown(Duration::from_millis(300))
        .ping_interval(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect to the cluster")
}

fn pod(name: &str, backend: &RedisBackend) -> Cache<u32, String> {
    Cache::builder(name.to_owned())
        .ttl(Duration::from_secs(60))
        .lock_ttl(Duration::from_secs(2))
        .tags(|key: &u32| [format!("cluster.tag.{}", key % 2)])
        .backend(backend.clone())
        .build()
}

/// Every pod calls every key at once; returns the values, per call.
async fn stampede(
    pods: &[Cache<u32, String>],
    keys: u32,
    origin: &Arc<AtomicU64>,
    version: &str,
) -> Vec<String> {
    let mut calls = Vec::new();
    for key in 0..keys {
        for pod in pods {
            let (pod, origin, version) = (pod.clone(), origin.clone(), version.to_owned());
            calls.push(tokio::spawn(async move {
                pod.get_or_load(key, move |k| async move {
                    origin.fetch_add(1, Ordering::SeqCst);
                    sleep(Duration::from_millis(100)).await;
                    format!("{version}-{k}")
                })
                .await
            }));
        }
    }
    let mut values = Vec::new();
    for call in calls {
        values.push(bounded(call).await.unwrap());
    }
    values
}

/// The hash-tagged slot name of key `key` (< 128) of cache `name`, as the
/// backend lays it out: `{<name>:<hex of the key's MessagePack bytes>}`.
fn slot_key(name: &str, key: u32) -> String {
    assert!(key < 128, "one MessagePack byte");
    format!("{{{name}:{key:02x}}}")
}

/// After `invalidate_all` from the first pod: every pod calls every key
/// once more, one origin call per key for the fleet, every value new.
async fn the_fleet_reloads_each_key_once(
    pods: &[Cache<u32, String>],
    first: &RedisBackend,
    keys: u32,
    origin: &Arc<AtomicU64>,
    version: &str,
    what: &str,
) {
    pods[0].invalidate_all();
    assert!(
        SharedBackend::from(first.clone())
            .flush(Duration::from_secs(5))
            .await
    );
    sleep(Duration::from_millis(200)).await;
    origin.store(0, Ordering::SeqCst);
    let values = stampede(pods, keys, origin, version).await;
    let prefix = format!("{version}-");
    assert!(values.iter().all(|v| v.starts_with(&prefix)), "{values:?}");
    assert_eq!(origin.load(Ordering::SeqCst), u64::from(keys), "{what}");
}

/// Every pod reads keys `0..keys` in turn (a miss loads `row-<k>` in
/// `load`, counted per key in `calls`); returns the slowest call.
async fn read_every_key(
    pods: &[Cache<u32, String>],
    keys: u32,
    calls: &Arc<Vec<AtomicU64>>,
    load: Duration,
) -> Duration {
    let mut slowest = Duration::ZERO;
    for key in 0..keys {
        for pod in pods {
            let started = Instant::now();
            let calls = calls.clone();
            let got = pod
                .get_or_load(key, move |k| async move {
                    calls[k as usize].fetch_add(1, Ordering::SeqCst);
                    sleep(load).await;
                    format!("row-{k}")
                })
                .await;
            assert_eq!(got, format!("row-{key}"));
            slowest = slowest.max(started.elapsed());
        }
    }
    slowest
}

/// `pods` pods of cache `name`, each on its own backend (connections).
async fn fleet(
    cluster: &RedisCluster,
    pods: usize,
    name: &str,
) -> (Vec<RedisBackend>, Vec<Cache<u32, String>>) {
    let mut backends = Vec::new();
    for _ in 0..pods {
        backends.push(backend(cluster).await);
    }
    let caches = backends.iter().map(|b| pod(name, b)).collect();
    (backends, caches)
}

/// Pod `pa` (on backend `a`) inserts key 0 = "v2" over its "v1"; pod `pb`
/// must see it: its copy dropped by the notice, the shared tier's value read.
async fn an_insert_reaches_the_other_pod(
    pa: &Cache<u32, String>,
    a: &RedisBackend,
    pb: &Cache<u32, String>,
) {
    pa.insert(0, "v2".to_owned());
    assert!(
        SharedBackend::from(a.clone())
            .flush(Duration::from_secs(5))
            .await
    );
    bounded(async {
        while pb.get(&0).as_deref() == Some("v1") {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let seen = pb.get_or_load(0, |_| async { "stale".to_owned() }).await;
    assert_eq!(seen, "v2", "the insert reached the other pod");
}

/// How many subscribers `channel` has on cluster node `node`, by
/// `PUBSUB <command>` (`NUMSUB`: classic, `SHARDNUMSUB`: sharded).
fn subscribers(cluster: &RedisCluster, node: usize, command: &str, channel: &str) -> u64 {
    let reply = cluster
        .node(node)
        .query_lines(&["PUBSUB", command, channel]);
    reply
        .get(1)
        .and_then(|n| n.trim_start_matches(':').parse().ok())
        .unwrap_or(0)
}

/// The invalidation channel of cache `name`, as the backend names it.
fn invalidation_channel(name: &str) -> String {
    format!("{}:{{{name}}}:inval", stampede_cache::redis::DEFAULT_PREFIX)
}

/// Two pods of cache `name` on their own backends, key 0 = "v1" in both.
async fn two_pods_holding_v1(
    cluster: &RedisCluster,
    name: &str,
) -> (
    (RedisBackend, Cache<u32, String>),
    (RedisBackend, Cache<u32, String>),
) {
    let (a, b) = (backend(cluster).await, backend(cluster).await);
    let (pa, pb) = (pod(name, &a), pod(name, &b));
    assert_eq!(pa.get_or_load(0, |_| async { "v1".to_owned() }).await, "v1");
    assert_eq!(pb.get_or_load(0, |_| async { "v9".to_owned() }).await, "v1");
    ((a, pa), (b, pb))
}

fn errors(pods: &[Cache<u32, String>]) -> (u64, u64) {
    pods.iter().fold((0, 0), |(e, f), pod| {
        let stats = pod.stats();
        (e + stats.backend_errors, f + stats.fallbacks)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_passes_the_conformance_suite_on_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let b = backend(&cluster).await;
    bounded(stampede_cache::testing::backend_conformance(b.into())).await;
}

/// 24 keys spread over the three shards, four pods: one load per key for
/// the fleet; an `invalidate` on one pod, `invalidate_tag` (keys on every
/// shard) and `invalidate_all` each reach every pod and cost one load per
/// key again; nothing failed open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_a_cluster_loads_each_key_once_and_every_write_reaches_it() {
    let cluster = RedisCluster::start(3, 0);
    let (backends, pods) = fleet(&cluster, 4, "cluster.fleet").await;
    let keys = 24;
    let slots: std::collections::HashSet<usize> = (0..keys)
        .map(|k| cluster.primary_of(cluster.slot_of(&slot_key("cluster.fleet", k))))
        .collect();
    assert_eq!(slots.len(), 3, "the keys' slots are on every primary");
    let origin = Arc::new(AtomicU64::new(0));
    let values = stampede(&pods, keys, &origin, "v1").await;
    assert!(values.iter().all(|v| v.starts_with("v1-")));
    assert_eq!(
        origin.swap(0, Ordering::SeqCst),
        u64::from(keys),
        "one load per key"
    );

    pods[0].invalidate(&3);
    let flushed = SharedBackend::from(backends[0].clone())
        .flush(Duration::from_secs(5))
        .await;
    assert!(flushed);
    sleep(Duration::from_millis(100)).await;
    let values = stampede(&pods, keys, &origin, "v2").await;
    assert_eq!(
        origin.swap(0, Ordering::SeqCst),
        1,
        "one reload of the invalidated key"
    );
    assert!(values.iter().filter(|v| v.as_str() == "v2-3").count() == pods.len());

    stampede_cache::invalidate_tag("cluster.tag.0");
    for b in &backends {
        assert!(
            SharedBackend::from(b.clone())
                .flush(Duration::from_secs(5))
                .await
        );
    }
    sleep(Duration::from_millis(100)).await;
    let values = stampede(&pods, keys, &origin, "v3").await;
    assert_eq!(
        origin.swap(0, Ordering::SeqCst),
        u64::from(keys / 2),
        "one reload per even key, on every shard"
    );
    let reloaded = values.iter().filter(|v| v.starts_with("v3-")).count();
    assert_eq!(reloaded, (keys / 2) as usize * pods.len());

    pods[1].invalidate_all();
    assert!(
        SharedBackend::from(backends[1].clone())
            .flush(Duration::from_secs(5))
            .await
    );
    sleep(Duration::from_millis(100)).await;
    let values = stampede(&pods, keys, &origin, "v4").await;
    assert_eq!(
        origin.load(Ordering::SeqCst),
        u64::from(keys),
        "one reload per key"
    );
    assert!(values.iter().all(|v| v.starts_with("v4-")));
    assert_eq!(errors(&pods), (0, 0), "nothing failed open");
}

/// The primary of a hot key's slot is killed mid-traffic; its replica is
/// promoted (node timeout 500 ms). Calls keep being answered (failing open
/// while the slot has no primary), none hangs; once promoted, the fleet is
/// back to one load per key and invalidations reach every pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_fail_over_mid_traffic_costs_no_call_and_the_fleet_recovers() {
    let mut cluster = RedisCluster::start(3, 1);
    let mut backends = Vec::new();
    for _ in 0..3 {
        backends.push(backend(&cluster).await);
    }
    let pods: Vec<_> = backends
        .iter()
        .map(|b| pod("cluster.failover", b))
        .collect();
    let origin = Arc::new(AtomicU64::new(0));
    stampede(&pods, 6, &origin, "v1").await;
    let slot = cluster.slot_of(&slot_key("cluster.failover", 1));
    let traffic = {
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let until = Instant::now() + Duration::from_secs(4);
            let mut n = 0u32;
            while Instant::now() < until {
                for pod in &pods {
                    let started = Instant::now();
                    // Key 1 is left to the write below.
                    let key = [0, 2, 3, 4, 5][n as usize % 5];
                    let got = pod
                        .get_or_load(key, move |k| async move { format!("during-{k}") })
                        .await;
                    assert!(got.ends_with(&format!("-{key}")), "{got}");
                    slowest = slowest.max(started.elapsed());
                    pod.invalidate(&key);
                }
                n += 1;
                sleep(Duration::from_millis(20)).await;
            }
            slowest
        })
    };
    sleep(Duration::from_millis(300)).await;
    let failing_over = tokio::task::spawn_blocking(move || {
        cluster.fail_over(slot);
        cluster
    });
    // A write made while the slot has no primary: retried until it lands.
    sleep(Duration::from_millis(200)).await;
    pods[0].insert(1, "written during the fail-over".to_owned());
    let cluster = failing_over.await.unwrap();
    let slowest = bounded(traffic).await.unwrap();
    assert!(
        SharedBackend::from(backends[0].clone())
            .flush(Duration::from_secs(10))
            .await
    );
    sleep(Duration::from_millis(200)).await;
    for (i, pod) in pods.iter().enumerate() {
        let seen = pod
            .get_or_load(1, |_| async { "stale reload".to_owned() })
            .await;
        assert_eq!(
            seen, "written during the fail-over",
            "pod {i} after the fail-over: the write made during it must win"
        );
    }
    assert!(
        slowest < Duration::from_secs(3),
        "a call took {slowest:?} during the fail-over"
    );
    // Settled: one load per key for the fleet again.
    sleep(Duration::from_secs(1)).await;
    the_fleet_reloads_each_key_once(
        &pods,
        &backends[0],
        6,
        &origin,
        "after",
        "one load per key after the fail-over",
    )
    .await;
    drop(cluster);
}

/// A hot key's slot migrates to another primary (IMPORTING/MIGRATING, keys
/// moved, ownership switched) while pods call it: every call is answered,
/// and afterwards the pods follow the slot (MOVED) with nothing failing
/// open: one load for the fleet, its value read back from the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_migration_mid_traffic_is_followed() {
    let cluster = RedisCluster::start(3, 0);
    let (backends, pods) = fleet(&cluster, 3, "cluster.migrate").await;
    let origin = Arc::new(AtomicU64::new(0));
    stampede(&pods, 1, &origin, "v1").await;
    assert_eq!(origin.swap(0, Ordering::SeqCst), 1);
    let slot = cluster.slot_of(&slot_key("cluster.migrate", 0));
    let to = (cluster.primary_of(slot) + 1) % 3;
    let traffic = {
        let pods = pods.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                for pod in &pods {
                    let got = pod.get_or_load(0, |_| async { "during".to_owned() }).await;
                    assert!(got == "v1-0" || got == "during", "{got}");
                }
                sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.migrate_slot(slot, to);
        cluster
    })
    .await
    .unwrap();
    bounded(traffic).await.unwrap();
    let before = errors(&pods);
    pods[0].invalidate(&0);
    assert!(
        SharedBackend::from(backends[0].clone())
            .flush(Duration::from_secs(5))
            .await
    );
    sleep(Duration::from_millis(100)).await;
    origin.store(0, Ordering::SeqCst);
    let values = stampede(&pods, 1, &origin, "v2").await;
    assert!(values.iter().all(|v| v == "v2-0"), "{values:?}");
    assert_eq!(
        origin.load(Ordering::SeqCst),
        1,
        "one load for the fleet on the new owner"
    );
    assert_eq!(
        errors(&pods),
        before,
        "nothing failed open after the migration"
    );
    drop(cluster);
}

/// The node a pod's notice connection is on is killed: the pod drops its L1
/// copies (invalidations may have been missed) and moves its notices to
/// another seed node; an invalidation made after that reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_notice_node_moves_the_subscription_and_invalidations_still_arrive() {
    let mut cluster = RedisCluster::start(3, 1);
    let (a, b) = (backend(&cluster).await, backend(&cluster).await);
    let (pa, pb) = (pod("cluster.notices", &a), pod("cluster.notices", &b));
    let origin = Arc::new(AtomicU64::new(0));
    stampede(&[pa.clone(), pb.clone()], 1, &origin, "v1").await;
    let losses = a.subscription_losses();
    // The notice connection is on the first seed: node 0, a primary.
    let slot_of_node0 = (0..16384u16)
        .find(|s| cluster.primary_of(*s) == 0)
        .expect("node 0 serves slots");
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.fail_over(slot_of_node0);
        cluster
    })
    .await
    .unwrap();
    bounded(async {
        while a.subscription_losses() == losses {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    bounded(async {
        while a.subscribed_channels() == 0 {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        pa.get(&0),
        None,
        "the pod dropped its L1 copies on the loss"
    );
    let got = pa.get_or_load(0, |_| async { "reloaded".to_owned() }).await;
    assert!(got == "v1-0" || got == "reloaded");
    pb.insert(0, "written by b".to_owned());
    assert!(
        SharedBackend::from(b.clone())
            .flush(Duration::from_secs(5))
            .await
    );
    bounded(async {
        while pa.get(&0).as_deref() != Some("written by b") && pa.get(&0).is_some() {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let seen = pa.get_or_load(0, |_| async { "stale".to_owned() }).await;
    assert_eq!(
        seen, "written by b",
        "the insert reached pod a through its new notice node"
    );
    drop(cluster);
}

async fn cluster_backends(cluster: &RedisCluster, pods: usize) -> Vec<SharedBackend> {
    let mut backends = Vec::new();
    for _ in 0..pods {
        backends.push(backend(cluster).await.into());
    }
    backends
}

/// The fleet scenarios of `stampede_cache_tests::scenarios` — written once,
/// run on LocalBackend pods and on one `redis-server` — on the cluster, each
/// pod with its own cluster connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_scenarios_hold_on_a_cluster() {
    use stampede_cache_tests::scenarios;
    let slack = Duration::from_millis(200);
    let settle = Duration::from_millis(150);
    let cluster = RedisCluster::start(3, 0);
    let b = cluster_backends(&cluster, 10).await;
    scenarios::a_failing_origin_is_called_once_per_flight("cluster.failing", &b, 10, slack).await;
    let b = cluster_backends(&cluster, 3).await;
    scenarios::an_insert_wins_over_a_load_running_elsewhere("cluster.insert_wins", &b, settle)
        .await;
    for all in [false, true] {
        let b = cluster_backends(&cluster, 3).await;
        let name = format!("cluster.invalidate_wins.{all}");
        scenarios::an_invalidation_wins_over_a_load_running_elsewhere(&name, &b, all, settle).await;
    }
    let b = cluster_backends(&cluster, 5).await;
    scenarios::a_load_timeout_ends_the_flight_fleet_wide("cluster.timeout", &b, slack).await;
    let b = cluster_backends(&cluster, 3).await;
    scenarios::a_tag_reaches_every_pod("cluster.tags", &b, settle).await;
    let b = cluster_backends(&cluster, 2).await;
    scenarios::a_timeout_in_one_pod_does_not_answer_another_pods_later_calls(
        "cluster.timeout_is_local",
        &b,
    )
    .await;
    for remote_errors in [true, false] {
        let b = cluster_backends(&cluster, 2).await;
        scenarios::a_transient_error_does_not_answer_the_calls_after_its_flight(
            &format!("cluster.transient_err.{remote_errors}"),
            &b,
            remote_errors,
        )
        .await;
    }
    let b = cluster_backends(&cluster, 4).await;
    scenarios::with_fail_safe_a_failure_throttles_the_fleet("cluster.fail_safe_throttle", &b).await;
}

/// TLS (clients, bus, replication) and an ACL user with exactly
/// `acl_rules` on every node: the whole conformance suite and a fleet that
/// loads once, with nothing denied or failed open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_as_an_acl_user_a_cluster_passes_the_conformance_suite_and_loads_once() {
    use stampede_cache::redis::{DEFAULT_PREFIX, RedisTls, acl_rules};
    let cluster = RedisCluster::start_tls(3, 0);
    for i in 0..cluster.len() {
        let mut args = vec!["ACL", "SETUSER", "app", "on", ">s3cret"];
        let rules = acl_rules(DEFAULT_PREFIX);
        args.extend(rules.split(' '));
        assert_eq!(
            cluster.node(i).query(&args),
            "+OK",
            "ACL SETUSER on node {i}"
        );
    }
    let connect = || async {
        RedisBackend::cluster_builder(cluster.tls_urls())
            .tls(RedisTls::new().ca_pem(cluster.ca_pem()))
            .credentials(Some("app"), "s3cret")
            .command_timeout(Duration::from_millis(500))
            .connect()
            .await
            .expect("connect over TLS as the ACL user")
    };
    bounded(stampede_cache::testing::backend_conformance(
        connect().await.into(),
    ))
    .await;
    let (a, b) = (connect().await, connect().await);
    let pods = vec![
        pod("cluster.tls", &a),
        pod("cluster.tls", &b),
        pod("cluster.tls", &a),
    ];
    let origin = Arc::new(AtomicU64::new(0));
    let values = stampede(&pods, 9, &origin, "v1").await;
    assert!(values.iter().all(|v| v.starts_with("v1-")));
    assert_eq!(
        origin.load(Ordering::SeqCst),
        9,
        "one load per key for the fleet"
    );
    stampede_cache::invalidate_tag("cluster.tag.1");
    assert!(
        SharedBackend::from(a.clone())
            .flush(Duration::from_secs(5))
            .await
    );
    assert_eq!(
        errors(&pods),
        (0, 0),
        "no command denied, nothing failed open"
    );
    let wrong = RedisBackend::cluster_builder(cluster.tls_urls())
        .tls(RedisTls::new().ca_pem(cluster.ca_pem()))
        .credentials(Some("app"), "wrong")
        .connect()
        .await
        .expect_err("a wrong password fails connect");
    assert!(
        wrong.to_string().contains("authentication failed"),
        "the error names the cause: {wrong}"
    );
}

/// Waiters wait on a load whose key's slot migrates to another primary
/// mid-load (the lock moves with it): the leader's fenced write follows the
/// slot, and the waiters are woken with its value — one origin call, every
/// waiter answered well within one lease (2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_a_key_whose_slot_migrates_are_woken_with_the_leaders_value() {
    let cluster = RedisCluster::start(3, 0);
    let mut backends = Vec::new();
    for _ in 0..3 {
        backends.push(backend(&cluster).await);
    }
    let pods: Vec<_> = backends
        .iter()
        .map(|b| pod("cluster.migrate_wait", b))
        .collect();
    let origin = Arc::new(AtomicU64::new(0));
    let slot = cluster.slot_of(&slot_key("cluster.migrate_wait", 0));
    let to = (cluster.primary_of(slot) + 1) % 3;
    let started = Instant::now();
    let calls: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let (pod, origin) = (pod.clone(), origin.clone());
            tokio::spawn(async move {
                // The first pod leads; the others start once it holds the lock.
                sleep(Duration::from_millis(if i == 0 { 0 } else { 100 })).await;
                let value = pod
                    .get_or_load(0, move |_| async move {
                        origin.fetch_add(1, Ordering::SeqCst);
                        sleep(Duration::from_millis(800)).await;
                        "led".to_owned()
                    })
                    .await;
                (value, started.elapsed())
            })
        })
        .collect();
    sleep(Duration::from_millis(250)).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.migrate_slot(slot, to);
        cluster
    })
    .await
    .unwrap();
    for call in calls {
        let (value, took) = bounded(call).await.unwrap();
        assert_eq!(value, "led");
        assert!(
            took < Duration::from_secs(2),
            "a waiter was answered after {took:?}"
        );
    }
    assert_eq!(
        origin.load(Ordering::SeqCst),
        1,
        "one origin call across the migration"
    );
    drop(cluster);
}

/// On a Cluster notices travel over sharded pub/sub: a cache's invalidation
/// channel is subscribed (`SSUBSCRIBE`) on the primary that owns its slot
/// and no classic subscription exists anywhere, so a notice is not
/// broadcast over the cluster bus to every node. Notices still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_use_sharded_pub_sub_on_the_shard_that_owns_the_channel() {
    let cluster = RedisCluster::start(3, 0);
    let ((a, pa), (_b, pb)) = two_pods_holding_v1(&cluster, "cluster.sharded").await;
    let channel = invalidation_channel("cluster.sharded");
    let owner = cluster.primary_of(cluster.slot_of(&channel));
    let subscribers = |node: usize, command: &str| subscribers(&cluster, node, command, &channel);
    assert_eq!(
        subscribers(owner, "SHARDNUMSUB"),
        2,
        "both pods, on the owner shard"
    );
    for node in 0..cluster.len() {
        assert_eq!(
            subscribers(node, "NUMSUB"),
            0,
            "no classic subscription on node {node}"
        );
    }
    an_insert_reaches_the_other_pod(&pa, &a, &pb).await;
}

/// The slot of a cache's invalidation channel migrates to another shard:
/// the old owner unsubscribes every pod from it (an unsolicited
/// `SUNSUBSCRIBE`). Each pod counts that as a lost subscription — drops its
/// L1 copies — and subscribes again where the slot went, so an insert made
/// afterwards still reaches the other pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_notice_channel_is_subscribed_again_where_its_slot_went() {
    let cluster = RedisCluster::start(3, 0);
    let ((a, pa), (b, pb)) = two_pods_holding_v1(&cluster, "cluster.channel_moves").await;
    let channel = invalidation_channel("cluster.channel_moves");
    let slot = cluster.slot_of(&channel);
    let to = (cluster.primary_of(slot) + 1) % 3;
    let losses = b.subscription_losses();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.migrate_slot(slot, to);
        cluster
    })
    .await
    .unwrap();
    bounded(async {
        while b.subscription_losses() == losses || b.subscribed_channels() == 0 {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        pb.get(&0),
        None,
        "pod b dropped its copies when the channel was taken away"
    );
    assert_eq!(pb.get_or_load(0, |_| async { "v9".to_owned() }).await, "v1");
    let sharded = |node: usize| subscribers(&cluster, node, "SHARDNUMSUB", &channel);
    bounded(async {
        while sharded(to) < 2 {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    an_insert_reaches_the_other_pod(&pa, &a, &pb).await;
}

/// Read traffic on 12 keys (every shard) from 3 pods while a primary is
/// killed: what the fail-over costs the origin. The notice connection's
/// loss drops every L1; the copies come back from the shared tier. While
/// the killed shard has no primary its keys load in process — at most once
/// per pod, single flight still holding there — and with Redis's default
/// `cluster-require-full-coverage yes` so does every key (every node
/// answers CLUSTERDOWN until the replica is promoted). So per key at most
/// 1 + pods origin calls, with full coverage required or not (measured
/// and printed: only the keys being read as the primary died loaded again,
/// once per pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_fail_over_costs_each_key_at_most_one_load_per_pod() {
    for partial in [false, true] {
        fail_over_cost(partial).await;
    }
}

async fn fail_over_cost(partial: bool) {
    let mut cluster = if partial {
        RedisCluster::start_partial_coverage(3, 1)
    } else {
        RedisCluster::start(3, 1)
    };
    let mut backends = Vec::new();
    for _ in 0..3 {
        backends.push(backend(&cluster).await);
    }
    let name = format!("cluster.failover_cost.{partial}");
    let pods: Vec<_> = backends.iter().map(|b| pod(&name, b)).collect();
    let keys = 12u32;
    let calls: Arc<Vec<AtomicU64>> = Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect());
    let read_all = move |pods: Vec<Cache<u32, String>>, calls: Arc<Vec<AtomicU64>>| async move {
        read_every_key(&pods, keys, &calls, Duration::from_millis(30)).await
    };
    read_all(pods.clone(), calls.clone()).await;
    let warm: Vec<u64> = calls.iter().map(|c| c.swap(0, Ordering::SeqCst)).collect();
    assert!(
        warm.iter().all(|n| *n == 1),
        "one load per key to warm up: {warm:?}"
    );
    let traffic = {
        let (pods, calls) = (pods.clone(), calls.clone());
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(5);
            let mut slowest = Duration::ZERO;
            while Instant::now() < until {
                slowest = slowest.max(read_all(pods.clone(), calls.clone()).await);
                sleep(Duration::from_millis(20)).await;
            }
            slowest
        })
    };
    sleep(Duration::from_millis(300)).await;
    let slot = cluster.slot_of(&slot_key(&name, 0));
    let dead = cluster.primary_of(slot);
    let on_dead_shard: Vec<bool> = (0..keys)
        .map(|k| cluster.primary_of(cluster.slot_of(&slot_key(&name, k))) == dead)
        .collect();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.fail_over(slot);
        cluster
    })
    .await
    .unwrap();
    let slowest = bounded(traffic).await.unwrap();
    let loads: Vec<u64> = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    let trips: Vec<u64> = backends.iter().map(RedisBackend::breaker_trips).collect();
    eprintln!(
        "fail-over (partial coverage {partial}): origin calls per key {loads:?} (on the killed shard: {on_dead_shard:?}), slowest call {slowest:?}, breaker trips {trips:?}, (backend errors, fallbacks) {:?}",
        errors(&pods)
    );
    let bound = 1 + pods.len() as u64;
    assert!(
        loads.iter().all(|n| *n <= bound),
        "at most {bound} origin calls per key: {loads:?}"
    );
    assert!(slowest < Duration::from_secs(3), "a call took {slowest:?}");
    drop(cluster);
}

/// A primary restarted (killed and started again on its port, empty —
/// persistence is off — before the cluster fails it over): calls keep being
/// answered, the pods' notices come back, and once it serves its slots
/// again the fleet loads each key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_primary_is_rejoined_and_the_fleet_loads_once_again() {
    let cluster = RedisCluster::start(3, 0);
    let (backends, pods) = fleet(&cluster, 3, "cluster.restart").await;
    let origin = Arc::new(AtomicU64::new(0));
    stampede(&pods, 9, &origin, "v1").await;
    assert_eq!(origin.swap(0, Ordering::SeqCst), 9);
    let victim = cluster.primary_of(cluster.slot_of(&slot_key("cluster.restart", 0)));
    let losses: Vec<u64> = backends
        .iter()
        .map(RedisBackend::subscription_losses)
        .collect();
    let mut cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        cluster.node_mut(victim).restart();
        cluster
    })
    .await
    .unwrap();
    cluster = tokio::task::spawn_blocking(move || {
        cluster.primary_of(0);
        cluster.wait_ok();
        cluster
    })
    .await
    .unwrap();
    bounded(async {
        while backends
            .iter()
            .zip(&losses)
            .any(|(b, lost)| b.subscription_losses() == *lost || b.subscribed_channels() == 0)
        {
            sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let values = stampede(&pods, 9, &origin, "v2").await;
    assert!(
        values
            .iter()
            .all(|v| v.starts_with("v1-") || v.starts_with("v2-"))
    );
    the_fleet_reloads_each_key_once(
        &pods,
        &backends[0],
        9,
        &origin,
        "v3",
        "one load per key after the restart",
    )
    .await;
    drop(cluster);
}

/// One primary hangs (SIGSTOP: connections open, nothing answered) while
/// two pods read 12 keys on every shard for 3 s. The notice connection's
/// PING of every primary goes unanswered, so the pods drop their L1 copies
/// and read the shared tier. What calls see, measured and bounded: every
/// call answered, none slower than a few command timeouts, at most one
/// origin call per key and pod (single flight holds in process). redis-rs's
/// cluster connection stalls every request while it refreshes its slot map
/// from the hung node, so keys on the shards that answer fail open too —
/// once per pod, after which the circuit breaker (per backend) fails calls
/// open at once instead of one command timeout each. Printed for the note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_shard_costs_at_most_one_load_per_key_and_pod() {
    let cluster = RedisCluster::start(3, 0);
    let (backends, pods) = fleet(&cluster, 2, "cluster.hung_shard").await;
    let keys = 12u32;
    let calls: Arc<Vec<AtomicU64>> = Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect());
    let read_all = |pods: Vec<Cache<u32, String>>, calls: Arc<Vec<AtomicU64>>| async move {
        read_every_key(&pods, keys, &calls, Duration::ZERO).await
    };
    read_all(pods.clone(), calls.clone()).await;
    for c in calls.iter() {
        c.store(0, Ordering::SeqCst);
    }
    let hung = cluster.primary_of(cluster.slot_of(&slot_key("cluster.hung_shard", 0)));
    cluster.node(hung).freeze();
    let until = Instant::now() + Duration::from_secs(3);
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        slowest = slowest.max(bounded(read_all(pods.clone(), calls.clone())).await);
        sleep(Duration::from_millis(50)).await;
    }
    cluster.node(hung).thaw();
    let loads: Vec<u64> = calls.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    let trips: Vec<u64> = backends.iter().map(RedisBackend::breaker_trips).collect();
    eprintln!(
        "hung shard: origin calls per key {loads:?}, slowest call {slowest:?}, breaker trips {trips:?}"
    );
    assert!(
        loads.iter().all(|n| *n <= pods.len() as u64),
        "at most one origin call per key and pod: {loads:?}"
    );
    assert!(slowest < Duration::from_secs(2), "a call took {slowest:?}");
}
