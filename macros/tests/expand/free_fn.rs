//! A free fn: the key is its arguments (`&str` owned as `String`), `trace` is skipped.
use stampede_cache::stampede_cached;

#[derive(Clone)]
pub struct TraceId(pub u64);

#[stampede_cached(ttl = "30s", skip(trace))]
pub async fn greeting(name: &str, times: u32, trace: TraceId) -> String {
    let _ = trace.0;
    name.repeat(times as usize)
}

fn main() {}
