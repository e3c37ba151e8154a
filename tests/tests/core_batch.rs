//! Batch loading (`get_many_or_load`) in process, on the paused clock: one
//! loader call for the misses, coalescing with single callers and other
//! batches, `max_batch`, errors, missing keys, cancellation, and every
//! per-key rule (strategies, fail-safe, timeouts, writes win, tags, ttl_for).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_cache::{Cache, LoadTimeout, Strategy};
use stampede_cache_tests::bounded;
use tokio::time::{Instant, advance, sleep};

/// A database table of `id → id * 10`, counting queries and rows, with a
/// query latency.
#[derive(Clone, Default)]
struct Table {
    /// Every query's ids, in call order.
    queries: Arc<Mutex<Vec<Vec<u64>>>>,
    /// Rows loaded per id (batch or single).
    per_id: Arc<Mutex<HashMap<u64, usize>>>,
    /// Ids the table does not have.
    absent: Arc<Mutex<Vec<u64>>>,
    latency: Duration,
    version: Arc<AtomicUsize>,
}

impl Table {
    fn with_latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    fn value(&self, id: u64) -> u64 {
        id * 10 + self.version.load(SeqCst) as u64
    }

    async fn batch(&self, ids: Vec<u64>) -> HashMap<u64, u64> {
        self.queries.lock().unwrap().push(ids.clone());
        for id in &ids {
            *self.per_id.lock().unwrap().entry(*id).or_default() += 1;
        }
        sleep(self.latency).await;
        let absent = self.absent.lock().unwrap().clone();
        ids.into_iter()
            .filter(|id| !absent.contains(id))
            .map(|id| (id, self.value(id)))
            .collect()
    }

    async fn one(&self, id: u64) -> u64 {
        *self.per_id.lock().unwrap().entry(id).or_default() += 1;
        sleep(self.latency).await;
        self.value(id)
    }

    fn loader(&self) -> impl Fn(Vec<u64>) -> futures_like::Fut + Send + Sync + 'static {
        let table = self.clone();
        move |ids| {
            let table = table.clone();
            Box::pin(async move { table.batch(ids).await })
        }
    }

    fn queries(&self) -> Vec<Vec<u64>> {
        self.queries.lock().unwrap().clone()
    }

    fn loads_of(&self, id: u64) -> usize {
        self.per_id.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
}

mod futures_like {
    use std::collections::HashMap;
    use std::future::Future;
    use std::pin::Pin;
    pub type Fut = Pin<Box<dyn Future<Output = HashMap<u64, u64>> + Send>>;
}

fn cache(name: &'static str) -> Cache<u64, u64> {
    Cache::builder(name).ttl(Duration::from_secs(30)).build()
}

fn expected(ids: impl IntoIterator<Item = u64>) -> HashMap<u64, u64> {
    ids.into_iter().map(|id| (id, id * 10)).collect()
}

#[tokio::test(start_paused = true)]
async fn the_misses_of_a_batch_are_one_loader_call_in_the_callers_order() {
    let cache = cache("batch.one_call");
    let table = Table::with_latency(Duration::from_millis(50));
    cache.insert(3, 30);
    let keys = [9, 3, 1, 7, 1, 5];
    let values = bounded(cache.get_many_or_load(keys, table.loader())).await;
    assert_eq!(values, expected([9, 3, 1, 7, 5]));
    // One query, the misses only, each once, in the caller's order.
    assert_eq!(table.queries(), vec![vec![9, 1, 7, 5]]);
    // Now all hits: no query.
    let again = bounded(cache.get_many_or_load(keys, table.loader())).await;
    assert_eq!(again, expected([9, 3, 1, 7, 5]));
    assert_eq!(table.queries().len(), 1);
    let stats = cache.stats();
    assert_eq!((stats.batch_calls, stats.loads, stats.misses), (1, 4, 4));
}

