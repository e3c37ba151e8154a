use stampede_cache::stampede_cached;
use std::sync::atomic::{AtomicUsize, Ordering};

static CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "30s")]
async fn double(x: u64) -> u64 {
    CALLS.fetch_add(1, Ordering::SeqCst);
    x * 2
}

#[derive(Clone)]
struct Repo;
impl Repo {
    /// Doc.
    #[stampede_cached(ttl = "30s", strategy = "swr", stale = "10m")]
    pub async fn greet(
        &self,
        name: &str,
        n: u32,
    ) -> Result<String, std::sync::Arc<std::io::Error>> {
        Ok(format!("{name}{n}"))
    }
}

#[tokio::test]
async fn smoke() {
    assert_eq!(double(2).await, 4);
    assert_eq!(double(2).await, 4);
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    assert_eq!(Repo.greet("a", 1).await.unwrap(), "a1");
    assert_eq!(
        Repo::greet_cache().get(&("a".to_string(), 1)),
        Some("a1".to_string())
    );
}
