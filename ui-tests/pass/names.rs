//! Raw identifiers, the default name (`module_path!()::fn`), and calling the fn for real.
use stampede_cache::stampede_cached;

mod users {
    use stampede_cache::stampede_cached;

    #[stampede_cached(ttl = "30s")]
    pub async fn r#type(id: u64) -> u64 {
        id
    }
}

#[stampede_cached(ttl = "30s", capacity = 3)]
async fn small(id: u64) -> u64 {
    id * 2
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(users::r#type(4).await, 4);
    assert!(users::type_cache().name().ends_with("::users::type"));
    assert_eq!(small(2).await, 4);
    assert_eq!(small_cache().get(&2), Some(4));
}
