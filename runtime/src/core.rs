//! The state of one cache (`Inner`) and its per-entry policy: what an entry
//! is worth at `now` (the tag check included), the ttl, jitter and
//! early-refresh draws of a value, and evictions. Shared by the call path
//! (`cache.rs`), the single flight (`flight.rs`, `landing.rs`) and — through
//! the narrow [`CacheCore`] view only — the fleet tier.

use std::borrow::Cow;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{CacheCore, Loaded, RemotePolicy, SharedTier};
use crate::flight::{FlightMap, Flights};
use crate::load::{ErasedError, LoadTimeout};
use crate::stats::Counters;
use crate::store::{Entry, Store};
use crate::strategy::{Freshness, Strategy, Windows, refresh_lead, uniform_draw};
use crate::tags::{self, TagTarget, Tags};

/// A cache's tags function (`tags`).
pub(crate) type TagsOf<K> = Arc<dyn Fn(&K) -> Tags + Send + Sync>;

/// A cache's per-entry ttl (`ttl_for`).
pub(crate) type TtlFor<K, V> = Arc<dyn Fn(&K, &V) -> Duration + Send + Sync>;

/// What `load_timeout` does: the bound, and how a timeout becomes the
/// configured error type.
#[derive(Clone, Copy)]
pub(crate) struct TimeoutPolicy {
    pub bound: Duration,
    /// `Arc::new(E::from(timeout))`, erased.
    pub make_error: fn(LoadTimeout) -> ErasedError,
    /// `type_name::<E>()`, for the message when a call's error type differs.
    pub error_type: &'static str,
}

/// The state of one cache, shared by its clones, its flights and its tier.
pub(crate) struct Inner<K, V> {
    pub name: Cow<'static, str>,
    /// Saturated at `FOREVER`.
    pub ttl: Duration,
    /// Per-entry ttl, replacing `ttl` where set (saturated at `FOREVER`).
    pub ttl_for: Option<TtlFor<K, V>>,
    /// Each load's ttl gets a uniform extra in `[0, jitter]`.
    pub jitter: Duration,
    /// The tags of a key's entry, computed when its load starts.
    pub tags: Option<TagsOf<K>>,
    pub strategy: Strategy,
    /// How long past freshness a value may be served (stale, fail-safe).
    pub windows: Windows,
    pub store: Store<K, V>,
    pub flights: Flights<K, V>,
    /// How long after a failed load no new one starts while a value is servable.
    pub retry_backoff: Duration,
    pub soft_timeout: Option<Duration>,
    /// The most keys one batch loader call is given (`get_many_or_load`).
    pub max_batch: usize,
    /// The gather that batch calls arriving now add their misses to, so
    /// concurrent list requests share loader calls (see `batch.rs`).
    pub open_batch: crate::batch::OpenBatch<K, V>,
    pub load_timeout: Option<TimeoutPolicy>,
    /// `shared`: how another process's failure reaches this cache's callers.
    pub remote: Option<RemotePolicy>,
    /// Gaps in the shared tier's notice subscription so far. A flight that
    /// started before a gap answers its callers but caches nothing: it may
    /// have read a value whose invalidation was lost in the gap.
    pub gaps: AtomicU64,
    pub counters: Arc<Counters>,
    pub shared: Option<Arc<dyn SharedTier<K, V>>>,
}

