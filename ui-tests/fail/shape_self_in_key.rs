use stampede_cache::stampede_cached;

#[derive(Clone, Hash, PartialEq, Eq)]
struct Id(u64);

impl Id {
    #[stampede_cached(ttl = "30s")]
    async fn next(&self, other: Self) -> u64 {
        self.0 + other.0
    }
}

fn main() {}
