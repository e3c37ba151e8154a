use stampede_cache::stampede_cached;

use std::borrow::Cow;

#[stampede_cached(ttl = "30s")]
async fn load<'a>(name: Cow<'a, str>) -> usize {
    name.len()
}

fn main() {}
