//! The stampede, in numbers: `cargo run --release --example demo`.
//!
//! A simulated database whose query latency grows with the number of queries
//! it is running at once (20 ms + 0.4 ms per concurrent query, so 1000 at once
//! take 420 ms each), and 1000 concurrent callers asking it for the same hot
//! key ("today's top products") about every 20 ms, for 3.5 s with a 1 s
//! TTL: three expiries. The cache is warmed before the callers start (and the
//! warm-up is not counted), so the rows differ only in what happens at
//! expiry. The same workload runs once per row:
//!
//! * `no coordination` — get, on a miss query, then insert (what a plain
//!   memoiser such as `cached`'s `#[cached]` does): every caller that sees
//!   the miss queries, the queries slow each other down, the miss lasts
//!   longer, more callers pile in.
//! * `lock`, `xfetch`, `swr` — one `stampede_cache::Cache` per strategy.
//! * `200 pods, in-process locks` — the 1000 callers split over 200 `Cache`
//!   instances (5 callers each), each coordinating only with itself: one
//!   query per pod per expiry.
//! * `200 pods, shared` — the same 200 caches given one shared backend (the
//!   in-memory `LocalBackend`, or Redis with `--redis URL` when built with
//!   `--features redis`): one query per expiry for the whole fleet.
//!
//! It prints a table (DB queries, peak DB concurrency, caller latency
//! percentiles, calls and callers that waited more than 10 ms for a value)
//! and writes an SVG chart
//! of DB concurrency over time per row to `target/stampede-demo.svg`.
//!
//! Options: `--seconds N` (run length per row, default 3.5), `--callers N`
//! (default 1000), `--svg PATH`, `--redis URL` (feature `redis`).

#[path = "demo/svg.rs"]
mod svg;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use stampede_cache::{Cache, LocalBackend, SharedBackend, Strategy};
use tokio::time::Instant;

/// The one hot key every caller asks for.
const KEY: u64 = 1;
/// Freshness lifetime of the cached value.
const TTL: Duration = Duration::from_secs(1);
/// Time between two calls of one caller (plus up to 5 ms of jitter).
const THINK: Duration = Duration::from_millis(20);
/// Base latency of a query on an idle database.
const DB_BASE: Duration = Duration::from_millis(20);
/// Extra latency per query running at the same time.
const DB_PER_CONCURRENT: Duration = Duration::from_micros(400);
/// Sampling period of the concurrency timeline.
const SAMPLE: Duration = Duration::from_millis(10);
/// A call that took longer than this "waited" for the database.
const WAITED: Duration = Duration::from_millis(10);
/// Pods in the fleet rows.
const PODS: usize = 200;

/// A database that slows down with load.
#[derive(Default)]
struct SimDb {
    running: AtomicUsize,
    /// Highest `running` since the sampler last looked.
    window_peak: AtomicUsize,
    peak: AtomicUsize,
    queries: AtomicU64,
}

impl SimDb {
    async fn query(&self, key: u64) -> u64 {
        let n = self.running.fetch_add(1, Relaxed) + 1;
        self.window_peak.fetch_max(n, Relaxed);
        self.peak.fetch_max(n, Relaxed);
        self.queries.fetch_add(1, Relaxed);
        tokio::time::sleep(DB_BASE + DB_PER_CONCURRENT * n as u32).await;
        self.running.fetch_sub(1, Relaxed);
        key * 1000
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    NoCoordination,
    Lock,
    XFetch,
    Swr,
    PodsLocal,
    PodsShared,
    PodsRedis,
}

impl Row {
    fn label(self) -> &'static str {
        match self {
            Row::NoCoordination => "no coordination",
            Row::Lock => "lock",
            Row::XFetch => "xfetch (beta 1)",
            Row::Swr => "swr (stale 10s)",
            Row::PodsLocal => "200 pods, in-process locks",
            Row::PodsShared => "200 pods, shared (LocalBackend)",
            Row::PodsRedis => "200 pods, shared (Redis)",
        }
    }
}

/// How the callers of one row reach the database.
#[derive(Clone)]
enum Front {
    /// Get, query on a miss, insert: no coordination at all.
    Plain(Cache<u64, u64>),
    /// `get_or_load` on one cache per pod (one pod = one cache).
    Caches(Arc<Vec<Cache<u64, u64>>>),
}