#[tokio::test(start_paused = true)]
async fn batches_and_single_callers_of_overlapping_keys_load_each_key_once() {
    let cache = cache("batch.overlap");
    let table = Table::with_latency(Duration::from_millis(100));
    let mut callers = Vec::new();
    // 20 batches of 10 overlapping keys and 100 single callers, all at once.
    for b in 0..20u64 {
        let (cache, table) = (cache.clone(), table.clone());
        let keys: Vec<u64> = (0..10).map(|i| (b * 3 + i) % 40).collect();
        callers.push(tokio::spawn(async move {
            let values = cache.get_many_or_load(keys.clone(), table.loader()).await;
            assert_eq!(values, expected(keys));
        }));
        tokio::task::yield_now().await;
    }
    for s in 0..100u64 {
        let (cache, table) = (cache.clone(), table.clone());
        callers.push(tokio::spawn(async move {
            let id = (s * 7) % 45;
            let got = cache
                .get_or_load(id, move |id| async move { table.one(id).await })
                .await;
            assert_eq!(got, id * 10);
        }));
    }
    for caller in callers {
        bounded(caller).await.unwrap();
    }
    for id in 0..45 {
        assert_eq!(table.loads_of(id), 1, "key {id} loaded more than once");
    }
    // Far fewer queries than keys: later batches joined earlier flights.
    assert!(table.queries().len() <= 20);
}

#[tokio::test(start_paused = true)]
async fn max_batch_splits_the_misses_into_calls_made_at_once() {
    let cache: Cache<u64, u64> = Cache::builder("batch.max")
        .ttl(Duration::from_secs(30))
        .max_batch(8)
        .build();
    let table = Table::with_latency(Duration::from_secs(1));
    let started = Instant::now();
    let values = bounded(cache.get_many_or_load(0..20, table.loader())).await;
    assert_eq!(values, expected(0..20));
    let sizes: Vec<usize> = table.queries().iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![8, 8, 4]);
    assert_eq!(table.queries().concat(), (0..20).collect::<Vec<_>>());
    // The chunks ran side by side: one latency, not three.
    assert!(started.elapsed() < Duration::from_millis(1100));
    assert_eq!(cache.stats().batch_calls, 3);
}

#[tokio::test(start_paused = true)]
async fn a_loader_error_answers_every_key_of_its_call_and_nothing_is_cached() {
    let cache = cache("batch.error");
    let calls = Arc::new(AtomicUsize::new(0));
    let failing = {
        let calls = calls.clone();
        move |_ids: Vec<u64>| {
            calls.fetch_add(1, SeqCst);
            async move {
                sleep(Duration::from_millis(100)).await;
                Err::<HashMap<u64, u64>, _>("db down")
            }
        }
    };
    let batch = tokio::spawn({
        let cache = cache.clone();
        async move { cache.try_get_many_or_load([1, 2, 3], failing).await }
    });
    tokio::task::yield_now().await;
    // A single caller of key 2 joins the batch's flight and gets its error.
    let single = cache.try_get_or_load(2, |_| async { Ok::<u64, &str>(99) });
    assert_eq!(bounded(single).await, Err("db down"));
    assert_eq!(bounded(batch).await.unwrap(), Err("db down"));
    assert_eq!(calls.load(SeqCst), 1);
    assert!(cache.is_empty());
    // Nothing cached: the next call loads again.
    let table = Table::default();
    assert_eq!(
        bounded(cache.get_many_or_load([1, 2, 3], table.loader())).await,
        expected([1, 2, 3])
    );
    assert_eq!(cache.stats().load_errors, 3);
}

#[tokio::test(start_paused = true)]
async fn a_key_the_loader_leaves_out_is_not_found_and_its_old_value_dropped() {
    let cache = cache("batch.missing");
    let table = Table::with_latency(Duration::from_millis(10));
    assert_eq!(
        bounded(cache.get_many_or_load([1, 2], table.loader())).await,
        expected([1, 2])
    );
    advance(Duration::from_secs(31)).await;
    table.absent.lock().unwrap().push(2);
    let values = bounded(cache.get_many_or_load([1, 2], table.loader())).await;
    assert_eq!(values, expected([1]));
    assert_eq!(cache.get(&2), None, "the deleted row is not served");
    // Not cached: asked again next time.
    let values = bounded(cache.get_many_or_load([2], table.loader())).await;
    assert!(values.is_empty());
    assert_eq!(table.loads_of(2), 3);
}

