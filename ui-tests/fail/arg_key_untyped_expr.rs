use stampede_cache::stampede_cached;

pub struct User {
    pub id: u64,
}

#[stampede_cached(ttl = "30s", key = user.id + 1)]
async fn load(user: &User) -> u64 {
    user.id
}

fn main() {}
