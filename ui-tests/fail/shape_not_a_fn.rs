use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s")]
struct Repo;

fn main() {}
