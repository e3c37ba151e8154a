//! The three strategies through `#[stampede_cached]`, on tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::stampede_cached;
use tokio::time::{Instant, advance, sleep, timeout};

const BOUND: Duration = Duration::from_secs(600);

async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(BOUND, f).await.expect("call hung")
}

/// Lets spawned loads run to completion: a sleep on the paused clock, which tokio
/// auto-advances through the loads' own timers (no wall-clock time passes).
async fn settle(d: Duration) {
    sleep(d).await;
}

// ---- lock: one reload per expiry --------------------------------------------------------

static LOCK_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "10s", strategy = "lock")]
async fn locked(id: u64) -> usize {
    let n = LOCK_CALLS.fetch_add(1, SeqCst) + 1;
    sleep(Duration::from_millis(100)).await;
    let _ = id;
    n
}

#[tokio::test(start_paused = true)]
async fn lock_reloads_once_after_expiry_for_concurrent_callers() {
    assert_eq!(bounded(locked(1)).await, 1);
    advance(Duration::from_secs(11)).await;
    let callers: Vec<_> = (0..50).map(|_| tokio::spawn(locked(1))).collect();
    for c in callers {
        assert_eq!(
            bounded(c).await.unwrap(),
            2,
            "every caller waits for the one reload"
        );
    }
    assert_eq!(LOCK_CALLS.load(SeqCst), 2);
}

// ---- swr: stale served at once, one background refresh ----------------------------------

static SWR_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "10s", strategy = "swr", stale = "1m")]
async fn swr(id: u64) -> usize {
    let n = SWR_CALLS.fetch_add(1, SeqCst) + 1;
    sleep(Duration::from_secs(2)).await;
    let _ = id;
    n
}

#[tokio::test(start_paused = true)]
async fn swr_serves_stale_without_waiting_and_refreshes_once() {
    assert_eq!(bounded(swr(1)).await, 1);
    advance(Duration::from_secs(11)).await;

    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(bounded(swr(1)).await, 1, "stale value served");
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no reader waited for the refresh"
    );

    settle(Duration::from_secs(3)).await;
    assert_eq!(bounded(swr(1)).await, 2, "refreshed value");
    assert_eq!(
        SWR_CALLS.load(SeqCst),
        2,
        "one background refresh for twenty stale reads"
    );
    let stats = swr_cache().stats();
    assert_eq!(stats.stale_hits, 20);
    assert_eq!(stats.background_refreshes, 1);

    // beyond `stale`: a plain miss, the caller waits for the load
    advance(Duration::from_secs(120)).await;
    let started = Instant::now();
    assert_eq!(bounded(swr(1)).await, 3);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

// ---- xfetch: early refresh before expiry ------------------------------------------------

static XFETCH_CALLS: AtomicUsize = AtomicUsize::new(0);

/// δ = 1 s (the load's duration), β = 50: each value's refresh lead is drawn
/// once, δ·β·(−ln U), so it reaches two seconds before expiry with
/// probability exp(−2 / 50) ≈ 0.96 — the test seeds the draw (see below)
/// so that it cannot land in the other 4 %.
#[stampede_cached(ttl = "10s", strategy = "xfetch", beta = 50.0)]
async fn xfetch(id: u64) -> usize {
    let n = XFETCH_CALLS.fetch_add(1, SeqCst) + 1;
    sleep(Duration::from_secs(1)).await;
    let _ = id;
    n
}

#[tokio::test(start_paused = true)]
async fn xfetch_refreshes_early_and_nobody_waits() {
    // The draws come from this thread's fastrand generator (the paused
    // runtime runs the load here): seeded, the drawn lead is the same every
    // run — v2 drew it unseeded and failed about 1 run in 25.
    fastrand::seed(0x5eed);
    assert_eq!(bounded(xfetch(1)).await, 1);
    advance(Duration::from_secs(8)).await;

    let started = Instant::now();
    let mut reads = 0;
    while xfetch_cache().stats().early_refreshes == 0 && reads < 200 {
        assert_eq!(
            bounded(xfetch(1)).await,
            1,
            "the fresh value is served meanwhile"
        );
        reads += 1;
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "the early refresh is detached"
    );
    assert!(
        xfetch_cache().stats().early_refreshes >= 1,
        "no early refresh in {reads} reads"
    );

    settle(Duration::from_millis(1500)).await;
    // still before the original expiry (10 s): the refreshed value is already there
    assert_eq!(bounded(xfetch(1)).await, 2);
    assert_eq!(
        XFETCH_CALLS.load(SeqCst),
        2,
        "exactly one early refresh ran"
    );
}