#[tokio::test(start_paused = true)]
async fn a_single_caller_joining_a_missing_key_loads_it_with_its_own_loader() {
    let cache = cache("batch.missing_single");
    let table = Table::with_latency(Duration::from_millis(100));
    table.absent.lock().unwrap().push(4);
    let batch = tokio::spawn({
        let (cache, table) = (cache.clone(), table.clone());
        async move { cache.get_many_or_load([4, 5], table.loader()).await }
    });
    tokio::task::yield_now().await;
    let single = cache.get_or_load(4, |_| async { 4000 });
    assert_eq!(bounded(single).await, 4000);
    assert_eq!(bounded(batch).await.unwrap(), expected([5]));
    assert_eq!(cache.get(&4), Some(4000));
}

#[tokio::test(start_paused = true)]
async fn an_option_cache_caches_keys_the_loader_leaves_out_as_none() {
    let cache: Cache<u64, Option<String>> = Cache::builder("batch.option").build();
    let calls = Arc::new(AtomicUsize::new(0));
    let loader = {
        let calls = calls.clone();
        move |ids: Vec<u64>| {
            calls.fetch_add(1, SeqCst);
            async move {
                ids.into_iter()
                    .filter(|id| id % 2 == 0)
                    .map(|id| (id, format!("user {id}")))
                    .collect::<HashMap<u64, String>>()
            }
        }
    };
    let values = bounded(cache.get_many_or_load([1, 2, 3], loader.clone())).await;
    assert_eq!(values.len(), 3);
    assert_eq!(values[&1], None);
    assert_eq!(values[&2].as_deref(), Some("user 2"));
    let again = bounded(cache.get_many_or_load([1, 2, 3], loader)).await;
    assert_eq!(again, values);
    assert_eq!(
        calls.load(SeqCst),
        1,
        "absent keys are cached: no second query"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_caller_neither_cancels_nor_repeats_the_batch() {
    let cache = cache("batch.cancel");
    let table = Table::with_latency(Duration::from_secs(1));
    let caller = tokio::spawn({
        let (cache, table) = (cache.clone(), table.clone());
        async move { cache.get_many_or_load(0..10, table.loader()).await }
    });
    sleep(Duration::from_millis(100)).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    // A caller arriving meanwhile joins the running flights.
    let joined = bounded(cache.get_many_or_load(0..10, table.loader())).await;
    assert_eq!(joined, expected(0..10));
    assert_eq!(table.queries().len(), 1);
    assert_eq!(cache.len(), 10, "the cancelled call's values landed");
}

#[tokio::test(start_paused = true)]
async fn swr_serves_stale_keys_at_once_and_refreshes_them_in_one_background_call() {
    let cache: Cache<u64, u64> = Cache::builder("batch.swr")
        .ttl(Duration::from_secs(10))
        .strategy(Strategy::Swr {
            stale: Duration::from_secs(60),
        })
        .build();
    let table = Table::with_latency(Duration::from_secs(1));
    bounded(cache.get_many_or_load(0..6, table.loader())).await;
    advance(Duration::from_secs(11)).await;
    table.version.store(1, SeqCst);
    cache.insert(5, 50); // fresh: not refreshed
    let started = Instant::now();
    let served = bounded(cache.get_many_or_load(0..6, table.loader())).await;
    assert_eq!(started.elapsed(), Duration::ZERO, "nobody waits under swr");
    assert_eq!(served, expected(0..6), "the stale values");
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        table.queries(),
        vec![(0..6u64).collect::<Vec<_>>(), (0..5u64).collect()]
    );
    let refreshed = bounded(cache.get_many_or_load(0..5, table.loader())).await;
    assert_eq!(refreshed, (0..5).map(|id| (id, id * 10 + 1)).collect());
    assert_eq!(cache.stats().background_refreshes, 5);
}

#[tokio::test(start_paused = true)]
async fn xfetch_early_refreshes_of_a_batch_are_one_call_and_nobody_waits() {
    let cache: Cache<u64, u64> = Cache::builder("batch.xfetch")
        .ttl(Duration::from_secs(10))
        .strategy(Strategy::XFetch { beta: 1.0 })
        .build();
    // A 1 s load: every drawn lead is at least 1 s.
    let table = Table::with_latency(Duration::from_secs(1));
    bounded(cache.get_many_or_load(0..4, table.loader())).await;
    advance(Duration::from_millis(9_500)).await;
    table.version.store(1, SeqCst);
    let started = Instant::now();
    let served = bounded(cache.get_many_or_load(0..4, table.loader())).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(served, expected(0..4));
    sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        table.queries().len(),
        2,
        "one early refresh call for the batch"
    );
    let fresh = bounded(cache.get_many_or_load(0..4, table.loader())).await;
    assert_eq!(fresh, (0..4).map(|id| (id, id * 10 + 1)).collect());
    assert_eq!(cache.stats().early_refreshes, 4);
}

