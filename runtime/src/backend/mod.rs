//! Fleet coordination for `shared` caches.
//!
//! A `shared` cache keeps two tiers: L1, the in-process store (a hit never
//! touches the network), and L2, a shared value tier in a backend every
//! process of the fleet talks to. On a miss, the process's one local flight
//! reads L2; if the value is not there it takes the key's distributed lock,
//! loads, writes L2 and publishes a ready notice; processes that found the
//! lock held wait for that notice (one subscription per process, multiplexed
//! to its waiters) and read L2. The result: one origin call per key per
//! expiry for the whole fleet.
//!
//! Two backends exist:
//! - [`LocalBackend`], in memory, shared by the `Cache` instances of one
//!   process that are given it (what `shared` uses when no backend is
//!   installed, and what a fleet simulation in one process uses);
//! - [`RedisBackend`](crate::redis::RedisBackend) (cargo feature `redis`),
//!   on one Redis or Valkey primary.
//!
//! Install one at start-up with [`install`], or give one cache its own with
//! [`CacheBuilder::backend`](crate::CacheBuilder::backend).
//!
//! # A failing origin is called once per flight, fleet-wide
//!
//! The rule is the in-process one, fleet-wide. A leader whose load fails
//! (errors, panics, or runs past `load_timeout`) leaves a *failure record*
//! on the key and wakes the waiters: every process that waited on that
//! flight answers with its failure instead of calling the origin again (its
//! fail-safe value if it has one, else the error). The record answers no
//! one else with nothing to serve: a flight that starts later with no
//! servable value ignores it and takes the lock (a waiter tells its
//! flight's record from an older one: records carry the flight's token,
//! and the lock attempt that found the lock held returns the record that
//! was there then). A flight that *has* a value to serve (fail-safe, stale,
//! a refresh) is answered by the record while it lasts — the retry backoff
//! ([`failed_refresh_backoff`](crate::CacheBuilder::failed_refresh_backoff))
//! — so the fleet retries a down origin once per backoff, as one process
//! does. A timed-out leader's waiters with nothing to serve take over (a
//! timeout says nothing of their own origin), within their own
//! `load_timeout` counted from when their flight began. The error value
//! cannot cross processes (error types are rarely
//! serialisable), so it crosses as text in a [`RemoteLoadError`], which a
//! cache turns into its callers' `E` through `E: From<RemoteLoadError>`
//! ([`remote_errors`](crate::CacheBuilder::remote_errors); the attribute
//! does it whenever that impl exists). We chose this over shipping the
//! error verbatim with serde because it asks one small impl of the error
//! type users already have, instead of making every error type
//! serialisable. A timeout crosses as a [`LoadTimeout`](crate::LoadTimeout).
//! A cache that cannot express the failure loads in process (fail open).
//!
//! # Writes win, in order, and are retried until they land
//!
//! A process's writes go through its backend's write-behind
//! ([`writes`]): applied in call order, each retried with backoff until it
//! lands or is moot (everything it supersedes has expired by then); until
//! then this process's flights of those keys skip the shared tier.
//!
//! `insert` and `invalidate` delete the key's lock with the value, so a load
//! that started before them — anywhere in the fleet — cannot write its older
//! value: its fenced write finds another token, or none. `invalidate_all`
//! bumps the cache's generation (O(1), no scan): values loaded under an
//! older one are never used again. `invalidate_tag` deletes the value and
//! lock of every key recorded under the tag. A process drops its own L1
//! copy after registering the invalidation, so none of its flights reads the
//! old shared value back; other processes drop theirs when the notice
//! arrives (pub/sub; after a gap in the subscription they drop every copy).
//!
//! # Clocks
//!
//! No wall-clock instant crosses processes. A value's time left is read
//! from the backend's own clock (Redis `PTTL` of the value, which expires at
//! the end of its stale window) and clamped to the reading cache's own ttl
//! (plus jitter) and stale window. So a pod whose clock runs ahead or behind
//! neither stretches nor voids the values of others; skew costs nothing but
//! the few milliseconds a command takes to travel.
//!
//! # An efficiency lock, not a correctness lock
//!
//! The distributed lock exists to save origin calls, not to guarantee mutual
//! exclusion. It lives on one primary (no Redlock); if that primary fails
//! over, or a holder pauses past its lease, two processes may load the same
//! key at once. That costs one extra origin call, never a wrong answer: the
//! value tier is written by a fenced script that refuses a writer whose lease
//! has lapsed, so a late writer cannot overwrite a newer value. Do not use a
//! `shared` cache to serialise side effects.
//!
//! # Failing open
//!
//! A backend that errors, times out (the Redis backend bounds every command
//! by a configurable timeout) or returns garbage never fails a call the
//! loader could answer: the flight runs the loader in process, counts a
//! `fallbacks` (or `backend_errors` for undecodable bytes), logs a
//! rate-limited warning, and uses the backend again on the next flight.
//! A lock command that timed out may still run when the backend resumes; the
//! lock it would leave is released behind it and starts with a short lease,
//! so no call waits on a lock nobody holds for longer than that. A leader's
//! lease is renewed at most [`DEFAULT_MAX_LOCK_HOLD`](crate::DEFAULT_MAX_LOCK_HOLD)
//! (or its `load_timeout`): one hung process cannot hold a key for the fleet.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::load::{ErasedError, Need};
use crate::stats::Counters;
use crate::strategy::Strategy;
use crate::tags::Tags;

