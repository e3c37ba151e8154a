use stampede_cache::stampede_cached;

trait Repo {
    async fn load(&self, id: u64) -> u64;
}

#[derive(Clone)]
struct Db;

impl Repo for Db {
    #[stampede_cached(ttl = "30s")]
    async fn load(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
