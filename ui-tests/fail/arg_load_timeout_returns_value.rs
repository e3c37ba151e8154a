use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", load_timeout = "5s", returns = "value")]
async fn load(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
