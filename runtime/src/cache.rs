//! `Cache`, its builder, and `get_or_load` — the one entry point every
//! strategy, the macro and the fleet tier go through.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::resume_unwind;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{
    L1Evictor, Loaded, Need, OriginLoad, SharedBackend, SharedKey, SharedTier, SharedValue,
    TierFactory, TierSpec,
};
use crate::flight::{CatchUnwind, ErasedError, Flight, Outcome, panic_message};
use crate::stats::{CacheStats, Counters};
use crate::store::{Entry, Store};
use crate::strategy::{Decision, Freshness, RefreshReason, Strategy, decide, uniform_draw};

/// Entries a cache holds when the builder is given no capacity.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Freshness lifetime when the builder is given no TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Lease of the distributed lock of a `shared` cache when none is given; it is
/// renewed while the loader runs, so it only bounds how long a crashed holder
/// blocks the key.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(10);

/// How many times a caller whose flight ended without a value (its loader
/// panicked, or its task was dropped at runtime shutdown) joins a new flight
/// before giving up with a panic.
const MAX_FLIGHT_RETRIES: u32 = 1;

/// A memoising, stampede-proof async cache.
///
/// Every call for a key that has no usable value joins that key's single
/// flight: one detached load runs, all callers await it. What happens at
/// expiry is the [`Strategy`]'s business. Cloning a `Cache` is cheap and
/// shares the entries.
///
/// Loads run as spawned tokio tasks, so calls must happen inside a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use stampede_cache::{Cache, Strategy};
///
/// let cache: Cache<u64, String> = Cache::builder("users.by_id")
///     .ttl(Duration::from_secs(30))
///     .strategy(Strategy::Swr { stale: Duration::from_secs(600) })
///     .capacity(10_000)
///     .build();
/// let name = cache.get_or_load(42, |id| async move { format!("user {id}") }).await;
/// assert_eq!(name, "user 42");
/// assert_eq!(cache.get(&42).as_deref(), Some("user 42"));
/// # }
/// ```
pub struct Cache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K, V> {
    name: Cow<'static, str>,
    ttl: Duration,
    strategy: Strategy,
    store: Store<K, V>,
    flights: Mutex<HashMap<K, Arc<Flight<V>>>>,
    /// Keys whose last background refresh failed, and when the next may start.
    refresh_backoff: Mutex<HashMap<K, Instant>>,
    failed_refresh_backoff: Duration,
    counters: Arc<Counters>,
    shared: Option<Arc<dyn SharedTier<K, V>>>,
}

/// Configures and builds a [`Cache`]; from [`Cache::builder`].
#[must_use = "a builder does nothing until .build()"]
pub struct CacheBuilder<K, V> {
    name: Cow<'static, str>,
    ttl: Duration,
    strategy: Strategy,
    capacity: usize,
    lock_ttl: Duration,
    failed_refresh_backoff: Option<Duration>,
    tier: Option<TierFactory<K, V>>,
    backend: Option<SharedBackend>,
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Freshness lifetime of a loaded value. Default [`DEFAULT_TTL`].
    ///
    /// # Panics
    /// If `ttl` is zero: nothing would ever be served from the cache.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = nonzero(&self.name, "ttl", ttl);
        self
    }

    /// How expiry is handled. Default [`Strategy::Lock`].
    ///
    /// # Panics
    /// If `Strategy::XFetch { beta }` has a `beta` that is not a finite number > 0.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        if let Strategy::XFetch { beta } = strategy {
            assert!(
                beta.is_finite() && beta > 0.0,
                "stampede-cache `{}`: XFetch beta must be a finite number > 0, got {beta}",
                self.name
            );
        }
        self.strategy = strategy;
        self
    }

    /// Upper bound on entries; beyond it the least useful entries are evicted.
    /// Default [`DEFAULT_CAPACITY`].
    ///
    /// # Panics
    /// If `capacity` is zero.
    pub fn capacity(mut self, capacity: usize) -> Self {
        assert!(
            capacity > 0,
            "stampede-cache `{}`: capacity must be at least 1",
            self.name
        );
        self.capacity = capacity;
        self
    }

    /// After a background refresh fails (`swr` serving stale, or an XFetch
    /// early refresh), no new refresh of that key starts for this long; the
    /// current or stale value keeps being served meanwhile. It stops a down
    /// origin from being retried at the request rate. Default: a tenth of the
    /// TTL, between 10 ms and 5 s. Zero retries on the next read.
    pub fn failed_refresh_backoff(mut self, backoff: Duration) -> Self {
        self.failed_refresh_backoff = Some(backoff);
        self
    }

    /// Builds the cache.
    pub fn build(self) -> Cache<K, V> {
        let counters = Arc::new(Counters::default());
        let inner = Arc::new_cyclic(|weak: &Weak<Inner<K, V>>| {
            let l1: Weak<dyn L1Evictor<K>> = weak.clone();
            let shared = self.tier.and_then(|make| {
                make(TierSpec {
                    name: self.name.to_string(),
                    ttl: self.ttl,
                    strategy: self.strategy,
                    lock_ttl: self.lock_ttl,
                    counters: counters.clone(),
                    l1,
                    backend: self.backend,
                })
            });
            Inner {
                name: self.name,
                ttl: self.ttl,
                strategy: self.strategy,
                store: Store::new(self.capacity),
                flights: Mutex::new(HashMap::new()),
                refresh_backoff: Mutex::new(HashMap::new()),
                failed_refresh_backoff: self.failed_refresh_backoff.unwrap_or_else(|| {
                    (self.ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(5))
                }),
                counters,
                shared,
            }
        });
        Cache { inner }
    }
}

