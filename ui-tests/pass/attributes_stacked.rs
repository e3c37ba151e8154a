//! Doc comments and other attributes are kept; `#[tracing::instrument]` stacks on either side.
#![deny(missing_docs)]
use stampede_cache::stampede_cached;

/// Documented and traced on every call (hits included).
#[stampede_cached(ttl = "30s")]
#[tracing::instrument(level = "debug")]
#[must_use]
pub async fn traced_calls(id: u64) -> u64 {
    id
}

/// Traced around the loads only: `instrument` expands first and wraps the body.
#[tracing::instrument]
#[stampede_cached(ttl = "30s")]
pub async fn traced_loads(id: u64) -> u64 {
    id
}

/// `cfg` and lint attributes reach every generated item.
#[cfg(all())]
#[allow(clippy::needless_pass_by_value)]
#[expect(unused_variables)]
#[stampede_cached(ttl = "30s")]
pub async fn with_lints(id: String, unused: u8) -> usize {
    id.len()
}

#[cfg(any())]
#[stampede_cached(ttl = "30s")]
pub async fn compiled_out(id: u64) -> u64 {
    id
}

fn main() {
    let _ = (traced_calls(1), traced_loads(1), with_lints(String::new(), 1));
    let _ = (traced_calls_cache(), traced_loads_cache(), with_lints_cache());
}
