//! Two types in one module with a method of the same name: two caches, two names, each
//! with its type's name; a `name = ".."` still wins; a generic type's name has no generic
//! arguments.
use stampede_cache::stampede_cached;

#[derive(Clone)]
struct UserRepo;

#[derive(Clone)]
struct ProductRepo;

impl UserRepo {
    #[stampede_cached(ttl = "30s")]
    async fn label(&self, id: u64) -> String {
        format!("user {id}")
    }

    #[stampede_cached(ttl = "30s", name = "users.by_id")]
    async fn named(&self, id: u64) -> String {
        format!("user {id}")
    }
}

impl ProductRepo {
    #[stampede_cached(ttl = "30s")]
    async fn label(&self, id: u64) -> String {
        format!("product {id}")
    }
}

#[derive(Clone)]
struct Generic<T>(std::marker::PhantomData<T>);

impl<T: Clone + Send + Sync + 'static> Generic<T> {
    #[stampede_cached(ttl = "30s")]
    async fn label(&self, id: u64) -> String {
        format!("generic {id}")
    }
}

fn main() {
    let users = UserRepo::label_cache().name();
    let products = ProductRepo::label_cache().name();
    assert_ne!(users, products);
    assert!(users.ends_with("::UserRepo::label"), "{users}");
    assert!(products.ends_with("::ProductRepo::label"), "{products}");
    assert_eq!(UserRepo::named_cache().name(), "users.by_id");
    // one cache for every instantiation, named without generic arguments
    let generic = Generic::<String>::label_cache().name();
    assert!(generic.ends_with("::Generic::label"), "{generic}");
    assert!(std::ptr::eq(
        Generic::<u8>::label_cache(),
        Generic::<String>::label_cache()
    ));
}
