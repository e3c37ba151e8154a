use stampede_cache::stampede_cached;

mod error {
    #[derive(Clone, Debug)]
    pub struct RepoError;
    pub type Result<T> = std::result::Result<T, RepoError>;
}

#[stampede_cached(ttl = "30s", fail_safe = "10m", load_timeout = "5s")]
async fn load(id: u64) -> error::Result<u64> {
    Ok(id)
}

fn main() {}
