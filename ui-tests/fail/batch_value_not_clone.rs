use std::collections::HashMap;
use stampede_cache::stampede_cached;

struct Row;

#[stampede_cached(ttl = "30s", batch)]
async fn rows(ids: Vec<u32>) -> HashMap<u32, Row> {
    ids.into_iter().map(|id| (id, Row)).collect()
}

fn main() {
    let _ = rows_cache();
}
