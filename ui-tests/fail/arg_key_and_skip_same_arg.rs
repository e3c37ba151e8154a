use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", key: u64 = id + 1, skip(id))]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
