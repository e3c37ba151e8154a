//! `batch` with `shared` and the failure arguments: `fail_safe`, `soft_timeout`,
//! `load_timeout` (`E: From<LoadTimeout>`), `lock_ttl`, `name`, remote errors
//! (`E: From<RemoteLoadError>`), `strategy = "swr"`, `tags(..)` over `key`.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use stampede_cache::{Cache, LoadTimeout, RemoteLoadError, stampede_cached};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
}

#[derive(Clone, Debug)]
pub enum RepoError {
    Db,
    Timeout(LoadTimeout),
    Remote(RemoteLoadError),
}

impl From<LoadTimeout> for RepoError {
    fn from(t: LoadTimeout) -> Self {
        RepoError::Timeout(t)
    }
}

impl From<RemoteLoadError> for RepoError {
    fn from(e: RemoteLoadError) -> Self {
        RepoError::Remote(e)
    }
}

#[derive(Clone)]
pub struct UserRepo;

impl UserRepo {
    #[stampede_cached(
        ttl = "30s",
        batch,
        shared,
        name = "ui.batch.users",
        lock_ttl = "5s",
        fail_safe = "10m",
        soft_timeout = "200ms",
        load_timeout = "5s",
        tags(format!("user:{key}"), "users"),
        max_batch = 200
    )]
    pub async fn find_users(&self, ids: &[i64]) -> Result<HashMap<i64, User>, RepoError> {
        if ids.is_empty() {
            return Err(RepoError::Db);
        }
        Ok(ids.iter().map(|&id| (id, User { id })).collect())
    }

    /// Receiver-less, `swr`, a key of `String`s.
    #[stampede_cached(ttl = "30s", batch, shared, strategy = "swr", stale = "5m")]
    async fn by_email(emails: &[String]) -> HashMap<String, User> {
        emails
            .iter()
            .map(|e| (e.clone(), User { id: e.len() as i64 }))
            .collect()
    }
}

fn main() {
    let _: &'static Cache<i64, Option<User>> = UserRepo::find_users_cache();
    let _: &'static Cache<String, Option<User>> = UserRepo::by_email_cache();
    let _ = async {
        let _: Result<HashMap<i64, User>, RepoError> = UserRepo.find_users(&[1]).await;
        let _: HashMap<String, User> = UserRepo::by_email(&["a".into()]).await;
    };
}
