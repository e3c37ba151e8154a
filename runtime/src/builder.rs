//! `CacheBuilder`: every option of a cache, validated where it is set.

use std::borrow::Cow;
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::backend::{
    CacheCore, RemoteLoadError, RemotePolicy, SharedBackend, SharedKey, SharedValue, TierFactory,
    TierSpec,
};
use crate::cache::Cache;
use crate::core::{Inner, TagsOf, TimeoutPolicy, TtlFor};
use crate::flight::Flights;
use crate::load::{ErasedError, LoadTimeout};
use crate::stats::Counters;
use crate::store::Store;
use crate::strategy::{FOREVER, Strategy, Windows};

/// Entries a cache holds when the builder is given no capacity.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Freshness lifetime when the builder is given no TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Lease of the distributed lock of a `shared` cache when none is given; it is
/// renewed while the loader runs, so it only bounds how long a crashed holder
/// blocks the key.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(10);
/// The longest a `shared` cache's load keeps renewing its lock when the cache
/// has no `load_timeout` (with one, the load is dropped at that bound). Past
/// it the lease lapses, so one hung process cannot hold a key for the whole
/// fleet: another takes over (one extra origin call), and the hung load's
/// late write is refused — and its value is not cached, not even where it
/// ran (a lapsed lease cannot be told from a write that superseded it). A
/// cache whose loads can take longer gives itself a `load_timeout` at least
/// that long: that is its lock hold then.
pub const DEFAULT_MAX_LOCK_HOLD: Duration = Duration::from_secs(60);

/// Configures and builds a [`Cache`]; from [`Cache::builder`].
///
/// Every setter validates its value and panics with a message naming the
/// cache and the fix; durations beyond about a century saturate (so
/// `Duration::MAX` means "never", not an overflow).
#[must_use = "a builder does nothing until .build()"]
pub struct CacheBuilder<K, V> {
    name: Cow<'static, str>,
    ttl: Duration,
    strategy: Strategy,
    capacity: usize,
    lock_ttl: Duration,
    failed_refresh_backoff: Option<Duration>,
    fail_safe: Duration,
    soft_timeout: Option<Duration>,
    max_batch: usize,
    load_timeout: Option<TimeoutPolicy>,
    remote: Option<RemotePolicy>,
    ttl_for: Option<TtlFor<K, V>>,
    jitter: Duration,
    tags: Option<TagsOf<K>>,
    tier: Option<TierFactory<K, V>>,
    backend: Option<SharedBackend>,
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(name: Cow<'static, str>) -> Self {
        assert!(
            !name.is_empty(),
            "stampede-cache: a cache name must not be empty (it names the cache in stats, logs and shared-tier keys)"
        );
        CacheBuilder {
            name,
            ttl: DEFAULT_TTL,
            strategy: Strategy::Lock,
            capacity: DEFAULT_CAPACITY,
            lock_ttl: DEFAULT_LOCK_TTL,
            failed_refresh_backoff: None,
            fail_safe: Duration::ZERO,
            soft_timeout: None,
            max_batch: crate::batch::DEFAULT_MAX_BATCH,
            load_timeout: None,
            remote: None,
            ttl_for: None,
            jitter: Duration::ZERO,
            tags: None,
            tier: None,
            backend: None,
        }
    }