mod claims;
pub(crate) mod codec;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod conformance;
pub(crate) mod held;
pub(crate) mod hub;
mod local;
#[cfg(feature = "redis")]
pub mod redis;
pub(crate) mod slot;
mod tier;
pub(crate) mod writes;

pub use local::LocalBackend;

use hub::Hub;
use slot::{CacheKeys, Slot};
use writes::WriteBehind;

/// A boxed, sendable future.
pub(crate) type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a key must be to live in a `shared` cache: serde round-trippable (it
/// becomes part of the backend key, and an invalidation notice names it, so
/// every process drops exactly that key in O(1)) on top of the usual key bounds.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the key of a `shared` cache: it must implement serde's `Serialize` and `DeserializeOwned` (and `Hash + Eq + Clone + Send + Sync + 'static`)",
    label = "needs `serde::Serialize + serde::de::DeserializeOwned` for `shared`",
    note = "derive them: `#[derive(serde::Serialize, serde::Deserialize)]`, or drop `shared` to keep this cache in-process"
)]
pub trait SharedKey:
    Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static
{
}
impl<T: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static> SharedKey for T {}

/// What a value must be to live in a `shared` cache: serde round-trippable,
/// since other processes read it back from the shared tier.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the value of a `shared` cache: it must implement serde's `Serialize` and `DeserializeOwned` (and `Clone + Send + Sync + 'static`)",
    label = "needs `serde::Serialize + serde::de::DeserializeOwned` for `shared`",
    note = "derive them: `#[derive(serde::Serialize, serde::Deserialize)]`, or drop `shared` to keep this cache in-process"
)]
pub trait SharedValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> SharedValue for T {}

/// A value produced for a flight, with the timing it should be cached under.
pub(crate) struct Loaded<V> {
    pub value: V,
    /// How long from now the value is fresh (less than the TTL when it came from L2).
    pub fresh_for: Duration,
    /// How long past `fresh_for` a stale copy may be served (`swr`).
    pub stale_for: Duration,
    /// The duration of the origin load that produced it (XFetch's delta).
    pub delta: Duration,
    /// XFetch: how long before it expires the value is refreshed early
    /// (drawn once, by the process that loaded it).
    pub refresh_lead: Duration,
    /// A write elsewhere superseded this load (its fenced write was
    /// refused): the callers get the value, but it is not cached — the
    /// fleet's value is the write's, and this one must not be served again.
    pub superseded: bool,
}

