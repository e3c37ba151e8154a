//! The cost of a tag invalidation, at 10 k and 1 M cached entries.
//!
//! Run with `cargo bench -p stampede-cache --bench tags`.
//!
//! `invalidate_tag` is lazy (tag epochs checked on read, as FusionCache
//! does), so the call itself costs O(1) in the number of entries — only the
//! flights of tagged caches are looked at. Each entry pays one tag check the
//! first time it is read after an invalidation; the second column measures
//! that, per entry, against a plain hit (third column).

use std::hint::black_box;
use std::time::{Duration, Instant};

use stampede_cache::Cache;

const TAGS: usize = 100;
const RUNS: usize = 21;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| entries | invalidate_tag (median of {RUNS}) | first read after, per entry | plain hit, per entry |"
    );
    println!("|---:|---:|---:|---:|");
    for entries in [10_000usize, 1_000_000] {
        runtime.block_on(async {
            let cache: Cache<u64, u64> = Cache::builder(format!("bench.tags.{entries}"))
                .capacity(entries * 2)
                .tags(|key: &u64| [format!("t{}", *key as usize % TAGS)])
                .build();
            for key in 0..entries as u64 {
                cache.insert(key, key);
            }
            let read_all = || {
                let started = Instant::now();
                for key in 0..entries as u64 {
                    black_box(cache.get(&key));
                }
                started.elapsed() / entries as u32
            };
            let plain = median((0..5).map(|_| read_all()).collect());
            let calls: Vec<Duration> = (0..RUNS)
                .map(|i| {
                    let started = Instant::now();
                    stampede_cache::invalidate_tag(&format!("t{i}"));
                    started.elapsed()
                })
                .collect();
            let call = median(calls);
            // Every entry written before those invalidations is checked once.
            let first = read_all();
            println!("| {entries} | {call:?} | {first:?} | {plain:?} |");
        });
    }
}
