//! `batch` on methods of trait impls: native `async fn` with `trait_impl`, and
//! `#[async_trait]`; their caches are reached with `lookup`.
use std::collections::HashMap;

use stampede_cache::stampede_cached;

pub trait Store {
    fn find(&self, ids: &[u64]) -> impl std::future::Future<Output = HashMap<u64, String>> + Send;
}

#[async_trait::async_trait]
pub trait AsyncStore {
    async fn find_all(&self, ids: Vec<u64>) -> Result<HashMap<u64, String>, String>;
}

#[derive(Clone)]
pub struct Repo;

impl Store for Repo {
    #[stampede_cached(ttl = "1m", batch, trait_impl, name = "ui.batch.store")]
    async fn find(&self, ids: &[u64]) -> HashMap<u64, String> {
        ids.iter().map(|id| (*id, id.to_string())).collect()
    }
}

#[async_trait::async_trait]
impl AsyncStore for Repo {
    #[stampede_cached(ttl = "1m", batch, name = "ui.batch.async_store")]
    async fn find_all(&self, ids: Vec<u64>) -> Result<HashMap<u64, String>, String> {
        Ok(ids.into_iter().map(|id| (id, id.to_string())).collect())
    }
}

fn main() {
    let _ = stampede_cache::lookup::<u64, Option<String>>("ui.batch.store");
    let _ = async {
        let _ = Repo.find(&[1]).await;
        let _ = Repo.find_all(vec![1]).await;
    };
}
