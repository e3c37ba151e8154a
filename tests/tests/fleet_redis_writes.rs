#![cfg(feature = "redis")]
//! Writes to the shared tier on a real `redis-server` (issue 14): a write
//! made while Redis cannot take it is retried until it lands, never lost in
//! silence; a process's writes land in the order they were made.
//!
//! Each pod is a `Cache` on its own `RedisBackend` (own connections and
//! subscription, as a separate process has).

use std::time::Duration;

use stampede_cache::redis::RedisBackend;
use stampede_cache::{Cache, SharedBackend};
use stampede_cache_tests::bounded;
use stampede_cache_tests::redis_server::RedisServer;
use tokio::time::{Instant, sleep};

async fn backend(url: &str) -> RedisBackend {
    RedisBackend::builder(url)
        .command_timeout(Duration::from_millis(100))
        .breaker_cooldown(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect")
}

fn pod(name: &str, backend: &RedisBackend) -> Cache<String, String> {
    Cache::builder(name.to_owned())
        .ttl(Duration::from_secs(60))
        .backend(backend.clone())
        .build()
}

/// Redis frozen (SIGSTOP) until pod A's breaker is open; A invalidates a key
/// then (refused at once by the breaker). Redis thawed: the invalidation
/// is retried and lands, so pod C — which never held the key — loads the
/// new row instead of reading the old one back from the shared tier, and
/// pod B drops its local copy. (v2: the refused write was logged and
/// dropped; C was served the old row for the rest of its 60 s ttl.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidate_refused_by_the_open_breaker_lands_when_redis_is_back() {
    let server = RedisServer::start();
    let url = server.url();
    let name = "writes.breaker_invalidate";
    let (ba, bb, bc) = (
        backend(&url).await,
        backend(&url).await,
        backend(&url).await,
    );
    let (a, b, c) = (pod(name, &ba), pod(name, &bb), pod(name, &bc));
    let key = "k".to_owned();
    assert_eq!(
        a.get_or_load(key.clone(), |_| async { "old".to_owned() })
            .await,
        "old"
    );
    assert_eq!(
        b.get_or_load(key.clone(), |_| async { "none".to_owned() })
            .await,
        "old"
    );

    server.freeze();
    // Misses of other keys on A time out until its breaker opens.
    let mut misses = 0;
    while !ba.breaker_is_open() {
        misses += 1;
        assert!(misses < 20, "A's breaker never opened");
        let other = format!("other-{misses}");
        bounded(a.get_or_load(other, |k| async move { k })).await;
    }
    a.invalidate(&key);
    sleep(Duration::from_millis(300)).await;
    server.thaw();

    let landed = SharedBackend::from(ba.clone())
        .flush(Duration::from_secs(10))
        .await;
    assert!(landed, "the invalidation landed once Redis was back");
    assert!(
        SharedBackend::from(ba.clone()).write_retries() >= 1,
        "it was refused at first, then retried"
    );
    let seen = c
        .get_or_load(key.clone(), |_| async { "new".to_owned() })
        .await;
    assert_eq!(seen, "new", "C must not read the invalidated row back");
    let told = Instant::now();
    while b.get(&key).as_deref() == Some("old") {
        assert!(
            told.elapsed() < Duration::from_secs(5),
            "B still holds the invalidated row 5 s after the write landed"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

/// `insert` then `invalidate` of a key, and `insert` then `insert`, on a
/// fresh cache: the shared tier ends as the last call left it (v2: the
/// insert's write first awaited a generation read while the invalidation's
/// script went straight out, so the insert could land last).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_one_process_land_in_call_order() {
    let server = RedisServer::start();
    let url = server.url();
    for round in 0..10 {
        let name = format!("writes.order.{round}");
        let (bw, br) = (backend(&url).await, backend(&url).await);
        let (writer, reader) = (pod(&name, &bw), pod(&name, &br));
        writer.insert("gone".to_owned(), "inserted".to_owned());
        writer.invalidate(&"gone".to_owned());
        writer.insert("twice".to_owned(), "first".to_owned());
        writer.insert("twice".to_owned(), "second".to_owned());
        assert!(
            SharedBackend::from(bw.clone())
                .flush(Duration::from_secs(5))
                .await
        );
        let gone = reader
            .get_or_load("gone".to_owned(), |_| async { "reloaded".to_owned() })
            .await;
        assert_eq!(
            gone, "reloaded",
            "round {round}: the invalidate landed last"
        );
        let twice = reader
            .get_or_load("twice".to_owned(), |_| async { "reloaded".to_owned() })
            .await;
        assert_eq!(twice, "second", "round {round}");
    }
}

/// FusionCache's "remove by tag" on Redis pods: an `insert`ed tagged key is
/// recorded under its tag, so `invalidate_tag` drops the shared copy for a
/// pod that never held it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inserted_tagged_key_is_dropped_by_its_tag_on_redis() {
    let server = RedisServer::start();
    let url = server.url();
    let name = "writes.insert_tagged";
    let tag = "writes.insert_tagged.x";
    let pods: Vec<(RedisBackend, Cache<String, u32>)> = {
        let mut pods = Vec::new();
        for _ in 0..3 {
            let backend = backend(&url).await;
            let cache = Cache::builder(name)
                .tags(move |_: &String| [tag])
                .backend(backend.clone())
                .build();
            pods.push((backend, cache));
        }
        pods
    };
    pods[0].1.insert("foo".to_owned(), 1);
    assert!(
        SharedBackend::from(pods[0].0.clone())
            .flush(Duration::from_secs(5))
            .await
    );
    stampede_cache::invalidate_tag(tag);
    for (backend, _) in &pods {
        assert!(
            SharedBackend::from(backend.clone())
                .flush(Duration::from_secs(5))
                .await
        );
    }
    let seen = pods[2]
        .1
        .get_or_load("foo".to_owned(), |_| async { 2 })
        .await;
    assert_eq!(
        seen, 2,
        "the tag dropped the shared copy of the inserted key"
    );
}

/// Builder durations saturate instead of panicking (v2: `command_timeout(MAX)`
/// panicked in `connect`, `ping_interval(MAX)` killed the subscription task).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_redis_builder_durations_saturate() {
    let server = RedisServer::start();
    let backend = RedisBackend::builder(&server.url())
        .command_timeout(Duration::MAX)
        .breaker_cooldown(Duration::MAX)
        .ping_interval(Duration::MAX)
        .connect()
        .await
        .expect("connects");
    let (a, b) = (pod("writes.huge", &backend), pod("writes.huge", &backend));
    assert_eq!(
        a.get_or_load("k".to_owned(), |_| async { "v".to_owned() })
            .await,
        "v"
    );
    a.invalidate(&"k".to_owned());
    assert!(
        SharedBackend::from(backend.clone())
            .flush(Duration::from_secs(5))
            .await
    );
    assert_eq!(backend.subscription_losses(), 0);
    assert_eq!(
        b.get_or_load("k".to_owned(), |_| async { "v2".to_owned() })
            .await,
        "v2"
    );
}

