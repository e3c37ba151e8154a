//! `Cache::get_many_or_load`: the call path of a batch — serve what L1
//! has, refresh what the strategy says in one background batch, join the
//! flights already running, start one flight per remaining miss on one
//! shared loader call (`batch.rs`), and wait for them all at once.

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use tokio::time::Instant;

use futures_util::future::join_all;

use crate::batch::{BatchCall, BatchOrigin, BatchRows, Gather};
use crate::cache::{Cache, Waited};
use crate::core::Inner;
use crate::flight::Flight;
use crate::landing::Join;
use crate::load::{ErasedError, Need, Parking};
use crate::strategy::{Decision, Freshness, RefreshReason, decide};

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The values of many keys at once, with every miss loaded by **one**
    /// call of `loader` — the cure for N+1 list endpoints (`WHERE id =
    /// ANY($1)` for the ids the cache does not have).
    ///
    /// Per key, it is exactly [`get_or_load`](Self::get_or_load): fresh
    /// keys are served from the cache; keys whose load is already in flight
    /// (a single call's or another batch's) are joined, not loaded again;
    /// every other key gets its own flight, and all those flights share one
    /// `loader` call (split into calls of at most
    /// [`max_batch`](crate::CacheBuilder::max_batch) keys, made at once —
    /// hence `Fn`). Each key's flight lands on its own, so every rule of
    /// the cache holds per key: the strategy (`swr` stale keys are served
    /// and refreshed together in one background call; XFetch early
    /// refreshes likewise), fail-safe, soft and load timeouts, tags, per-entry
    /// ttl and jitter, writes win (an `invalidate` of one key during the
    /// call keeps that key's value out of the cache, the others land). With
    /// `shared`, each key takes its own fleet lock, so two pods asking
    /// overlapping batches load each key once fleet-wide.
    ///
    /// The loader is given the missing keys in the caller's order, each
    /// once; duplicate keys in `keys` are asked for once. It runs as its own
    /// task: cancelling this call cancels neither the loader nor any key's
    /// flight, and their values still land.
    ///
    /// The result maps every requested key that has a value. A key the
    /// loader leaves out is **not found** (see [`BatchRows`]): it is absent
    /// from the result, nothing is cached for it and its old value is
    /// dropped — or, on a cache of `Option<T>` whose loader returns
    /// `HashMap<K, T>`, it is cached as `None`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::collections::{HashMap, HashSet};
    /// use stampede_cache::Cache;
    ///
    /// let users: Cache<u32, String> = Cache::builder("doc.many").build();
    /// users.insert(1, "cached".into());
    /// let rows = users
    ///     .get_many_or_load([1, 2, 3], |ids: Vec<u32>| async move {
    ///         assert_eq!(ids, [2, 3]); // one query for the misses only
    ///         ids.into_iter().map(|id| (id, format!("user {id}"))).collect::<HashMap<_, _>>()
    ///     })
    ///     .await;
    /// assert_eq!(rows[&1], "cached");
    /// assert_eq!(rows[&3], "user 3");
    /// # }
    /// ```
    ///
    /// # Panics
    /// As [`get_or_load`](Self::get_or_load): if the loader panics (in the
    /// caller whose call started the batch), outside a tokio runtime when a
    /// load must start, and on a timeout without a fail-safe value.
    pub async fn get_many_or_load<I, F, Fut, R>(&self, keys: I, loader: F) -> HashMap<K, V>
    where
        I: IntoIterator<Item = K>,
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: BatchRows<K, V>,
    {
        let infallible = move |keys: Vec<K>| {
            let load = loader(keys);
            async move { Ok::<R, Infallible>(load.await) }
        };
        match self.try_get_many_or_load(keys, infallible).await {
            Ok(values) => values,
            Err(never) => match never {},
        }
    }

    /// [`get_many_or_load`](Self::get_many_or_load) for a fallible loader:
    /// its `Err` answers every key of that loader call (and every caller
    /// waiting on one of them), and nothing is cached for them. A key with a
    /// fail-safe or stale value gets that value instead, as with
    /// [`try_get_or_load`](Self::try_get_or_load). The call returns the
    /// first error among its keys (in the caller's order).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::collections::{HashMap, HashSet};
    /// use stampede_cache::Cache;
    ///
    /// let cache: Cache<u32, u32> = Cache::builder("doc.try_many").build();
    /// let failed = cache
    ///     .try_get_many_or_load([1, 2], |_| async { Err::<HashMap<u32, u32>, _>("db down") })
    ///     .await;
    /// assert_eq!(failed, Err("db down"));
    /// assert!(cache.is_empty());
    /// # }
    /// ```
    pub async fn try_get_many_or_load<I, F, Fut, R, E>(
        &self,
        keys: I,
        loader: F,
    ) -> Result<HashMap<K, V>, E>
    where
        I: IntoIterator<Item = K>,
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: BatchRows<K, V>,
        E: Clone + Send + Sync + 'static,
    {
        self.try_get_many_or_load_with(keys, move || loader).await
    }

    /// [`try_get_many_or_load`](Self::try_get_many_or_load) with a loader
    /// built by `make_loader` only when the call loads or refreshes
    /// something: a call whose keys are all hits clones nothing the loader
    /// captures (see [`get_or_load_with`](Self::get_or_load_with)).
    pub async fn try_get_many_or_load_with<I, M, F, Fut, R, E>(
        &self,
        keys: I,
        make_loader: M,
    ) -> Result<HashMap<K, V>, E>
    where
        I: IntoIterator<Item = K>,
        M: FnOnce() -> F,
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: BatchRows<K, V>,
        E: Clone + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let mut values = HashMap::new();
        let mut misses = Vec::new();
        let mut refreshes = Vec::new();
        let mut asked = HashSet::new();
        let now = crate::clock::now();
        for key in keys {
            if !asked.insert(key.clone()) {
                continue;
            }
            let Some(entry) = inner.entry(&key) else {
                misses.push(key);
                continue;
            };
            match decide(&inner.strategy, Some(&entry.freshness), now) {
                Decision::Serve => inner.counters.hits.incr(),
                Decision::ServeAndRefresh(reason) => {
                    match reason {
                        RefreshReason::Early => inner.counters.hits.incr(),
                        RefreshReason::Stale => inner.counters.stale_hits.incr(),
                    }
                    refreshes.push((key.clone(), reason, entry.freshness));
                }
                Decision::ServeThrottled => inner.count_throttled(&entry.freshness, now),
                Decision::Load => {
                    misses.push(key);
                    continue;
                }
            }
            values.insert(key, entry.value);
        }
        if refreshes.is_empty() && misses.is_empty() {
            return Ok(values);
        }
        let call = erase::<K, V, F, Fut, R, E>(make_loader());
        if !refreshes.is_empty() {
            inner.refresh_batch(&call, refreshes, TypeId::of::<E>());
        }
        if misses.is_empty() {
            return Ok(values);
        }
        inner.counters.misses.add(misses.len());
        // Concurrent list requests share loader calls: this call's misses
        // go into the cache's open gather (see `Gather::join`).
        let (gather, own_loader) = Gather::join(inner, &call);
        let waiting = {
            let _seal = Seal(gather.clone());
            inner.start_batch(&gather, misses, TypeId::of::<E>(), &mut values, true)
        };
        let mut again = Vec::new();
        let answers = join_all(waiting.into_iter().map(|(key, flight, started)| {
            // A flight this call started on another call's loader is, for
            // a panic, a waiter's: that loader's panic is not ours to raise.
            inner.wait_key::<E>(key, flight, started && own_loader)
        }))
        .await;
        for (key, answer) in answers {
            match answer {
                Some(answer) => {
                    if let Some(value) = answer? {
                        values.insert(key, value);
                    }
                }
                None => again.push(key),
            }
        }
        if again.is_empty() {
            return Ok(values);
        }
        // The flights some keys joined ended without an answer for this
        // call (a panic, a dropped task, an error of another call's type):
        // those keys load again, together, in one call of this call's own
        // loader — and once only.
        let gather = Gather::new(inner, call.clone());
        let waiting = {
            let _seal = Seal(gather.clone());
            inner.start_batch(&gather, again, TypeId::of::<E>(), &mut values, false)
        };
        let answers = join_all(
            waiting
                .into_iter()
                .map(|(key, flight, started)| inner.wait_key::<E>(key, flight, started)),
        )
        .await;
        for (key, answer) in answers {
            let Some(answer) = answer else {
                panic!(
                    "stampede-cache `{}`: the load this batch key waited on panicked or was \
                     dropped before it finished (runtime shut down?), 2 time(s) in a row; see the \
                     loader's panic in the log",
                    inner.name
                );
            };
            if let Some(value) = answer? {
                values.insert(key, value);
            }
        }
        Ok(values)
    }
}

