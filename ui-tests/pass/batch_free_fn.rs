//! `batch` on free fns: `Vec<K>` by value (also `mut`) or `&Vec<K>`, a plain `HashMap`
//! (any path), key types of the user's own.
use std::collections::HashMap;

use stampede_cache::{Cache, stampede_cached};

#[stampede_cached(ttl = "1m", batch)]
async fn squares(ns: Vec<u64>) -> HashMap<u64, u64> {
    ns.into_iter().map(|n| (n, n * n)).collect()
}

#[stampede_cached(ttl = "1m", batch, capacity = 500, max_batch = 50, jitter = "5s")]
pub async fn names(mut ids: Vec<u32>) -> std::collections::HashMap<u32, String> {
    ids.sort_unstable();
    ids.into_iter().map(|id| (id, id.to_string())).collect()
}

#[derive(Clone, Hash, PartialEq, Eq, Debug)]
pub struct Sku(pub String);

#[stampede_cached(ttl = "1m", batch, strategy = "xfetch", beta = 2.0)]
pub(crate) async fn prices(skus: &Vec<Sku>) -> HashMap<Sku, u64> {
    skus.iter().map(|s| (s.clone(), s.0.len() as u64)).collect()
}

fn main() {
    let _: &'static Cache<u64, Option<u64>> = squares_cache();
    let _: &'static Cache<u32, Option<String>> = names_cache();
    let _: &'static Cache<Sku, Option<u64>> = prices_cache();
    let _ = async {
        let _: HashMap<u64, u64> = squares(vec![1, 2]).await;
        let _: HashMap<u32, String> = names(vec![1]).await;
        let _: HashMap<Sku, u64> = prices(&vec![Sku("a".into())]).await;
    };
}
