//! stampede-cache (work in progress: the runtime core lands with issue 2).

pub use stampede_cache_macros::stampede_cached;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
