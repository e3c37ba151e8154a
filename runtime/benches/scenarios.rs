//! Stampede scenarios against the peers, in one run:
//! `cargo bench -p stampede-cache --bench scenarios`.
//!
//! Not a criterion benchmark: each scenario runs once per contestant on a
//! 2-worker tokio runtime and counts what matters — origin (loader) calls,
//! how long callers waited, what they got. It prints one Markdown table per
//! scenario (with ratios against our `lock` row) and writes them to
//! `target/scenarios.md`.
//!
//! Contestants: our `Cache` (`lock`, and `swr` / `xfetch` where expiry is
//! involved), `quick_cache` 0.7 (`get_value_or_guard_async`, with the expiry
//! instant stored next to the value since it has no TTL), `moka` 0.12
//! (`get_with` / `try_get_with`, `time_to_live`), `cached` 4.1 `#[cached]`
//! and `#[cached(sync_writes = "by_key")]`.
//!
//! Scenarios:
//! 1. cold stampede — 1000 callers at once on an empty key, 50 ms loader;
//! 2. expiry under steady load — TTL 200 ms, 50 ms loader, 200 tasks calling
//!    in a loop (1 ms apart) for 2 s;
//! 3. Zipf — 200 tasks × 500 lookups over 10 000 keys (s = 1.0), capacity
//!    2000, 1 ms loader;
//! 4. loader failure — 100 callers on a cold key whose loader fails after 50 ms;
//! 5. leader cancellation — the first caller is cancelled by a 10 ms timeout,
//!    99 others join 1 ms later; 50 ms loader.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cached::proc_macro::cached;
use stampede_cache::{Cache, Strategy, stampede_cached};

type Error = Arc<String>;
type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// A `#[cached]` fn, boxed.
type CachedFn = fn(u64) -> BoxFut<Result<u64, Error>>;

// ---------------------------------------------------------------- the origin

static ORIGIN_CALLS: AtomicU64 = AtomicU64::new(0);
static ORIGIN_DELAY_US: AtomicU64 = AtomicU64::new(50_000);
static ORIGIN_FAILS: AtomicBool = AtomicBool::new(false);

fn set_origin(delay: Duration, fails: bool) {
    ORIGIN_CALLS.store(0, Relaxed);
    ORIGIN_DELAY_US.store(delay.as_micros() as u64, Relaxed);
    ORIGIN_FAILS.store(fails, Relaxed);
}

async fn origin(key: u64) -> Result<u64, Error> {
    ORIGIN_CALLS.fetch_add(1, Relaxed);
    tokio::time::sleep(Duration::from_micros(ORIGIN_DELAY_US.load(Relaxed))).await;
    if ORIGIN_FAILS.load(Relaxed) {
        Err(Arc::new("origin down".to_owned()))
    } else {
        Ok(key * 10)
    }
}

// ------------------------------------------------- cached's memoised fns
// `#[cached]` caches are statics: one fn per (configuration, scenario family);
// scenarios that share a fn use disjoint keys.

#[cached(ttl_secs = 3600, max_size = 100_000)]
async fn cached_long(key: u64) -> Result<u64, Error> {
    origin(key).await
}
#[cached(ttl_millis = 200, max_size = 100_000)]
async fn cached_expiry(key: u64) -> Result<u64, Error> {
    origin(key).await
}
#[cached(ttl_secs = 3600, max_size = 2000)]
async fn cached_zipf(key: u64) -> Result<u64, Error> {
    origin(key).await
}
#[cached(ttl_secs = 3600, max_size = 100_000, sync_writes = "by_key")]
async fn by_key_long(key: u64) -> Result<u64, Error> {
    origin(key).await
}
#[cached(ttl_millis = 200, max_size = 100_000, sync_writes = "by_key")]
async fn by_key_expiry(key: u64) -> Result<u64, Error> {
    origin(key).await
}
#[cached(ttl_secs = 3600, max_size = 2000, sync_writes = "by_key")]
async fn by_key_zipf(key: u64) -> Result<u64, Error> {
    origin(key).await
}

// ---------------------------------------------- our macro, for comparison
#[stampede_cached(ttl = "1h", capacity = 100_000, name = "bench.macro.long")]
async fn ours_macro_long(key: u64) -> Result<u64, Error> {
    origin(key).await
}

// ------------------------------------------------------------ contestants

/// A quick_cache with a TTL done by hand: the expiry instant is stored with
/// the value; an expired entry is removed (if unchanged) and reloaded
/// through `get_value_or_guard_async`, which coalesces the reload.
struct QuickTtl {
    cache: quick_cache::sync::Cache<u64, (u64, Instant)>,
    ttl: Duration,
}

