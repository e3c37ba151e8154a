//! Default cache names of `#[stampede_cached]` cannot collide: two types in one module with
//! a method of the same name get two caches with two names, each naming its type, and never
//! see each other's values (in process, nor through a `shared` tier, where the name is the
//! key prefix).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::stampede_cached;
use tokio::time::timeout;

const BOUND: Duration = Duration::from_secs(600);

async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(BOUND, f).await.expect("call hung")
}

#[derive(Clone, Default)]
pub struct UserRepo {
    loads: Arc<AtomicUsize>,
}

#[derive(Clone, Default)]
pub struct ProductRepo {
    loads: Arc<AtomicUsize>,
}

impl UserRepo {
    #[stampede_cached(ttl = "30s")]
    pub async fn label(&self, id: u64) -> String {
        self.loads.fetch_add(1, SeqCst);
        format!("user {id}")
    }

    #[stampede_cached(ttl = "30s", shared)]
    pub async fn shared_label(&self, id: u64) -> String {
        self.loads.fetch_add(1, SeqCst);
        format!("user {id}")
    }
}

impl ProductRepo {
    #[stampede_cached(ttl = "30s")]
    pub async fn label(&self, id: u64) -> String {
        self.loads.fetch_add(1, SeqCst);
        format!("product {id}")
    }

    #[stampede_cached(ttl = "30s", shared)]
    pub async fn shared_label(&self, id: u64) -> String {
        self.loads.fetch_add(1, SeqCst);
        format!("product {id}")
    }
}

/// A free fn of the same name in the same module: `module_path!()::label`.
#[stampede_cached(ttl = "30s")]
pub async fn label(id: u64) -> String {
    format!("free {id}")
}

#[tokio::test(start_paused = true)]
async fn methods_of_two_types_with_one_name_do_not_share_values() {
    let users = UserRepo::default();
    let products = ProductRepo::default();
    assert_eq!(bounded(users.label(1)).await, "user 1");
    assert_eq!(bounded(products.label(1)).await, "product 1");
    assert_eq!(bounded(label(1)).await, "free 1");
    // each cached its own value, and a second call is a hit of its own cache
    assert_eq!(bounded(users.label(1)).await, "user 1");
    assert_eq!(bounded(products.label(1)).await, "product 1");
    assert_eq!(users.loads.load(SeqCst), 1);
    assert_eq!(products.loads.load(SeqCst), 1);
    assert_eq!(UserRepo::label_cache().get(&1).as_deref(), Some("user 1"));
    assert_eq!(
        ProductRepo::label_cache().get(&1).as_deref(),
        Some("product 1")
    );
    UserRepo::label_cache().invalidate(&1);
    assert_eq!(
        ProductRepo::label_cache().get(&1).as_deref(),
        Some("product 1")
    );
}

#[tokio::test(start_paused = true)]
async fn shared_methods_of_two_types_with_one_name_do_not_share_values() {
    let users = UserRepo::default();
    let products = ProductRepo::default();
    assert_eq!(bounded(users.shared_label(7)).await, "user 7");
    assert_eq!(bounded(products.shared_label(7)).await, "product 7");
    assert_eq!(bounded(users.shared_label(7)).await, "user 7");
    assert_eq!(bounded(products.shared_label(7)).await, "product 7");
    assert_eq!(users.loads.load(SeqCst), 1);
    assert_eq!(products.loads.load(SeqCst), 1);
}

#[test]
fn default_names_contain_module_type_and_fn() {
    let users = UserRepo::label_cache().name();
    let products = ProductRepo::label_cache().name();
    let free = label_cache().name();
    assert_ne!(users, products);
    assert_ne!(users, free);
    assert_eq!(users, format!("{}::UserRepo::label", module_path!()));
    assert_eq!(products, format!("{}::ProductRepo::label", module_path!()));
    assert_eq!(free, format!("{}::label", module_path!()));
    assert_eq!(
        UserRepo::shared_label_cache().name(),
        format!("{}::UserRepo::shared_label", module_path!())
    );
    assert_ne!(
        UserRepo::shared_label_cache().name(),
        ProductRepo::shared_label_cache().name()
    );
}
