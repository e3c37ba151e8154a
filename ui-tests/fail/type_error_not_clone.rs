use stampede_cache::stampede_cached;

#[derive(Debug)]
struct DbError;

#[stampede_cached(ttl = "30s")]
async fn load(id: u64) -> Result<u64, DbError> {
    Ok(id)
}

fn main() {}