    /// Freshness lifetime of a loaded value. Default [`DEFAULT_TTL`].
    /// `Duration::MAX` (or anything beyond a century) means "never expires".
    ///
    /// # Panics
    /// If `ttl` is zero: nothing would ever be served from the cache.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = nonzero(&self.name, "ttl", ttl).min(FOREVER);
        self
    }

    /// How expiry is handled. Default [`Strategy::Lock`].
    ///
    /// # Panics
    /// If `Strategy::XFetch { beta }` has a `beta` that is not a finite number > 0.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        match strategy {
            Strategy::XFetch { beta } => assert!(
                beta.is_finite() && beta > 0.0,
                "stampede-cache `{}`: XFetch beta must be a finite number > 0, got {beta}",
                self.name
            ),
            Strategy::Swr { stale } => {
                self.strategy = Strategy::Swr {
                    stale: stale.min(FOREVER),
                };
                return self;
            }
            Strategy::Lock => {}
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

    /// After a load or refresh of a key fails while a value can still be
    /// served (`swr`'s stale window, the [`fail_safe`](Self::fail_safe)
    /// window, or a fresh value XFetch tried to refresh early), no new load
    /// of that key starts for this long; the value is served meanwhile. It
    /// stops a down origin from being retried at the request rate
    /// (FusionCache's fail-safe throttle). Default: a tenth of the TTL,
    /// between 10 ms and 5 s. Zero retries on the next call. With `shared`
    /// it holds for the whole fleet: a process with a value to serve is
    /// throttled by another's failure too. A key with nothing to serve is
    /// never held back: failures are not cached.
    ///
    /// Coming from FusionCache: its `FailSafeThrottleDuration` defaults to
    /// 30 s; set `.failed_refresh_backoff(Duration::from_secs(30))` for the
    /// same behaviour.
    pub fn failed_refresh_backoff(mut self, backoff: Duration) -> Self {
        self.failed_refresh_backoff = Some(backoff.min(FOREVER));
        self
    }

    /// Fail-safe: keep the last good value of a key for `window` past its
    /// expiry, and serve it when a load of that key errors, panics or times
    /// out ([`load_timeout`](Self::load_timeout)) instead of the failure.
    /// Each such call counts a `fail_safe_hits`; the failure is logged. After
    /// a failure the key is not loaded again for
    /// [`failed_refresh_backoff`](Self::failed_refresh_backoff), and the value
    /// is served meanwhile. Off by default. An `invalidate` drops the value
    /// for good: fail-safe never serves a value that was replaced or removed.
    ///
    /// Coming from FusionCache: the window counts from the value's
    /// *expiry*, where `FailSafeMaxDuration` counts from the write. Its
    /// `Duration = T, FailSafeMaxDuration = M` is our `.ttl(T)` with
    /// `.fail_safe(M - T)`.
    ///
    /// # Panics
    /// If `window` is zero (leave fail-safe off instead).
    pub fn fail_safe(mut self, window: Duration) -> Self {
        self.fail_safe = nonzero(&self.name, "fail_safe", window);
        self
    }

    /// Soft timeout: a caller that has waited `after` on a load while a
    /// fail-safe (or `swr` stale) value exists gets that value; the load goes
    /// on and its value lands for the next callers. Each such call counts a
    /// `soft_timeouts` and a `fail_safe_hits`. It only matters with
    /// [`fail_safe`](Self::fail_safe) or [`Strategy::Swr`]: without a
    /// servable value, callers wait for the load.
    ///
    /// # Panics
    /// If `after` is zero.
    pub fn soft_timeout(mut self, after: Duration) -> Self {
        self.soft_timeout = Some(nonzero(&self.name, "soft_timeout", after));
        self
    }

    /// The most keys one batch loader call is given
    /// ([`Cache::get_many_or_load`]): the misses of a batch beyond it go to
    /// further calls of the loader, made at once (a loader must therefore be
    /// callable several times: it is an `Fn`). Size it to what the origin
    /// takes in one query — an `ANY($1)` array, an `IN (..)` list, an
    /// `MGET`. Default [`DEFAULT_MAX_BATCH`](crate::DEFAULT_MAX_BATCH).
    ///
    /// # Panics
    /// If `max_batch` is zero.
    pub fn max_batch(mut self, max_batch: usize) -> Self {
        assert!(
            max_batch > 0,
            "stampede-cache `{}`: max_batch must be at least 1 (it is the most keys one batch loader call is given)",
            self.name
        );
        self.max_batch = max_batch;
        self
    }

    /// Hard timeout: no load of this cache runs longer than `bound`. A load
    /// still running then is dropped (its future is never polled again), its
    /// flight ends, and the next call starts a fresh load. Its callers get
    /// the fail-safe value if there is one, else `Err(E::from(LoadTimeout))`.
    ///
    /// `E` is the error type of the calls that will see the timeout: the
    /// calls go through [`Cache::try_get_or_load`] (or `_with`) with that
    /// error type. A call whose error type is not `E` — or an infallible
    /// [`Cache::get_or_load`], which has no way to report it — panics with a
    /// message naming the cache when its load times out with no fail-safe
    /// value to serve; give such a cache a [`fail_safe`](Self::fail_safe)
    /// window, or call it through `try_get_or_load::<.., E>`.
    ///
    /// With `shared`, the bound also caps a process's wait on another
    /// process's load of the key (counted from when its own flight began):
    /// past it, its callers get the timeout (or the fail-safe value). A
    /// process whose wait ends because the other load timed out first takes
    /// over and loads itself in what is left of its own bound, so a call
    /// waits at most the bound, with `shared` as without. The leader's lease is renewed no longer than the
    /// bound either, so a hung loader cannot hold the key for the fleet.
    /// Coming from FusionCache: this is its `FactoryHardTimeout`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use stampede_cache::{Cache, LoadTimeout};
    ///
    /// #[derive(Clone, Debug, PartialEq)]
    /// enum RepoError { Timeout, Db(String) }
    /// impl From<LoadTimeout> for RepoError {
    ///     fn from(_: LoadTimeout) -> Self { RepoError::Timeout }
    /// }
    ///
    /// let cache: Cache<u32, String> = Cache::builder("doc.load_timeout")
    ///     .load_timeout::<RepoError>(Duration::from_secs(5))
    ///     .build();
    /// let hung = cache
    ///     .try_get_or_load(1, |_| std::future::pending::<Result<String, RepoError>>())
    ///     .await;
    /// assert_eq!(hung, Err(RepoError::Timeout));
    /// # }
    /// ```
    ///
    /// # Panics
    /// If `bound` is zero.
    pub fn load_timeout<E>(mut self, bound: Duration) -> Self
    where
        E: From<LoadTimeout> + Clone + Send + Sync + 'static,
    {
        fn erase<E: From<LoadTimeout> + Send + Sync + 'static>(t: LoadTimeout) -> ErasedError {
            Arc::new(E::from(t))
        }
        self.load_timeout = Some(TimeoutPolicy {
            bound: nonzero(&self.name, "load_timeout", bound).min(FOREVER),
            make_error: erase::<E>,
            error_type: std::any::type_name::<E>(),
        });
        self
    }

    /// Jitter: each load's ttl gets a uniform random extra in `[0, jitter]`,
    /// so keys loaded together (a deploy's warm-up, a cold start) do not all
    /// expire — and reload — at the same instant. With `shared`, the drawn
    /// expiry is what the shared tier stores, so every process agrees on it.
    /// Default zero.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter.min(FOREVER);
        self
    }

    /// Per-entry ttl: `ttl_for(&key, &value)` replaces the cache's ttl for
    /// that value (jitter still applies), for its freshness, its stale and
    /// fail-safe windows (counted from it) and, with `shared`, its expiry in
    /// the shared tier. The classic use: cache "not found" briefly.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// use std::time::Duration;
    /// use stampede_cache::Cache;
    ///
    /// let users: Cache<u64, Option<String>> = Cache::builder("doc.ttl_for")
    ///     .ttl(Duration::from_secs(300))
    ///     .ttl_for(|_id, user| match user {
    ///         Some(_) => Duration::from_secs(300),
    ///         None => Duration::from_secs(5), // a row may appear soon
    ///     })
    ///     .build();
    /// assert_eq!(users.get_or_load(7, |_| async { None }).await, None);
    /// tokio::time::advance(Duration::from_secs(6)).await;
    /// assert_eq!(users.get(&7), None, "the negative entry expired after 5 s");
    /// # }
    /// ```
    pub fn ttl_for(mut self, ttl_for: impl Fn(&K, &V) -> Duration + Send + Sync + 'static) -> Self {
        self.ttl_for = Some(Arc::new(ttl_for));
        self
    }

    /// Tags: `tags(&key)` names the groups an entry belongs to, computed when
    /// its load starts (or at `insert`); [`invalidate_tag`](crate::invalidate_tag)
    /// then drops every entry carrying a tag, in every cache of the process
    /// and, with `shared`, of the fleet, and supersedes such loads in flight.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use stampede_cache::Cache;
    ///
    /// let products: Cache<(String, u32), String> = Cache::builder("doc.products")
    ///     .tags(|(category, _id): &(String, u32)| [format!("category:{category}")])
    ///     .build();
    /// products.insert(("books".into(), 1), "Dune".into());
    /// stampede_cache::invalidate_tag("category:books");
    /// assert_eq!(products.get(&("books".into(), 1)), None);
    /// # }
    /// ```
    pub fn tags<I>(mut self, tags: impl Fn(&K) -> I + Send + Sync + 'static) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.tags = Some(Arc::new(move |key: &K| {
            tags(key)
                .into_iter()
                .map(|tag| Arc::<str>::from(tag.into()))
                .collect()
        }));
        self
    }

    /// `shared`: when a load of a key fails in another process, the callers
    /// waiting on it here get `Err(E::from(RemoteLoadError))` (or the
    /// fail-safe value) instead of loading again themselves: one origin call
    /// per failing flight fleet-wide, and none while its failure record
    /// lasts (the retry backoff). The leader's error crosses as its `Debug`
    /// text. `#[stampede_cached(shared)]` sets this whenever the fn's error
    /// type implements `From<RemoteLoadError>`.
    ///
    /// Without it — or for a call whose error type is not `E` (such as
    /// `get_or_load`) — a remote failure never reaches the callers: a
    /// flight that has a value to serve (stale, fail-safe) serves it, one
    /// that has none loads itself, taking the key's lock in turn (one load
    /// at a time fleet-wide, not one per process at once).
    pub fn remote_errors<E>(mut self) -> Self
    where
        E: From<RemoteLoadError> + std::fmt::Debug + Clone + Send + Sync + 'static,
    {
        fn erase<E: From<RemoteLoadError> + Send + Sync + 'static>(
            e: RemoteLoadError,
        ) -> ErasedError {
            Arc::new(E::from(e))
        }
        fn describe<E: std::fmt::Debug + 'static>(error: &ErasedError) -> Option<String> {
            error.downcast_ref::<E>().map(|e| format!("{e:?}"))
        }
        self.remote = Some(RemotePolicy {
            make_error: erase::<E>,
            describe: describe::<E>,
            error_type: std::any::TypeId::of::<E>(),
        });
        self
    }

    /// Builds the cache.
    ///
    /// # Panics
    /// For a `shared` cache, if a live `shared` cache of this process already
    /// has this name with other key or value types: the two would read each
    /// other's entries in the shared tier. Give one of them another name.
    pub fn build(self) -> Cache<K, V> {
        let counters = Arc::new(Counters::default());
        let windows = Windows {
            stale: self.strategy.stale_window(),
            fail_safe: self.fail_safe,
        };
        let tagged = self.tags.is_some();
        let retry_backoff = self.failed_refresh_backoff.unwrap_or_else(|| {
            (self.ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(5))
        });
        let inner = Arc::new_cyclic(|weak: &Weak<Inner<K, V>>| {
            let shared = self.tier.and_then(|make| {
                make(TierSpec {
                    name: self.name.to_string(),
                    ttl: self.ttl,
                    strategy: self.strategy,
                    lock_ttl: self.lock_ttl,
                    retry_backoff,
                    max_hold: self
                        .load_timeout
                        .map_or(DEFAULT_MAX_LOCK_HOLD, |policy| policy.bound),
                    remote: self.remote,
                    counters: counters.clone(),
                    longest_life: if self.ttl_for.is_some() {
                        FOREVER
                    } else {
                        self.ttl
                            .saturating_add(self.jitter)
                            .saturating_add(self.strategy.stale_window())
                    },
                    l1: weak.clone() as Weak<dyn CacheCore<K, V>>,
                    backend: self.backend,
                })
            });
            Inner {
                name: self.name,
                ttl: self.ttl,
                ttl_for: self.ttl_for,
                jitter: self.jitter,
                tags: self.tags,
                strategy: self.strategy,
                windows,
                store: Store::new(self.capacity, tagged),
                flights: Flights::default(),
                retry_backoff,
                soft_timeout: self.soft_timeout,
                max_batch: self.max_batch,
                open_batch: Default::default(),
                load_timeout: self.load_timeout,
                remote: self.remote,
                gaps: Default::default(),
                counters,
                shared,
            }
        });
        crate::registry::register(&inner.name, &inner);
        if inner.tags.is_some() {
            let target: Weak<dyn crate::tags::TagTarget> = Arc::downgrade(&inner) as _;
            crate::tags::register(target);
        }
        Cache { inner }
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts configuring a cache. `name` identifies it in stats, tracing and
    /// shared-tier keys: keep it stable across deploys.
    ///
    /// # Panics
    /// If `name` is empty.
    pub fn builder(name: impl Into<Cow<'static, str>>) -> CacheBuilder<K, V> {
        CacheBuilder::new(name.into())
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
        self.lock_ttl = nonzero(&self.name, "lock_ttl", lock_ttl).min(FOREVER);
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