impl<K: SharedKey, V: SharedValue> CacheBuilder<K, V> {
    /// Coordinates loads fleet-wide through the installed distributed backend
    /// (see [`install`](crate::install)): one process loads a key, the others
    /// take its value from the shared tier. Without an installed backend the
    /// cache coordinates in process only.
    pub fn shared(mut self) -> Self {
        self.tier = Some(crate::backend::shared_tier::<K, V>);
        self
    }

    /// Like [`shared`](Self::shared), through `backend` instead of the
    /// installed one: for a fleet simulation in one process, tests, or a
    /// cache that lives on another Redis.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use stampede_cache::{Cache, LocalBackend};
    ///
    /// let backend = LocalBackend::new();
    /// let cache: Cache<u32, u32> = Cache::builder("doc.backend").backend(backend).build();
    /// assert!(cache.is_shared());
    /// # }
    /// ```
    pub fn backend(mut self, backend: impl Into<SharedBackend>) -> Self {
        self.backend = Some(backend.into());
        self.shared()
    }

    /// Lease of the distributed lock, renewed while the loader runs; it bounds
    /// how long a crashed holder blocks the key. Default [`DEFAULT_LOCK_TTL`].
    ///
    /// # Panics
    /// If `lock_ttl` is zero.
    pub fn lock_ttl(mut self, lock_ttl: Duration) -> Self {
        self.lock_ttl = nonzero(&self.name, "lock_ttl", lock_ttl);
        self
    }
}

/// `duration`, after checking it is not zero (a builder argument's contract).
fn nonzero(cache: &str, what: &str, duration: Duration) -> Duration {
    assert!(
        !duration.is_zero(),
        "stampede-cache `{cache}`: {what} must be greater than zero"
    );
    duration
}

/// Where a caller stands after looking at the flight map.
enum Join<V> {
    /// A usable value appeared while we were getting there.
    Value(V),
    /// The flight to await, and whether this caller started it.
    Flight(Arc<Flight<V>>, bool),
    /// A refresh is not needed (any more) or already running.
    Skip,
}

/// What kind of flight a caller wants.
#[derive(Clone, Copy)]
enum Want {
    /// The caller has no usable value and will wait.
    Value,
    /// The caller served `seen` and wants it refreshed in the background.
    Refresh(Freshness),
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts configuring a cache. `name` identifies it in stats, tracing and
    /// shared-tier keys: keep it stable across deploys.
    pub fn builder(name: impl Into<Cow<'static, str>>) -> CacheBuilder<K, V> {
        CacheBuilder {
            name: name.into(),
            ttl: DEFAULT_TTL,
            strategy: Strategy::Lock,
            capacity: DEFAULT_CAPACITY,
            lock_ttl: DEFAULT_LOCK_TTL,
            failed_refresh_backoff: None,
            tier: None,
            backend: None,
        }
    }

