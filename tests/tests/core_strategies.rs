//! What each strategy does at expiry, on tokio's paused clock: who loads,
//! who waits, and what they are served.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_cache::{Cache, Strategy};
use tokio::time::{Instant, advance, sleep, timeout};

const BOUND: Duration = Duration::from_secs(600);
const TTL: Duration = Duration::from_secs(1);

/// A loader that counts its calls and answers the call number after `took`.
#[derive(Clone)]
struct Origin {
    calls: Arc<AtomicU64>,
    took: Duration,
}

impl Origin {
    fn new(took: Duration) -> Self {
        Self {
            calls: Arc::new(AtomicU64::new(0)),
            took,
        }
    }

    fn loader(
        &self,
    ) -> impl FnOnce(u32) -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> + Send + 'static
    {
        let (calls, took) = (self.calls.clone(), self.took);
        move |_| {
            Box::pin(async move {
                let n = calls.fetch_add(1, SeqCst) + 1;
                sleep(took).await;
                n
            })
        }
    }

    fn calls(&self) -> u64 {
        self.calls.load(SeqCst)
    }
}

/// Runs `n` concurrent callers; returns each one's value and how long it waited.
async fn stampede(cache: &Cache<u32, u64>, origin: &Origin, n: usize) -> Vec<(u64, Duration)> {
    let callers: Vec<_> = (0..n)
        .map(|_| {
            let (cache, loader) = (cache.clone(), origin.loader());
            tokio::spawn(async move {
                let started = Instant::now();
                let value = cache.get_or_load(1, loader).await;
                (value, started.elapsed())
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for caller in callers {
        results.push(timeout(BOUND, caller).await.unwrap().unwrap());
    }
    results
}

#[tokio::test(start_paused = true)]
async fn lock_reloads_once_for_a_hundred_callers_after_expiry() {
    let cache = Cache::builder("lock-expiry")
        .ttl(TTL)
        .strategy(Strategy::Lock)
        .build();
    let origin = Origin::new(Duration::from_millis(200));
    assert!(
        stampede(&cache, &origin, 100)
            .await
            .iter()
            .all(|(v, _)| *v == 1)
    );
    advance(TTL).await;
    let after_expiry = stampede(&cache, &origin, 100).await;
    assert_eq!(
        origin.calls(),
        2,
        "one load when cold, exactly one reload after expiry"
    );
    // Under `lock`, every caller after expiry waits for the reload and gets it.
    assert!(
        after_expiry
            .iter()
            .all(|&(v, waited)| v == 2 && waited == Duration::from_millis(200))
    );
    assert_eq!(cache.stats().coalesced, 198);
}

#[tokio::test(start_paused = true)]
async fn swr_serves_stale_at_once_while_one_refresh_runs() {
    let stale = Duration::from_secs(10);
    let cache = Cache::builder("swr")
        .ttl(TTL)
        .strategy(Strategy::Swr { stale })
        .build();
    let origin = Origin::new(Duration::from_secs(1));
    stampede(&cache, &origin, 1).await;
    advance(TTL).await;

    // 100 callers past the TTL, all at the same paused instant: stale value, no wait.
    let at = Instant::now();
    for _ in 0..100 {
        assert_eq!(cache.get_or_load(1, origin.loader()).await, 1);
        assert_eq!(Instant::now(), at, "a reader waited");
    }
    assert_eq!(cache.stats().stale_hits, 100);
    assert_eq!(cache.stats().background_refreshes, 1);

    // The one refresh lands after its 1 s; then the new value is served fresh.
    sleep(Duration::from_millis(1001)).await;
    assert_eq!(
        origin.calls(),
        2,
        "exactly one refresh for 100 stale readers"
    );
    assert_eq!(cache.get_or_load(1, origin.loader()).await, 2);

    // Past ttl + stale there is nothing servable: a blocking single-flight miss.
    advance(TTL + stale).await;
    let waited = stampede(&cache, &origin, 50).await;
    assert!(
        waited
            .iter()
            .all(|&(v, w)| v == 3 && w == Duration::from_secs(1))
    );
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn swr_keeps_serving_stale_when_the_refresh_fails_until_stale_ends() {
    let stale = Duration::from_secs(10);
    let cache: Cache<u32, u64> = Cache::builder("swr-fail-safe")
        .ttl(TTL)
        .strategy(Strategy::Swr { stale })
        .build();
    let attempts = Arc::new(AtomicUsize::new(0));
    cache.insert(1, 7);
    let failing = |attempts: Arc<AtomicUsize>| {
        move |_| async move {
            attempts.fetch_add(1, SeqCst);
            sleep(Duration::from_millis(100)).await;
            Err::<u64, &'static str>("db down")
        }
    };
    advance(TTL).await;
    for second in 0..9 {
        // Each second a reader gets the stale value at once; the failed refresh is retried.
        let at = Instant::now();
        assert_eq!(
            cache.try_get_or_load(1, failing(attempts.clone())).await,
            Ok(7),
            "second {second}"
        );
        assert_eq!(Instant::now(), at);
        sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        attempts.load(SeqCst),
        9,
        "one refresh per stale read after the previous one failed"
    );
    assert_eq!(cache.stats().load_errors, 9);
    // Past the stale window the error reaches the caller.
    sleep(Duration::from_secs(1)).await;
    assert_eq!(
        cache.try_get_or_load(1, failing(attempts.clone())).await,
        Err("db down")
    );
}

#[tokio::test(start_paused = true)]
async fn xfetch_refreshes_once_per_cycle_before_expiry_under_steady_load() {
    fastrand::seed(20151); // the decision's draws come from this thread's generator
    let cache = Cache::builder("xfetch")
        .ttl(TTL)
        .strategy(Strategy::XFetch { beta: 1.0 })
        .build();
    let load_starts = Arc::new(Mutex::new(Vec::new()));
    let loader = |starts: Arc<Mutex<Vec<Instant>>>| {
        move |_: u32| async move {
            starts.lock().unwrap().push(Instant::now());
            sleep(Duration::from_millis(100)).await;
            1u64
        }
    };
    let t0 = Instant::now();
    cache.get_or_load(1, loader(load_starts.clone())).await; // cold load, waited
    // Steady load: a caller every 5 ms for 10 TTL cycles; none may wait.
    let mut longest_wait = Duration::ZERO;
    while t0.elapsed() < TTL * 10 {
        let at = Instant::now();
        cache.get_or_load(1, loader(load_starts.clone())).await;
        longest_wait = longest_wait.max(at.elapsed());
        sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        longest_wait,
        Duration::ZERO,
        "no caller blocked at a TTL boundary"
    );
    let stats = cache.stats();
    assert_eq!(stats.misses, 1, "only the cold call missed");
    let starts = load_starts.lock().unwrap().clone();
    assert_eq!(starts.len() as u64, stats.loads);
    assert_eq!(stats.early_refreshes, stats.loads - 1);
    // One refresh per cycle, started before the previous value expired: a
    // value loaded at `s` (taking 100 ms) is fresh until `s + 100 ms + TTL`.
    // Each load draws its refresh `delta + beta*delta*Exp(1)` before expiry
    // (mean 0.2 s), so a cycle lasts TTL - beta*delta*Exp(1) ≈ 0.9 s and 10 s
    // hold ≈ 11 of them plus the cold load — at any request rate.
    for pair in starts.windows(2) {
        let interval = pair[1] - pair[0];
        assert!(
            interval < TTL + Duration::from_millis(100),
            "refresh after expiry: {interval:?}"
        );
        // A refresh starts only once the previous load has landed (each
        // value is refreshed once; 100 ms loads never overlap).
        assert!(
            interval >= Duration::from_millis(100),
            "two refreshes of one value: {interval:?}"
        );
    }
    assert!(
        (10..=13).contains(&starts.len()),
        "{} loads in 10 s",
        starts.len()
    );
}

#[tokio::test(start_paused = true)]
async fn xfetch_rollers_start_nothing_while_a_refresh_runs() {
    // beta huge: every fresh hit rolls a refresh; single flight keeps it to one.
    let cache = Cache::builder("xfetch-dedup")
        .ttl(TTL)
        .strategy(Strategy::XFetch { beta: 1e9 })
        .build();
    let origin = Origin::new(Duration::from_millis(100));
    stampede(&cache, &origin, 1).await;
    for _ in 0..100 {
        let at = Instant::now();
        assert_eq!(cache.get_or_load(1, origin.loader()).await, 1);
        assert_eq!(Instant::now(), at);
    }
    sleep(Duration::from_millis(150)).await;
    assert_eq!(origin.calls(), 2, "100 rolls that fired, one refresh");
    assert_eq!(cache.stats().early_refreshes, 1);
    assert_eq!(cache.get_or_load(1, origin.loader()).await, 2);
}

#[tokio::test(start_paused = true)]
async fn get_never_loads_and_sees_only_servable_values() {
    let cache = Cache::builder("get")
        .ttl(TTL)
        .strategy(Strategy::Swr { stale: TTL })
        .build();
    let origin = Origin::new(Duration::from_millis(1));
    assert_eq!(cache.get(&1), None);
    stampede(&cache, &origin, 1).await;
    assert_eq!(cache.get(&1), Some(1));
    advance(TTL).await;
    assert_eq!(cache.get(&1), Some(1), "stale but servable under swr");
    advance(TTL).await;
    assert_eq!(cache.get(&1), None);
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_refresh_is_retried_at_most_once_per_backoff_not_per_read() {
    let stale = Duration::from_secs(60);
    let cache: Cache<u32, u64> = Cache::builder("swr-backoff")
        .ttl(TTL)
        .strategy(Strategy::Swr { stale })
        .failed_refresh_backoff(Duration::from_millis(100))
        .build();
    cache.insert(1, 7);
    advance(TTL).await;
    let attempts = Arc::new(AtomicUsize::new(0));
    let origin_down = |attempts: Arc<AtomicUsize>| {
        move |_| async move {
            attempts.fetch_add(1, SeqCst);
            sleep(Duration::from_millis(10)).await; // connection refused, quickly
            Err::<u64, &'static str>("db down")
        }
    };
    // A reader every millisecond for one second, all served the stale value at once.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let at = Instant::now();
        let served = cache
            .try_get_or_load(1, origin_down(attempts.clone()))
            .await;
        assert_eq!(served, Ok(7));
        assert_eq!(Instant::now(), at, "a reader waited");
        sleep(Duration::from_millis(1)).await;
    }
    // Each attempt takes 10 ms and is followed by 100 ms of backoff: about 9
    // attempts in the second, not one per read (about 90 without backoff).
    let made = attempts.load(SeqCst);
    assert!((8..=10).contains(&made), "{made} refresh attempts in 1 s");
    assert_eq!(cache.stats().stale_hits, 1000);

    // The origin is back: the next refresh after the backoff succeeds.
    sleep(Duration::from_millis(150)).await;
    cache
        .try_get_or_load(1, |_| async { Ok::<u64, &'static str>(8) })
        .await
        .unwrap();
    sleep(Duration::from_millis(1)).await;
    assert_eq!(cache.get(&1), Some(8));
}
