use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s", key = format!("{region}:{id}"), tags(region.to_string()))]
async fn load(region: &str, id: u64) -> String {
    format!("{region}{id}")
}

fn main() {}
