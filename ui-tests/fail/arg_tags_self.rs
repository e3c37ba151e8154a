use stampede_cache::stampede_cached;

#[derive(Clone)]
struct Repo {
    tenant: String,
}

impl Repo {
    #[stampede_cached(ttl = "30s", tags(self.tenant.clone()))]
    async fn load(&self, id: u64) -> u64 {
        id + self.tenant.len() as u64
    }
}

fn main() {}
