//! # stampede-cache
//!
//! Async memoisation that survives cache stampedes. When a popular key
//! expires, every concurrent caller sees the miss and runs the same expensive
//! query at once; the database, sized for one, gets a thousand, slows down,
//! and the cache stays empty longer. This crate makes that one query — per
//! process, and with `shared` per fleet.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use stampede_cache::{Cache, Strategy};
//!
//! let cache: Cache<u64, String> = Cache::builder("users.by_id")
//!     .ttl(Duration::from_secs(30))
//!     .strategy(Strategy::Lock)
//!     .build();
//! let user = cache.get_or_load(42, |id| async move { format!("user {id}") }).await;
//! assert_eq!(user, "user 42");
//! # }
//! ```
//!
//! Most users write the attribute instead: [`macro@stampede_cached`] turns an
//! `async fn` (or an `&self` repository method) into a memoised one and gives
//! it a `<fn>_cache()` handle for invalidation.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use stampede_cache::stampede_cached;
//!
//! #[derive(Clone)]
//! struct UserRepo { queries: Arc<AtomicUsize> }
//!
//! impl UserRepo {
//!     // one query per id per 30 s, however many callers arrive at once
//!     #[stampede_cached(ttl = "30s")]
//!     async fn find_user(&self, id: u64) -> Result<Option<String>, Arc<std::io::Error>> {
//!         self.queries.fetch_add(1, Ordering::SeqCst);
//!         Ok((id == 42).then(|| "Ada".to_string()))
//!     }
//! }
//!
//! let repo = UserRepo { queries: Arc::new(AtomicUsize::new(0)) };
//! let callers: Vec<_> = (0..100)
//!     .map(|_| {
//!         let repo = repo.clone();
//!         tokio::spawn(async move { repo.find_user(42).await })
//!     })
//!     .collect();
//! for caller in callers {
//!     assert_eq!(caller.await.unwrap().unwrap().as_deref(), Some("Ada"));
//! }
//! assert_eq!(repo.queries.load(Ordering::SeqCst), 1);
//! UserRepo::find_user_cache().invalidate(&42); // after a write
//! # }
//! ```
//!
//! ### Batch lookups
//!
//! `batch` caches a fn that takes a list of keys and returns the rows it
//! found: the misses of a call (and of every concurrent call) are **one**
//! call of its body, with only the missing keys; ids it does not return are
//! cached as absent (the cache holds `Option<V>`), so they are not queried
//! again. The call returns the found keys
//! ([`Cache::get_many_or_load`] underneath).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use stampede_cache::{Cache, stampede_cached};
//!
//! #[derive(Clone, Default)]
//! struct UserRepo { queries: Arc<Mutex<Vec<Vec<i64>>>> }
//!
//! impl UserRepo {
//!     #[stampede_cached(ttl = "30s", none_ttl = "5s", batch, max_batch = 500)]
//!     async fn find_users(&self, ids: &[i64]) -> Result<HashMap<i64, String>, Arc<str>> {
//!         self.queries.lock().unwrap().push(ids.to_vec()); // WHERE id = ANY($1)
//!         Ok(ids.iter().filter(|id| **id != 3).map(|id| (*id, format!("user {id}"))).collect())
//!     }
//! }
//!
//! let repo = UserRepo::default();
//! let users = repo.find_users(&[1, 2, 3]).await.unwrap();
//! assert_eq!(users.len(), 2); // 3 has no row
//! let users = repo.find_users(&[2, 3, 4]).await.unwrap();
//! assert_eq!(users[&4], "user 4");
//! // the second call queried 4 only: 2 was cached, 3 cached as absent
//! assert_eq!(*repo.queries.lock().unwrap(), [vec![1, 2, 3], vec![4]]);
//! let cache: &'static Cache<i64, Option<String>> = UserRepo::find_users_cache();
//! assert_eq!(cache.get(&3), Some(None));
//! cache.invalidate(&2); // after a write
//! # }
//! ```
//!
//! ## Choosing a strategy
//!
//! Every strategy coalesces misses: at any moment at most one load per key
//! runs in a process. They differ at expiry ([`Strategy`] has the full table):
//!
//! - [`Strategy::Lock`] (default) — the first caller after expiry reloads,
//!   the others wait for it. Always fresh; callers wait one load per expiry.
//!   Pick it when a stale answer is wrong.
//! - [`Strategy::Swr`] — past the TTL, readers get the stale value at once
//!   while one background refresh runs; the stale value keeps being served
//!   (also when refreshes fail, one retry per backoff) until the `stale`
//!   window ends. Nobody waits
//!   after warm-up. Pick it for read-heavy data that may lag by one refresh.
//! - [`Strategy::XFetch`] — each load draws one early-refresh instant
//!   (after XFetch, Vattani et al., VLDB 2015, made rate-independent); the
//!   first hit after it starts one background refresh. A hot key is
//!   refreshed before it expires, so no one waits and nothing is ever served
//!   past its TTL; a cold key behaves like `Lock`. Pick it for hot keys that
//!   must never be stale.
//!
//! ## Failure semantics
//!
//! - **Detached loads.** A load runs as its own spawned tokio task; every
//!   caller of that key, the one that started it included, only awaits it.
//!   A caller that is cancelled, times out or is never polled cannot cancel
//!   or stall the load; its value still lands in the cache.
//! - **Flights cannot be orphaned.** Registering a load and spawning its
//!   task succeed or fail together. A call that must load outside a tokio
//!   runtime panics with a message naming the cache, before anything is
//!   registered. A load task dropped before or during its run (its runtime
//!   shut down — say, per-test runtimes sharing a macro's static cache)
//!   releases the key; callers waiting on it from other runtimes start a
//!   new load.
//! - **One failure rule, with and without `shared`.** A load that fails —
//!   returns `Err` ([`Cache::try_get_or_load`]), panics, or runs past
//!   `load_timeout` — answers the callers that waited on *that* load, in
//!   every process (each gets a clone of the error). Failures are never
//!   cached: a call that starts after the load ended starts a new one (one
//!   per fleet with `shared`) — unless the key has a value to serve (a
//!   fail-safe or `swr` stale value, below): then that value is served and
//!   the retry backoff holds new loads back, fleet-wide with `shared`.
//! - **Loader panics** reach the caller that started the load; its waiters
//!   retry once as one new flight (so a one-off panic costs them nothing) and
//!   panic only if that flight panics too. Nothing is poisoned; the key works
//!   again at once.
//! - **Fail-safe** ([`CacheBuilder::fail_safe`], `fail_safe = "10m"`): the
//!   last good value is kept that long past expiry. When a load errors,
//!   panics or times out, its callers get that value instead of the failure
//!   (`fail_safe_hits`, logged), and the key is not loaded again for
//!   [`CacheBuilder::failed_refresh_backoff`] — the value is served
//!   meanwhile — so a down origin is retried once per backoff, not once per
//!   call. `swr`'s stale window works the same way for failed background
//!   refreshes. An `invalidate` drops the value for good: fail-safe never
//!   serves a value that was replaced or removed.
//! - **Soft timeout** ([`CacheBuilder::soft_timeout`], `soft_timeout =
//!   "200ms"`): a caller that has waited that long on a load while a
//!   fail-safe or stale value exists gets that value; the load goes on and
//!   its value lands for the next callers.
//! - **Load timeout** ([`CacheBuilder::load_timeout`], `load_timeout =
//!   "5s"`): no load runs longer. Its future is dropped, the flight ends,
//!   the next call starts a fresh load; its callers get the fail-safe value,
//!   else `Err(E::from(LoadTimeout))`. The error type is fixed when the cache
//!   is built (`.load_timeout::<E>(..)`; the attribute takes it from the
//!   fn's `Result<_, E>` and requires `E: From<LoadTimeout>` at compile
//!   time). A call that cannot report the timeout — [`Cache::get_or_load`],
//!   or `try_get_or_load` with another error type — panics with a message
//!   naming the fix when no fail-safe value can stand in. With `shared`, a
//!   process waiting on another's load counts that wait against its own
//!   `load_timeout` (past it, its callers get the timeout); if the other's
//!   load timed out first, it takes over and loads itself — a timeout
//!   elsewhere says nothing about this process's origin.
//! - **Invalidation during a load**: the load still answers its callers, but
//!   its value is not cached.
//! - **Durations** beyond about a century saturate: `Duration::MAX` means
//!   "never", not an overflow.
//!
//! ## Fleet mode (`shared`)
//!
//! An in-process lock gives one recompute per process: 200 pods, 200
//! recomputes. A `shared` cache (`#[stampede_cached(ttl = "1m", shared)]`
//! or [`CacheBuilder::shared`]) adds a second tier in a backend every process
//! talks to: on a miss, one process takes the key's distributed lock
//! (`SET NX PX`, renewed while the loader runs, released by compare-and-delete),
//! loads, writes the value with a fenced script and publishes a ready notice;
//! the others wait for that notice on one subscription per process and read
//! the value. The fleet does one origin call per key per expiry; `swr` and
//! `xfetch` refreshes take a try-lock, so their losers never wait. Hits stay
//! in process and never touch the network.
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn start() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // at start-up, before the first call to a `shared` cache (cargo feature `redis`)
//! stampede_cache::install(stampede_cache::redis::RedisBackend::connect("redis://127.0.0.1/").await?);
//! # Ok(()) }
//! ```
//!
//! Without the `redis` feature, or with nothing installed, `shared` caches
//! coordinate through an in-memory [`LocalBackend`]: the same code runs in
//! development and tests with no Redis.
//!
//! **It is an efficiency lock, not a correctness lock.** It lives on one
//! Redis primary (no Redlock); a failover or a holder paused past its lease
//! can let two processes load the same key. That costs one extra origin call,
//! never a wrong answer: the value write refuses a holder whose lease lapsed.
//! Don't use a `shared` cache to serialise side effects. Redis down, slow or
//! returning garbage never fails a call the loader could answer: the call
//! loads in process, counts `fallbacks` (or `backend_errors`), logs a
//! rate-limited warning, and coordination resumes when Redis is back.
//! Writes (`insert`, `invalidate`, `invalidate_all`, [`invalidate_tag`])
//! are applied behind the call, in call order per backend, and retried
//! until they land; [`SharedBackend::flush`] waits for them (call it before
//! a process exits).
//!
//! ## Time
//!
//! On Linux a hit reads the kernel's coarse monotonic clock (the time of
//! the last scheduler tick: a fifth of a precise clock read), so an entry
//! may be served up to one tick — [`clock::resolution`], 1–4 ms — past its
//! ttl; loads, writes and timeouts use the precise clock. Tokio's paused
//! clock (`start_paused`, `advance`) works as before: the first load or
//! `insert` that finds it paused switches the process's hits to tokio's
//! clock ([`clock`] has the details, and [`clock::use_tokio_clock`] for a
//! test whose first cache call is a `get`).
//!
//! ## Observability
//!
//! [`Cache::stats`] returns plain counters ([`CacheStats`]); loads, failed
//! loads, panics, timeouts, fail-safe serves and refreshes are `tracing`
//! events with the cache's name.
//!
//! ## Expiry and invalidation
//!
//! [`CacheBuilder::jitter`] spreads the expiries of keys loaded together;
//! [`CacheBuilder::ttl_for`] gives each entry its own ttl (the attribute's
//! `none_ttl` uses it); [`CacheBuilder::tags`] and [`invalidate_tag`] drop a
//! group of entries in every cache (and, with `shared`, fleet-wide) and
//! supersede their loads in flight. [`lookup`] finds a live cache by name.

#![warn(missing_docs)]

pub use stampede_cache_macros::stampede_cached;

mod backend;
mod batch;
mod builder;
mod cache;
pub mod clock;
mod core;
mod flight;
mod invalidate;
mod landing;
mod load;
mod many;
pub mod metrics;
mod registry;
mod stats;
mod store;
mod strategy;
mod tags;

#[cfg(feature = "redis")]
pub use backend::redis;
pub use backend::{
    BackendError, LocalBackend, RemoteLoadError, SharedBackend, SharedKey, SharedValue, install,
    installed,
};

/// Test support (cargo feature `testing`): the conformance suite every
/// shared backend passes. Not part of the stable API.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::backend::conformance::run as backend_conformance;
}
pub use batch::{BatchRows, DEFAULT_MAX_BATCH};
pub use builder::{
    CacheBuilder, DEFAULT_CAPACITY, DEFAULT_LOCK_TTL, DEFAULT_MAX_LOCK_HOLD, DEFAULT_TTL,
};
pub use cache::Cache;
pub use invalidate::invalidate_tag;
pub use load::LoadTimeout;
pub use registry::lookup;
pub use stats::CacheStats;
pub use strategy::Strategy;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
