//! `key = ..` needs no type where the expression's type is certain.
use stampede_cache::{Cache, stampede_cached};

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub id: u64,
}

#[stampede_cached(ttl = "30s", key = format!("{id}:{region}"))]
async fn formatted(id: u64, region: &str) -> String {
    format!("{id}{region}")
}

#[stampede_cached(ttl = "30s", key = id.to_string())]
async fn to_string(id: u64, verbose: bool) -> String {
    format!("{id}{verbose}")
}

#[stampede_cached(ttl = "30s", key = "all")]
async fn literal(page: u32) -> u32 {
    page
}

#[stampede_cached(ttl = "30s", key = user.clone())]
async fn cloned(user: &User, verbose: bool) -> u64 {
    user.id + u64::from(verbose)
}

#[stampede_cached(ttl = "30s", key = id as i64)]
async fn cast(id: u32, verbose: bool) -> i64 {
    i64::from(id) + i64::from(verbose)
}

#[stampede_cached(ttl = "30s", key = (id, region.to_owned()))]
async fn tuple(id: u64, region: &str, verbose: bool) -> String {
    format!("{id}{region}{verbose}")
}

fn main() {
    let _: &Cache<String, String> = formatted_cache();
    let _: &Cache<String, String> = to_string_cache();
    let _: &Cache<&'static str, u32> = literal_cache();
    let _: &Cache<User, u64> = cloned_cache();
    let _: &Cache<i64, i64> = cast_cache();
    let _: &Cache<(u64, String), String> = tuple_cache();
}
