use std::collections::HashMap;
use stampede_cache::stampede_cached;

#[derive(Clone)]
struct Repo;

impl Repo {
    #[stampede_cached(ttl = "30s", batch)]
    async fn find_users(&self, ids: &[i64], region: u16) -> HashMap<i64, String> {
        ids.iter().map(|id| (*id, format!("{id}@{region}"))).collect()
    }
}

fn main() {}