/// What the fleet tier needs of the cache core — its per-entry policy and
/// its L1 — and nothing more: the tier never sees the call path, the
/// flight map or the store.
pub(crate) trait CacheCore<K, V>: Send + Sync {
    /// The ttl of `value` (per entry with `ttl_for`), before jitter.
    fn ttl_of(&self, key: &K, value: &V) -> Duration;
    /// The longest a value may stay fresh (ttl plus the whole jitter): what
    /// a value read from the shared tier is clamped to.
    fn max_fresh_for(&self, key: &K, value: &V) -> Duration;
    /// A value this process loaded from the origin, with its drawn timing
    /// (ttl + jitter, XFetch's refresh lead).
    fn loaded_here(&self, key: &K, value: V, delta: Duration) -> Loaded<V>;
    /// An invalidation notice: drop `key` (its flight caches nothing).
    fn evict(&self, key: &K);
    /// A clear notice: drop every entry.
    fn evict_all(&self);
    /// A gap in the notices: drop every value, keep the flights uncached.
    fn forget_after_gap(&self);
    /// The value this process serves instead of a failed load, if any
    /// (fresh, stale or fail-safe; counted and logged as fail-safe).
    fn stand_in(&self, key: &K) -> Option<V>;
}

/// What one local flight asks of the shared tier.
pub(crate) struct Want {
    /// A value (any fresh one) or a refresh (only a newer one).
    pub need: Need,
    /// Whether this process has a value to serve if the load fails (a
    /// refresh's current value, a stale or fail-safe one). Only then does
    /// another flight's failure record answer this flight — throttling it
    /// for the retry backoff, as in process; with nothing to serve it loads.
    pub fallback: bool,
    /// Whether the call that started this flight can return another
    /// process's failure (its `E` is the cache's `remote_errors` type).
    /// Without it, such a failure is answered by the value to serve, or
    /// the flight loads in process.
    pub remote_errors: bool,
    /// The entry's tags, computed once when the flight started.
    pub tags: Option<Tags>,
    /// The cache's `load_timeout`: it also bounds how long this flight
    /// waits on another process's load (from when the flight started).
    pub load_timeout: Option<Duration>,
    /// The batch this flight belongs to (`get_many_or_load`): told when
    /// the flight waits on another process's load, so the batch does not
    /// hold its loader call back for it.
    pub parking: Option<Arc<dyn crate::load::Parking>>,
}

/// The origin call of one flight: the user's loader, counted and timed. It
/// yields the value and how long the load took.
pub(crate) type OriginLoad<V> = BoxFut<Result<(V, Duration), ErasedError>>;

/// What a shared tier is built from.
pub(crate) struct TierSpec<K, V> {
    pub name: String,
    pub ttl: Duration,
    pub strategy: Strategy,
    pub lock_ttl: Duration,
    /// How long a failure record stops the fleet from retrying the origin.
    pub retry_backoff: Duration,
    /// The longest a leader keeps renewing its lease (its load is dropped
    /// there with `load_timeout`; without, this caps a hung loader's hold).
    pub max_hold: Duration,
    /// How a failure in another process becomes a caller's error, if it can.
    pub remote: Option<RemotePolicy>,
    pub counters: Arc<Counters>,
    /// How long a write stays worth retrying: the longest a value can live
    /// in the backend (ttl + jitter + stale; `FOREVER` with a per-entry ttl).
    pub longest_life: Duration,
    /// The cache core, through the one interface the tier may use.
    pub l1: Weak<dyn CacheCore<K, V>>,
    /// The backend given to this cache's builder, if any (else the installed one).
    pub backend: Option<SharedBackend>,
}