/// A hot tag's record follows the live entries: 400 short-lived keys of one
/// tag, loaded over 2 s, leave only the last few hundred milliseconds' worth
/// in Redis (v2: a `SADD`ed set whose expiry every new member pushed out,
/// members never removed — all 400, and growing for as long as the tag is hot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_tags_record_in_redis_follows_the_live_entries() {
    let server = RedisServer::start();
    let url = server.url();
    let tag = "writes.growth";
    let backend = backend(&url).await;
    let cache: Cache<u32, u32> = Cache::builder("writes.growth")
        .ttl(Duration::from_millis(50))
        .load_timeout::<stampede_cache_tests::scenarios::RepoError>(Duration::from_millis(100))
        .tags(move |_: &u32| [tag])
        .backend(backend.clone())
        .build();
    for key in 0..400u32 {
        let loaded = cache
            .try_get_or_load(key, |k| async move {
                Ok::<_, stampede_cache_tests::scenarios::RepoError>(k)
            })
            .await;
        assert_eq!(loaded, Ok(key));
        sleep(Duration::from_millis(5)).await;
    }
    let hex: String = tag.bytes().map(|b| format!("{b:02x}")).collect();
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let members: u64 = redis::cmd("ZCARD")
        .arg(format!("stampede:tagset:{{{hex}}}"))
        .query_async(&mut con)
        .await
        .unwrap();
    // Kept for a lock hold (100 ms) + ttl (50 ms) each: at 5 ms+ a key, ≤ 30 live.
    assert!(
        members <= 40,
        "{members} slots still recorded under the tag"
    );
    assert!(members >= 1, "the live entries are recorded");
    stampede_cache::invalidate_tag(tag);
    assert!(
        SharedBackend::from(backend)
            .flush(Duration::from_secs(5))
            .await
    );
    let kept: u64 = redis::cmd("ZCARD")
        .arg(format!("stampede:tagset:{{{hex}}}"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        kept >= 1,
        "the record outlives the invalidation (the next one must find a load recorded before it)"
    );
    sleep(Duration::from_millis(300)).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("stampede:tagset:{{{hex}}}*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(
        keys.is_empty(),
        "the record and the invalidation's snapshot expire with their members: {keys:?}"
    );
}

