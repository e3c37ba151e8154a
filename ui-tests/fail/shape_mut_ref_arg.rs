use stampede_cache::stampede_cached;

#[stampede_cached(ttl = "30s")]
async fn load(buf: &mut Vec<u8>) -> usize {
    buf.len()
}

fn main() {}
