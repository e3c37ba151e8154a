use stampede_cache::stampede_cached;

#[derive(Clone, Hash, PartialEq, Eq)]
struct Sku(String);

#[stampede_cached(ttl = "1m", shared)]
async fn price(sku: Sku) -> u64 {
    sku.0.len() as u64
}

fn main() {}
