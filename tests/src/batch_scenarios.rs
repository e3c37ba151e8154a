//! Fleet scenarios of batch loading (`get_many_or_load`), written once and
//! run on LocalBackend pods on the paused clock, on one real
//! `redis-server` and on a Redis Cluster (`tests/tests/fleet_batch.rs`).
//!
//! The origin is a [`Table`] that counts, per id, how often it was read:
//! "each key loaded once fleet-wide" is that count, summed over every pod.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_cache::{Cache, SharedBackend};
use tokio::time::sleep;

use crate::bounded;
use crate::scenarios::RepoError;

/// The query latency of the scenarios' table.
pub const QUERY: Duration = Duration::from_millis(50);

/// The rows of a table `id → "row <id> v<version>"`, shared by every pod
/// (it is the one database of the fleet), counting reads per id and queries.
#[derive(Clone, Default)]
pub struct Table {
    reads: Arc<Mutex<HashMap<u32, usize>>>,
    queries: Arc<AtomicUsize>,
    /// Bumped by a write: rows read after it carry the new version.
    version: Arc<AtomicU64>,
    /// Ids with no row.
    absent: Arc<Mutex<Vec<u32>>>,
}

/// A boxed batch query.
pub type Query<V> = Pin<Box<dyn Future<Output = HashMap<u32, V>> + Send>>;

impl Table {
    pub fn row(&self, id: u32) -> String {
        format!("row {id} v{}", self.version.load(SeqCst))
    }

    /// One `WHERE id = ANY($1)`.
    pub async fn query(&self, ids: Vec<u32>) -> HashMap<u32, String> {
        self.queries.fetch_add(1, SeqCst);
        {
            let mut reads = self.reads.lock().unwrap();
            for id in &ids {
                *reads.entry(*id).or_default() += 1;
            }
        }
        sleep(QUERY).await;
        let absent = self.absent.lock().unwrap().clone();
        ids.into_iter()
            .filter(|id| !absent.contains(id))
            .map(|id| (id, self.row(id)))
            .collect()
    }

    /// The batch loader of a pod.
    pub fn loader(&self) -> impl Fn(Vec<u32>) -> Query<String> + Send + Sync + 'static {
        let table = self.clone();
        move |ids| {
            let table = table.clone();
            Box::pin(async move { table.query(ids).await })
        }
    }

    pub fn reads_of(&self, id: u32) -> usize {
        self.reads.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    pub fn queries(&self) -> usize {
        self.queries.load(SeqCst)
    }

    /// A write of the fleet's database: every row is newer from now on.
    pub fn write(&self) {
        self.version.fetch_add(1, SeqCst);
    }
}

/// One cache per pod backend, all of one name.
pub fn pods<V>(name: &str, backends: &[SharedBackend]) -> Vec<Cache<u32, V>>
where
    V: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    backends
        .iter()
        .map(|backend| {
            Cache::builder(name.to_owned())
                .ttl(Duration::from_secs(60))
                .failed_refresh_backoff(Duration::from_secs(1))
                .remote_errors::<RepoError>()
                .backend(backend.clone())
                .build()
        })
        .collect()
}

/// The ids of list request `r` of pod `p`: 10 ids out of 0..40, every
/// request overlapping others (of its pod and of the other pods).
fn list(p: usize, r: usize) -> Vec<u32> {
    (0..10)
        .map(|i| ((p * 7 + r * 3 + i * 4) % 40) as u32)
        .collect()
}

/// Every pod runs `requests` concurrent list requests of 10 overlapping
/// ids, and a few single `get_or_load` callers on the same ids: every id is
/// read from the table once for the whole fleet, every caller gets the row.
pub async fn overlapping_batches_load_each_key_once(
    name: &str,
    backends: &[SharedBackend],
    requests: usize,
) {
    let pods = pods::<String>(name, backends);
    let table = Table::default();
    let mut calls = Vec::new();
    for (p, pod) in pods.iter().enumerate() {
        for r in 0..requests {
            let (pod, table) = (pod.clone(), table.clone());
            calls.push(tokio::spawn(async move {
                let ids = list(p, r);
                let rows = pod.get_many_or_load(ids.clone(), table.loader()).await;
                for id in ids {
                    assert_eq!(rows.get(&id), Some(&table.row(id)), "pod {p}, id {id}");
                }
            }));
        }
        for s in 0..3u32 {
            let (pod, table) = (pod.clone(), table.clone());
            calls.push(tokio::spawn(async move {
                let id = (p as u32 * 5 + s * 11) % 40;
                let row = pod
                    .get_or_load(id, move |id| async move {
                        table.query(vec![id]).await.remove(&id).unwrap()
                    })
                    .await;
                assert!(row.starts_with(&format!("row {id} ")));
            }));
        }
    }
    for call in calls {
        bounded(call).await.expect("a list request completed");
    }
    let asked: std::collections::HashSet<u32> = (0..pods.len())
        .flat_map(|p| (0..requests).flat_map(move |r| list(p, r)))
        .collect();
    for id in asked {
        assert_eq!(
            table.reads_of(id),
            1,
            "id {id} read more than once fleet-wide"
        );
    }
    let batch_calls: u64 = pods.iter().map(|pod| pod.stats().batch_calls).sum();
    assert!(
        table.queries() < pods.len() * requests,
        "{} queries for {} list requests ({batch_calls} batch calls)",
        table.queries(),
        pods.len() * requests
    );
}

