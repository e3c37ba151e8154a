use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s")]
async fn load<T: std::hash::Hash>(id: T) -> u64 {
    let _ = id;
    1
}

fn main() {}
