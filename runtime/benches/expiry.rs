//! Expiry behaviour by request rate and key count, on tokio's paused clock
//! (so 100 k requests/s for 2 s of simulated time take well under a second).
//!
//! Run with `cargo bench -p stampede-cache --bench expiry`.
//!
//! 1. **XFetch loads per ttl vs request rate.** One hot key, ttl 200 ms,
//!    a 50 ms load, steady calls for 2 s at 1 k … 200 k requests/s. Our
//!    `Strategy::XFetch` (one early-refresh instant drawn per load) against
//!    the paper's per-request roll (`now − δβ·ln U ≥ expiry` on every
//!    request, single-flighted), simulated here in a few lines. Reported:
//!    loads in 2 s, loads per ttl, calls that waited.
//! 2. **Expiry wave.** 10 000 keys warmed at once (ttl 10 s), each read
//!    every 100 ms: loads per 100 ms window, with and without `jitter`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::{Cache, Strategy};
use tokio::time::{Instant, advance, sleep};

const TTL: Duration = Duration::from_millis(200);
const LOAD: Duration = Duration::from_millis(50);
const RUN: Duration = Duration::from_secs(2);

/// Calls at `rate` per second for [`RUN`]: (loads, calls that waited).
async fn ours(rate: u64) -> (usize, u64) {
    let cache: Cache<u32, u64> = Cache::builder(format!("bench.expiry.{rate}"))
        .ttl(TTL)
        .strategy(Strategy::XFetch { beta: 1.0 })
        .build();
    let loads = Arc::new(AtomicUsize::new(0));
    let loader = |loads: Arc<AtomicUsize>| {
        move |_| async move {
            loads.fetch_add(1, SeqCst);
            sleep(LOAD).await;
            1u64
        }
    };
    cache.get_or_load(1, loader(loads.clone())).await;
    let mut waited = 0;
    let start = Instant::now();
    while start.elapsed() < RUN {
        for _ in 0..(rate / 1000).max(1) {
            let at = Instant::now();
            cache.get_or_load(1, loader(loads.clone())).await;
            waited += u64::from(at.elapsed() > Duration::ZERO);
        }
        sleep(Duration::from_millis(1)).await;
    }
    (loads.load(SeqCst), waited)
}

/// The paper's per-request roll, single-flighted, on the same timeline:
/// (loads, calls that waited).
fn per_request_roll(rate: u64, rng: &mut fastrand::Rng) -> (usize, u64) {
    let (ttl, load) = (TTL.as_secs_f64(), LOAD.as_secs_f64());
    let step = 1.0 / rate as f64;
    // The cold load at t = 0 lands at `load`.
    let (mut loads, mut waited) = (1usize, 0u64);
    let mut expiry = load + ttl;
    let mut refreshing_until: Option<f64> = None;
    let mut t = load;
    while t < load + RUN.as_secs_f64() {
        if let Some(done) = refreshing_until
            && t >= done
        {
            expiry = done + ttl;
            refreshing_until = None;
        }
        if t >= expiry {
            // Expired: the call waits for a load (or the refresh in flight).
            waited += 1;
            if refreshing_until.is_none() {
                loads += 1;
                refreshing_until = Some(t + load);
            }
        } else if refreshing_until.is_none() {
            let u = 1.0 - rng.f64();
            if t - load * u.ln() >= expiry {
                loads += 1;
                refreshing_until = Some(t + load);
            }
        }
        t += step;
    }
    (loads, waited)
}

async fn wave(jitter: Duration) -> (u32, usize) {
    const KEYS: u32 = 10_000;
    let cache: Cache<u32, u32> = Cache::builder(format!("bench.wave.{}", jitter.as_secs()))
        .ttl(Duration::from_secs(10))
        .jitter(jitter)
        .capacity(KEYS as usize * 2)
        .build();
    let t0 = Instant::now();
    for key in 0..KEYS {
        cache.get_or_load(key, |k| async move { k }).await;
    }
    let windows = Arc::new(std::sync::Mutex::new(BTreeMap::<u64, u32>::new()));
    advance(Duration::from_millis(9_900)).await;
    while t0.elapsed() < Duration::from_secs(10) + jitter + Duration::from_millis(300) {
        for key in 0..KEYS {
            let windows = windows.clone();
            cache
                .get_or_load(key, move |k| async move {
                    let window = t0.elapsed().as_millis() as u64 / 100;
                    *windows.lock().unwrap().entry(window).or_default() += 1;
                    k
                })
                .await;
        }
        advance(Duration::from_millis(100)).await;
    }
    let windows = windows.lock().unwrap();
    (*windows.values().max().unwrap_or(&0), windows.len())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    fastrand::seed(2015);
    let mut rng = fastrand::Rng::with_seed(2015);
    println!("XFetch, one hot key, ttl 200 ms, load 50 ms, 2 s of calls (10 ttl):");
    println!(
        "| requests/s | ours: loads | loads per ttl | calls waited | per-request roll: loads | loads per ttl | calls waited |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for rate in [1_000u64, 10_000, 100_000, 200_000] {
        let (loads, waited) = runtime.block_on(ours(rate));
        let (paper, paper_waited) = per_request_roll(rate, &mut rng);
        let per_ttl = |n: usize| n as f64 / (RUN.as_secs_f64() / TTL.as_secs_f64());
        println!(
            "| {rate} | {loads} | {:.2} | {waited} | {paper} | {:.2} | {paper_waited} |",
            per_ttl(loads),
            per_ttl(paper)
        );
    }
    println!();
    println!("Expiry wave, 10 000 keys warmed at once, ttl 10 s, each read every 100 ms:");
    println!("| jitter | peak loads per 100 ms | windows with loads |");
    println!("|---:|---:|---:|");
    for jitter in [
        Duration::ZERO,
        Duration::from_secs(1),
        Duration::from_secs(5),
    ] {
        let (peak, windows) = runtime.block_on(wave(jitter));
        println!("| {jitter:?} | {peak} | {windows} |");
    }
}