    /// Returns the cached value for `key`, loading it with `loader` when the
    /// strategy says so. Concurrent misses of one key share one load.
    ///
    /// The load is spawned as its own task: cancelling this call does not
    /// cancel it, and its value still lands in the cache for the next caller.
    ///
    /// # Panics
    /// If `loader` panics, the panic is re-raised in the caller that started
    /// the load. Callers that were waiting on it retry once as a new flight;
    /// if that flight panics too, they panic with a message naming the cache.
    /// The key is never left locked.
    pub async fn get_or_load<F, Fut>(&self, key: K, loader: F) -> V
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.get_or_load_with(key, move || loader).await
    }

    /// Like [`get_or_load`](Self::get_or_load), but the loader is built by
    /// `make_loader` only when this call starts a load. A hit then costs no
    /// clone of what the loader captures (a receiver, a connection pool,
    /// owned copies of arguments): `make_loader` may borrow from the caller.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::sync::Arc;
    /// use stampede_cache::Cache;
    ///
    /// struct Repo { rows: Arc<Vec<String>> }
    /// let repo = Repo { rows: Arc::new(vec!["ada".into(), "grace".into()]) };
    /// let cache: Cache<usize, String> = Cache::builder("doc.with").build();
    /// let name = cache
    ///     .get_or_load_with(1, || {
    ///         let rows = repo.rows.clone(); // only cloned when a load starts
    ///         move |i| async move { rows[i].clone() }
    ///     })
    ///     .await;
    /// assert_eq!(name, "grace");
    /// # }
    /// ```
    pub async fn get_or_load_with<M, F, Fut>(&self, key: K, make_loader: M) -> V
    where
        M: FnOnce() -> F,
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let infallible = move || {
            let loader = make_loader();
            move |key| {
                let load = loader(key);
                async move { Ok::<V, Infallible>(load.await) }
            }
        };
        match self.try_get_or_load_with(key, infallible).await {
            Ok(value) => value,
            Err(never) => match never {},
        }
    }

    /// Like [`get_or_load`](Self::get_or_load) for a fallible loader. `Err`
    /// is never cached; every caller that waited on the failing load gets a
    /// clone of it (hence `E: Clone`; wrap a non-`Clone` error in an `Arc`).
    /// With [`Strategy::Swr`], a failed background refresh keeps the stale
    /// value served until its stale window ends.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use stampede_cache::Cache;
    ///
    /// let cache: Cache<u32, u32> = Cache::builder("doc.try").build();
    /// let failed = cache.try_get_or_load(1, |_| async { Err::<u32, _>("db down") }).await;
    /// assert_eq!(failed, Err("db down"));
    /// let loaded = cache.try_get_or_load(1, |k| async move { Ok::<_, &str>(k + 1) }).await;
    /// assert_eq!(loaded, Ok(2));
    /// # }
    /// ```
    pub async fn try_get_or_load<F, Fut, E>(&self, key: K, loader: F) -> Result<V, E>
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        self.try_get_or_load_with(key, move || loader).await
    }

    /// [`try_get_or_load`](Self::try_get_or_load) with a loader built only
    /// when this call starts a load; see [`get_or_load_with`](Self::get_or_load_with).
    pub async fn try_get_or_load_with<M, F, Fut, E>(&self, key: K, make_loader: M) -> Result<V, E>
    where
        M: FnOnce() -> F,
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        let inner = &*self.inner;
        if let Some(entry) = inner.store.get(&key) {
            match decide(
                &inner.strategy,
                Some(&entry.freshness),
                Instant::now(),
                uniform_draw,
            ) {
                Decision::Serve => {
                    inner.counters.hits.incr();
                    return Ok(entry.value);
                }
                Decision::ServeAndRefresh(reason) => {
                    self.refresh(key, make_loader, reason, entry.freshness);
                    return Ok(entry.value);
                }
                Decision::Load => {}
            }
        }
        self.load(key, make_loader).await
    }

    /// The value a call would be served right now without loading (fresh, or
    /// stale within the `swr` window), if any. Never loads.
    pub fn get(&self, key: &K) -> Option<V> {
        let entry = self.inner.store.get(key)?;
        (Instant::now() < entry.freshness.stale_until).then_some(entry.value)
    }

    /// Puts `value` in the cache as freshly loaded, replacing any entry. A load
    /// of `key` in flight still answers its callers but no longer overwrites
    /// this value. On a `shared` cache the value is written through to the
    /// shared tier.
    pub fn insert(&self, key: K, value: V) {
        let inner = &*self.inner;
        if let Some(tier) = &inner.shared {
            tier.store(&key, &value);
        }
        inner.clear_backoff(&key);
        let mut flights = inner.lock_flights();
        flights.remove(&key);
        let delta = inner
            .store
            .get(&key)
            .map_or(Duration::ZERO, |e| e.freshness.delta);
        let freshness = inner.freshness_from(
            Instant::now(),
            inner.ttl,
            inner.strategy.stale_window(),
            delta,
        );
        inner.store.insert(key, Entry { value, freshness });
    }

    /// Drops the entry for `key`, so the next call loads. A load in flight
    /// still answers its callers but its value is not cached. On a `shared`
    /// cache it also deletes the shared copy and tells every process to drop
    /// its local one.
    pub fn invalidate(&self, key: &K) {
        let inner = &*self.inner;
        inner.evict(key);
        if let Some(tier) = &inner.shared {
            tier.invalidate(key);
        }
    }

    /// Drops every entry (and, on a `shared` cache, every shared copy of this cache's keys).
    pub fn invalidate_all(&self) {
        let inner = &*self.inner;
        inner.evict_all();
        if let Some(tier) = &inner.shared {
            tier.invalidate_all();
        }
    }

    /// Number of entries held, expired ones included until they are evicted or replaced.
    pub fn len(&self) -> usize {
        self.inner.store.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.counters.snapshot()
    }

    /// The cache's name, as given to [`Cache::builder`].
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The cache's freshness lifetime.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The cache's strategy.
    pub fn strategy(&self) -> Strategy {
        self.inner.strategy
    }

    /// Whether loads are coordinated through a distributed backend.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.is_some()
    }

    /// Served a value that also wants a refresh: start one unless one runs.
    fn refresh<M, F, Fut, E>(&self, key: K, make_loader: M, reason: RefreshReason, seen: Freshness)
    where
        M: FnOnce() -> F,
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        let counters = &self.inner.counters;
        match reason {
            RefreshReason::Early => counters.hits.incr(),
            RefreshReason::Stale => counters.stale_hits.incr(),
        }
        if self.inner.backing_off(&key) {
            return;
        }
        let mut make_loader = Some(make_loader);
        if let Join::Flight(_, true) =
            self.join_or_start(&key, &mut make_loader, Want::Refresh(seen))
        {
            counters.background_refreshes.incr();
            if reason == RefreshReason::Early {
                counters.early_refreshes.incr();
            }
            tracing::debug!(cache = %self.inner.name, ?reason, "background refresh started");
        }
    }

    /// No usable value: join the key's flight (or start it) and wait for it.
    async fn load<M, F, Fut, E>(&self, key: K, make_loader: M) -> Result<V, E>
    where
        M: FnOnce() -> F,
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        let inner = &*self.inner;
        inner.counters.misses.incr();
        let mut make_loader = Some(make_loader);
        let mut retries = 0;
        let mut counted_as_coalesced = false;
        loop {
            let (flight, started) = match self.join_or_start(&key, &mut make_loader, Want::Value) {
                Join::Value(value) => return Ok(value),
                Join::Flight(flight, started) => (flight, started),
                Join::Skip => unreachable!("a caller that wants a value is never skipped"),
            };
            if !started && !counted_as_coalesced {
                inner.counters.coalesced.incr();
                counted_as_coalesced = true;
            }
            match flight.wait().await {
                Outcome::Loaded(value) => return Ok(value),
                Outcome::Failed(error) => {
                    if let Some(error) = error.downcast_ref::<E>() {
                        return Err(error.clone());
                    }
                    // A concurrent caller of this key used another error
                    // type; its error is not ours to return. Load ourselves.
                }
                Outcome::Panicked if started => match flight.take_panic() {
                    Some(payload) => resume_unwind(payload),
                    None => panic!("stampede-cache `{}`: the loader panicked", inner.name),
                },
                Outcome::Panicked | Outcome::Abandoned => {}
            }
            if make_loader.is_none() || retries >= MAX_FLIGHT_RETRIES {
                panic!(
                    "stampede-cache `{}`: the load this call waited on panicked or was dropped, \
                     {} time(s) in a row; see the loader's panic in the log",
                    inner.name,
                    retries + 1
                );
            }
            retries += 1;
        }
    }

    /// Joins the key's running flight or, if there is none and one is still
    /// needed, starts it with the loader `make_loader` builds (taken out of the option).
    fn join_or_start<M, F, Fut, E>(
        &self,
        key: &K,
        make_loader: &mut Option<M>,
        want: Want,
    ) -> Join<V>
    where
        M: FnOnce() -> F,
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        let inner = &*self.inner;
        let mut flights = inner.lock_flights();
        if let Some(flight) = flights.get(key) {
            return match want {
                Want::Value => Join::Flight(flight.clone(), false),
                Want::Refresh(_) => Join::Skip,
            };
        }
        // A flight completes by storing its value and leaving the map under
        // this lock, so the store is re-read here: a flight that ended since
        // our first look must not be repeated.
        let current = inner.store.get(key);
        match want {
            Want::Value => {
                if let Some(entry) = current {
                    let now = Instant::now();
                    if decide(&inner.strategy, Some(&entry.freshness), now, || 1.0)
                        != Decision::Load
                    {
                        return Join::Value(entry.value);
                    }
                }
            }
            Want::Refresh(seen) => {
                if current.map(|e| e.freshness) != Some(seen) {
                    return Join::Skip;
                }
            }
        }
        let Some(make_loader) = make_loader.take() else {
            return Join::Skip;
        };
        let loader = make_loader();
        let flight = Arc::new(Flight::new());
        flights.insert(key.clone(), flight.clone());
        drop(flights);
        let need = match want {
            Want::Value => Need::Value,
            Want::Refresh(seen) => Need::Refresh {
                seen_fresh_until: seen.fresh_until,
            },
        };
        self.spawn_load(key.clone(), flight.clone(), loader, need);
        Join::Flight(flight, true)
    }

    /// Runs the flight's load as its own task.
    fn spawn_load<F, Fut, E>(&self, key: K, flight: Arc<Flight<V>>, loader: F, need: Need)
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Clone + Send + Sync + 'static,
    {
        let inner = self.inner.clone();
        let counters = inner.counters.clone();
        let origin_key = key.clone();
        let origin: OriginLoad<V> = Box::pin(async move {
            counters.loads.incr();
            let started = Instant::now();
            let value = loader(origin_key)
                .await
                .map_err(|e| Arc::new(e) as ErasedError)?;
            Ok((value, started.elapsed()))
        });
        tokio::spawn(async move {
            let mut landing = Landing {
                inner,
                key,
                flight,
                refresh: matches!(need, Need::Refresh { .. }),
                landed: false,
            };
            let outcome = match &landing.inner.shared {
                Some(tier) => CatchUnwind::new(tier.load(landing.key.clone(), origin, need)).await,
                None => {
                    let (ttl, stale) = (landing.inner.ttl, landing.inner.strategy.stale_window());
                    CatchUnwind::new(async move {
                        let (value, delta) = origin.await?;
                        Ok(Loaded {
                            value,
                            fresh_for: ttl,
                            stale_for: stale,
                            delta,
                        })
                    })
                    .await
                }
            };
            match outcome {
                Ok(Ok(loaded)) => landing.succeed(loaded),
                Ok(Err(error)) => landing.fail(error),
                Err(payload) => landing.panicked(payload),
            }
        });
    }
}

