//! `key = arg` (the other arguments stay out of the key) and `key: Type = <expr>`.
use stampede_cache::{Cache, stampede_cached};

#[derive(Clone)]
pub struct Repo {
    tenant: u32,
}

#[stampede_cached(ttl = "30s", key = id)]
async fn by_id(id: u64, verbose: bool) -> String {
    format!("{id}{verbose}")
}

#[stampede_cached(ttl = "30s", key: String = format!("{id}:{}", region.to_lowercase()))]
async fn by_region(id: u64, region: &str) -> String {
    format!("{id}{region}")
}

impl Repo {
    #[stampede_cached(ttl = "30s", key: (u32, u64) = (self.tenant, id))]
    async fn scoped(&self, id: u64) -> u64 {
        id + u64::from(self.tenant)
    }
}

fn main() {
    let _: &Cache<u64, String> = by_id_cache();
    let _: &Cache<String, String> = by_region_cache();
    let _: &Cache<(u32, u64), u64> = Repo::scoped_cache();
    let _ = Repo { tenant: 1 }.scoped(1);
}