#[tokio::test(start_paused = true)]
async fn fail_safe_serves_the_last_good_values_and_throttles_the_down_origin() {
    let cache: Cache<u64, u64> = Cache::builder("batch.fail_safe")
        .ttl(Duration::from_secs(10))
        .fail_safe(Duration::from_secs(600))
        .failed_refresh_backoff(Duration::from_secs(5))
        .build();
    let table = Table::default();
    bounded(cache.get_many_or_load(0..3, table.loader())).await;
    advance(Duration::from_secs(11)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let down = {
        let calls = calls.clone();
        move |_ids: Vec<u64>| {
            calls.fetch_add(1, SeqCst);
            async { Err::<HashMap<u64, u64>, _>("db down") }
        }
    };
    for _ in 0..3 {
        let values = bounded(cache.try_get_many_or_load(0..3, down.clone())).await;
        assert_eq!(values, Ok(expected(0..3)));
    }
    assert_eq!(
        calls.load(SeqCst),
        1,
        "retried once per backoff, not per call"
    );
    assert!(cache.stats().fail_safe_hits >= 3);
}

#[derive(Clone, Debug, PartialEq)]
enum DbError {
    Timeout,
}

impl From<LoadTimeout> for DbError {
    fn from(_: LoadTimeout) -> Self {
        DbError::Timeout
    }
}

#[tokio::test(start_paused = true)]
async fn a_load_timeout_bounds_the_loader_call_for_every_key() {
    let cache: Cache<u64, u64> = Cache::builder("batch.timeout")
        .ttl(Duration::from_secs(10))
        .load_timeout::<DbError>(Duration::from_secs(1))
        .build();
    let hung = |_ids: Vec<u64>| async {
        sleep(Duration::from_secs(3600)).await;
        Ok::<HashMap<u64, u64>, DbError>(HashMap::new())
    };
    let started = Instant::now();
    let result = bounded(cache.try_get_many_or_load(0..5, hung)).await;
    assert_eq!(result, Err(DbError::Timeout));
    assert!(started.elapsed() <= Duration::from_millis(1010));
    assert!(cache.is_empty());
    assert!(cache.stats().load_timeouts >= 5);
}

#[tokio::test(start_paused = true)]
async fn a_soft_timeout_serves_the_fail_safe_values_while_the_batch_goes_on() {
    let cache: Cache<u64, u64> = Cache::builder("batch.soft")
        .ttl(Duration::from_secs(10))
        .fail_safe(Duration::from_secs(600))
        .soft_timeout(Duration::from_millis(100))
        .build();
    let fast = Table::default();
    bounded(cache.get_many_or_load(0..3, fast.loader())).await;
    advance(Duration::from_secs(11)).await;
    let slow = Table::with_latency(Duration::from_secs(2));
    slow.version.store(1, SeqCst);
    let started = Instant::now();
    let values = bounded(cache.get_many_or_load(0..3, slow.loader())).await;
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(
        values,
        expected(0..3),
        "the last good values, at the soft timeout"
    );
    sleep(Duration::from_secs(2)).await;
    assert_eq!(cache.get(&1), Some(11), "the load went on and landed");
}

#[tokio::test(start_paused = true)]
async fn an_invalidate_during_the_batch_keeps_that_key_out_the_others_land() {
    let cache = cache("batch.invalidate");
    let table = Table::with_latency(Duration::from_millis(500));
    let batch = tokio::spawn({
        let (cache, table) = (cache.clone(), table.clone());
        async move { cache.get_many_or_load(0..4, table.loader()).await }
    });
    sleep(Duration::from_millis(100)).await;
    cache.invalidate(&2); // a write of row 2 while the query runs
    assert_eq!(bounded(batch).await.unwrap(), expected(0..4));
    assert_eq!(
        cache.get(&2),
        None,
        "the value read before the write is not cached"
    );
    assert_eq!(cache.get(&1), Some(10));
    assert_eq!(cache.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_tag_invalidation_during_the_batch_keeps_the_tagged_keys_out() {
    let cache: Cache<u64, u64> = Cache::builder("batch.tags")
        .ttl(Duration::from_secs(30))
        .tags(|id: &u64| [format!("org:{}", id % 2)])
        .build();
    let table = Table::with_latency(Duration::from_millis(500));
    let batch = tokio::spawn({
        let (cache, table) = (cache.clone(), table.clone());
        async move { cache.get_many_or_load(0..6, table.loader()).await }
    });
    sleep(Duration::from_millis(100)).await;
    stampede_cache::invalidate_tag("org:1");
    assert_eq!(bounded(batch).await.unwrap(), expected(0..6));
    for id in 0..6 {
        let cached = cache.get(&id).is_some();
        assert_eq!(cached, id % 2 == 0, "key {id}");
    }
}

#[tokio::test(start_paused = true)]
async fn per_entry_ttl_and_jitter_hold_per_key() {
    let cache: Cache<u64, u64> = Cache::builder("batch.ttl_for")
        .ttl(Duration::from_secs(30))
        .ttl_for(|id, _| Duration::from_secs(if *id == 1 { 5 } else { 60 }))
        .jitter(Duration::from_secs(1))
        .build();
    let table = Table::default();
    bounded(cache.get_many_or_load([1, 2], table.loader())).await;
    advance(Duration::from_secs(7)).await;
    assert_eq!(cache.get(&1), None, "5 s (+ ≤1 s jitter) ttl passed");
    assert_eq!(cache.get(&2), Some(20));
}

#[tokio::test(start_paused = true)]
async fn a_loader_panic_reaches_the_batch_caller_and_joined_callers_load_again() {
    let cache = cache("batch.panic");
    let batch = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_many_or_load([1, 2], |_ids: Vec<u64>| async {
                    sleep(Duration::from_millis(100)).await;
                    panic!("bug in the query");
                    #[allow(unreachable_code)]
                    HashMap::<u64, u64>::new()
                })
                .await
        }
    });
    tokio::task::yield_now().await;
    let single = cache.get_or_load(2, |id| async move { id + 1 });
    assert_eq!(
        bounded(single).await,
        3,
        "a joined caller retries once as its own flight"
    );
    let panic = bounded(batch).await.unwrap_err();
    assert!(panic.is_panic());
    // Nothing poisoned.
    let table = Table::default();
    assert_eq!(
        bounded(cache.get_many_or_load([1], table.loader())).await,
        expected([1])
    );
}

