use std::collections::HashMap;
use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", batch, skip(db))]
async fn find_users(ids: &[i64], db: &str) -> HashMap<i64, String> {
    ids.iter().map(|id| (*id, format!("{db}:{id}"))).collect()
}

fn main() {}
