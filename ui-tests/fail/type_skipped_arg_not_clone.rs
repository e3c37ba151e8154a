use stampede_cache::stampede_cached;

struct Pool;

#[stampede_cached(ttl = "30s", skip(db))]
async fn load(db: &Pool, id: u64) -> u64 {
    let _ = db;
    id
}

fn main() {}
