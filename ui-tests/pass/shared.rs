//! `shared` with serde key and value, `lock_ttl`, `name`, `capacity`.
use serde::{Deserialize, Serialize};
use stampede_cache::stampede_cached;

#[derive(Clone, Serialize, Deserialize)]
pub struct Price {
    pub cents: u64,
}

#[derive(Clone, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sku(pub String);

#[stampede_cached(ttl = "1m", strategy = "xfetch", beta = 1.0, shared, lock_ttl = "10s")]
async fn pricing(sku: Sku) -> Result<Price, String> {
    Ok(Price { cents: sku.0.len() as u64 })
}

#[stampede_cached(ttl = "30s", shared, name = "users.by_id", capacity = 10_000)]
async fn user(id: u64) -> Option<String> {
    Some(id.to_string())
}

fn main() {
    let _ = pricing_cache();
    assert_eq!(user_cache().name(), "users.by_id");
}
