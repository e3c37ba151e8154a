//! Starting and landing a flight: joining the key's flight or registering
//! and spawning a new one (together, so a flight is never orphaned), the
//! origin call bounded by `load_timeout`, and the [`Landing`] that brings
//! the outcome home — caches a value only while it is still the key's
//! flight, throttles retries after a failure, and releases the key however
//! the task ends.
//!
//! The load runs as its own spawned task. Callers — the one that started it
//! included — only await its outcome, so a caller that is cancelled, slow or
//! never polled can neither cancel nor stall the load (the failure of moka
//! #240 and of crates whose flights die with their leader).
//!
//! A flight can never be orphaned: it is registered and its task spawned
//! together, and the `Landing` that releases the key is created at
//! registration and owned by the task from then on. A call outside a
//! runtime panics before anything is registered; a loader factory that
//! panics, a task dropped before its first poll (its runtime shut down, as
//! per-test runtimes sharing a static cache do) or during its load all drop
//! the `Landing`, which releases the key and wakes the waiters to retry.

use std::any::TypeId;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Loaded, OriginLoad, Want};
use crate::core::Inner;
use crate::flight::{Flight, FlightMap, Outcome};
use crate::load::{
    CatchUnwind, ErasedError, LoadTimeout, Need, NotFound, PanicPayload, Parking, panic_message,
};
use crate::store::Entry;
use crate::strategy::{Decision, Freshness, Windows, after, decide};
use crate::tags::{self, Tags};