impl QuickTtl {
    async fn get(&self, key: u64) -> Result<u64, Error> {
        loop {
            match self.cache.get_value_or_guard_async(&key).await {
                Ok((v, until)) if Instant::now() < until => return Ok(v),
                Ok((_, until)) => {
                    self.cache.remove_if(&key, |(_, u)| *u == until);
                }
                Err(guard) => {
                    let v = origin(key).await?;
                    let _ = guard.insert((v, Instant::now() + self.ttl));
                    return Ok(v);
                }
            }
        }
    }
}

#[derive(Clone)]
enum Peer {
    Ours(Cache<u64, u64>),
    OursMacro,
    Quick(Arc<QuickTtl>),
    Moka(moka::future::Cache<u64, u64>),
    Cached(CachedFn),
}

impl Peer {
    async fn get(&self, key: u64) -> Result<u64, Error> {
        match self {
            Peer::Ours(c) => c.try_get_or_load(key, origin).await,
            Peer::OursMacro => ours_macro_long(key).await,
            Peer::Quick(q) => q.get(key).await,
            Peer::Moka(m) => m
                .try_get_with(key, origin(key))
                .await
                .map_err(|e: Arc<Error>| (*e).clone()),
            Peer::Cached(f) => f(key).await,
        }
    }
}

fn ours(name: &'static str, strategy: Strategy, ttl: Duration, capacity: usize) -> Peer {
    Peer::Ours(
        Cache::builder(name)
            .ttl(ttl)
            .strategy(strategy)
            .capacity(capacity)
            .build(),
    )
}
fn quick(ttl: Duration, capacity: usize) -> Peer {
    Peer::Quick(Arc::new(QuickTtl {
        cache: quick_cache::sync::Cache::new(capacity),
        ttl,
    }))
}
fn moka(ttl: Duration, capacity: u64) -> Peer {
    Peer::Moka(
        moka::future::Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .build(),
    )
}

/// The contestants of a scenario: (label, peer).
fn peers(
    ttl: Duration,
    capacity: usize,
    family: Family,
    with_refresh: bool,
) -> Vec<(String, Peer)> {
    let mut v = vec![(
        "stampede-cache `lock`".to_owned(),
        ours("bench.lock", Strategy::Lock, ttl, capacity),
    )];
    if with_refresh {
        v.push((
            "stampede-cache `swr` (stale 10 s)".to_owned(),
            ours(
                "bench.swr",
                Strategy::Swr {
                    stale: Duration::from_secs(10),
                },
                ttl,
                capacity,
            ),
        ));
        v.push((
            "stampede-cache `xfetch` (beta 1)".to_owned(),
            ours(
                "bench.xfetch",
                Strategy::XFetch { beta: 1.0 },
                ttl,
                capacity,
            ),
        ));
    }
    if family == Family::Long {
        v.push((
            "stampede-cache `#[stampede_cached]`".to_owned(),
            Peer::OursMacro,
        ));
    }
    v.push((
        "quick_cache `get_value_or_guard_async`".to_owned(),
        quick(ttl, capacity),
    ));
    v.push((
        "moka `get_with`/`try_get_with`".to_owned(),
        moka(ttl, capacity as u64),
    ));
    let (plain, by_key): (CachedFn, CachedFn) = match family {
        Family::Long => (|k| Box::pin(cached_long(k)), |k| Box::pin(by_key_long(k))),
        Family::Expiry => (
            |k| Box::pin(cached_expiry(k)),
            |k| Box::pin(by_key_expiry(k)),
        ),
        Family::Zipf => (|k| Box::pin(cached_zipf(k)), |k| Box::pin(by_key_zipf(k))),
    };
    v.push(("cached `#[cached]`".to_owned(), Peer::Cached(plain)));
    v.push((
        "cached `#[cached(sync_writes = \"by_key\")]`".to_owned(),
        Peer::Cached(by_key),
    ));
    v
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Long,
    Expiry,
    Zipf,
}

// ------------------------------------------------------------- helpers

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ratio(x: f64, ours: f64) -> String {
    if ours == 0.0 {
        if x == 0.0 {
            "=".to_owned()
        } else {
            "∞".to_owned()
        }
    } else {
        format!("{:.2}×", x / ours)
    }
}

struct Table {
    out: String,
}

impl Table {
    fn new(title: &str, note: &str, header: &[&str]) -> Self {
        let mut out = format!(
            "### {title}\n\n{note}\n\n| contestant | {} |\n|:--|",
            header.join(" | ")
        );
        for _ in header {
            out.push_str("--:|");
        }
        out.push('\n');
        Table { out }
    }
    fn row(&mut self, label: &str, cells: &[String]) {
        let _ = writeln!(self.out, "| {label} | {} |", cells.join(" | "));
    }
    fn finish(self) -> String {
        println!("{}", self.out);
        self.out
    }
}