/// Fleet-wide coordination behind a `shared` cache. The cache core has
/// already coalesced callers in this process: `load` is called once per local
/// flight, and decides whether this process runs `origin` or takes a value
/// (or a failure) another process produced.
pub(crate) trait SharedTier<K, V>: Send + Sync {
    fn load(
        &self,
        key: K,
        origin: OriginLoad<V>,
        want: Want,
    ) -> BoxFut<Result<Loaded<V>, ErasedError>>;
    /// `Cache::insert` on a shared cache: write through to the shared tier,
    /// recorded under the entry's `tags`. Like every write: pending at once
    /// (no flight of this process reads the old value back), applied in
    /// call order behind this process's earlier writes, retried until it lands.
    fn store(&self, key: &K, value: &V, tags: Option<Tags>);
    /// `Cache::invalidate`, as `store` is applied.
    fn invalidate(&self, key: &K);
    /// `Cache::invalidate_all`, as `store` is applied.
    fn invalidate_all(&self);
}

/// Builds the shared tier of a `shared` cache, or `None` to coordinate in
/// process only.
pub(crate) type TierFactory<K, V> = fn(TierSpec<K, V>) -> Option<Arc<dyn SharedTier<K, V>>>;

/// The tier factory `CacheBuilder::shared` installs: the builder's backend,
/// else the installed one, else the process-wide [`LocalBackend`].
pub(crate) fn shared_tier<K: SharedKey, V: SharedValue>(
    spec: TierSpec<K, V>,
) -> Option<Arc<dyn SharedTier<K, V>>> {
    let backend = match spec.backend.clone() {
        Some(backend) => backend,
        None => installed_or_default(&spec.name),
    };
    let claim = claims::NameClaim::take::<K, V>(&spec.name);
    Some(tier::Tier::<K, V>::build(spec, backend, claim))
}

/// How a `shared` cache turns a load that failed in another process into
/// its callers' error, and renders its own errors for the other processes.
#[derive(Clone, Copy)]
pub(crate) struct RemotePolicy {
    /// `Arc::new(E::from(remote))`, erased.
    pub make_error: fn(RemoteLoadError) -> ErasedError,
    /// `format!("{:?}", error)` when the erased error is an `E`.
    pub describe: fn(&ErasedError) -> Option<String>,
    /// `TypeId::of::<E>()`: a flight answers with a remote failure only
    /// if the call that started it can return one.
    pub error_type: std::any::TypeId,
}

/// A failed backend operation (connection lost, timeout, error reply).
///
/// Never surfaces from a cache call — a `shared` cache fails open — but is
/// what [`RedisBackend::connect`](crate::redis::RedisBackend::connect)
/// returns. Converts into `Box<dyn Error + Send + Sync>`.
#[derive(Debug, Clone)]
pub struct BackendError {
    message: String,
    timeout: bool,
}

impl BackendError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            timeout: false,
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn timeout(after: Duration) -> Self {
        Self {
            message: format!("backend command timed out after {after:?}"),
            timeout: true,
        }
    }

    /// Whether the operation timed out (as opposed to failing).
    pub fn is_timeout(&self) -> bool {
        self.timeout
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BackendError {}

/// A load of a `shared` cache that failed in another process, as the
/// callers that waited on it here receive it: one origin call per failing
/// flight fleet-wide, not one per process in turn.
///
/// It carries the leader's error as text (its `Debug` rendering) or its
/// panic message; the error value itself does not cross processes (error
/// types are rarely serialisable). A cache converts it into the callers'
/// error type `E` through `E: From<RemoteLoadError>`: the attribute does so
/// whenever that impl exists; a cache built by hand opts in with
/// [`CacheBuilder::remote_errors`](crate::CacheBuilder::remote_errors).
/// Without it, a process that finds its key's load failed elsewhere serves
/// its stale or fail-safe value if it has one, else loads itself under the
/// key's lock (the waiting processes one at a time).
///
/// A loader that *panicked* elsewhere is a bug of that call, not an answer:
/// as waiters in process start a new flight, the waiting processes take
/// over and one of them loads. Only a flight that had a value to serve
/// (stale, fail-safe) can be answered with a panic's record — and then its
/// callers are served that value.
///
/// ```
/// use stampede_cache::{LoadTimeout, RemoteLoadError};
///
/// #[derive(Clone, Debug)]
/// enum RepoError { Db(String), Timeout, Remote(String) }
/// impl From<RemoteLoadError> for RepoError {
///     fn from(e: RemoteLoadError) -> Self { RepoError::Remote(e.to_string()) }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLoadError {
    cache: Arc<str>,
    message: String,
    panicked: bool,
}