impl<K, V> Inner<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    /// The cached entry of `key`, unless a tag it carries was invalidated
    /// since its load started (then it is dropped: a miss).
    #[inline]
    pub(crate) fn entry(&self, key: &K) -> Option<Entry<V>> {
        let entry = self.store.get(key)?;
        if self.store.tagged() && entry.tag_epoch < tags::epoch() {
            return self.check_tags(key, entry);
        }
        Some(entry)
    }

    /// The cached entry of `key` as [`entry`](Self::entry) gives it, for a
    /// caller that already holds the flight map's lock (`flights` is the
    /// proof): the tag check then runs under that hold instead of taking
    /// the lock again (a std `Mutex` is not re-entrant).
    pub(crate) fn entry_locked(&self, key: &K, flights: &FlightMap<K, V>) -> Option<Entry<V>> {
        let entry = self.store.get(key)?;
        if self.store.tagged() && entry.tag_epoch < tags::epoch() {
            return self.check_tags_locked(key, entry, flights);
        }
        Some(entry)
    }

    /// The slow path of [`entry`](Self::entry), once per entry per tag
    /// invalidation: drop the entry if one of its tags was invalidated,
    /// else re-stamp it so it is not checked again.
    #[cold]
    pub(crate) fn check_tags(&self, key: &K, entry: Entry<V>) -> Option<Entry<V>> {
        let flights = self.flights.lock();
        self.check_tags_locked(key, entry, &flights)
    }

    /// [`check_tags`](Self::check_tags) under the flight map's lock, against
    /// the entry as it is now: a landing or insert meanwhile wrote a newer
    /// entry that must not be undone. Runs no user code.
    fn check_tags_locked(
        &self,
        key: &K,
        entry: Entry<V>,
        _flights: &FlightMap<K, V>,
    ) -> Option<Entry<V>> {
        let now_epoch = tags::epoch();
        // Tags evicted from the side store: count the entry as invalidated.
        let invalidated = self
            .store
            .tags(key)
            .is_none_or(|tags| tags::invalidated_since(&tags, entry.tag_epoch));
        let current = self.store.get(key)?;
        let same = current.tag_epoch == entry.tag_epoch && current.freshness == entry.freshness;
        if !same {
            return None;
        }
        if invalidated {
            self.store.remove(key);
            return None;
        }
        let restamped = Entry {
            tag_epoch: now_epoch,
            ..current
        };
        // Same key, same tags: only the stamp changes.
        self.store.insert(key.clone(), restamped.clone());
        Some(restamped)
    }

    /// The tags of `key`'s entry (`None` without a tags function).
    pub(crate) fn tags_of(&self, key: &K) -> Option<Tags> {
        self.tags.as_ref().map(|tags| tags(key))
    }

    /// The ttl of `value` (per entry with `ttl_for`), before jitter.
    pub(crate) fn ttl_of(&self, key: &K, value: &V) -> Duration {
        match &self.ttl_for {
            Some(ttl_for) => ttl_for(key, value).min(crate::strategy::FOREVER),
            None => self.ttl,
        }
    }

    /// The longest a value of this cache may stay fresh: its ttl plus the
    /// whole jitter (what a value read from the shared tier is clamped to).
    pub(crate) fn max_fresh_for(&self, key: &K, value: &V) -> Duration {
        self.ttl_of(key, value).saturating_add(self.jitter)
    }

    /// How long a freshly loaded `value` stays fresh: its ttl plus a
    /// uniform draw of the jitter.
    pub(crate) fn draw_fresh_for(&self, key: &K, value: &V) -> Duration {
        let ttl = self.ttl_of(key, value);
        if self.jitter.is_zero() {
            return ttl;
        }
        ttl.saturating_add(self.jitter.mul_f64(fastrand::f64()))
    }

    /// The timing of `value` loaded (or inserted) at `now` by this process:
    /// drawn ttl, and for XFetch a drawn early-refresh lead.
    pub(crate) fn written(&self, key: &K, value: &V, now: Instant, delta: Duration) -> Freshness {
        let fresh_for = self.draw_fresh_for(key, value);
        let lead = refresh_lead(&self.strategy, delta, uniform_draw());
        Freshness::written(now, fresh_for, self.windows, delta, lead)
    }

    /// A value this process loaded from the origin, with its drawn timing.
    pub(crate) fn loaded_here(&self, key: &K, value: V, delta: Duration) -> Loaded<V> {
        Loaded {
            fresh_for: self.draw_fresh_for(key, &value),
            stale_for: self.windows.stale,
            refresh_lead: refresh_lead(&self.strategy, delta, uniform_draw()),
            delta,
            value,
            superseded: false,
        }
    }

    /// Drops `key`'s value and flight (its load answers its callers but
    /// caches nothing).
    pub(crate) fn evict(&self, key: &K) {
        let mut flights = self.flights.lock();
        flights.remove(key);
        self.store.remove(key);
    }

    pub(crate) fn evict_all(&self) {
        let mut flights = self.flights.lock();
        flights.clear();
        self.store.clear();
    }

    /// Invalidations may have been lost: drop every value, but keep the
    /// flights — they finish and answer their callers (new callers still
    /// join them) without caching what they load.
    pub(crate) fn forget_after_gap(&self) {
        let _flights = self.flights.lock();
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.store.clear();
    }

    /// A load failed, panicked, timed out or was dropped: the value that
    /// stands in for its outcome, if any (counted and logged as fail-safe).
    pub(crate) fn stand_in(&self, key: &K) -> Option<V> {
        let now = Instant::now();
        let entry = self.entry(key)?;
        if entry.freshness.fresh_at(now) {
            return Some(entry.value);
        }
        if !entry.freshness.servable_at(now) {
            return None;
        }
        self.counters.fail_safe_hits.incr();
        tracing::debug!(cache = %self.name, "serving the fail-safe value instead of the failed load");
        Some(entry.value)
    }

    /// The cached value of `key` if it may be served at `now` instead of a
    /// load's outcome: fresh (an `insert` landed meanwhile), stale within
    /// `swr`'s window, or within the fail-safe window.
    pub(crate) fn servable(&self, key: &K, now: Instant) -> Option<V> {
        let entry = self.entry(key)?;
        entry.freshness.servable_at(now).then_some(entry.value)
    }
}

impl<K, V> TagTarget for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn supersede_flights(&self, tag: &str) {
        self.flights.lock().retain(|_, flight| !flight.has_tag(tag));
    }
}

/// The fleet tier's one view of the core (see [`CacheCore`]).
impl<K, V> CacheCore<K, V> for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn ttl_of(&self, key: &K, value: &V) -> Duration {
        Inner::ttl_of(self, key, value)
    }

    fn max_fresh_for(&self, key: &K, value: &V) -> Duration {
        Inner::max_fresh_for(self, key, value)
    }

    fn loaded_here(&self, key: &K, value: V, delta: Duration) -> Loaded<V> {
        Inner::loaded_here(self, key, value, delta)
    }

    fn evict(&self, key: &K) {
        Inner::evict(self, key);
    }

    fn evict_all(&self) {
        Inner::evict_all(self);
    }

    fn forget_after_gap(&self) {
        Inner::forget_after_gap(self);
    }

    fn stand_in(&self, key: &K) -> Option<V> {
        Inner::stand_in(self, key)
    }
}

/// What the metrics report reads of a cache.
impl<K, V> crate::metrics::Reported for Inner<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn stats(&self) -> crate::CacheStats {
        self.counters.snapshot()
    }

    fn entries(&self) -> usize {
        self.store.len()
    }

    fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}