/// Brings a flight's outcome home: caches a value, releases the key, wakes
/// the callers. If the load task is dropped before that (runtime shutdown,
/// abort), `Drop` still releases the key and wakes them.
struct Landing<K: Hash + Eq, V> {
    inner: Arc<Inner<K, V>>,
    key: K,
    flight: Arc<Flight<V>>,
    /// A background refresh (nobody waits for it) rather than a miss.
    refresh: bool,
    landed: bool,
}

impl<K: Hash + Eq + Clone, V: Clone> Landing<K, V> {
    fn succeed(&mut self, loaded: Loaded<V>) {
        let inner = &*self.inner;
        let freshness = inner.freshness_from(
            Instant::now(),
            loaded.fresh_for,
            loaded.stale_for,
            loaded.delta,
        );
        {
            let mut flights = inner.lock_flights();
            // Invalidated or overwritten while loading: answer the callers, cache nothing.
            if self.still_registered(&flights) {
                flights.remove(&self.key);
                let entry = Entry {
                    value: loaded.value.clone(),
                    freshness,
                };
                inner.store.insert(self.key.clone(), entry);
            }
        }
        if self.refresh {
            inner.clear_backoff(&self.key);
        }
        tracing::debug!(cache = %inner.name, delta_ms = loaded.delta.as_millis() as u64, "loaded");
        self.finish(Outcome::Loaded(loaded.value));
    }