/// `invalidate_tag` is applied once per backend, not once per tagged cache,
/// and the sender does not re-apply its own notice: three tagged caches on
/// one backend, a load started right after the invalidation is cached in
/// L1 (v2: three scripts, and the sender's own notice arriving a moment
/// later superseded that load, so the next call went to Redis again; a
/// mutation re-applying the own notice makes this test fail on the count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidation_is_sent_once_and_not_reapplied_by_its_sender() {
    let server = RedisServer::start();
    let backend = backend(&server.url()).await;
    let tag = "writes.once.t";
    let caches: Vec<Cache<u32, u32>> = (0..3)
        .map(|i| {
            Cache::builder(format!("writes.once.{i}"))
                .ttl(Duration::from_secs(60))
                .tags(move |_: &u32| [tag])
                .backend(backend.clone())
                .build()
        })
        .collect();
    for cache in &caches {
        cache.get_or_load(1, |k| async move { k }).await;
    }
    let before = backend.commands_sent();
    stampede_cache::invalidate_tag(tag);
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let reloaded = caches[0]
        .get_or_load(1, move |k| async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            sleep(Duration::from_millis(50)).await;
            k + 1
        })
        .await;
    assert_eq!(reloaded, 2);
    assert!(
        SharedBackend::from(backend.clone())
            .flush(Duration::from_secs(5))
            .await
    );
    sleep(Duration::from_millis(100)).await; // any late notice has arrived
    let again = caches[0].get_or_load(1, |k| async move { k + 10 }).await;
    assert_eq!(again, 2, "the load after the invalidation was cached");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    let tag_commands = backend.commands_sent() - before;
    // The reload's own commands (tag, lock, fenced write) plus the
    // invalidation's chunk and publish: well under v2's three scripts + this.
    assert!(tag_commands <= 6, "{tag_commands} commands");
}

/// With Redis hung, tagged misses count towards the breaker like every
/// other command: it opens, and further tagged misses skip Redis at once
/// (v2: every tagged miss paid a full command timeout in the tag write,
/// and never tripped the breaker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_misses_trip_the_breaker_when_redis_hangs() {
    let server = RedisServer::start();
    let backend = backend(&server.url()).await;
    let cache: Cache<u32, u32> = Cache::builder("writes.tag_breaker")
        .tags(|_: &u32| ["writes.tag_breaker.t"])
        .backend(backend.clone())
        .build();
    cache.get_or_load(0, |k| async move { k }).await;
    server.freeze();
    let started = Instant::now();
    for key in 1..=10u32 {
        assert_eq!(
            bounded(cache.get_or_load(key, |k| async move { k })).await,
            key
        );
    }
    let took = started.elapsed();
    server.thaw();
    assert!(
        backend.breaker_is_open() || backend.breaker_trips() >= 1,
        "the breaker tripped"
    );
    // 3 timeouts (100 ms) trip it; the other 7 misses skip Redis.
    assert!(
        took < Duration::from_millis(700),
        "10 tagged misses took {took:?}"
    );
}

/// Issue 14, review item 5: a pod shutting down gracefully (its runtime
/// dropped with a load in flight) left that load's lock in Redis for the
/// rest of its lease: the fleet's callers of that key waited up to
/// `lock_ttl` (10 s) for a process that was gone. `SharedBackend::shutdown`
/// releases the locks of the process's loads in flight (their values are
/// fenced out) and flushes its writes: pod B takes the key over at once.
#[tokio::test]
async fn a_pod_that_shuts_down_hands_its_keys_in_flight_to_the_fleet() {
    let server = RedisServer::start();
    let url = server.url();
    let (tell_held, held) = std::sync::mpsc::channel();
    let leaving = {
        let url = url.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let backend = backend(&url).await;
                let pod = pod("writes.shutdown", &backend);
                tokio::spawn(async move {
                    pod.get_or_load("hot".to_owned(), |_| std::future::pending::<String>())
                        .await
                });
                sleep(Duration::from_millis(200)).await;
                tell_held.send(()).unwrap();
                assert!(
                    SharedBackend::from(backend)
                        .shutdown(Duration::from_secs(2))
                        .await
                );
            });
            // The runtime is dropped here, with the load still in flight.
        })
    };
    held.recv().unwrap();
    let backend = backend(&url).await;
    let staying = pod("writes.shutdown", &backend);
    leaving.join().unwrap();
    let started = Instant::now();
    let value =
        bounded(staying.get_or_load("hot".to_owned(), |_| async { "from B".to_owned() })).await;
    assert_eq!(value, "from B");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "pod B waited {:?} for the lock of a pod that had shut down",
        started.elapsed()
    );
}