impl RemoteLoadError {
    pub(crate) fn new(cache: &str, message: String, panicked: bool) -> Self {
        Self {
            cache: cache.into(),
            message,
            panicked,
        }
    }

    /// The name of the cache whose load failed.
    pub fn cache(&self) -> &str {
        &self.cache
    }

    /// The leader's error (`Debug`) or panic message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the leader's loader panicked (rather than returned `Err`).
    pub fn panicked(&self) -> bool {
        self.panicked
    }
}

impl fmt::Display for RemoteLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.panicked { "panicked" } else { "failed" };
        write!(
            f,
            "stampede-cache `{}`: the load {what} in another process: {}",
            self.cache, self.message
        )
    }
}

impl std::error::Error for RemoteLoadError {}

pub(crate) type BackendResult<T> = Result<T, BackendError>;
pub(crate) type BackendFut<'a, T> = Pin<Box<dyn Future<Output = BackendResult<T>> + Send + 'a>>;

/// What a read of a slot found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// The value bytes, and how long until they expire by the backend's own
    /// clock (the end of their stale window).
    pub value: Option<(Vec<u8>, Duration)>,
    /// The failure record of the key's last failed load, if it is recent.
    pub failure: Option<Vec<u8>>,
    /// Whether some process holds the key's lock.
    pub locked: bool,
}

/// What a lock attempt found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquire {
    /// A value is there (only when asked to look for one): bytes and time left.
    Value(Vec<u8>, Duration),
    /// A recent failure record is there (only when asked to honour one):
    /// the flight has a value to serve, and the retry backoff runs.
    Failed(Vec<u8>),
    /// The lock is ours.
    Locked,
    /// Another process holds the lock; the failure record there was when
    /// we looked (a waiter answers only with a record newer than this).
    Held(Option<Vec<u8>>),
}

