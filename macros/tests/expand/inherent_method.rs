//! An `&self` method of an inherent impl: the receiver is cloned into the load only when a
//! load starts; the handle is `UserRepo::top_products_cache()`.
use std::sync::Arc;

use stampede_cache::stampede_cached;

#[derive(Clone)]
pub struct Product {
    pub name: String,
}

#[derive(Clone)]
pub struct UserRepo {
    db: Arc<Vec<Product>>,
}

impl UserRepo {
    #[stampede_cached(
        ttl = "30s",
        strategy = "swr",
        stale = "10m",
        jitter = "5s",
        tags(format!("category:{category}"))
    )]
    pub async fn top_products(&self, category: &str, limit: u32) -> Vec<Product> {
        let _ = category;
        self.db.iter().take(limit as usize).cloned().collect()
    }
}

fn main() {}
