//! `batch` on a `&self` method: `&[i64]` in, `Result<HashMap<i64, User>, E>` out.
use std::collections::HashMap;
use std::sync::Arc;

use stampede_cache::stampede_cached;

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: i64,
}

#[derive(Clone, Debug)]
pub struct DbError;

#[derive(Clone)]
pub struct UserRepo {
    rows: Arc<Vec<i64>>,
}

impl UserRepo {
    #[stampede_cached(ttl = "30s", batch, max_batch = 100, none_ttl = "5s")]
    pub async fn find_users(&self, ids: &[i64]) -> Result<HashMap<i64, User>, DbError> {
        Ok(ids
            .iter()
            .filter(|id| self.rows.contains(id))
            .map(|&id| (id, User { id }))
            .collect())
    }
}

fn main() {
    let cache: &'static stampede_cache::Cache<i64, Option<User>> = UserRepo::find_users_cache();
    cache.invalidate(&42);
    let repo = UserRepo {
        rows: Arc::new(vec![1, 2]),
    };
    let _ = repo.find_users(&[1, 2, 3]);
}
