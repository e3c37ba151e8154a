use stampede_cache::stampede_cached;

trait Repo {
    #[stampede_cached(ttl = "30s")]
    async fn load(&self, id: u64) -> u64;
}

fn main() {}
