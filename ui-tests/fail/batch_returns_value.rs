use std::collections::HashMap;
use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", batch, returns = "value")]
async fn find_users(ids: &[i64]) -> Result<HashMap<i64, String>, String> {
    Ok(ids.iter().map(|id| (*id, id.to_string())).collect())
}

fn main() {}