/// Where a caller stands after looking at the flight map.
pub(crate) enum Join<V> {
    /// A usable entry appeared while we were getting there (a flight just
    /// landed), with what the strategy says of it.
    Entry(Entry<V>, Decision),
    /// The flight to await, and whether this caller started it.
    Flight(Arc<Flight<V>>, bool),
    /// A refresh is not needed (any more) or already running.
    Skip,
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins the key's running flight or, if there is none and one is still
    /// needed, starts it with the loader `make_loader` builds (taken out of
    /// the option).
    ///
    /// # Panics
    /// Outside a tokio runtime, when a load must start — before anything is
    /// registered, so the key stays usable.
    pub(crate) fn join_or_start<M, F, Fut, E>(
        self: &Arc<Self>,
        key: &K,
        make_loader: &mut Option<M>,
        need: Need,
    ) -> Join<V>
    where
        M: FnOnce() -> F,
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let mut start = make_loader.take().map(UserLoader);
        let joined = self.join_or_start_origin(key, &mut start, need, TypeId::of::<E>(), None);
        // Not started: the caller keeps its factory (a retry may need it).
        *make_loader = start.map(|UserLoader(make_loader)| make_loader);
        joined
    }

    /// [`join_or_start`](Self::join_or_start) for any origin (`start`
    /// builds it, taken out of the option only when a flight starts): a
    /// user's loader, or one key's share of a batch (`parking` then lets
    /// the batch know when this flight waits on another process).
    /// `error_type` is the `TypeId` of the starting call's error type.
    pub(crate) fn join_or_start_origin<S: StartOrigin<K, V>>(
        self: &Arc<Self>,
        key: &K,
        start: &mut Option<S>,
        need: Need,
        error_type: TypeId,
        parking: Option<Arc<dyn Parking>>,
    ) -> Join<V> {
        crate::clock::watch();
        // The user's `tags` closure runs before the lock is taken (it may
        // call back into the cache); for a caller that only joins it is
        // wasted work, but a miss already costs a spawn.
        let tags = self.tags_of(key);
        let mut flights = self.flights.lock();
        if let Some(flight) = flights.get(key) {
            return match need {
                Need::Value => Join::Flight(flight.clone(), false),
                Need::Refresh(_) => Join::Skip,
            };
        }
        // A flight completes by storing its value and leaving the map under
        // this lock, so the store is re-read here: a flight that ended since
        // our first look must not be repeated.
        let current = self.entry_locked(key, &flights);
        match need {
            Need::Value => {
                if let Some(entry) = current {
                    let decision = decide(&self.strategy, Some(&entry.freshness), Instant::now());
                    if decision != Decision::Load {
                        return Join::Entry(entry, decision);
                    }
                }
            }
            Need::Refresh(seen) => {
                if current.map(|e| e.freshness) != Some(seen) {
                    return Join::Skip;
                }
            }
        }
        let Some(start) = start.take() else {
            return Join::Skip;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(flights);
            panic!(
                "stampede-cache `{}`: a load must start, but this call is not inside a tokio \
                 runtime (loads run as spawned tasks). Call it from async code running on a \
                 tokio runtime (e.g. under #[tokio::main] or Runtime::block_on); nothing was \
                 registered, the key stays usable",
                self.name
            );
        };
        let tag_epoch = tags::epoch();
        // A child of the starting caller's span (its request's trace shows
        // the load); fields are only computed when the span is enabled.
        let span = tracing::info_span!(
            "stampede_cache.load",
            cache = %self.name,
            key = key_hash(key),
            strategy = ?self.strategy,
            refresh = matches!(need, Need::Refresh(_)),
            role = tracing::field::Empty,
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        if self.shared.is_none() {
            span.record("role", "local");
        }
        let flight = Arc::new(Flight::traced(tags.clone(), span.clone()));
        flights.insert(key.clone(), flight.clone());
        drop(flights);
        // From here on the landing owns the registration: however this
        // flight ends — loader factory panics, task never polled, task
        // dropped mid-load — dropping it releases the key and wakes the waiters.
        let landing = Landing {
            inner: self.clone(),
            key: key.clone(),
            flight: flight.clone(),
            need,
            gaps_at_start: self.gaps.load(Ordering::Relaxed),
            tags,
            tag_epoch,
            remote_errors: self
                .remote
                .is_some_and(|policy| policy.error_type == error_type),
            parking,
            started: Instant::now(),
            landed: false,
        };
        let origin = start.start(self, key.clone());
        // A runtime that is shutting down drops the task unpolled: the
        // landing inside it releases the key.
        runtime.spawn(tracing::Instrument::instrument(landing.run(origin), span));
        Join::Flight(flight, true)
    }

    /// The origin call of a flight: the user's loader, counted, timed, and
    /// bounded by `load_timeout` (its future is dropped when the bound passes).
    pub(crate) fn origin<F, Fut, E>(&self, key: K, loader: F) -> OriginLoad<V>
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let counters = self.counters.clone();
        let bound = self
            .load_timeout
            .as_ref()
            .map(|policy| (policy.bound, Arc::<str>::from(&*self.name)));
        let name = Arc::<str>::from(&*self.name);
        Box::pin(async move {
            counters.loads.incr();
            let started = Instant::now();
            let mut timer = crate::metrics::LoadTimer::start(name, false);
            let load = loader(key);
            let result = match bound {
                None => load.await,
                Some((bound, cache)) => match tokio::time::timeout(bound, load).await {
                    Ok(result) => result,
                    Err(_elapsed) => {
                        counters.load_timeouts.incr();
                        timer.end("timeout");
                        let timeout = LoadTimeout::new(&cache, bound);
                        return Err(Arc::new(timeout) as ErasedError);
                    }
                },
            };
            timer.end(if result.is_ok() { "ok" } else { "error" });
            let value = result.map_err(|e| Arc::new(e) as ErasedError)?;
            Ok((value, started.elapsed()))
        })
    }
}

/// A key's hash for spans: stable within a build, never the key itself
/// (keys may be personal data).
fn key_hash<K: Hash>(key: &K) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// What a flight's origin is built from, once the flight starts.
pub(crate) trait StartOrigin<K, V> {
    fn start(self, inner: &Inner<K, V>, key: K) -> OriginLoad<V>;
}