impl Front {
    async fn call(&self, caller: usize, db: &Arc<SimDb>) -> u64 {
        match self {
            Front::Plain(cache) => match cache.get(&KEY) {
                Some(v) => v,
                None => {
                    let v = db.query(KEY).await;
                    cache.insert(KEY, v);
                    v
                }
            },
            Front::Caches(pods) => {
                let cache = &pods[caller % pods.len()];
                let db = db.clone();
                cache
                    .get_or_load(KEY, move |k| async move { db.query(k).await })
                    .await
            }
        }
    }
}

struct Outcome {
    row: Row,
    queries: u64,
    peak: usize,
    calls: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    waited: usize,
    callers_waited: usize,
    timeline: Vec<usize>,
}

fn cache(name: &str, strategy: Strategy) -> Cache<u64, u64> {
    Cache::builder(name.to_owned())
        .ttl(TTL)
        .strategy(strategy)
        .capacity(16)
        .build()
}

fn front(row: Row, backend: &Backend) -> Front {
    match row {
        Row::NoCoordination => Front::Plain(cache("demo.plain", Strategy::Lock)),
        Row::Lock => Front::Caches(Arc::new(vec![cache("demo.lock", Strategy::Lock)])),
        Row::XFetch => Front::Caches(Arc::new(vec![cache(
            "demo.xfetch",
            Strategy::XFetch { beta: 1.0 },
        )])),
        Row::Swr => Front::Caches(Arc::new(vec![cache(
            "demo.swr",
            Strategy::Swr {
                stale: Duration::from_secs(10),
            },
        )])),
        Row::PodsLocal => Front::Caches(Arc::new(
            (0..PODS)
                .map(|_| cache("demo.pods", Strategy::Lock))
                .collect(),
        )),
        Row::PodsShared | Row::PodsRedis => {
            let backend = backend.clone().expect("a shared backend for the fleet row");
            // A fresh name per run: a Redis may still hold the last run's value.
            let name = format!("demo.fleet.{}", fastrand::u64(..));
            Front::Caches(Arc::new(
                (0..PODS)
                    .map(|_| {
                        Cache::builder(name.clone())
                            .ttl(TTL)
                            .strategy(Strategy::Lock)
                            .capacity(16)
                            .backend(backend.clone())
                            .build()
                    })
                    .collect(),
            ))
        }
    }
}

/// The shared backend of the fleet row: every pod's `Cache` gets a clone.
type Backend = Option<SharedBackend>;

