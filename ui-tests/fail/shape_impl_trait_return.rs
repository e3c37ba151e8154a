use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s")]
async fn load(id: u64) -> impl std::fmt::Display {
    id
}

fn main() {}
