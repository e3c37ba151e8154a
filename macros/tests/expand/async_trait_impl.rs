//! A method of an `#[async_trait]` impl. `#[async_trait]` (on the impl) expands first; the
//! attribute then sees the method as async-trait 0.1 rewrote it, written out here, and
//! caches it as the `async fn` it was (no `trait_impl` needed: the form says it).
use std::future::Future;
use std::pin::Pin;

use stampede_cache::stampede_cached;

#[async_trait::async_trait]
trait Prices {
    async fn price(&self, sku: &str) -> Result<u64, String>;
}

#[derive(Clone)]
pub struct Catalog {
    markup: u64,
}

impl Prices for Catalog {
    #[stampede_cached(ttl = "1m", name = "catalog.price")]
    fn price<'life0, 'life1, 'async_trait>(
        &'life0 self,
        sku: &'life1 str,
    ) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if let Some(__ret) = None::<Result<u64, String>> {
                #[allow(unreachable_code)]
                return __ret;
            }
            let __self = self;
            let __ret: Result<u64, String> = {
                if sku.is_empty() {
                    return Err("no sku".into());
                }
                Ok(sku.len() as u64 + __self.markup)
            };
            #[allow(unreachable_code)]
            __ret
        })
    }
}

#[tokio::main]
async fn main() {
    let catalog = Catalog { markup: 1 };
    assert_eq!(catalog.price("abc").await, Ok(4));
    assert!(stampede_cache::lookup::<String, u64>("catalog.price").is_some());
}
