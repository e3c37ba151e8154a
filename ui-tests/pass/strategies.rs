//! All three strategies, with and without their tuning arguments.
use stampede_cache::{Strategy, stampede_cached};

#[stampede_cached(ttl = "30s", strategy = "lock")]
async fn locked(id: u64) -> u64 {
    id
}

#[stampede_cached(ttl = "30s", strategy = "swr", stale = "10m")]
async fn swr(id: u64) -> u64 {
    id
}

#[stampede_cached(ttl = "30s", strategy = "swr")]
async fn swr_default_stale(id: u64) -> u64 {
    id
}

#[stampede_cached(ttl = "1m", strategy = "xfetch", beta = 1.5)]
async fn xfetch(id: u64) -> u64 {
    id
}

#[stampede_cached(ttl = "1m", strategy = "xfetch", beta = 2)]
async fn xfetch_int_beta(id: u64) -> u64 {
    id
}

#[stampede_cached(ttl = "1m", strategy = "xfetch")]
async fn xfetch_default_beta(id: u64) -> u64 {
    id
}

fn main() {
    assert!(matches!(locked_cache().strategy(), Strategy::Lock));
    assert!(matches!(swr_cache().strategy(), Strategy::Swr { .. }));
    assert!(matches!(swr_default_stale_cache().strategy(), Strategy::Swr { .. }));
    assert!(matches!(xfetch_cache().strategy(), Strategy::XFetch { .. }));
    assert!(matches!(xfetch_int_beta_cache().strategy(), Strategy::XFetch { .. }));
    assert!(matches!(xfetch_default_beta_cache().strategy(), Strategy::XFetch { .. }));
}
