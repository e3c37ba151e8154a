use std::sync::Arc;

use stampede_cache::stampede_cached;

#[derive(Clone, Debug)]
pub enum RepoError {
    Db(Arc<std::io::Error>),
}

#[stampede_cached(ttl = "30s", load_timeout = "5s")]
async fn load(id: u64) -> Result<u64, RepoError> {
    Ok(id)
}

fn main() {}
