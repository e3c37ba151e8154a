use stampede_cache::stampede_cached;

struct User;

#[stampede_cached(ttl = "30s")]
async fn load(id: u64) -> User {
    let _ = id;
    User
}

fn main() {}
