use std::collections::HashMap;
use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", batch)]
async fn find_user(id: i64) -> HashMap<i64, String> {
    HashMap::from([(id, id.to_string())])
}

fn main() {}
