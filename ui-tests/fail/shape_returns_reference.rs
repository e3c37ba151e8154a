use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s")]
async fn load(id: &str) -> &str {
    id
}

fn main() {}
