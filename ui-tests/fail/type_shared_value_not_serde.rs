use stampede_cache::stampede_cached;

#[derive(Clone)]
struct Price(u64);

#[stampede_cached(ttl = "1m", shared)]
async fn price(sku: String) -> Price {
    Price(sku.len() as u64)
}

fn main() {}
