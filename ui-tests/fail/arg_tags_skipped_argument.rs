use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", skip(trace), tags(format!("trace:{trace}"), format!("id:{id}")))]
async fn load(id: u64, trace: u64) -> u64 {
    id + trace
}

fn main() {}
