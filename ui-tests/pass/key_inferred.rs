use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", key = format!("{id}:{region}"))]
async fn load(id: u64, region: &str) -> String {
    format!("{id}{region}")
}

fn main() {}
