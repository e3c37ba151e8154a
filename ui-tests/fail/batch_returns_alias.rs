use std::collections::HashMap;
use stampede_cache::stampede_cached;

type Users = HashMap<i64, String>;

#[stampede_cached(ttl = "30s", batch)]
async fn find_users(ids: &[i64]) -> Users {
    ids.iter().map(|id| (*id, id.to_string())).collect()
}

fn main() {}
