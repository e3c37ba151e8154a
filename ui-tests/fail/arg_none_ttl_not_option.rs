use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", none_ttl = "5s")]
async fn load(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
