use std::collections::HashMap;
use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", batch = true)]
async fn find_users(ids: &[i64]) -> HashMap<i64, String> {
    ids.iter().map(|id| (*id, id.to_string())).collect()
}

fn main() {}
