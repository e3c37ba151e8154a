use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s")]
async fn read(path: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn main() {}
