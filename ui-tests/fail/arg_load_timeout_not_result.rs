use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", load_timeout = "5s")]
async fn load(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
