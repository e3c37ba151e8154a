//! `crate = path` for crates that re-export stampede-cache under another path.
mod reexport {
    pub use stampede_cache::*;
}

#[reexport::stampede_cached(ttl = "30s", crate = crate::reexport)]
async fn through_path(id: u64) -> u64 {
    id
}

#[reexport::stampede_cached(ttl = "30s", crate = "crate::reexport")]
async fn through_string(id: u64) -> u64 {
    id
}

fn main() {
    let _: &reexport::Cache<u64, u64> = through_path_cache();
    let _: &reexport::Cache<u64, u64> = through_string_cache();
}
