//! A hit through a `#[stampede_cached]` fn against a direct `Cache::get_or_load` hit, in the
//! same run. Each sample loops N awaits inside one task on a current-thread runtime.
//!
//! `cargo bench -p stampede-cache --bench macro_hit` prints criterion's numbers and then
//! `macro/direct ratio`, from interleaved rounds (median of 15), the figure the issue bounds
//! at 1.15.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use stampede_cache::{Cache, stampede_cached};
use tokio::runtime::Runtime;

#[stampede_cached(ttl = "1h")]
async fn annotated(id: u64) -> u64 {
    id * 2
}

/// A repository as in the README example: a `&self` hit also clones the receiver (an `Arc`).
#[derive(Clone)]
struct Repo {
    _db: Arc<u64>,
}

impl Repo {
    #[stampede_cached(ttl = "1h")]
    async fn method(&self, id: u64) -> u64 {
        id * 2
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

async fn direct_hits(cache: &Cache<u64, u64>, n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        black_box(
            cache
                .get_or_load(black_box(7), |k| async move { k * 2 })
                .await,
        );
    }
    start.elapsed()
}

async fn macro_hits(n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        black_box(annotated(black_box(7)).await);
    }
    start.elapsed()
}

async fn method_hits(repo: &Repo, n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        black_box(repo.method(black_box(7)).await);
    }
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let direct: Cache<u64, u64> = Cache::builder("bench.direct")
        .ttl(Duration::from_secs(3600))
        .build();
    let repo = Repo { _db: Arc::new(1) };
    rt.block_on(async {
        direct.get_or_load(7, |k| async move { k * 2 }).await;
        annotated(7).await;
        repo.method(7).await;
    });

    let mut g = c.benchmark_group("macro_hit");
    g.bench_function("direct Cache::get_or_load", |b| {
        b.iter_custom(|n| rt.block_on(direct_hits(&direct, n)))
    });
    g.bench_function("#[stampede_cached] fn", |b| {
        b.iter_custom(|n| rt.block_on(macro_hits(n)))
    });
    g.bench_function("#[stampede_cached] &self method", |b| {
        b.iter_custom(|n| rt.block_on(method_hits(&repo, n)))
    });
    g.finish();

    // Interleaved rounds in this same run: the ratio the issue asks for.
    const N: u64 = 200_000;
    let (mut d, mut m, mut s) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        d.push(rt.block_on(direct_hits(&direct, N)));
        m.push(rt.block_on(macro_hits(N)));
        s.push(rt.block_on(method_hits(&repo, N)));
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e9 / N as f64
    };
    let (d, m, s) = (median(&mut d), median(&mut m), median(&mut s));
    println!(
        "macro_hit: direct {d:.1} ns, fn {m:.1} ns, &self method {s:.1} ns; macro/direct ratio {:.3} (method {:.3})",
        m / d,
        s / d
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
