use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", skip(bd))]
async fn load(db: &str, id: u64) -> u64 {
    let _ = db;
    id
}

fn main() {}
