//! An inherent `&self` method on a `Clone` repository: the receiver is never in the key,
//! `skip(db)` leaves an argument out, the handle is an associated fn, the future is `Send`.
use std::sync::Arc;

use stampede_cache::{Cache, stampede_cached};

struct Pool;

#[derive(Clone)]
pub struct UserRepo {
    pool: Arc<Pool>,
}

impl UserRepo {
    /// Finds a user by id.
    #[stampede_cached(ttl = "30s", skip(trace))]
    pub async fn find_user(&self, id: u64, trace: Arc<str>) -> Option<String> {
        let _ = (&self.pool, trace);
        Some(format!("user {id}"))
    }

    #[stampede_cached(ttl = "30s")]
    async fn count(&self) -> usize {
        3
    }
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    let repo = UserRepo { pool: Arc::new(Pool) };
    assert_send(repo.find_user(1, Arc::from("t")));
    assert_send(repo.count());
    let _: &'static Cache<u64, Option<String>> = UserRepo::find_user_cache();
    let _: &'static Cache<(), usize> = UserRepo::count_cache();
    UserRepo::find_user_cache().invalidate(&42);
}
