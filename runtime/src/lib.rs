//! # stampede-cache
//!
//! Async memoisation that survives cache stampedes. When a popular key
//! expires, every concurrent caller sees the miss and runs the same expensive
//! query at once; the database, sized for one, gets a thousand. This crate
//! makes that one query — per process, and with `shared` per fleet.
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
//! See [`Strategy`] for what happens at expiry, and [`Cache::get_or_load`]
//! for the failure semantics (cancellation, loader errors and panics).

pub use stampede_cache_macros::stampede_cached;

mod backend;
mod cache;
mod flight;
mod stats;
mod store;
mod strategy;

pub use backend::{SharedKey, SharedValue};
pub use cache::{Cache, CacheBuilder, DEFAULT_CAPACITY, DEFAULT_LOCK_TTL, DEFAULT_TTL};
pub use stats::CacheStats;
pub use strategy::Strategy;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
