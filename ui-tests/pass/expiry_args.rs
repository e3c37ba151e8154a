//! `jitter`, `none_ttl` (on `Option<T>` and `Result<Option<T>, E>`) and `tags(..)`.
use std::sync::Arc;

use stampede_cache::stampede_cached;

#[derive(Clone)]
pub struct Repo {
    names: Arc<Vec<String>>,
}

#[derive(Clone, Debug)]
pub struct RepoError;

impl Repo {
    #[stampede_cached(ttl = "30s", none_ttl = "5s", jitter = "2s")]
    async fn find(&self, id: u64) -> Option<String> {
        self.names.get(id as usize).cloned()
    }

    #[stampede_cached(ttl = "30s", none_ttl = "500ms")]
    async fn try_find(&self, id: u64) -> Result<Option<String>, RepoError> {
        Ok(self.names.get(id as usize).cloned())
    }

    // Tags are expressions over the arguments that form the key (here as `&String`, `&u32`).
    #[stampede_cached(
        ttl = "30s",
        skip(trace),
        tags(format!("category:{category}"), "pages", format!("limit:{}", limit))
    )]
    async fn page(&self, category: &str, limit: u32, trace: u64) -> Vec<String> {
        let _ = (category, trace);
        self.names.iter().take(limit as usize).cloned().collect()
    }
}

// A computed key: the tags see it as `key`.
#[stampede_cached(ttl = "1m", key = format!("{tenant}/{id}"), tags(format!("tenant:{key}")))]
async fn scoped(tenant: &str, id: u64) -> String {
    format!("{tenant}{id}")
}

// `key = arg`: the tags see that argument.
#[stampede_cached(ttl = "1m", key = id, tags(id.to_string()))]
async fn by_id(id: u64, verbose: bool) -> String {
    format!("{id}{verbose}")
}

// A fn without arguments may have constant tags.
#[stampede_cached(ttl = "1m", tags("config"), jitter = "0s")]
async fn config() -> String {
    "on".into()
}

fn main() {
    let _ = Repo::find_cache();
    let _ = Repo::try_find_cache();
    let _ = Repo::page_cache();
    let _ = (scoped_cache(), by_id_cache(), config_cache());
}
