use stampede_cache::stampede_cached;

#[derive(Clone)]
struct RepoError;

impl From<stampede_cache::LoadTimeout> for RepoError {
    fn from(_: stampede_cache::LoadTimeout) -> Self {
        RepoError
    }
}

#[stampede_cached(ttl = "30s", load_timeout = "0s")]
async fn load(id: u64) -> Result<u64, RepoError> {
    Ok(id)
}

fn main() {}
