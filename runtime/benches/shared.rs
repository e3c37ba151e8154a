//! The cost of fleet coordination over Redis.
//!
//! Run with `cargo bench -p stampede-cache --features redis --bench shared`.
//! Uses `REDIS_URL` if set, else starts its own `redis-server` on a free
//! port (persistence off) and kills it at the end.
//!
//! * `miss/local` vs `miss/shared_leader`: one cold miss (a fresh key, an
//!   instant loader) on an in-process cache vs on a `shared` cache whose
//!   flight leads (no other process involved). Also printed: the Redis round
//!   trips of the leader (`RedisBackend::commands_sent`; target 2 more than a
//!   local miss, which has 0).
//! * follower wake-up: process B waits on a key A is loading; measured from
//!   the instant A's loader returns (A then writes L2, whose script publishes
//!   the notice) to the instant B's call resumes with the value. Printed as
//!   p50/p99 over 500 runs (target p99 <= 5 ms on loopback).
//! * batch of L2 hits: process B lists n keys A has loaded (`get_many_or_load`,
//!   every key a shared-tier hit): p50 latency for n = 1, 20, 100 — each key's
//!   lock-or-read script goes out together on the multiplexed connection
//!   (pipelined), so the batch costs about one round trip, not n.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use stampede_cache::Cache;
use stampede_cache::redis::RedisBackend;

#[path = "../examples/support/own_redis.rs"]
mod own_redis;

