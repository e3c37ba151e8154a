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

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::flight::{ErasedError, Need};
use crate::stats::Counters;
use crate::strategy::Strategy;

#[doc(hidden)]
pub mod conformance;
pub(crate) mod hub;
mod local;
#[cfg(feature = "redis")]
pub mod redis;
mod tier;

pub use local::LocalBackend;

use hub::Hub;

/// A boxed, sendable future.
pub(crate) type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a key must be to live in a `shared` cache: serde-serialisable (it
/// becomes part of the backend key) on top of the usual key bounds.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the key of a `shared` cache: it must implement serde's `Serialize` (and `Hash + Eq + Clone + Send + Sync + 'static`)",
    label = "needs `serde::Serialize` for `shared`",
    note = "derive it: `#[derive(serde::Serialize)]`, or drop `shared` to keep this cache in-process"
)]
pub trait SharedKey: Serialize + Hash + Eq + Clone + Send + Sync + 'static {}
impl<T: Serialize + Hash + Eq + Clone + Send + Sync + 'static> SharedKey for T {}

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
}

/// The origin call of one flight: the user's loader, counted and timed. It
/// yields the value and how long the load took.
pub(crate) type OriginLoad<V> = BoxFut<Result<(V, Duration), ErasedError>>;

/// Drops L1 copies when another process says so (invalidation bus).
pub(crate) trait L1Evictor<K>: Send + Sync {
    #[allow(dead_code)] // part of the evictor's contract; the bus uses evict_where
    fn evict(&self, key: &K);
    /// Drops every key for which `matches` holds.
    fn evict_where(&self, matches: &dyn Fn(&K) -> bool);
    fn evict_all(&self);
}

/// What a shared tier is built from.
pub(crate) struct TierSpec<K> {
    pub name: String,
    pub ttl: Duration,
    pub strategy: Strategy,
    pub lock_ttl: Duration,
    pub counters: Arc<Counters>,
    pub l1: Weak<dyn L1Evictor<K>>,
    /// The backend given to this cache's builder, if any (else the installed one).
    pub backend: Option<SharedBackend>,
}

/// Fleet-wide coordination behind a `shared` cache. The cache core has
/// already coalesced callers in this process: `load` is called once per local
/// flight, and decides whether this process runs `origin` or takes a value
/// another process produced.
pub(crate) trait SharedTier<K, V>: Send + Sync {
    fn load(
        &self,
        key: K,
        origin: OriginLoad<V>,
        need: Need,
    ) -> BoxFut<Result<Loaded<V>, ErasedError>>;
    /// `Cache::insert` on a shared cache: write through to the shared tier.
    fn store(&self, key: &K, value: &V);
    fn invalidate(&self, key: &K);
    fn invalidate_all(&self);
}

/// Builds the shared tier of a `shared` cache, or `None` to coordinate in
/// process only.
pub(crate) type TierFactory<K, V> = fn(TierSpec<K>) -> Option<Arc<dyn SharedTier<K, V>>>;

/// The tier factory `CacheBuilder::shared` installs: the builder's backend,
/// else the installed one, else the process-wide [`LocalBackend`].
pub(crate) fn shared_tier<K: SharedKey, V: SharedValue>(
    spec: TierSpec<K>,
) -> Option<Arc<dyn SharedTier<K, V>>> {
    let backend = match spec.backend.clone() {
        Some(backend) => backend,
        None => installed_or_default(&spec.name),
    };
    Some(tier::Tier::<K, V>::build(spec, backend))
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

pub(crate) type BackendResult<T> = Result<T, BackendError>;
pub(crate) type BackendFut<'a, T> = Pin<Box<dyn Future<Output = BackendResult<T>> + Send + 'a>>;

/// The operations a shared tier needs from a store every process sees.
///
/// Keys are derived from a key's *slot*, `<prefix>:{<cache name>:<encoded
/// key>}`: the value at `<slot>:value`, the lock at `<slot>:lock`, the ready
/// and invalidation channels `<slot>:ready` and `<slot>:inval` — one hash tag,
/// so one Redis Cluster slot. Implementations must deliver ready and
/// invalidation notices (their own included) to [`Backend::hub`].
pub(crate) trait Backend: Send + Sync + 'static {
    /// The key prefix.
    fn prefix(&self) -> &str;
    /// The wall clock the envelope's instants are read against.
    fn wall_now(&self) -> SystemTime {
        SystemTime::now()
    }
    /// Where this process's notices are delivered.
    fn hub(&self) -> &Arc<Hub>;
    /// The value bytes of `slot`, if any.
    fn read<'a>(&'a self, slot: &'a str) -> BackendFut<'a, Option<Vec<u8>>>;
    /// One round trip for the common miss: the value bytes if there are
    /// any; if there are none, `SET <slot>:lock token NX PX lease` in the
    /// same atomic step (so no value can land between the read and the
    /// lock). Returns the bytes and whether the lock was taken.
    fn read_or_lock<'a>(
        &'a self,
        slot: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFut<'a, (Option<Vec<u8>>, bool)>;
    /// `SET <slot>:lock token NX PX lease`: whether the lock was taken.
    fn try_lock<'a>(
        &'a self,
        slot: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFut<'a, bool>;
    /// Extends the lease if `token` still holds the lock: whether it did.
    fn renew<'a>(&'a self, slot: &'a str, token: &'a str, lease: Duration) -> BackendFut<'a, bool>;
    /// Deletes the lock if `token` holds it (compare-and-delete); with
    /// `notify`, publishes a ready notice so waiters retry at once.
    fn release<'a>(&'a self, slot: &'a str, token: &'a str, notify: bool) -> BackendFut<'a, bool>;
    /// Writes the value with expiry `ttl` and publishes a ready notice, in
    /// one step. With `Some(token)` the write is fenced: refused (`false`)
    /// unless `token` holds the lock, and it releases the lock in the same
    /// step (the leader's second and last round trip). With `None` (an `insert`) it is
    /// unconditional, and also publishes an invalidation from `sender` so
    /// other processes drop their older L1 copy.
    fn write<'a>(
        &'a self,
        slot: &'a str,
        fence: Option<&'a str>,
        bytes: &'a [u8],
        ttl: Duration,
        sender: u64,
    ) -> BackendFut<'a, bool>;
    /// Deletes the value and the lock of `slot` (a load in flight then cannot
    /// write its older value) and publishes an invalidation from `sender`.
    fn invalidate<'a>(&'a self, slot: &'a str, sender: u64) -> BackendFut<'a, ()>;
    /// Deletes every value of cache `name` and publishes a clear from `sender`.
    fn invalidate_all<'a>(&'a self, name: &'a str, sender: u64) -> BackendFut<'a, ()>;
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
        Self { inner, kind }
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

/// The slot of a key: `<prefix>:{<name>:<encoded key>}`.
pub(crate) fn slot(prefix: &str, name: &str, encoded: &str) -> String {
    format!("{prefix}:{{{name}:{encoded}}}")
}

/// Splits a slot's hash tag content `<name>:<encoded>` (the encoding never
/// contains `:`).
pub(crate) fn split_tag(tag: &str) -> Option<(&str, &str)> {
    tag.rsplit_once(':')
}