/// The user's batch loader behind one erased call (its rows into values
/// per key through [`BatchRows`], its error erased).
fn erase<K, V, F, Fut, R, E>(loader: F) -> BatchCall<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + 'static,
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: BatchRows<K, V>,
    E: Send + Sync + 'static,
{
    let loader = Arc::new(loader);
    Arc::new(move |keys: Vec<K>| {
        let loader = loader.clone();
        Box::pin(async move {
            let requested = keys.clone();
            match loader(keys).await {
                Ok(rows) => Ok(rows.into_rows(&requested)),
                Err(error) => Err(Arc::new(error) as ErasedError),
            }
        })
    })
}

/// Seals a gather (this call's part in it) when dropped: once the call
/// has started every flight it adds, or if starting one panicked (the
/// started ones must not wait forever).
struct Seal<K, V>(Arc<Gather<K, V>>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static;

impl<K, V> Drop for Seal<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        self.0.seal();
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins or starts the flight of every key in `misses`, the started ones
    /// sharing one loader call. Keys that found a value meanwhile go into
    /// `values`; the flights to wait on are returned (with whether this
    /// call started each).
    fn start_batch(
        self: &Arc<Self>,
        gather: &Arc<Gather<K, V>>,
        misses: Vec<K>,
        error_type: TypeId,
        values: &mut HashMap<K, V>,
        first_attempt: bool,
    ) -> Vec<(K, Arc<Flight<V>>, bool)> {
        let mut waiting = Vec::with_capacity(misses.len());
        for key in misses {
            let member = gather.member();
            let parking: Arc<dyn Parking> = member.clone();
            let mut start = Some(BatchOrigin(member));
            let joined =
                self.join_or_start_origin(&key, &mut start, Need::Value, error_type, Some(parking));
            match joined {
                Join::Entry(entry, decision) => {
                    if decision == Decision::ServeThrottled {
                        self.count_throttled(&entry.freshness, Instant::now());
                    }
                    values.insert(key, entry.value);
                }
                Join::Flight(flight, started) => {
                    if !started && first_attempt {
                        self.counters.coalesced.incr();
                    }
                    waiting.push((key, flight, started));
                }
                Join::Skip => unreachable!("a caller that wants a value is never skipped"),
            }
        }
        waiting
    }

    /// Served values that also want a refresh: one background batch for
    /// those whose refresh is not already running.
    fn refresh_batch(
        self: &Arc<Self>,
        call: &BatchCall<K, V>,
        refreshes: Vec<(K, RefreshReason, Freshness)>,
        error_type: TypeId,
    ) {
        let gather = Gather::new(self, call.clone());
        let _seal = Seal(gather.clone());
        for (key, reason, seen) in refreshes {
            let member = gather.member();
            let parking: Arc<dyn Parking> = member.clone();
            let mut start = Some(BatchOrigin(member));
            let need = Need::Refresh(seen);
            if let Join::Flight(_, true) =
                self.join_or_start_origin(&key, &mut start, need, error_type, Some(parking))
            {
                self.counters.background_refreshes.incr();
                if reason == RefreshReason::Early {
                    self.counters.early_refreshes.incr();
                }
            }
        }
        tracing::debug!(cache = %self.name, "batch background refresh started");
    }

    /// What one key of a batch gets from its flight: its value (`None`:
    /// not found), an error — or `None` when the flight ended without an
    /// answer for this call (it loads the key again).
    async fn wait_key<E: Clone + Send + Sync + 'static>(
        self: &Arc<Self>,
        key: K,
        flight: Arc<Flight<V>>,
        started: bool,
    ) -> (K, Option<Result<Option<V>, E>>) {
        let waited_from = Instant::now();
        let outcome = match self.wait(&key, &flight).await {
            Waited::Outcome(outcome) => outcome,
            Waited::SoftTimeout(value) => {
                crate::metrics::waited(&self.name, waited_from.elapsed(), "soft_timeout");
                return (key, Some(Ok(Some(value))));
            }
        };
        let answer = self.answer(&key, outcome, &flight, started, true);
        if let Some(answer) = &answer {
            let how = if answer.is_ok() { "value" } else { "failure" };
            crate::metrics::waited(&self.name, waited_from.elapsed(), how);
        }
        (key, answer)
    }
}
