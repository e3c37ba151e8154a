//! Paths the `#[stampede_cached]` expansion names. Not public API: it may change in any release.

pub use std::sync::LazyLock;
pub use std::time::Duration;
