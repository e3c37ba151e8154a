use stampede_cache::stampede_cached;

#[stampede_cached(strategy = "swr")]
async fn load(id: u64) -> u64 {
    id
}

fn main() {}
