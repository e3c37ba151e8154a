//! The N+1 list endpoint, against the alternatives, in one run:
//! `cargo bench -p stampede-cache --bench batch`.
//!
//! 1000 list requests arrive at once, each for 20 ids drawn Zipf(1.0) over
//! 10 000 ids (so they overlap, as real traffic does), on a cold cache. The
//! origin is a simulated database behind a pool of 10 connections: a query
//! holds a connection for 1 ms plus 20 µs per id it reads. Counted: queries,
//! ids read (rows), the requests' p50 / p99 latency and the wall time.
//!
//! Contestants:
//! - `batch`: our `get_many_or_load` — the misses of a request in one query,
//!   ids already loading (for any request) joined;
//! - `per-key`: our `get_or_load` for each id of a request (single flight
//!   per id: each id one query);
//! - `moka per-key`: moka 0.12 `get_with` per id (the same, with moka's
//!   per-key coalescing);
//! - `uncached ANY`: one `WHERE id = ANY($1)` per request, no cache.
//!
//! Prints a Markdown table with ratios against `batch` and writes it to
//! `target/batch.md`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use stampede_cache::Cache;
use tokio::sync::Semaphore;

const REQUESTS: usize = 1000;
const IDS_PER_REQUEST: usize = 20;
const ID_SPACE: usize = 10_000;
const POOL: usize = 10;
const QUERY_BASE: Duration = Duration::from_millis(1);
const PER_ROW: Duration = Duration::from_micros(20);

/// The simulated database: a pool, and counters.
#[derive(Clone)]
struct Db {
    pool: Arc<Semaphore>,
    queries: Arc<AtomicU64>,
    rows: Arc<AtomicU64>,
}

impl Db {
    fn new() -> Self {
        Self {
            pool: Arc::new(Semaphore::new(POOL)),
            queries: Arc::new(AtomicU64::new(0)),
            rows: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `SELECT .. WHERE id = ANY($1)`.
    async fn query(&self, ids: &[u64]) -> HashMap<u64, String> {
        let _connection = self.pool.acquire().await.expect("pool open");
        self.queries.fetch_add(1, Relaxed);
        self.rows.fetch_add(ids.len() as u64, Relaxed);
        tokio::time::sleep(QUERY_BASE + PER_ROW * ids.len() as u32).await;
        ids.iter().map(|&id| (id, format!("user {id}"))).collect()
    }

    async fn one(&self, id: u64) -> String {
        self.query(&[id])
            .await
            .remove(&id)
            .expect("every id has a row")
    }
}

#[path = "../examples/support/zipf.rs"]
mod zipf;

fn zipf_requests(seed: u64) -> Vec<Vec<u64>> {
    let zipf = zipf::Zipf::new(ID_SPACE);
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..REQUESTS)
        .map(|_| {
            (0..IDS_PER_REQUEST)
                .map(|_| zipf.draw(&mut rng) as u64)
                .collect()
        })
        .collect()
}

struct Row {
    name: &'static str,
    queries: u64,
    rows: u64,
    p50: Duration,
    p99: Duration,
    wall: Duration,
}

/// Runs every request at once through `serve` and measures.
async fn run<F, Fut>(name: &'static str, requests: &[Vec<u64>], db: &Db, serve: F) -> Row
where
    F: Fn(Vec<u64>) -> Fut,
    Fut: std::future::Future<Output = HashMap<u64, String>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = requests
        .iter()
        .map(|ids| {
            let expected = ids.len();
            let ids_copy = ids.clone();
            let call = serve(ids.clone());
            tokio::spawn(async move {
                let at = Instant::now();
                let users = call.await;
                assert!(users.len() <= expected);
                assert!(ids_copy.iter().all(|id| users.contains_key(id)));
                at.elapsed()
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(tasks.len());
    for task in tasks {
        latencies.push(task.await.expect("request finished"));
    }
    let wall = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Row {
        name,
        queries: db.queries.load(Relaxed),
        rows: db.rows.load(Relaxed),
        p50: at(0.50),
        p99: at(0.99),
        wall,
    }
}

async fn scenario(requests: &[Vec<u64>]) -> Vec<Row> {
    let mut rows = Vec::new();

    let db = Db::new();
    let cache: Cache<u64, String> = Cache::builder("bench.batch").build();
    rows.push(
        run(
            "stampede-cache batch (`get_many_or_load`)",
            requests,
            &db,
            |ids| {
                let (cache, db) = (cache.clone(), db.clone());
                async move {
                    cache
                        .get_many_or_load(ids, move |missing: Vec<u64>| {
                            let db = db.clone();
                            async move { db.query(&missing).await }
                        })
                        .await
                }
            },
        )
        .await,
    );

    let db = Db::new();
    let cache: Cache<u64, String> = Cache::builder("bench.per_key").build();
    rows.push(
        run(
            "stampede-cache per-key (`get_or_load`)",
            requests,
            &db,
            |ids| {
                let (cache, db) = (cache.clone(), db.clone());
                async move {
                    let each = ids.into_iter().map(|id| {
                        let (cache, db) = (cache.clone(), db.clone());
                        async move {
                            let name = cache
                                .get_or_load(id, move |id| async move { db.one(id).await })
                                .await;
                            (id, name)
                        }
                    });
                    futures_util::future::join_all(each)
                        .await
                        .into_iter()
                        .collect()
                }
            },
        )
        .await,
    );

    let db = Db::new();
    let moka: moka::future::Cache<u64, String> = moka::future::Cache::new(100_000);
    rows.push(
        run("moka per-key (`get_with`)", requests, &db, |ids| {
            let (moka, db) = (moka.clone(), db.clone());
            async move {
                let each = ids.into_iter().map(|id| {
                    let (moka, db) = (moka.clone(), db.clone());
                    async move { (id, moka.get_with(id, async move { db.one(id).await }).await) }
                });
                futures_util::future::join_all(each)
                    .await
                    .into_iter()
                    .collect()
            }
        })
        .await,
    );

    let db = Db::new();
    rows.push(
        run("uncached `ANY` per request", requests, &db, |ids| {
            let db = db.clone();
            async move { db.query(&ids).await }
        })
        .await,
    );
    rows
}

fn table(rows: &[Row], distinct: usize) -> String {
    let base = &rows[0];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{REQUESTS} concurrent list requests × {IDS_PER_REQUEST} ids, Zipf(1.0) over {ID_SPACE} \
         ids ({distinct} distinct), cold cache; database: {POOL} connections, a query holds one \
         for {QUERY_BASE:?} + {PER_ROW:?} per id.\n"
    );
    let _ = writeln!(
        out,
        "| contestant | queries | ids read | p50 | p99 | wall | queries × | p99 × |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} | {:.1} |",
            row.name,
            row.queries,
            row.rows,
            row.p50.as_secs_f64() * 1e3,
            row.p99.as_secs_f64() * 1e3,
            row.wall.as_secs_f64() * 1e3,
            row.queries as f64 / base.queries as f64,
            row.p99.as_secs_f64() / base.p99.as_secs_f64(),
        );
    }
    out
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let requests = zipf_requests(7);
    let distinct = requests
        .iter()
        .flatten()
        .collect::<std::collections::HashSet<_>>()
        .len();
    let rows = runtime.block_on(scenario(&requests));
    let out = table(&rows, distinct);
    println!("{out}");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/batch.md");
    let _ = std::fs::write(target, &out);
}
