//! One "pod" of the fleet tests: a process with a `shared` cache on Redis
//! that fires N concurrent callers at one key when told to.
//!
//! `pod <redis url> <cache name> <key> <callers> <lock_ttl_ms> <load_ms>`
//!
//! Prints `READY` once connected, waits for a line on stdin, then runs the
//! callers. The loader INCRs `origin:<cache name>:<key>` in Redis (the fleet's
//! origin-call counter), prints `LOADING`, sleeps `load_ms` and returns
//! `value-<counter>`. At the end it prints
//! `DONE <completed> <distinct values, comma-separated> <loads> <fallbacks>`.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::time::Duration;

use stampede_cache::Cache;
use stampede_cache::redis::RedisBackend;

fn arg(args: &[String], i: usize, what: &str) -> String {
    args.get(i)
        .cloned()
        .unwrap_or_else(|| panic!("missing argument {i}: {what}"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, 1, "redis url");
    let name = arg(&args, 2, "cache name");
    let key = arg(&args, 3, "key");
    let callers: usize = arg(&args, 4, "callers").parse().expect("callers");
    let lock_ttl =
        Duration::from_millis(arg(&args, 5, "lock_ttl_ms").parse().expect("lock_ttl_ms"));
    let load = Duration::from_millis(arg(&args, 6, "load_ms").parse().expect("load_ms"));

    let backend = RedisBackend::connect(&url).await.expect("connect to redis");
    let counter = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("counter connection");
    let cache: Cache<String, String> = Cache::builder(name.clone())
        .ttl(Duration::from_secs(30))
        .lock_ttl(lock_ttl)
        .backend(backend)
        .build();

    println!("READY");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();

    let counter_key = format!("origin:{name}:{key}");
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, key, counter, counter_key) = (
                cache.clone(),
                key.clone(),
                counter.clone(),
                counter_key.clone(),
            );
            tokio::spawn(async move {
                cache
                    .get_or_load(key, move |_| async move {
                        let mut counter = counter;
                        let n: u64 = redis::cmd("INCR")
                            .arg(&counter_key)
                            .query_async(&mut counter)
                            .await
                            .expect("INCR the origin counter");
                        println!("LOADING");
                        std::io::stdout().flush().unwrap();
                        tokio::time::sleep(load).await;
                        format!("value-{n}")
                    })
                    .await
            })
        })
        .collect();
    let mut values = BTreeSet::new();
    let mut completed = 0;
    for task in tasks {
        if let Ok(value) = task.await {
            completed += 1;
            values.insert(value);
        }
    }
    let stats = cache.stats();
    let values: Vec<String> = values.into_iter().collect();
    println!(
        "DONE {completed} {} {} {}",
        values.join(","),
        stats.loads,
        stats.fallbacks
    );
    std::io::stdout().flush().unwrap();
}
