//! `-> T`, `-> ()`, `-> Option<T>`, `-> Result<T, E>` and one-parameter `Result` aliases.
use std::sync::Arc;

use stampede_cache::{Cache, stampede_cached};

#[derive(Clone, Debug)]
pub struct RepoError;

mod error {
    pub type Result<T> = std::result::Result<T, std::sync::Arc<std::io::Error>>;
}

#[stampede_cached(ttl = "30s")]
async fn unit(id: u64) {
    let _ = id;
}

#[stampede_cached(ttl = "30s")]
async fn option(id: u64) -> Option<String> {
    (id > 0).then(|| id.to_string())
}

#[stampede_cached(ttl = "30s")]
async fn result(id: u64) -> Result<Option<String>, RepoError> {
    Ok(Some(id.to_string()))
}

#[stampede_cached(ttl = "30s")]
async fn std_result(id: u64) -> std::result::Result<u64, Arc<std::io::Error>> {
    Ok(id)
}

#[stampede_cached(ttl = "30s")]
async fn alias(id: u64) -> error::Result<u64> {
    Ok(id)
}

fn main() {
    let _: &Cache<u64, ()> = unit_cache();
    let _: &Cache<u64, Option<String>> = option_cache();
    let _: &Cache<u64, Option<String>> = result_cache();
    let _: &Cache<u64, u64> = std_result_cache();
    let _: &Cache<u64, u64> = alias_cache();
}