// ------------------------------------------------------------- scenarios

async fn cold_stampede(report: &mut String) {
    const CALLERS: usize = 1000;
    let mut t = Table::new(
        "1. Cold stampede",
        "1000 callers at once on one empty key; loader 50 ms. Ratios against `lock`.",
        &[
            "origin calls",
            "ratio",
            "p50 wait",
            "max wait",
            "wall",
            "ratio",
        ],
    );
    let mut base: Option<(f64, f64)> = None;
    for (label, peer) in peers(Duration::from_secs(3600), 10_000, Family::Long, false) {
        set_origin(Duration::from_millis(50), false);
        let key = 1;
        let start = Instant::now();
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let peer = peer.clone();
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let v = peer.get(key).await;
                    (v, t0.elapsed())
                })
            })
            .collect();
        let mut lat = Vec::new();
        for task in tasks {
            let (v, d) = task.await.unwrap();
            assert_eq!(v.unwrap(), key * 10);
            lat.push(d);
        }
        let wall = start.elapsed();
        lat.sort_unstable();
        let calls = ORIGIN_CALLS.load(Relaxed);
        let (bc, bw) = *base.get_or_insert((calls as f64, wall.as_secs_f64()));
        t.row(
            &label,
            &[
                calls.to_string(),
                ratio(calls as f64, bc),
                ms(pct(&lat, 0.5)),
                ms(*lat.last().unwrap()),
                ms(wall),
                ratio(wall.as_secs_f64(), bw),
            ],
        );
    }
    report.push_str(&t.finish());
}

async fn expiry_under_load(report: &mut String) {
    const TASKS: usize = 200;
    const RUN: Duration = Duration::from_secs(2);
    let ttl = Duration::from_millis(200);
    let mut t = Table::new(
        "2. Expiry under steady load",
        "TTL 200 ms, loader 50 ms, 200 tasks calling one key in a loop (1 ms sleep between calls) for 2 s, \
         starting cold. \"waits > 10 ms\" counts calls, including the cold start (200 waits for everybody). \
         Ratios against `lock`.",
        &[
            "origin calls",
            "calls",
            "waits > 10 ms",
            "ratio",
            "p99 wait",
            "max wait",
        ],
    );
    let mut base = None;
    for (label, peer) in peers(ttl, 10_000, Family::Expiry, true) {
        set_origin(Duration::from_millis(50), false);
        let key = 2;
        let deadline = Instant::now() + RUN;
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let peer = peer.clone();
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        assert_eq!(peer.get(key).await.unwrap(), key * 10);
                        lat.push(t0.elapsed());
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for task in tasks {
            lat.extend(task.await.unwrap());
        }
        lat.sort_unstable();
        let waits = lat
            .iter()
            .filter(|d| **d > Duration::from_millis(10))
            .count();
        let b = *base.get_or_insert(waits as f64);
        t.row(
            &label,
            &[
                ORIGIN_CALLS.load(Relaxed).to_string(),
                lat.len().to_string(),
                waits.to_string(),
                ratio(waits as f64, b),
                ms(pct(&lat, 0.99)),
                ms(*lat.last().unwrap()),
            ],
        );
    }
    report.push_str(&t.finish());
}

/// Inverse-CDF Zipf sampler over `0..n`.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        let u = rng.f64();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1) as u64
    }
}