    fn fail(&mut self, error: ErasedError) {
        let inner = &*self.inner;
        inner.counters.load_errors.incr();
        let stale_kept = inner
            .store
            .get(&self.key)
            .is_some_and(|e| Instant::now() < e.freshness.stale_until);
        if self.refresh {
            let backoff = inner.failed_refresh_backoff;
            inner.back_off(self.key.clone(), Instant::now() + backoff);
            tracing::warn!(cache = %inner.name, stale_kept, next_refresh_in = ?backoff, "background refresh failed; the cached value is kept");
        } else {
            tracing::warn!(cache = %inner.name, stale_kept, "load failed; nothing cached");
        }
        self.release();
        self.finish(Outcome::Failed(error));
    }

    fn panicked(&mut self, payload: Box<dyn std::any::Any + Send>) {
        let inner = &*self.inner;
        inner.counters.load_panics.incr();
        tracing::error!(cache = %inner.name, panic = panic_message(&payload), "loader panicked; key released");
        self.release();
        self.flight.store_panic(payload);
        self.finish(Outcome::Panicked);
    }

    fn still_registered(&self, flights: &HashMap<K, Arc<Flight<V>>>) -> bool {
        flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
    }

    /// Takes the flight out of the map (if it is still the key's flight).
    fn release(&self) {
        let mut flights = self.inner.lock_flights();
        if self.still_registered(&flights) {
            flights.remove(&self.key);
        }
    }

