use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", none_ttl = "0s", jitter = "soon")]
async fn load(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {
    // The handle is still declared: its callers add no errors of their own.
    let _ = load_cache();
}
