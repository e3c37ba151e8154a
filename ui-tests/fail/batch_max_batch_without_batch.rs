use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", max_batch = 100)]
async fn find_user(id: i64) -> String {
    id.to_string()
}

fn main() {}