    fn finish(&mut self, outcome: Outcome<V>) {
        self.landed = true;
        self.flight.complete(outcome);
    }
}

impl<K: Hash + Eq, V> Drop for Landing<K, V> {
    fn drop(&mut self) {
        if self.landed {
            return;
        }
        {
            let mut flights = self.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.key);
            }
        }
        tracing::warn!(cache = %self.inner.name, "load dropped before it finished (runtime shutdown?); key released");
        self.flight.complete(Outcome::Abandoned);
    }
}

impl<K: Hash + Eq, V> Inner<K, V> {
    /// Whether a refresh of `key` must wait because the last one failed.
    /// Only the refresh path asks: hits never take this lock.
    fn backing_off(&self, key: &K) -> bool {
        let mut backoff = self.lock_backoff();
        match backoff.get(key) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                backoff.remove(key);
                false
            }
            None => false,
        }
    }

    fn back_off(&self, key: K, until: Instant) {
        if until <= Instant::now() {
            return;
        }
        let mut backoff = self.lock_backoff();
        // Keys that failed once and were never read again must not pile up.
        if backoff.len() >= 1024 {
            let now = Instant::now();
            backoff.retain(|_, until| *until > now);
        }
        backoff.insert(key, until);
    }

    fn clear_backoff(&self, key: &K) {
        let mut backoff = self.lock_backoff();
        if !backoff.is_empty() {
            backoff.remove(key);
        }
    }

    fn lock_backoff(&self) -> MutexGuard<'_, HashMap<K, Instant>> {
        self.refresh_backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl<K, V> Inner<K, V> {
    fn lock_flights(&self) -> MutexGuard<'_, HashMap<K, Arc<Flight<V>>>> {
        // Nothing panics while holding this lock in our code; if a user's
        // Hash or Eq did, the map is still consistent, so poisoning is ignored.
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn freshness_from(
        &self,
        now: Instant,
        fresh_for: Duration,
        stale_for: Duration,
        delta: Duration,
    ) -> Freshness {
        let fresh_until = now + fresh_for;
        Freshness {
            fresh_until,
            stale_until: fresh_until + stale_for,
            delta,
        }
    }
}

impl<K, V> L1Evictor<K> for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
{
    fn evict(&self, key: &K) {
        let mut flights = self.lock_flights();
        flights.remove(key);
        self.store.remove(key);
        drop(flights);
        self.clear_backoff(key);
    }

    fn evict_where(&self, matches: &dyn Fn(&K) -> bool) {
        let mut flights = self.lock_flights();
        flights.retain(|key, _| !matches(key));
        self.store.retain(|key| !matches(key));
        drop(flights);
        self.lock_backoff().retain(|key, _| !matches(key));
    }

    fn evict_all(&self) {
        let mut flights = self.lock_flights();
        flights.clear();
        self.store.clear();
        drop(flights);
        self.lock_backoff().clear();
    }
}

impl<K, V> fmt::Debug for Cache<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("ttl", &self.inner.ttl)
            .field("strategy", &self.inner.strategy)
            .field("len", &self.inner.store.len())
            .field("shared", &self.inner.shared.is_some())
            .finish()
    }
}
