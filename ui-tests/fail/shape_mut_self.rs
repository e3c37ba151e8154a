use stampede_cache::stampede_cached;

#[derive(Clone)]
struct Repo;

impl Repo {
    #[stampede_cached(ttl = "30s")]
    async fn load(&mut self, id: u64) -> u64 {
        id
    }
}

fn main() {}
