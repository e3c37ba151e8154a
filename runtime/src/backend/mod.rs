//! Fleet coordination for `shared` caches: the hook the cache core calls on a
//! miss or refresh, and the serde bounds a shared key and value need.

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::flight::ErasedError;
use crate::stats::Counters;
use crate::strategy::Strategy;

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
    fn evict(&self, key: &K);
    fn evict_all(&self);
}

/// What a shared tier is built from.
#[allow(dead_code)] // read by the distributed tiers
pub(crate) struct TierSpec<K> {
    pub name: String,
    pub ttl: Duration,
    pub strategy: Strategy,
    pub lock_ttl: Duration,
    pub counters: Arc<Counters>,
    pub l1: Weak<dyn L1Evictor<K>>,
}

/// Fleet-wide coordination behind a `shared` cache. The cache core has
/// already coalesced callers in this process: `load` is called once per local
/// flight, and decides whether this process runs `origin` or takes a value
/// another process produced.
pub(crate) trait SharedTier<K, V>: Send + Sync {
    fn load(&self, key: K, origin: OriginLoad<V>) -> BoxFut<Result<Loaded<V>, ErasedError>>;
    /// `Cache::insert` on a shared cache: write through to the shared tier.
    fn store(&self, key: &K, value: &V);
    fn invalidate(&self, key: &K);
    fn invalidate_all(&self);
}

/// Builds the shared tier of a `shared` cache, or `None` to coordinate in
/// process only (no distributed backend installed).
pub(crate) type TierFactory<K, V> = fn(TierSpec<K>) -> Option<Arc<dyn SharedTier<K, V>>>;

/// The tier factory `CacheBuilder::shared` installs.
pub(crate) fn shared_tier<K: SharedKey, V: SharedValue>(
    spec: TierSpec<K>,
) -> Option<Arc<dyn SharedTier<K, V>>> {
    tracing::debug!(cache = %spec.name, "no shared backend installed: coordinating in process only");
    None
}
