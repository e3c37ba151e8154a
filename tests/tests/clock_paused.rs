//! A test binary of its own (a fresh process): the coarse clock of hits
//! gives way to tokio's paused clock by itself, with no setup — the first
//! `insert` or load finds tokio's clock paused.

use std::time::Duration;

use stampede_cache::Cache;
use tokio::time::advance;

#[tokio::test(start_paused = true)]
async fn a_paused_test_sees_its_entries_expire_with_no_setup() {
    let cache: Cache<u32, u32> = Cache::builder("clock.paused")
        .ttl(Duration::from_secs(30))
        .build();
    cache.insert(1, 10); // the first cache call of this process
    assert_eq!(cache.get(&1), Some(10));
    advance(Duration::from_secs(29)).await;
    assert_eq!(cache.get(&1), Some(10), "fresh for 30 s of tokio's clock");
    advance(Duration::from_secs(2)).await;
    assert_eq!(
        cache.get(&1),
        None,
        "expired on tokio's clock, not the system's"
    );
    let loaded = cache.get_or_load(1, |k| async move { k * 100 }).await;
    assert_eq!(loaded, 100);
}
