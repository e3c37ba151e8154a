use std::collections::HashMap;
use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", batch)]
async fn everyone() -> HashMap<u64, String> {
    HashMap::new()
}

fn main() {}
