use stampede_cache::stampede_cached;

struct Repo {
    rows: Vec<u64>,
}

impl Repo {
    #[stampede_cached(ttl = "30s")]
    async fn load(&self, id: u64) -> u64 {
        self.rows.iter().sum::<u64>() + id
    }
}

fn main() {}
