use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", fail_safe = "10m", soft_timeout = "0ms")]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
