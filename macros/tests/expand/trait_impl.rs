//! A native `async fn` of a trait impl (`trait_impl`): the cache lives in the method, reached
//! with `stampede_cache::lookup::<K, V>(name)`.
use stampede_cache::stampede_cached;

trait Prices {
    async fn price(&self, sku: String) -> u64;
}

#[derive(Clone)]
pub struct Catalog;

impl Prices for Catalog {
    #[stampede_cached(ttl = "1m", trait_impl, name = "catalog.price")]
    async fn price(&self, sku: String) -> u64 {
        let _ = self;
        sku.len() as u64
    }
}

#[tokio::main]
async fn main() {
    assert_eq!(Catalog.price("abc".into()).await, 3);
    let prices = stampede_cache::lookup::<String, u64>("catalog.price").expect("registered");
    assert_eq!(prices.get(&"abc".to_string()), Some(3));
}
