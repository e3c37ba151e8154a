use stampede_cache::stampede_cached;

// every mistake is reported at once, each on its own token
#[stampede_cached(ttl = "0s", strategy = "lock", beta = 2.0, soft_timeout = "200ms", lock_ttl = "1s", capacity = 0)]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