#[tokio::test(start_paused = true)]
async fn list_requests_arriving_together_share_one_loader_call() {
    let cache = cache("batch.together");
    let table = Table::with_latency(Duration::from_millis(20));
    let requests: Vec<_> = (0..50u64)
        .map(|r| {
            let (cache, table) = (cache.clone(), table.clone());
            tokio::spawn(async move {
                let ids: Vec<u64> = (r * 4..r * 4 + 4).collect();
                let rows = cache.get_many_or_load(ids.clone(), table.loader()).await;
                assert_eq!(rows, expected(ids));
            })
        })
        .collect();
    for request in requests {
        bounded(request).await.unwrap();
    }
    // 50 requests of 4 distinct ids each, at once: one query of all 200
    // (DataLoader's batching across requests), each request's ids in order.
    assert_eq!(table.queries(), vec![(0..200).collect::<Vec<u64>>()]);
}

#[tokio::test(start_paused = true)]
async fn a_request_arriving_later_makes_its_own_call() {
    let cache = cache("batch.later");
    let table = Table::with_latency(Duration::from_millis(20));
    let first = tokio::spawn({
        let (cache, table) = (cache.clone(), table.clone());
        async move { cache.get_many_or_load([1, 2], table.loader()).await }
    });
    sleep(Duration::from_millis(5)).await;
    // Key 2 is in flight (joined); key 3 is not: a second call, at once —
    // not held back until the first call ends.
    let started = Instant::now();
    let second = bounded(cache.get_many_or_load([2, 3], table.loader())).await;
    assert_eq!(second, expected([2, 3]));
    assert!(started.elapsed() <= Duration::from_millis(20));
    assert_eq!(table.queries(), vec![vec![1, 2], vec![3]]);
    assert_eq!(bounded(first).await.unwrap(), expected([1, 2]));
}

