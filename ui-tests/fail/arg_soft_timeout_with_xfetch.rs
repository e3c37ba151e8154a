use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", strategy = "xfetch", soft_timeout = "200ms")]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