/// A single call's loader factory (`get_or_load_with`'s `make_loader`).
pub(crate) struct UserLoader<M>(pub M);

impl<K, V, M, F, Fut, E> StartOrigin<K, V> for UserLoader<M>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    M: FnOnce() -> F,
    F: FnOnce(K) -> Fut + Send + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
    E: Send + Sync + 'static,
{
    fn start(self, inner: &Inner<K, V>, key: K) -> OriginLoad<V> {
        inner.origin(key, (self.0)())
    }
}

/// Brings a flight's outcome home: caches a value, releases the key, wakes
/// the callers. Created when the flight is registered; if it is dropped
/// before it lands (loader factory panicked, task never polled or dropped
/// mid-load), `Drop` releases the key and wakes the callers to retry.
pub(crate) struct Landing<K: Hash + Eq, V> {
    inner: Arc<Inner<K, V>>,
    key: K,
    flight: Arc<Flight<V>>,
    need: Need,
    /// `Inner::gaps` when the flight started: after a notice gap, it caches nothing.
    gaps_at_start: u64,
    /// The entry's tags, and the tag epoch the load started at.
    tags: Option<Tags>,
    tag_epoch: u64,
    /// Whether the starting call can return another process's failure
    /// (see `Want::remote_errors`).
    remote_errors: bool,
    /// The batch this flight belongs to, if any (see `Want::parking`).
    parking: Option<Arc<dyn Parking>>,
    /// When the flight started (its span's `duration_ms`).
    started: Instant,
    /// Set once the outcome is published; `Drop` does nothing then.
    landed: bool,
}