/// The operations a shared tier needs from a store every process sees.
///
/// Keys and channels follow [`slot`]'s layout. Implementations deliver
/// ready and invalidation notices (their own included) to [`Backend::hub`].
/// Every write that supersedes loads — `insert`, `invalidate` — deletes the
/// key's lock, so a load that started before it can no longer write (its
/// fenced write finds another token, or none): a write always wins.
pub(crate) trait Backend: Send + Sync + 'static {
    /// The key prefix.
    fn prefix(&self) -> &str;
    /// Where this process's notices are delivered.
    fn hub(&self) -> &Arc<Hub>;
    /// This process's writes to this backend, in order, retried.
    fn writes(&self) -> &Arc<WriteBehind>;
    /// The locks this process's loads hold through this backend.
    fn held(&self) -> &Arc<held::HeldLocks>;
    /// Whether its circuit breaker is open now, and how often it opened.
    fn breaker(&self) -> (bool, u64) {
        (false, 0)
    }
    /// Commands sent to the backend so far.
    fn commands(&self) -> u64 {
        0
    }
    /// The lease a lock is first taken with. A backend whose lock command
    /// may time out and still run later (Redis) starts short, so an orphan
    /// lock nobody renews lapses quickly; the leader extends it to the full
    /// lease at its first renewal.
    fn initial_lease(&self, lease: Duration) -> Duration {
        lease
    }
    /// Value, failure record and lock state of `slot`, in one round trip.
    fn read<'a>(&'a self, slot: &'a Slot) -> BackendFut<'a, Found>;
    /// One atomic step: with `or_value`, the value if there is one; else,
    /// with `honour_failure`, the failure record if there is one; else
    /// `SET <lock> token NX PX lease` — and if the lock is held, the
    /// failure record there was at that moment.
    fn lock<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        lease: Duration,
        or_value: bool,
        honour_failure: bool,
    ) -> BackendFut<'a, Acquire>;
    /// Extends the lease if `token` still holds the lock: whether it did.
    fn renew<'a>(&'a self, slot: &'a Slot, token: &'a str, lease: Duration)
    -> BackendFut<'a, bool>;
    /// Deletes the lock if `token` holds it (compare-and-delete) and
    /// publishes a ready notice so waiters look again at once.
    fn release<'a>(&'a self, slot: &'a Slot, token: &'a str) -> BackendFut<'a, bool>;
    /// Fenced value write: only if `token` holds the lock, in one step:
    /// write the value (expiring in `ttl`), drop the failure record and the
    /// lock, publish a ready notice. `false`: refused (lease lost, or a
    /// write superseded this load).
    fn write<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        bytes: &'a [u8],
        ttl: Duration,
    ) -> BackendFut<'a, bool>;
    /// Fenced failure: only if `token` holds the lock, in one step: leave
    /// the failure record (expiring in `ttl`), drop the lock (and, with
    /// `drop_value`, the key's value: a batch loader found no row, so the
    /// old one must not be read back), publish a ready notice so the
    /// waiters take the failure instead of loading.
    fn fail<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        record: &'a [u8],
        ttl: Duration,
        drop_value: bool,
    ) -> BackendFut<'a, bool>;
    /// `Cache::insert`: write the value unconditionally, drop the lock and
    /// failure record (superseding any load in flight anywhere), publish a
    /// ready notice and the invalidation `notice` on the cache's channel.
    fn insert<'a>(
        &'a self,
        slot: &'a Slot,
        cache: &'a CacheKeys,
        bytes: &'a [u8],
        ttl: Duration,
        notice: &'a str,
    ) -> BackendFut<'a, ()>;
    /// The invalidation `notice` of an `insert` or `invalidate` that has
    /// landed, for a backend that cannot publish it in the write's own step
    /// (a Redis Cluster: the cache's channel is in another hash slot than
    /// the key). The tier sends it after the write, and on a retry only it,
    /// so a retry never repeats a write that landed. Others publish the
    /// notice in the write itself: nothing to do.
    fn notify<'a>(&'a self, _cache: &'a CacheKeys, _notice: &'a str) -> BackendFut<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
    /// `Cache::invalidate`: delete value, lock and failure record, publish
    /// a ready notice and the invalidation `notice`.
    fn invalidate<'a>(
        &'a self,
        slot: &'a Slot,
        cache: &'a CacheKeys,
        notice: &'a str,
    ) -> BackendFut<'a, ()>;
    /// Records that `slot`'s entry carries `tags` (kept at least `ttl`), so a
    /// tag invalidation reaches it. Called before the slot's lock is taken.
    fn tag<'a>(&'a self, slot: &'a Slot, tags: &'a [Arc<str>], ttl: Duration)
    -> BackendFut<'a, ()>;
    /// `invalidate_tag`: deletes the value, lock and failure record of every
    /// slot recorded under `tag` (O(entries with the tag)), and publishes the
    /// tag to every process.
    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BackendFut<'a, ()>;
    /// The cache's current generation (0 until the first `invalidate_all`).
    fn generation<'a>(&'a self, cache: &'a CacheKeys) -> BackendFut<'a, u64>;
    /// `Cache::invalidate_all` in O(1): bump the cache's generation (values
    /// written under an older one are unusable from then on) and publish a
    /// clear notice from `sender` carrying it. Returns the new generation.
    fn invalidate_all<'a>(&'a self, cache: &'a CacheKeys, sender: u64) -> BackendFut<'a, u64>;
}