#[cfg(feature = "redis")]
async fn redis_backend(url: &str) -> SharedBackend {
    match stampede_cache::redis::RedisBackend::connect(url).await {
        Ok(redis) => redis.into(),
        Err(e) => {
            eprintln!("cannot connect to Redis at {url}: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(not(feature = "redis"))]
async fn redis_backend(_url: &str) -> SharedBackend {
    eprintln!(
        "--redis needs the `redis` feature: \
         cargo run --release --features redis --example demo -- --redis URL"
    );
    std::process::exit(2);
}

async fn run(
    row: Row,
    callers: usize,
    length: Duration,
    backend: &Backend,
    step: (usize, usize),
) -> Outcome {
    let db = Arc::new(SimDb::default());
    let front = front(row, backend);
    // Warm every cache (every pod), then forget the warm-up queries.
    let warmups: Vec<_> = (0..callers.min(PODS))
        .map(|caller| {
            let (front, db) = (front.clone(), db.clone());
            tokio::spawn(async move { front.call(caller, &db).await })
        })
        .collect();
    for warmup in warmups {
        warmup.await.expect("warm-up panicked");
    }
    db.queries.store(0, Relaxed);
    db.peak.store(0, Relaxed);
    db.window_peak.store(0, Relaxed);
    let start = Instant::now();
    let deadline = start + length;

    let sampler = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut timeline = Vec::new();
            let mut tick = tokio::time::interval(SAMPLE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let running = db.running.load(Relaxed);
                timeline.push(db.window_peak.swap(running, Relaxed).max(running));
                if Instant::now() >= deadline && running == 0 {
                    return timeline;
                }
            }
        })
    };

    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let db = db.clone();
            let front = front.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(length.as_millis() as usize / 20 + 8);
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let v = front.call(caller, &db).await;
                    latencies.push(t0.elapsed());
                    assert_eq!(v, KEY * 1000);
                    let jitter = Duration::from_micros(fastrand::u64(0..5_000));
                    tokio::time::sleep(THINK + jitter).await;
                }
                latencies
            })
        })
        .collect();

    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let done = (start.elapsed().as_secs_f64() / length.as_secs_f64()).min(1.0);
            let bar = (done * 30.0) as usize;
            eprint!(
                "\r[{}/{}] {:<31} [{}{}] {:>3.0}%",
                step.0,
                step.1,
                row.label(),
                "#".repeat(bar),
                ".".repeat(30 - bar),
                done * 100.0
            );
            let _ = std::io::stderr().flush();
        }
    });

    let mut all = Vec::new();
    let mut callers_waited = 0;
    for t in tasks {
        let latencies = t.await.expect("caller panicked");
        callers_waited += usize::from(latencies.iter().any(|d| *d > WAITED));
        all.extend(latencies);
    }
    progress.abort();
    let timeline = sampler.await.expect("sampler panicked");
    eprint!("\r{:80}\r", "");
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
    Outcome {
        row,
        queries: db.queries.load(Relaxed),
        peak: db.peak.load(Relaxed),
        calls: all.len(),
        p50: pct(0.50),
        p99: pct(0.99),
        max: *all.last().unwrap(),
        waited: all.iter().filter(|d| **d > WAITED).count(),
        callers_waited,
        timeline,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn print_table(outcomes: &[Outcome], callers: usize, length: Duration) {
    println!(
        "\n{callers} callers, one hot key, TTL {} s, {} s per row; DB latency 20 ms + 0.4 ms per concurrent query\n",
        TTL.as_secs_f64(),
        length.as_secs_f64()
    );
    println!(
        "| {:<31} | {:>10} | {:>7} | {:>8} | {:>8} | {:>8} | {:>7} | {:>17} | {:>19} |",
        "strategy",
        "DB queries",
        "peak DB",
        "p50",
        "p99",
        "max",
        "calls",
        "calls waited>10ms",
        "callers waited>10ms"
    );
    println!(
        "|{:-<33}|{:->12}|{:->9}|{:->10}|{:->10}|{:->10}|{:->9}|{:->19}|{:->21}|",
        ":", ":", ":", ":", ":", ":", ":", ":", ":"
    );
    for o in outcomes {
        println!(
            "| {:<31} | {:>10} | {:>7} | {:>8} | {:>8} | {:>8} | {:>7} | {:>17} | {:>19} |",
            o.row.label(),
            o.queries,
            o.peak,
            ms(o.p50),
            ms(o.p99),
            ms(o.max),
            o.calls,
            o.waited,
            o.callers_waited
        );
    }
}

struct Args {
    seconds: f64,
    callers: usize,
    svg: String,
    redis: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        seconds: 3.5,
        callers: 1000,
        svg: "target/stampede-demo.svg".to_owned(),
        redis: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => args.seconds = value().parse().expect("--seconds N"),
            "--callers" => args.callers = value().parse().expect("--callers N"),
            "--svg" => args.svg = value(),
            "--redis" => args.redis = Some(value()),
            "-h" | "--help" => {
                println!("usage: demo [--seconds N] [--callers N] [--svg PATH] [--redis URL]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}; try --help"),
        }
    }
    args
}

#[tokio::main]
async fn main() {
    let args = args();
    let length = Duration::from_secs_f64(args.seconds);
    let (fleet_row, fleet): (Row, SharedBackend) = match &args.redis {
        Some(url) => (Row::PodsRedis, redis_backend(url).await),
        None => (Row::PodsShared, LocalBackend::new().into()),
    };
    let rows = [
        Row::NoCoordination,
        Row::Lock,
        Row::XFetch,
        Row::Swr,
        Row::PodsLocal,
        fleet_row,
    ];
    let mut outcomes = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let backend = (*row == fleet_row).then(|| fleet.clone());
        outcomes.push(run(*row, args.callers, length, &backend, (i + 1, rows.len())).await);
    }
    print_table(&outcomes, args.callers, length);

    let series: Vec<svg::Series> = outcomes
        .iter()
        .map(|o| svg::Series {
            label: o.row.label().to_owned(),
            queries: o.queries,
            points: o.timeline.clone(),
        })
        .collect();
    let chart = svg::chart(&series, SAMPLE, TTL);
    if let Some(dir) = std::path::Path::new(&args.svg).parent() {
        std::fs::create_dir_all(dir).expect("create the chart's directory");
    }
    std::fs::write(&args.svg, chart).expect("write the chart");
    let shown = std::fs::canonicalize(&args.svg).unwrap_or_else(|_| args.svg.clone().into());
    println!("\nchart of DB concurrency over time: {}", shown.display());
}
