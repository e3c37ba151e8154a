//! `#[async_trait]` impls (its only position is on the impl, so it always runs first and the
//! attribute sees the method it rewrote): `Send` and `?Send` traits, with and without `&self`.
use async_trait::async_trait;
use stampede_cache::stampede_cached;

#[async_trait]
pub trait Prices {
    async fn price(&self, sku: &str) -> Result<u64, String>;
    async fn currency(region: u16) -> String;
}

#[async_trait(?Send)]
pub trait LocalPrices {
    async fn price(&self, sku: String) -> u64;
}

#[derive(Clone)]
pub struct Catalog {
    markup: u64,
}

#[async_trait]
impl Prices for Catalog {
    #[stampede_cached(ttl = "1m", name = "ui.async_trait.price")]
    async fn price(&self, sku: &str) -> Result<u64, String> {
        if sku.is_empty() {
            return Err("no sku".into());
        }
        Ok(sku.len() as u64 + self.markup)
    }

    #[stampede_cached(ttl = "1m", jitter = "1s")]
    async fn currency(region: u16) -> String {
        format!("R{region}")
    }
}

#[async_trait(?Send)]
impl LocalPrices for Catalog {
    #[stampede_cached(ttl = "1m", trait_impl)]
    async fn price(&self, sku: String) -> u64 {
        sku.len() as u64 * self.markup
    }
}

fn assert_send<T: Send>(_: &T) {}

#[tokio::main]
async fn main() {
    let catalog = Catalog { markup: 10 };
    let call = Prices::price(&catalog, "abc");
    assert_send(&call);
    assert_eq!(call.await, Ok(13));
    assert_eq!(Prices::price(&catalog, "").await, Err("no sku".into()));
    assert_eq!(<Catalog as Prices>::currency(7).await, "R7");
    assert_eq!(LocalPrices::price(&catalog, "ab".into()).await, 20);
    assert!(stampede_cache::lookup::<String, u64>("ui.async_trait.price").is_some());
}
