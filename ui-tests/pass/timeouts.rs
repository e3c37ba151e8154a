//! `fail_safe`, `soft_timeout` and `load_timeout`, alone and together, on every shape that
//! accepts them.
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use stampede_cache::{LoadTimeout, stampede_cached};

#[derive(Clone, Debug)]
pub enum RepoError {
    Timeout(LoadTimeout),
    Db(Arc<std::io::Error>),
}

impl From<LoadTimeout> for RepoError {
    fn from(t: LoadTimeout) -> Self {
        RepoError::Timeout(t)
    }
}

mod error {
    pub type Result<T> = std::result::Result<T, super::RepoError>;
}

type Fallible<T> = Result<T, RepoError>;

#[stampede_cached(ttl = "30s", fail_safe = "10m")]
async fn fail_safe_only(id: u64) -> u64 {
    id
}

#[stampede_cached(ttl = "30s", fail_safe = "10m", soft_timeout = "200ms")]
async fn soft_with_fail_safe(id: u64) -> Option<u64> {
    Some(id)
}

#[stampede_cached(ttl = "30s", strategy = "swr", stale = "5m", soft_timeout = "200ms")]
async fn soft_with_swr(id: u64) -> u64 {
    id
}

#[stampede_cached(ttl = "30s", load_timeout = "5s")]
async fn load_timeout(id: u64) -> Result<u64, RepoError> {
    if id == 0 {
        return Err(RepoError::Db(Arc::new(std::io::Error::other("down"))));
    }
    Ok(id)
}

#[stampede_cached(ttl = "30s", load_timeout = "1500ms")]
async fn load_timeout_alias(id: u64) -> error::Result<u64> {
    Ok(id)
}

#[stampede_cached(ttl = "30s", load_timeout = "5s", returns = "result")]
async fn load_timeout_other_alias(id: u64) -> Fallible<u64> {
    Ok(id)
}

#[stampede_cached(
    ttl = "30s",
    strategy = "swr",
    fail_safe = "1h",
    soft_timeout = "250ms",
    load_timeout = "5s"
)]
async fn everything(id: u64) -> Result<Option<String>, RepoError> {
    Ok(Some(id.to_string()))
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Price {
    pub cents: u64,
}

#[stampede_cached(
    ttl = "1m",
    strategy = "xfetch",
    shared,
    lock_ttl = "10s",
    fail_safe = "10m",
    soft_timeout = "100ms",
    load_timeout = "5s"
)]
async fn pricing(sku: String) -> Result<Price, RepoError> {
    Ok(Price {
        cents: sku.len() as u64,
    })
}

#[derive(Clone)]
struct Repo;

impl Repo {
    #[stampede_cached(ttl = "30s", fail_safe = "10m", load_timeout = "2s")]
    async fn find(&self, id: u64) -> Result<u64, RepoError> {
        Ok(id)
    }
}

fn main() {
    let _ = fail_safe_only_cache();
    let _ = soft_with_fail_safe_cache();
    let _ = soft_with_swr_cache();
    let _ = load_timeout_cache();
    let _ = load_timeout_alias_cache();
    let _ = load_timeout_other_alias_cache();
    let _ = everything_cache();
    let _ = pricing_cache();
    let _ = Repo::find_cache();
}
