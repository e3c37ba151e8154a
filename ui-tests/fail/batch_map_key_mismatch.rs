use std::collections::HashMap;
use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", batch)]
async fn find_users(ids: &[i64]) -> Result<HashMap<u64, String>, String> {
    Ok(ids.iter().map(|id| (*id as u64, id.to_string())).collect())
}

fn main() {}
