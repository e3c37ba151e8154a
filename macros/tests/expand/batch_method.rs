//! A `batch` method: one list of keys in, the rows found by key out; the cache holds
//! `Option<User>`, so ids without a row are cached as absent.
use std::collections::HashMap;
use std::sync::Arc;

use stampede_cache::stampede_cached;

#[derive(Clone)]
pub struct User {
    pub id: i64,
}

#[derive(Clone)]
pub struct UserRepo {
    pub rows: Arc<Vec<i64>>,
}

impl UserRepo {
    #[stampede_cached(ttl = "30s", batch, max_batch = 500, tags(format!("user:{key}")))]
    pub async fn find_users(&self, ids: &[i64]) -> Result<HashMap<i64, User>, Arc<str>> {
        Ok(ids
            .iter()
            .filter(|id| self.rows.contains(id))
            .map(|&id| (id, User { id }))
            .collect())
    }
}

fn main() {}
