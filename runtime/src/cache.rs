//! `Cache`: the API every strategy, the macro and the fleet tier go through,
//! and the call path — decide on the cached entry, serve it, or wait on the
//! key's flight (bounded by the soft timeout, with fail-safe fallbacks).

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::resume_unwind;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::RemoteLoadError;
use crate::core::Inner;
use crate::flight::{Flight, Outcome};
use crate::landing::Join;
use crate::load::{LoadTimeout, Need, NotFound};
use crate::stats::CacheStats;
use crate::store::Entry;
use crate::strategy::{Decision, Freshness, RefreshReason, Strategy, decide};
use crate::tags;

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
/// Loads run as spawned tokio tasks, so calls that load must happen inside a
/// tokio runtime (outside one they panic before registering anything).
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
    pub(crate) inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// What waiting on a flight gave.
pub(crate) enum Waited<V> {
    Outcome(Outcome<V>),
    /// The soft timeout passed while a servable value existed: that value.
    SoftTimeout(V),
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Returns the cached value for `key`, loading it with `loader` when the
    /// strategy says so. Concurrent misses of one key share one load.
    ///
    /// The load is spawned as its own task: cancelling this call does not
    /// cancel it, and its value still lands in the cache for the next caller.
    ///
    /// # Panics
    /// If `loader` panics, the panic is re-raised in the caller that started
    /// the load (unless a fail-safe value stands in for it). Callers that were
    /// waiting on it retry once as a new flight; if that flight panics too,
    /// they panic with a message naming the cache. The key is never left
    /// locked. Outside a tokio runtime, when a load must start. On a cache
    /// with a [`load_timeout`](crate::CacheBuilder::load_timeout), when the load
    /// times out and no fail-safe value exists: use
    /// [`try_get_or_load`](Self::try_get_or_load) there.
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
    /// value served until its stale window ends; with a
    /// [`fail_safe`](crate::CacheBuilder::fail_safe) window, a failed load serves the
    /// last good value instead of the `Err`. A load that ran past the cache's
    /// [`load_timeout`](crate::CacheBuilder::load_timeout) gives `Err(E::from(LoadTimeout))`.
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
        let inner = &self.inner;
        // `Inner::entry`, written out: on the hit path the entry must not be
        // moved through a helper's return (measured: ~27 instructions a hit).
        let mut found = inner.store.get(&key);
        if inner.store.tagged()
            && let Some(entry) = &found
            && entry.tag_epoch < tags::epoch()
        {
            found = found.and_then(|entry| inner.check_tags(&key, entry));
        }
        if let Some(entry) = found {
            // The coarse clock: a hit needs no nanoseconds (see `clock.rs`).
            let now = crate::clock::now();
            match decide(&inner.strategy, Some(&entry.freshness), now) {
                Decision::Serve => {
                    inner.counters.hits.incr();
                    return Ok(entry.value);
                }
                Decision::ServeAndRefresh(reason) => {
                    self.refresh(key, make_loader, reason, entry.freshness);
                    return Ok(entry.value);
                }
                Decision::ServeThrottled => {
                    inner.count_throttled(&entry.freshness, now);
                    return Ok(entry.value);
                }
                Decision::Load => {}
            }
        }
        // Boxed: the miss path's state (flight, soft timeout, retries) would
        // otherwise make every call's future — hits included — several
        // hundred bytes to build and move. A miss already costs a spawn.
        Box::pin(self.load(key, make_loader)).await
    }

    /// The value a call would be served right now without loading (fresh,
    /// stale within the `swr` window, or a fail-safe value while the key's
    /// retry backoff runs), if any. Never loads.
    pub fn get(&self, key: &K) -> Option<V> {
        let entry = self.inner.entry(key)?;
        let decision = decide(
            &self.inner.strategy,
            Some(&entry.freshness),
            crate::clock::now(),
        );
        (decision != Decision::Load).then_some(entry.value)
    }

    /// Puts `value` in the cache as freshly loaded, replacing any entry. A load
    /// of `key` in flight still answers its callers but no longer overwrites
    /// this value. On a `shared` cache the value is written through to the
    /// shared tier.
    pub fn insert(&self, key: K, value: V) {
        let inner = &*self.inner;
        // The user's closures (`tags`, `ttl_for`) run before the flight
        // map's lock is taken: one that calls back into the cache must not
        // find it held.
        crate::clock::watch();
        let tags = inner.tags_of(&key);
        if let Some(tier) = &inner.shared {
            tier.store(&key, &value, tags.clone());
        }
        let tag_epoch = tags::epoch();
        let delta = inner
            .store
            .get(&key)
            .map_or(Duration::ZERO, |e| e.freshness.delta());
        let freshness = inner.written(&key, &value, Instant::now(), delta);
        let mut flights = inner.flights.lock();
        flights.remove(&key);
        inner.store.insert_tagged(
            key,
            Entry {
                value,
                freshness,
                tag_epoch,
            },
            tags,
        );
    }

    /// Drops the entry for `key`, so the next call loads. A load in flight
    /// still answers its callers but its value is not cached, and no
    /// fail-safe ever serves the dropped value. On a `shared` cache it also
    /// deletes the shared copy and tells every process to drop its local one.
    pub fn invalidate(&self, key: &K) {
        let inner = &*self.inner;
        // The tier registers the invalidation as pending first, so a flight
        // that starts once L1 is evicted waits for it instead of reading
        // the old shared value back.
        if let Some(tier) = &inner.shared {
            tier.invalidate(key);
        }
        inner.evict(key);
    }

    /// Drops every entry (and, on a `shared` cache, every shared copy of this cache's keys).
    pub fn invalidate_all(&self) {
        let inner = &*self.inner;
        if let Some(tier) = &inner.shared {
            tier.invalidate_all();
        }
        inner.evict_all();
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
        let mut make_loader = Some(make_loader);
        if let Join::Flight(_, true) =
            self.inner
                .join_or_start(&key, &mut make_loader, Need::Refresh(seen))
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
        let inner = &self.inner;
        inner.counters.misses.incr();
        let mut make_loader = Some(make_loader);
        let mut retries = 0;
        let mut counted_as_coalesced = false;
        loop {
            let (flight, started) = match inner.join_or_start(&key, &mut make_loader, Need::Value) {
                Join::Entry(entry, decision) => {
                    if decision == Decision::ServeThrottled {
                        inner.count_throttled(&entry.freshness, Instant::now());
                    }
                    return Ok(entry.value);
                }
                Join::Flight(flight, started) => (flight, started),
                Join::Skip => unreachable!("a caller that wants a value is never skipped"),
            };
            if !started && !counted_as_coalesced {
                inner.counters.coalesced.incr();
                counted_as_coalesced = true;
            }
            let waited_from = Instant::now();
            let outcome = match inner.wait(&key, &flight).await {
                Waited::Outcome(outcome) => outcome,
                Waited::SoftTimeout(value) => {
                    crate::metrics::waited(&inner.name, waited_from.elapsed(), "soft_timeout");
                    return Ok(value);
                }
            };
            if let Some(answer) = inner.answer(&key, outcome, &flight, started, false) {
                let how = if answer.is_ok() { "value" } else { "failure" };
                crate::metrics::waited(&inner.name, waited_from.elapsed(), how);
                return answer.map(|value| value.expect("only a batch flight finds nothing"));
            }
            if make_loader.is_none() || retries >= MAX_FLIGHT_RETRIES {
                panic!(
                    "stampede-cache `{}`: the load this call waited on panicked or was dropped \
                     before it finished (runtime shut down?), {} time(s) in a row; see the \
                     loader's panic in the log",
                    inner.name,
                    retries + 1
                );
            }
            retries += 1;
        }
    }
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Waits for `flight`; with a soft timeout and a servable value, at most
    /// that long before taking the value instead (the load goes on).
    pub(crate) async fn wait(&self, key: &K, flight: &Flight<V>) -> Waited<V> {
        // The caller's side of the flight, in its request's trace: how long
        // it waited, on which load (its span follows from the load's).
        let span = tracing::info_span!("stampede_cache.wait", cache = %self.name);
        span.follows_from(&flight.span);
        tracing::Instrument::instrument(self.wait_untraced(key, flight), span).await
    }

    async fn wait_untraced(&self, key: &K, flight: &Flight<V>) -> Waited<V> {
        if let Some(soft) = self.soft_timeout
            && self.servable(key, Instant::now()).is_some()
        {
            match tokio::time::timeout(soft, flight.wait()).await {
                Ok(outcome) => return Waited::Outcome(outcome),
                Err(_elapsed) => {
                    if let Some(value) = self.servable(key, Instant::now()) {
                        self.counters.soft_timeouts.incr();
                        self.counters.fail_safe_hits.incr();
                        tracing::debug!(cache = %self.name, after = ?soft, "soft timeout: serving the fail-safe value while the load goes on");
                        return Waited::SoftTimeout(value);
                    }
                }
            }
        }
        Waited::Outcome(flight.wait().await)
    }

    /// What a caller of `key` gets from its flight's `outcome`: its value
    /// (`None`: the batch loader did not return the key), an error this
    /// call can return (a `batch` call takes "not found" too) — or `None` when it must start a flight of its own
    /// (the flight panicked or was dropped, or failed with an error this
    /// call's `E` cannot carry). A flight this call `started` re-raises
    /// its loader's panic here.
    pub(crate) fn answer<E: Clone + 'static>(
        &self,
        key: &K,
        outcome: Outcome<V>,
        flight: &Flight<V>,
        started: bool,
        batch: bool,
    ) -> Option<Result<Option<V>, E>> {
        match outcome {
            Outcome::Loaded(value) => return Some(Ok(Some(value))),
            Outcome::Failed(error) => {
                if let Some(value) = self.stand_in(key) {
                    return Some(Ok(Some(value)));
                }
                if let Some(error) = error.downcast_ref::<E>() {
                    return Some(Err(error.clone()));
                }
                if error.downcast_ref::<NotFound>().is_some() {
                    // A batch caller knows what not found means; a single
                    // caller that joined loads the key with its own loader.
                    return batch.then_some(Ok(None));
                }
                if let Some(timeout) = error.downcast_ref::<LoadTimeout>() {
                    return Some(Err(self.timeout_error::<E>(timeout)));
                }
                if let Some(remote) = error.downcast_ref::<RemoteLoadError>()
                    && let Some(error) = self.remote_error::<E>(remote)
                {
                    return Some(Err(error));
                }
                // A concurrent caller of this key used another error
                // type, or the cache converts remote failures into
                // another type than ours: that error is not ours to
                // return. Load ourselves.
            }
            Outcome::Panicked => {
                if let Some(value) = self.stand_in(key) {
                    return Some(Ok(Some(value)));
                }
                if started {
                    match flight.take_panic() {
                        Some(payload) => resume_unwind(payload),
                        None => panic!("stampede-cache `{}`: the loader panicked", self.name),
                    }
                }
            }
            Outcome::Abandoned => {
                if let Some(value) = self.stand_in(key) {
                    return Some(Ok(Some(value)));
                }
            }
        }
        None
    }

    /// Counts a value served during a retry backoff.
    pub(crate) fn count_throttled(&self, freshness: &Freshness, now: Instant) {
        if freshness.stale_at(now) {
            self.counters.stale_hits.incr();
        } else {
            self.counters.fail_safe_hits.incr();
        }
    }

    /// The caller's error for a timed-out load, through the builder's
    /// `load_timeout::<E>` conversion.
    ///
    /// # Panics
    /// If the cache converts timeouts to another type than this call's `E`
    /// (or `E` is the `Infallible` of `get_or_load`): the call cannot report it.
    fn timeout_error<E: Clone + 'static>(&self, timeout: &LoadTimeout) -> E {
        if let Some(policy) = &self.load_timeout {
            let made = (policy.make_error)(timeout.clone());
            if let Some(error) = made.downcast_ref::<E>() {
                return error.clone();
            }
            if std::any::TypeId::of::<E>() == std::any::TypeId::of::<Infallible>() {
                panic!(
                    "{timeout}, and no fail-safe value exists; get_or_load cannot report a timeout: \
                     call try_get_or_load with the error type `{}`, or give the cache a fail_safe window",
                    policy.error_type
                );
            }
            panic!(
                "{timeout}, and no fail-safe value exists; this call's error type `{}` is not \
                 the `{}` the cache converts timeouts into (CacheBuilder::load_timeout::<{}>)",
                std::any::type_name::<E>(),
                policy.error_type,
                policy.error_type
            );
        }
        panic!("{timeout}")
    }

    /// The caller's error for a load that failed in another process,
    /// through the cache's `remote_errors::<E>` conversion; `None` if this
    /// call's `E` is not that type (the call loads itself instead).
    fn remote_error<E: Clone + 'static>(&self, remote: &RemoteLoadError) -> Option<E> {
        let policy = self.remote.as_ref()?;
        (policy.make_error)(remote.clone())
            .downcast_ref::<E>()
            .cloned()
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
