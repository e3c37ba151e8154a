//! Faults are counted in `stats()` and logged through `tracing`.

use std::time::Duration;

use stampede_cache::{Cache, Strategy};
use stampede_cache_tests::Captured;
use tokio::time::{advance, sleep, timeout};

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

// current_thread: the spawned loads run on this thread, under the capturing subscriber.
#[tokio::test(start_paused = true)]
async fn load_errors_panics_and_refreshes_are_counted_and_logged() {
    let (log, _guard) = capture();
    let cache: Cache<u32, u32> = Cache::builder("observed.users")
        .ttl(Duration::from_secs(1))
        .strategy(Strategy::Swr {
            stale: Duration::from_secs(60),
        })
        .build();

    let failed = cache
        .try_get_or_load(1, |_| async { Err::<u32, &str>("db down") })
        .await;
    assert_eq!(failed, Err("db down"));

    let panicked = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load(2, |_| async { panic!("loader bug") })
                .await
        }
    });
    assert!(
        timeout(Duration::from_secs(5), panicked)
            .await
            .unwrap()
            .unwrap_err()
            .is_panic()
    );

    cache.get_or_load(3, |_| async { 3 }).await;
    advance(Duration::from_secs(2)).await;
    cache
        .try_get_or_load(3, |_| async {
            sleep(Duration::from_millis(10)).await;
            Err::<u32, &str>("refresh failed")
        })
        .await
        .unwrap();
    sleep(Duration::from_millis(20)).await;

    let stats = cache.stats();
    assert_eq!(
        (
            stats.load_errors,
            stats.load_panics,
            stats.background_refreshes
        ),
        (2, 1, 1)
    );
    let log = log.text();
    assert!(log.contains("WARN") && log.contains("load failed"), "{log}");
    assert!(
        log.contains("stale_kept=true"),
        "the failed swr refresh says the stale value is kept: {log}"
    );
    assert!(
        log.contains("ERROR") && log.contains("loader panicked") && log.contains("loader bug"),
        "{log}"
    );
    assert!(log.contains("background refresh started"), "{log}");
    assert!(
        log.contains("observed.users"),
        "events name the cache: {log}"
    );
}
