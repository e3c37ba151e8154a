//! A receiver-less associated fn returning `Result<Option<T>, E>`, with `none_ttl`: the fn
//! and its handle share the cache of the fn's site.
use stampede_cache::stampede_cached;

#[derive(Clone, Debug)]
pub struct RepoError;

pub struct Pool;

pub struct Users;

impl Users {
    #[stampede_cached(ttl = "1m", none_ttl = "5s", skip(pool))]
    pub async fn count(pool: &'static Pool, region: u16) -> Result<Option<i64>, RepoError> {
        let _ = pool;
        Ok((region != 0).then_some(i64::from(region)))
    }
}

fn main() {}
