//! Native `async fn` in a trait impl, with `trait_impl`: the cache lives in the method and is
//! reached by name through `stampede_cache::lookup::<K, V>`.
use stampede_cache::{Cache, stampede_cached};

trait UserStore {
    async fn name(&self, id: u64) -> Option<String>;
    async fn count(region: &str) -> usize;
}

#[derive(Clone)]
pub struct PgStore {
    prefix: String,
}

impl UserStore for PgStore {
    #[stampede_cached(ttl = "30s", trait_impl, none_ttl = "5s")]
    async fn name(&self, id: u64) -> Option<String> {
        (id != 0).then(|| format!("{}{id}", self.prefix))
    }

    // A receiver-less associated fn of a trait impl.
    #[stampede_cached(ttl = "30s", trait_impl, name = "ui.store.count")]
    async fn count(region: &str) -> usize {
        region.len()
    }
}

/// A generic impl: one cache for every `T`, named without the type's generic arguments.
pub struct Wrapped<T>(pub T);

impl<T: Clone + Send + Sync + 'static> Clone for Wrapped<T> {
    fn clone(&self) -> Self {
        Wrapped(self.0.clone())
    }
}

impl<T: Clone + Send + Sync + 'static> UserStore for Wrapped<T> {
    #[stampede_cached(ttl = "30s", trait_impl)]
    async fn name(&self, id: u64) -> Option<String> {
        let _ = &self.0;
        Some(id.to_string())
    }

    #[stampede_cached(ttl = "30s", trait_impl)]
    async fn count(region: &str) -> usize {
        region.len() + 1
    }
}

#[tokio::main]
async fn main() {
    let store = PgStore {
        prefix: "user ".into(),
    };
    assert_eq!(store.name(1).await.as_deref(), Some("user 1"));
    let name = format!("{}::name", std::any::type_name::<PgStore>());
    let cache: Cache<u64, Option<String>> = stampede_cache::lookup(&name).expect("registered");
    assert_eq!(cache.get(&1), Some(Some("user 1".into())));
    assert_eq!(PgStore::count("eu").await, 2);
    assert!(stampede_cache::lookup::<String, usize>("ui.store.count").is_some());
    assert_eq!(Wrapped(1u8).name(3).await.as_deref(), Some("3"));
    assert_eq!(<Wrapped<u8> as UserStore>::count("eu").await, 3);
}
