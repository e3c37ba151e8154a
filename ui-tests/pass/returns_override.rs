//! `returns = "result"` for an alias the macro cannot recognise by name, and
//! `returns = "value"` to cache a `Result` as it is (errors included).
use std::sync::Arc;

use stampede_cache::{Cache, stampede_cached};

type Fallible<T> = Result<T, Arc<std::io::Error>>;
type UserLookup = Result<String, Arc<std::io::Error>>;

#[stampede_cached(ttl = "30s", returns = "result")]
async fn fallible(id: u64) -> Fallible<u64> {
    Ok(id)
}

#[stampede_cached(ttl = "30s", returns = "result")]
async fn lookup(id: u64) -> UserLookup {
    Ok(id.to_string())
}

#[stampede_cached(ttl = "30s", returns = "value")]
async fn parse(text: String) -> Result<u64, String> {
    text.parse().map_err(|_| text)
}

fn main() {
    let _: &Cache<u64, u64> = fallible_cache();
    let _: &Cache<u64, String> = lookup_cache();
    let _: &Cache<String, Result<u64, String>> = parse_cache();
}
