// A method of a trait impl needs `trait_impl`: an attribute cannot see that it is in a trait
// impl, and without it the macro declares the `<fn>_cache()` handle beside the method, which
// a trait impl cannot hold. rustc then reports the handle, once.
use stampede_cache::stampede_cached;

trait Repo {
    async fn load(&self, id: u64) -> u64;
}

#[derive(Clone)]
struct Db;

impl Repo for Db {
    #[stampede_cached(ttl = "30s")]
    async fn load(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
