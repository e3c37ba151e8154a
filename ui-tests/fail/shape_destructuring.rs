use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s")]
async fn load((a, b): (u64, u64)) -> u64 {
    a + b
}

fn main() {}