// ---- found in review: each failed before its fix ---------------------------

/// Polls `future` exactly once (it must be pending), keeping it alive.
async fn poll_once<F: std::future::Future + Unpin>(future: &mut F) {
    std::future::poll_fn(|cx| {
        assert!(std::pin::Pin::new(&mut *future).poll(cx).is_pending());
        std::task::Poll::Ready(())
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_batch_call_polled_once_and_then_held_does_not_wedge_its_keys() {
    let cache = cache("review.held");
    let table = Table::with_latency(Duration::from_millis(10));
    let mut held = Box::pin(cache.get_many_or_load([1, 2], table.loader()));
    poll_once(&mut held).await; // its flights started; never polled again, not dropped
    let single = tokio::time::timeout(
        Duration::from_secs(60),
        cache.get_or_load(1, |id| async move { id * 10 }),
    )
    .await;
    assert_eq!(
        single.ok(),
        Some(10),
        "a single caller of key 1 hung on the held call"
    );
    assert_eq!(table.queries(), vec![vec![1, 2]]);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_write_between_two_joined_calls_does_not_ask_a_key_twice_or_lose_its_row() {
    let cache = cache("review.dup");
    let table = Table::with_latency(Duration::from_millis(10));
    let mut x = Box::pin(cache.get_many_or_load([1, 2], table.loader()));
    let mut y = Box::pin(cache.get_many_or_load([2, 3], table.loader()));
    poll_once(&mut x).await; // flights of 1 and 2 started; the gather is open
    cache.invalidate(&2); // a write of row 2: its flight is superseded
    poll_once(&mut y).await; // joins the open gather: a new flight of 2, and 3
    let (x, y) = bounded(async { tokio::join!(x, y) }).await;
    assert_eq!(x, expected([1, 2]));
    assert_eq!(table.queries(), vec![vec![1, 2, 3]], "each key asked once");
    assert_eq!(y, expected([2, 3]), "the row of key 2 exists");
    assert_eq!(
        cache.get(&2),
        Some(20),
        "the flight that started after the write lands"
    );
}

#[tokio::test(start_paused = true)]
async fn keys_retried_after_another_calls_failure_are_one_loader_call() {
    let cache = cache("review.retry_n1");
    let failing = |_ids: Vec<u64>| async {
        sleep(Duration::from_millis(100)).await;
        Err::<HashMap<u64, u64>, _>("db down")
    };
    let first = tokio::spawn({
        let c = cache.clone();
        async move { c.try_get_many_or_load(0..50, failing).await }
    });
    sleep(Duration::from_millis(10)).await;
    let table = Table::default();
    // Joins the 50 failing flights, whose error is not of its type: loads again.
    let values = bounded(cache.get_many_or_load(0..50, table.loader())).await;
    assert_eq!(values, expected(0..50));
    assert_eq!(bounded(first).await.unwrap(), Err("db down"));
    assert_eq!(
        table.queries().len(),
        1,
        "{} queries",
        table.queries().len()
    );
    assert_eq!(cache.stats().coalesced, 50, "counted once per key");
}

#[tokio::test(start_paused = true)]
async fn a_call_that_joined_another_calls_gather_is_not_killed_by_its_loaders_panic() {
    let cache = cache("review.foreign_panic");
    let table = Table::with_latency(Duration::from_millis(10));
    let buggy = tokio::spawn({
        let c = cache.clone();
        async move {
            c.get_many_or_load([1], |_ids: Vec<u64>| async {
                sleep(Duration::from_millis(10)).await;
                panic!("bug in endpoint A's query");
                #[allow(unreachable_code)]
                HashMap::<u64, u64>::new()
            })
            .await
        }
    });
    let innocent = tokio::spawn({
        let (c, t) = (cache.clone(), table.clone());
        async move { c.get_many_or_load([2], t.loader()).await } // same tick: joins A's gather
    });
    assert!(bounded(buggy).await.unwrap_err().is_panic());
    assert_eq!(bounded(innocent).await.ok(), Some(expected([2])));
    assert_eq!(table.queries(), vec![vec![2]], "its own loader, once");
}
