//! A native `async fn` of a trait impl (`trait_impl`): the cache lives in the method, reached
//! with `stampede_cache::lookup::<K, V>(name)`.
trait Prices {
    async fn price(&self, sku: String) -> u64;
}
#[derive(Clone)]
pub struct Catalog;
impl Prices for Catalog {
    async fn price(&self, sku: String) -> u64 {
        let key = sku;
        ::stampede_cache::__private::cached::<
            String,
            u64,
            _,
            _,
        >(
                ::stampede_cache::__private::Local,
                {
                    static CACHE: ::stampede_cache::__private::CacheCell<String, u64> = ::stampede_cache::__private::CacheCell::new();
                    &CACHE
                },
                || ::stampede_cache::__private::Name::from("catalog.price"),
                |options| {
                    options.ttl(::stampede_cache::__private::Duration::from_secs(60))
                },
                ::core::option::Option::Some(key),
                || {
                    let this = ::stampede_cache::__private::receiver::<Self>(self);
                    move |sku| async move {
                        let this = &this;
                        {
                            let _ = this;
                            sku.len() as u64
                        }
                    }
                },
            )
            .await
    }
}
#[tokio::main]
async fn main() {
    assert_eq!(Catalog.price("abc".into()). await, 3);
    let prices = stampede_cache::lookup::<String, u64>("catalog.price")
        .expect("registered");
    assert_eq!(prices.get(& "abc".to_string()), Some(3));
}
