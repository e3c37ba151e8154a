//! Hit path: the cost of answering a call from a present, fresh entry.
//!
//! Run with `cargo bench -p stampede-cache --bench hit_path`.
//!
//! Every contestant is measured the same way: `iter_custom` times a loop of
//! `iters` awaited lookups running inside ONE async task on a tokio runtime.
//!
//! * `1_thread`: one task on a `current_thread` runtime.
//! * `2_threads`: two tasks on a 2-worker `multi_thread` runtime, each doing
//!   `iters` lookups at the same time; the reported time per iteration is the
//!   wall time divided by `iters`, i.e. the latency of one lookup while the
//!   other core hammers the same cache.
//!
//! Keys cycle over 1024 pre-loaded `u64` keys; values are `u64`. The caches:
//!
//! * `stampede_cache/get_or_load` — our `Cache` (`Strategy::Lock`), loader never runs.
//! * `stampede_cache/#[stampede_cached]` — an `async fn` memoised by our macro.
//! * `quick_cache/get` — `quick_cache::sync::Cache::get` (a plain map lookup, no TTL, no loader).
//! * `quick_cache/get_value_or_guard_async` — quick_cache's coalescing async lookup.
//! * `moka/get_with` — `moka::future::Cache::get_with` with a TTL.
//! * `cached/#[cached]` — an `async fn` memoised by `cached` 4.1's `#[cached]` with a TTL.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cached::proc_macro::cached;
use criterion::{Criterion, criterion_group, criterion_main};
use stampede_cache::{Cache, Strategy, stampede_cached};

const KEYS: u64 = 1024;
const TTL: Duration = Duration::from_secs(3600);

/// A lookup under test: given a key, answer from the cache.
trait Contestant: Send + Sync + 'static {
    fn lookup(&self, key: u64) -> impl std::future::Future<Output = u64> + Send;
}

struct Ours(Cache<u64, u64>);
impl Contestant for Ours {
    async fn lookup(&self, key: u64) -> u64 {
        self.0.get_or_load(key, |k| async move { k }).await
    }
}

#[stampede_cached(ttl = "1h", capacity = 10_000, name = "bench.hit.macro")]
async fn ours_macro(key: u64) -> u64 {
    key
}

struct OursMacro;
impl Contestant for OursMacro {
    async fn lookup(&self, key: u64) -> u64 {
        ours_macro(key).await
    }
}

struct QuickGet(quick_cache::sync::Cache<u64, u64>);
impl Contestant for QuickGet {
    async fn lookup(&self, key: u64) -> u64 {
        self.0.get(&key).unwrap_or_default()
    }
}

struct QuickGuard(quick_cache::sync::Cache<u64, u64>);
impl Contestant for QuickGuard {
    async fn lookup(&self, key: u64) -> u64 {
        match self.0.get_value_or_guard_async(&key).await {
            Ok(v) => v,
            Err(guard) => {
                let _ = guard.insert(key);
                key
            }
        }
    }
}

struct Moka(moka::future::Cache<u64, u64>);
impl Contestant for Moka {
    async fn lookup(&self, key: u64) -> u64 {
        self.0.get_with(key, async move { key }).await
    }
}

#[cached(ttl_secs = 3600, max_size = 10_000)]
async fn cached_fn(key: u64) -> u64 {
    key
}

struct CachedMacro;
impl Contestant for CachedMacro {
    async fn lookup(&self, key: u64) -> u64 {
        cached_fn(key).await
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn run_loop<C: Contestant>(c: &C, iters: u64, offset: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..iters {
        acc = acc.wrapping_add(c.lookup(black_box((i + offset) % KEYS)).await);
    }
    acc
}

fn bench_contestant<C: Contestant>(c: &mut Criterion, name: &str, make: impl Fn() -> C) {
    // 1 thread
    {
        let rt = current_thread();
        let contestant = Arc::new(rt.block_on(async {
            let contestant = make();
            run_loop(&contestant, KEYS, 0).await; // fill
            contestant
        }));
        c.benchmark_group("hit/1_thread").bench_function(name, |b| {
            b.iter_custom(|iters| {
                let contestant = contestant.clone();
                rt.block_on(async move {
                    let start = Instant::now();
                    black_box(run_loop(&*contestant, iters, 0).await);
                    start.elapsed()
                })
            })
        });
    }
    // 2 threads
    {
        let rt = two_workers();
        let contestant = Arc::new(rt.block_on(async {
            let contestant = make();
            run_loop(&contestant, KEYS, 0).await;
            contestant
        }));
        c.benchmark_group("hit/2_threads")
            .bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let contestant = contestant.clone();
                    rt.block_on(async move {
                        let barrier = Arc::new(tokio::sync::Barrier::new(2));
                        let tasks: Vec<_> = (0..2u64)
                            .map(|t| {
                                let contestant = contestant.clone();
                                let barrier = barrier.clone();
                                tokio::spawn(async move {
                                    barrier.wait().await;
                                    let start = Instant::now();
                                    black_box(run_loop(&*contestant, iters, t * 512).await);
                                    start.elapsed()
                                })
                            })
                            .collect();
                        let mut slowest = Duration::ZERO;
                        for t in tasks {
                            slowest = slowest.max(t.await.unwrap());
                        }
                        slowest
                    })
                })
            });
    }
}

fn hit_path(c: &mut Criterion) {
    bench_contestant(c, "stampede_cache/get_or_load", || {
        Ours(
            Cache::builder("bench.hit")
                .ttl(TTL)
                .strategy(Strategy::Lock)
                .capacity(10_000)
                .build(),
        )
    });
    bench_contestant(c, "stampede_cache/#[stampede_cached]", || OursMacro);
    bench_contestant(c, "quick_cache/get", || {
        // `get` inserts nothing: pre-fill.
        let cache = quick_cache::sync::Cache::new(10_000);
        for k in 0..KEYS {
            cache.insert(k, k);
        }
        QuickGet(cache)
    });
    bench_contestant(c, "quick_cache/get_value_or_guard_async", || {
        QuickGuard(quick_cache::sync::Cache::new(10_000))
    });
    bench_contestant(c, "moka/get_with", || {
        Moka(
            moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(TTL)
                .build(),
        )
    });
    bench_contestant(c, "cached/#[cached]", || CachedMacro);
}

fn config() -> Criterion {
    // 2 shared cores: keep the run short.
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = hit_path
}
criterion_main!(benches);