/// Pod A's batch reads rows 0..6 while pod B writes row 2 and invalidates
/// it: A's callers get what A read, but the row read before the write is
/// cached nowhere — every pod's next list gets the written row, and only
/// row 2 is read again.
pub async fn a_write_during_a_batch_wins_fleet_wide(
    name: &str,
    backends: &[SharedBackend],
    settle: Duration,
) {
    let pods = pods::<String>(name, backends);
    let table = Table::default();
    let (a, b) = (pods[0].clone(), pods[1].clone());
    let listing = tokio::spawn({
        let table = table.clone();
        async move { a.get_many_or_load(0..6, table.loader()).await }
    });
    sleep(QUERY / 2).await;
    table.write();
    b.invalidate(&2);
    let read = bounded(listing).await.unwrap();
    assert_eq!(read.len(), 6);
    sleep(settle).await;
    for (p, pod) in pods.iter().enumerate() {
        let rows = bounded(pod.get_many_or_load(0..6, table.loader())).await;
        assert_eq!(
            rows[&2],
            table.row(2),
            "pod {p} served row 2 from before the write"
        );
    }
    assert_eq!(table.reads_of(2), 2, "row 2 read again once, fleet-wide");
    assert_eq!(table.reads_of(3), 1, "the other rows landed for the fleet");
}

/// Every pod lists the same ids at once and the query fails: each id is
/// read once for the whole fleet (the pods' locks may split the ids
/// between a few queries, never ask one twice), and every pod's call gets
/// the error (the leader's own, or as another process's failure); nothing
/// is cached.
pub async fn a_failing_batch_answers_every_pod_once(name: &str, backends: &[SharedBackend]) {
    let pods = pods::<String>(name, backends);
    let reads = Arc::new(Mutex::new(HashMap::<u32, usize>::new()));
    let calls: Vec<_> = pods
        .iter()
        .map(|pod| {
            let (pod, reads) = (pod.clone(), reads.clone());
            tokio::spawn(async move {
                pod.try_get_many_or_load(0..5, move |ids: Vec<u32>| {
                    let reads = reads.clone();
                    async move {
                        for id in ids {
                            *reads.lock().unwrap().entry(id).or_default() += 1;
                        }
                        sleep(QUERY).await;
                        Err::<HashMap<u32, String>, _>(RepoError::Down)
                    }
                })
                .await
            })
        })
        .collect();
    for call in calls {
        let result = bounded(call).await.unwrap();
        assert!(
            matches!(result, Err(RepoError::Down | RepoError::Remote(_))),
            "{result:?}"
        );
    }
    let reads = reads.lock().unwrap().clone();
    assert_eq!(
        reads,
        (0..5).map(|id| (id, 1)).collect(),
        "each id read once, fleet-wide"
    );
    for pod in &pods {
        assert!(pod.is_empty());
    }
}

/// Ids without a row are cached as absent (`Option` values) for the whole
/// fleet: pod B's list of the same ids is a hit in the shared tier, not a
/// second query.
pub async fn absent_rows_are_cached_fleet_wide(
    name: &str,
    backends: &[SharedBackend],
    settle: Duration,
) {
    let pods = pods::<Option<String>>(name, backends);
    let table = Table::default();
    table.absent.lock().unwrap().extend([1, 3]);
    let loader = {
        let table = table.clone();
        move |ids: Vec<u32>| {
            let table = table.clone();
            async move { table.query(ids).await }
        }
    };
    let first = bounded(pods[0].get_many_or_load(0..4, loader.clone())).await;
    assert_eq!(first[&1], None);
    assert_eq!(first[&2], Some(table.row(2)));
    sleep(settle).await;
    let second = bounded(pods[1].get_many_or_load(0..4, loader)).await;
    assert_eq!(second, first);
    assert_eq!(
        table.queries(),
        1,
        "pod B read every row, absent ones too, from the shared tier"
    );
}
