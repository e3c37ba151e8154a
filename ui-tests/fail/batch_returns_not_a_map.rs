use stampede_cache::stampede_cached;

#[derive(Clone)]
struct User;

#[stampede_cached(ttl = "30s", batch)]
async fn find_users(ids: &[i64]) -> Result<Vec<User>, String> {
    Ok(ids.iter().map(|_| User).collect())
}

fn main() {}