async fn zipf(report: &mut String) {
    const TASKS: usize = 200;
    const LOOKUPS: usize = 500;
    let zipf = Arc::new(Zipf::new(10_000, 1.0));
    let mut t = Table::new(
        "3. Zipf over 10 000 keys",
        "200 tasks × 500 lookups, keys Zipf(s = 1.0) over 10 000, capacity 2000, loader 1 ms, same seed for everybody. \
         Origin calls above the distinct-miss minimum are duplicate loads. Ratios against `lock`.",
        &[
            "origin calls",
            "ratio",
            "hit ratio",
            "wall",
            "lookups/s",
            "ratio",
        ],
    );
    let mut base = None;
    for (label, peer) in peers(Duration::from_secs(3600), 2000, Family::Zipf, false) {
        set_origin(Duration::from_millis(1), false);
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let peer = peer.clone();
                let zipf = zipf.clone();
                tokio::spawn(async move {
                    let mut rng = fastrand::Rng::with_seed(i as u64);
                    for _ in 0..LOOKUPS {
                        let k = 1_000_000 + zipf.sample(&mut rng);
                        assert_eq!(peer.get(k).await.unwrap(), k * 10);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let wall = start.elapsed();
        let calls = ORIGIN_CALLS.load(Relaxed);
        let total = (TASKS * LOOKUPS) as f64;
        let rate = total / wall.as_secs_f64();
        let (bc, br) = *base.get_or_insert((calls as f64, rate));
        t.row(
            &label,
            &[
                calls.to_string(),
                ratio(calls as f64, bc),
                format!("{:.1} %", 100.0 * (1.0 - calls as f64 / total)),
                ms(wall),
                format!("{:.0}", rate),
                ratio(rate, br),
            ],
        );
    }
    report.push_str(&t.finish());
}

async fn loader_failure(report: &mut String) {
    const CALLERS: usize = 100;
    let mut t = Table::new(
        "4. Loader failure",
        "100 callers at once on a cold key; the loader fails after 50 ms, every time (origin down). \
         Each caller is bounded by a 10 s timeout. Ratios against `lock`.",
        &[
            "origin calls",
            "ratio",
            "callers got Err",
            "timed out",
            "max wait",
            "ratio",
        ],
    );
    let mut base = None;
    for (label, peer) in peers(Duration::from_secs(3600), 10_000, Family::Long, false) {
        set_origin(Duration::from_millis(50), true);
        let key = 3;
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let peer = peer.clone();
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let r = tokio::time::timeout(Duration::from_secs(10), peer.get(key)).await;
                    (r, t0.elapsed())
                })
            })
            .collect();
        let (mut errs, mut timeouts, mut max) = (0, 0, Duration::ZERO);
        for task in tasks {
            let (r, d) = task.await.unwrap();
            match r {
                Ok(Err(_)) => errs += 1,
                Ok(Ok(_)) => panic!("{label}: the origin is down, nobody can get a value"),
                Err(_) => timeouts += 1,
            }
            max = max.max(d);
        }
        let calls = ORIGIN_CALLS.load(Relaxed);
        let (bc, bm) = *base.get_or_insert((calls as f64, max.as_secs_f64()));
        t.row(
            &label,
            &[
                calls.to_string(),
                ratio(calls as f64, bc),
                errs.to_string(),
                timeouts.to_string(),
                ms(max),
                ratio(max.as_secs_f64(), bm),
            ],
        );
    }
    report.push_str(&t.finish());
}

async fn leader_cancelled(report: &mut String) {
    const WAITERS: usize = 99;
    let mut t = Table::new(
        "5. Leader cancellation",
        "The first caller starts the 50 ms load and is cancelled by a 10 ms timeout; 99 callers join 1 ms after it. \
         Target: 1 origin call and waiters done in ≈ the load time. Ratios against `lock`.",
        &[
            "origin calls",
            "ratio",
            "waiters served",
            "p50 wait",
            "max wait",
            "ratio",
        ],
    );
    let mut base = None;
    for (label, peer) in peers(Duration::from_secs(3600), 10_000, Family::Long, false) {
        set_origin(Duration::from_millis(50), false);
        let key = 4;
        let leader = {
            let peer = peer.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_millis(10), peer.get(key))
                    .await
                    .is_err()
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        let tasks: Vec<_> = (0..WAITERS)
            .map(|_| {
                let peer = peer.clone();
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let r = tokio::time::timeout(Duration::from_secs(10), peer.get(key)).await;
                    (r, t0.elapsed())
                })
            })
            .collect();
        let mut lat = Vec::new();
        let mut served = 0;
        for task in tasks {
            let (r, d) = task.await.unwrap();
            if let Ok(Ok(v)) = r {
                assert_eq!(v, key * 10);
                served += 1;
            }
            lat.push(d);
        }
        assert!(
            leader.await.unwrap(),
            "{label}: the leader was meant to time out"
        );
        lat.sort_unstable();
        let calls = ORIGIN_CALLS.load(Relaxed);
        let max = *lat.last().unwrap();
        let (bc, bm) = *base.get_or_insert((calls as f64, max.as_secs_f64()));
        t.row(
            &label,
            &[
                calls.to_string(),
                ratio(calls as f64, bc),
                format!("{served}/{WAITERS}"),
                ms(pct(&lat, 0.5)),
                ms(max),
                ratio(max.as_secs_f64(), bm),
            ],
        );
    }
    report.push_str(&t.finish());
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter is not supported (all run).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let mut report = String::new();
        cold_stampede(&mut report).await;
        expiry_under_load(&mut report).await;
        zipf(&mut report).await;
        loader_failure(&mut report).await;
        leader_cancelled(&mut report).await;
        report
    });
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    let path = std::path::Path::new(&target).join("scenarios.md");
    std::fs::write(&path, report).expect("write scenarios.md");
    println!("tables written to {}", path.display());
}