impl<K, V> Landing<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The flight's task: run the load (through the shared tier, if any) and land it.
    async fn run(mut self, origin: OriginLoad<V>) {
        let outcome = match &self.inner.shared {
            Some(tier) => {
                let fallback = match self.need {
                    Need::Refresh(_) => true,
                    Need::Value => self.inner.servable(&self.key, Instant::now()).is_some(),
                };
                let want = Want {
                    need: self.need,
                    fallback,
                    remote_errors: self.remote_errors,
                    tags: self.tags.clone(),
                    load_timeout: self.inner.load_timeout.map(|policy| policy.bound),
                    parking: self.parking.clone(),
                };
                CatchUnwind::new(tier.load(self.key.clone(), origin, want)).await
            }
            None => {
                let inner = self.inner.clone();
                let key = self.key.clone();
                CatchUnwind::new(async move {
                    let (value, delta) = origin.await?;
                    Ok(inner.loaded_here(&key, value, delta))
                })
                .await
            }
        };
        match outcome {
            Ok(Ok(loaded)) => self.succeed(loaded),
            Ok(Err(error)) => self.fail(error),
            Err(payload) => self.panicked(payload),
        }
    }

    fn succeed(&mut self, loaded: Loaded<V>) {
        let inner = &*self.inner;
        let windows = Windows {
            stale: loaded.stale_for,
            fail_safe: inner.windows.fail_safe,
        };
        let freshness = Freshness::written(
            Instant::now(),
            loaded.fresh_for,
            windows,
            loaded.delta,
            loaded.refresh_lead,
        );
        {
            let mut flights = inner.flights.lock();
            // Invalidated or overwritten while loading, or started before a
            // notice gap: answer the callers, cache nothing.
            let no_gap = inner.gaps.load(Ordering::Relaxed) == self.gaps_at_start;
            if self.still_registered(&flights) {
                flights.remove(&self.key);
                if no_gap && !loaded.superseded {
                    let entry = Entry {
                        value: loaded.value.clone(),
                        freshness,
                        tag_epoch: self.tag_epoch,
                    };
                    inner
                        .store
                        .insert_tagged(self.key.clone(), entry, self.tags.clone());
                }
            }
        }
        tracing::debug!(cache = %inner.name, delta_ms = loaded.delta.as_millis() as u64, "loaded");
        self.finish(Outcome::Loaded(loaded.value));
    }

    fn fail(&mut self, error: ErasedError) {
        let inner = &*self.inner;
        if error.downcast_ref::<NotFound>().is_some() {
            return self.not_found(error);
        }
        let timed_out = error.downcast_ref::<LoadTimeout>().is_some();
        if !timed_out {
            inner.counters.load_errors.incr();
        }
        let kept = self.release_and_throttle();
        let what = if timed_out {
            "load timed out"
        } else {
            "load failed"
        };
        let refresh = matches!(self.need, Need::Refresh(_));
        match kept {
            Some(retry_in) => tracing::warn!(
                cache = %inner.name, refresh, stale_kept = true, next_load_in = ?retry_in,
                "{what}; the cached value is kept and served (fail-safe) until the next attempt"
            ),
            None => tracing::warn!(
                cache = %inner.name, refresh, stale_kept = false,
                "{what}; nothing cached, no fail-safe value"
            ),
        }
        self.finish(Outcome::Failed(error));
    }

    /// A batch loader did not return the key: the origin says it has no
    /// value, so neither has the cache — the old one is dropped (no
    /// fail-safe serves a row that is gone), nothing is cached.
    fn not_found(&mut self, error: ErasedError) {
        let inner = &*self.inner;
        {
            let mut flights = inner.flights.lock();
            if self.still_registered(&flights) {
                flights.remove(&self.key);
                inner.store.remove(&self.key);
            }
        }
        tracing::debug!(cache = %inner.name, "not found: the batch loader did not return this key");
        self.finish(Outcome::Failed(error));
    }

    fn panicked(&mut self, payload: PanicPayload) {
        let inner = &*self.inner;
        inner.counters.load_panics.incr();
        let kept = self.release_and_throttle();
        tracing::error!(
            cache = %inner.name,
            panic = panic_message(&payload),
            fail_safe = kept.is_some(),
            "loader panicked; key released"
        );
        self.flight.store_panic(payload);
        self.finish(Outcome::Panicked);
    }

    fn still_registered(&self, flights: &FlightMap<K, V>) -> bool {
        flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
    }

    /// After a failure: takes the flight out of the map and, if the key's
    /// value can still be served (fresh, stale or fail-safe), marks it so no
    /// new load starts before the retry backoff has passed. Returns that
    /// backoff when a value is kept.
    fn release_and_throttle(&self) -> Option<Duration> {
        let inner = &*self.inner;
        let mut flights = inner.flights.lock();
        if !self.still_registered(&flights) {
            // Replaced or invalidated meanwhile: that write decides what is served.
            return None;
        }
        flights.remove(&self.key);
        let now = Instant::now();
        let mut entry = inner.entry_locked(&self.key, &flights)?;
        if !entry.freshness.servable_at(now) {
            return None;
        }
        let backoff = inner.retry_backoff;
        if !backoff.is_zero() {
            entry.freshness.retry_after(after(now, backoff));
            inner.store.insert(self.key.clone(), entry);
        }
        Some(backoff)
    }

    fn finish(&mut self, outcome: Outcome<V>) {
        let span = &self.flight.span;
        span.record(
            "outcome",
            match &outcome {
                Outcome::Loaded(_) => "loaded",
                Outcome::Failed(_) => "failed",
                Outcome::Panicked => "panicked",
                Outcome::Abandoned => "abandoned",
            },
        );
        span.record("duration_ms", self.started.elapsed().as_secs_f64() * 1e3);
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
            let mut flights = self.inner.flights.lock();
            if flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                flights.remove(&self.key);
            }
        }
        tracing::warn!(
            cache = %self.inner.name,
            "load ended without an outcome (task dropped before it finished or never polled: runtime shut down?); key released"
        );
        self.flight.complete(Outcome::Abandoned);
    }
}
