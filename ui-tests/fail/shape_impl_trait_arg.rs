use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s")]
async fn load(id: impl Into<u64>) -> u64 {
    id.into()
}

fn main() {}
