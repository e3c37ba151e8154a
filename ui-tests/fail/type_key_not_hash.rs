use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s")]
async fn price(amount: f64) -> u64 {
    amount as u64
}

fn main() {}