/// `REDIS_URL`'s server, or one of our own (kept alive by the first field
/// until the bench ends).
struct Server(#[allow(dead_code)] Option<own_redis::OwnRedis>, String);

fn server() -> Server {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Server(None, url);
    }
    let own = own_redis::OwnRedis::start(&[]);
    let url = own.url.clone();
    Server(Some(own), url)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A 2-worker runtime and two processes' backends (each its own
/// connections) on `server`.
fn two_pods(server: &Server) -> (tokio::runtime::Runtime, RedisBackend, RedisBackend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = rt.block_on(async {
        let a = RedisBackend::connect(&server.1).await.expect("connect");
        let b = RedisBackend::connect(&server.1).await.expect("connect");
        (a, b)
    });
    (rt, a, b)
}

fn bench(c: &mut Criterion) {
    let server = server();
    let (rt, a, b) = two_pods(&server);
    let local: Cache<u64, u64> = Cache::builder("bench.local")
        .ttl(Duration::from_secs(60))
        .build();
    let shared: Cache<u64, u64> = Cache::builder("bench.shared")
        .ttl(Duration::from_secs(60))
        .backend(a.clone())
        .build();

    // Round trips of one leader miss.
    let before = a.commands_sent();
    let runs = 100u64;
    rt.block_on(async {
        for k in 0..runs {
            shared.get_or_load(u64::MAX - k, |k| async move { k }).await;
        }
    });
    let round_trips = (a.commands_sent() - before) as f64 / runs as f64;
    eprintln!("shared miss, leader: {round_trips:.2} Redis round trips per miss (local miss: 0)");

    let mut group = c.benchmark_group("miss");
    let mut next = 0u64;
    group.bench_function("local", |bch| {
        bch.iter_custom(|iters| {
            let local = local.clone();
            let start = next;
            next += iters;
            rt.block_on(async move {
                let t = Instant::now();
                for k in start..start + iters {
                    local.get_or_load(k, |k| async move { k }).await;
                }
                t.elapsed()
            })
        })
    });
    let mut next = 0u64;
    group.bench_function("shared_leader", |bch| {
        bch.iter_custom(|iters| {
            let shared = shared.clone();
            let start = next;
            next += iters;
            rt.block_on(async move {
                let t = Instant::now();
                for k in start..start + iters {
                    shared.get_or_load(k, |k| async move { k }).await;
                }
                t.elapsed()
            })
        })
    });
    group.finish();

    // Follower wake-up latency.
    let pod_a: Cache<u64, u64> = Cache::builder("bench.wake")
        .ttl(Duration::from_secs(60))
        .backend(a.clone())
        .build();
    let pod_b: Cache<u64, u64> = Cache::builder("bench.wake")
        .ttl(Duration::from_secs(60))
        .backend(b.clone())
        .build();
    let mut wake = rt.block_on(async {
        let mut wake = Vec::new();
        for k in 0..500u64 {
            let (go, hold) = tokio::sync::oneshot::channel::<()>();
            let (loading, started) = tokio::sync::oneshot::channel::<()>();
            let returned_at = Arc::new(std::sync::Mutex::new(None));
            let leader = tokio::spawn({
                let (pod_a, returned_at) = (pod_a.clone(), returned_at.clone());
                async move {
                    pod_a
                        .get_or_load(k, move |k| async move {
                            let _ = loading.send(());
                            let _ = hold.await;
                            *returned_at.lock().unwrap() = Some(Instant::now());
                            k
                        })
                        .await
                }
            });
            started.await.unwrap();
            let contended = b.commands_sent();
            let follower = tokio::spawn({
                let pod_b = pod_b.clone();
                async move {
                    let v = pod_b
                        .get_or_load(k, |_| async { unreachable!("the follower never loads") })
                        .await;
                    (v, Instant::now())
                }
            });
            // Let the follower find the lock held and start waiting.
            while b.commands_sent() == contended {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
            go.send(()).unwrap();
            let (v, resumed) = follower.await.unwrap();
            assert_eq!(v, k);
            leader.await.unwrap();
            let returned = returned_at.lock().unwrap().unwrap();
            wake.push(resumed.saturating_duration_since(returned));
        }
        wake
    });
    wake.sort();
    eprintln!(
        "follower wake-up (leader's loader returns -> follower resumed), 500 runs: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&wake, 0.5),
        percentile(&wake, 0.99),
        wake[wake.len() - 1]
    );
}

/// p50 latency of process B listing `n` keys that process A loaded (every
/// key an L2 hit), and B's commands per key.
fn batch_of_l2_hits(rt: &tokio::runtime::Runtime, a: &RedisBackend, b: &RedisBackend) {
    let pod_a: Cache<u64, u64> = Cache::builder("bench.batch_l2")
        .ttl(Duration::from_secs(600))
        .backend(a.clone())
        .build();
    for n in [1u64, 20, 100] {
        let mut took = Vec::new();
        let commands_before = b.commands_sent();
        rt.block_on(async {
            for run in 0..50u64 {
                let keys: Vec<u64> = (0..n).map(|i| (n * 1_000_000) + run * 1000 + i).collect();
                pod_a
                    .get_many_or_load(keys.clone(), |ids: Vec<u64>| async move {
                        ids.into_iter()
                            .map(|id| (id, id))
                            .collect::<std::collections::HashMap<_, _>>()
                    })
                    .await;
                // A fresh process B: an empty L1.
                let pod_b: Cache<u64, u64> = Cache::builder("bench.batch_l2")
                    .ttl(Duration::from_secs(600))
                    .backend(b.clone())
                    .build();
                let t = Instant::now();
                let got = pod_b
                    .get_many_or_load(keys.clone(), |_ids: Vec<u64>| async {
                        unreachable!("every key is in the shared tier");
                        #[allow(unreachable_code)]
                        std::collections::HashMap::new()
                    })
                    .await;
                took.push(t.elapsed());
                assert_eq!(got.len() as u64, n);
            }
        });
        took.sort();
        let per_key = (b.commands_sent() - commands_before) as f64 / (50 * n) as f64;
        eprintln!(
            "batch of {n:>3} L2 hits in a fresh process: p50 {:?}, p99 {:?} ({per_key:.2} commands per key)",
            percentile(&took, 0.5),
            percentile(&took, 0.99)
        );
    }
}

fn bench_batch(_c: &mut Criterion) {
    let server = server();
    let (rt, a, b) = two_pods(&server);
    batch_of_l2_hits(&rt, &a, &b);
}

criterion_group!(benches, bench, bench_batch);
criterion_main!(benches);