/// A backend for `shared` caches, ready to [`install`] or to give a cache
/// through [`CacheBuilder::backend`](crate::CacheBuilder::backend). Made
/// from a [`LocalBackend`] or a [`RedisBackend`](crate::redis::RedisBackend)
/// with `From`/`Into`. Cloning shares it.
#[derive(Clone)]
pub struct SharedBackend {
    pub(crate) inner: Arc<dyn Backend>,
    kind: &'static str,
}

impl SharedBackend {
    pub(crate) fn new(inner: Arc<dyn Backend>, kind: &'static str) -> Self {
        remember(&inner, kind);
        Self { inner, kind }
    }

    /// Waits until every write this process has made to the shared tier
    /// through this backend (`insert`, `invalidate`, `invalidate_all`,
    /// `invalidate_tag`) has landed, at most `bound`; whether they all did.
    /// Writes are applied behind the call that makes them: a process that
    /// exits right after one — a writer service's one-shot job, a shutdown
    /// hook — calls this first, or the write may die with it.
    ///
    /// ```no_run
    /// # async fn job(backend: stampede_cache::SharedBackend) {
    /// use std::time::Duration;
    /// stampede_cache::invalidate_tag("category:books");
    /// assert!(backend.flush(Duration::from_secs(5)).await, "the fleet was told");
    /// # }
    /// ```
    pub async fn flush(&self, bound: Duration) -> bool {
        self.inner.writes().flushed(bound).await
    }

    /// The last call of a process leaving the fleet (a graceful shutdown,
    /// a rolling deploy), at most `bound`: releases the locks of its loads
    /// still in flight, so the fleet's callers of those keys load them at
    /// once instead of waiting for a process that is gone (up to
    /// `lock_ttl`); those loads' values are fenced out, never written. Then
    /// [`flush`](Self::flush)es its writes. Whether every release and
    /// write landed. A process killed without it leaves its locks to their
    /// lease.
    ///
    /// ```no_run
    /// # async fn main_loop(backend: stampede_cache::SharedBackend) {
    /// use std::time::Duration;
    /// // ... serve until SIGTERM ...
    /// backend.shutdown(Duration::from_secs(2)).await;
    /// # }
    /// ```
    pub async fn shutdown(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        let mut all_released = true;
        for (slot, token) in self.inner.held().take_all() {
            let release = self.inner.release(&slot, &token);
            match tokio::time::timeout_at(deadline, release).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    all_released = false;
                    tracing::warn!(%error, "shutdown: a lock was not released; it lapses with its lease");
                }
                Err(_elapsed) => {
                    all_released = false;
                    tracing::warn!(
                        "shutdown: out of time releasing locks; the rest lapse with their lease"
                    );
                    break;
                }
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.flush(left).await && all_released
    }

    /// Writes to the shared tier retried after a failure so far (an
    /// `invalidate` during an outage is retried until it lands).
    pub fn write_retries(&self) -> u64 {
        self.inner.writes().retries()
    }

    /// Writes to the shared tier given up so far: refused (queue full, no
    /// runtime) or moot (what they superseded had expired by then).
    pub fn writes_lost(&self) -> u64 {
        self.inner.writes().lost()
    }
}

/// Every backend this process has made, so `invalidate_tag` reaches each
/// once — also from a process that never built the tagged cache.
/// Each with its metrics label (kind and number: `redis-1`).
static BACKENDS: Mutex<Vec<(Weak<dyn Backend>, String)>> = Mutex::new(Vec::new());

