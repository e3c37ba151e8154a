//! `&str`, `&[T]`, `&T`, `&Path` arguments are owned in the key; named and elided lifetimes.
use std::path::{Path, PathBuf};

use stampede_cache::{Cache, stampede_cached};

#[derive(Clone, Hash, PartialEq, Eq)]
pub struct Filter {
    pub min: u32,
}

#[stampede_cached(ttl = "30s")]
async fn by_name(name: &str) -> usize {
    name.len()
}

#[stampede_cached(ttl = "30s")]
async fn sum<'a>(items: &'a [u32], filter: &'a Filter) -> u32 {
    items.iter().filter(|i| **i >= filter.min).sum()
}

#[stampede_cached(ttl = "30s")]
async fn read(path: &Path, category: &'static str) -> String {
    format!("{}{category}", path.display())
}

#[stampede_cached(ttl = "30s")]
async fn mutable_binding(mut n: u32, label: &str) -> String {
    n += 1;
    format!("{label}{n}")
}

fn main() {
    let _: &Cache<String, usize> = by_name_cache();
    let _: &Cache<(Vec<u32>, Filter), u32> = sum_cache();
    let _: &Cache<(PathBuf, &'static str), String> = read_cache();
    let _: &Cache<(u32, String), String> = mutable_binding_cache();
    let items = vec![1, 2];
    let f = Filter { min: 1 };
    let _ = sum(&items, &f);
}