fn remember(backend: &Arc<dyn Backend>, kind: &str) {
    static NUMBERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut known = BACKENDS.lock().unwrap_or_else(|e| e.into_inner());
    known.retain(|(b, _)| b.strong_count() > 0);
    if !known
        .iter()
        .any(|(b, _)| std::ptr::addr_eq(b.as_ptr(), Arc::as_ptr(backend)))
    {
        let n = NUMBERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        known.push((Arc::downgrade(backend), format!("{kind}-{n}")));
    }
}

/// The metrics label of `backend` (see [`remember`]).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn label_of(backend: *const ()) -> Option<String> {
    let known = BACKENDS.lock().unwrap_or_else(|e| e.into_inner());
    known
        .iter()
        .find(|(b, _)| std::ptr::addr_eq(b.as_ptr(), backend))
        .map(|(_, label)| label.clone())
}

/// Runs `f` on the health of every live backend.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn each_health(mut f: impl FnMut(crate::metrics::BackendHealth)) {
    let live: Vec<(Arc<dyn Backend>, String)> = {
        let known = BACKENDS.lock().unwrap_or_else(|e| e.into_inner());
        known
            .iter()
            .filter_map(|(b, label)| Some((b.upgrade()?, label.clone())))
            .collect()
    };
    for (backend, label) in live {
        let (breaker_open, breaker_trips) = backend.breaker();
        f(crate::metrics::BackendHealth {
            label,
            breaker_open,
            breaker_trips,
            commands: backend.commands(),
            write_retries: backend.writes().retries(),
            writes_lost: backend.writes().lost(),
        });
    }
}

/// `invalidate_tag` in the shared tier: queued once on every live backend
/// of this process (each deletes the tag's values and locks and tells its
/// other processes).
pub(crate) fn invalidate_tag(tag: &str) {
    let live: Vec<Arc<dyn Backend>> = {
        let known = BACKENDS.lock().unwrap_or_else(|e| e.into_inner());
        known.iter().filter_map(|(b, _)| b.upgrade()).collect()
    };
    for backend in &live {
        tier::invalidate_tag_on(backend, tag);
    }
}

impl fmt::Debug for SharedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBackend")
            .field("kind", &self.kind)
            .field("prefix", &self.inner.prefix())
            .finish()
    }
}

static INSTALLED: RwLock<Option<SharedBackend>> = RwLock::new(None);

/// Installs the backend every `shared` cache built from now on uses (a cache
/// given its own through [`CacheBuilder::backend`](crate::CacheBuilder::backend)
/// keeps that one). Call it at start-up, before the first call of a `shared`
/// function: a cache is bound to its backend when it is built (the macro
/// builds its cache on the function's first call). Installing again replaces
/// the backend for caches built later.
///
/// With no backend installed, `shared` caches use one process-wide
/// [`LocalBackend`] (coordination in process); with the `redis` feature on
/// that also logs a warning once, since it is usually a forgotten `install`.
///
/// ```no_run
/// # #[cfg(feature = "redis")]
/// # async fn start() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// stampede_cache::install(stampede_cache::redis::RedisBackend::connect("redis://127.0.0.1/").await?);
/// # Ok(()) }
/// ```
pub fn install(backend: impl Into<SharedBackend>) {
    let backend = backend.into();
    tracing::info!(backend = ?backend, "shared-cache backend installed");
    *INSTALLED.write().unwrap_or_else(|e| e.into_inner()) = Some(backend);
}

/// The installed backend, if any.
pub fn installed() -> Option<SharedBackend> {
    INSTALLED.read().unwrap_or_else(|e| e.into_inner()).clone()
}

fn installed_or_default(cache: &str) -> SharedBackend {
    if let Some(backend) = installed() {
        return backend;
    }
    static DEFAULT: std::sync::OnceLock<SharedBackend> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            if cfg!(feature = "redis") {
                tracing::warn!(
                    cache = cache,
                    "the `redis` feature is on but no backend is installed: `shared` caches coordinate in process only (call stampede_cache::install at start-up)"
                );
            }
            LocalBackend::new().into()
        })
        .clone()
}
