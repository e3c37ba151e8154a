//! `-> Result<T, E>` through `#[stampede_cached]`: `Ok` is cached, `Err` never is, and one
//! failing load hands its `Err` to every caller that waited on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::stampede_cached;
use tokio::time::{sleep, timeout};

const BOUND: Duration = Duration::from_secs(600);

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// Fails on its first call (after 1 s), succeeds afterwards.
#[stampede_cached(ttl = "30s")]
async fn flaky(id: u64) -> Result<u64, Arc<str>> {
    let n = CALLS.fetch_add(1, SeqCst);
    sleep(Duration::from_secs(1)).await;
    if n == 0 {
        Err(Arc::from("db down"))
    } else {
        Ok(id * 10)
    }
}

#[tokio::test(start_paused = true)]
async fn err_is_shared_with_waiters_and_never_cached() {
    let callers: Vec<_> = (0..10).map(|_| tokio::spawn(flaky(1))).collect();
    for c in callers {
        let r = timeout(BOUND, c).await.unwrap().unwrap();
        assert_eq!(r.unwrap_err().as_ref(), "db down");
    }
    assert_eq!(
        CALLS.load(SeqCst),
        1,
        "one load for ten callers, even failing"
    );
    assert_eq!(flaky_cache().get(&1), None, "Err is not cached");

    assert_eq!(timeout(BOUND, flaky(1)).await.unwrap(), Ok(10));
    assert_eq!(timeout(BOUND, flaky(1)).await.unwrap(), Ok(10));
    assert_eq!(CALLS.load(SeqCst), 2);
    assert_eq!(flaky_cache().get(&1), Some(10));
    assert_eq!(flaky_cache().stats().load_errors, 1);
}

mod error {
    /// A one-parameter alias, like `io::Result<T>` or `anyhow::Result<T>`.
    pub type Result<T> = std::result::Result<T, std::sync::Arc<std::io::Error>>;
}

static ALIAS_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "30s")]
async fn parse_port(text: &str) -> error::Result<u16> {
    ALIAS_CALLS.fetch_add(1, SeqCst);
    text.parse()
        .map_err(|e| Arc::new(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))
}

type Lookup = Result<String, Arc<str>>;

static LOOKUP_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "30s", returns = "result")]
async fn lookup(id: u64) -> Lookup {
    LOOKUP_CALLS.fetch_add(1, SeqCst);
    if id == 0 {
        Err(Arc::from("no such id"))
    } else {
        Ok(format!("#{id}"))
    }
}

#[tokio::test(start_paused = true)]
async fn result_aliases_cache_ok_only() {
    assert_eq!(
        timeout(BOUND, parse_port("8080")).await.unwrap().unwrap(),
        8080
    );
    assert_eq!(
        timeout(BOUND, parse_port("8080")).await.unwrap().unwrap(),
        8080
    );
    assert!(timeout(BOUND, parse_port("http")).await.unwrap().is_err());
    assert!(timeout(BOUND, parse_port("http")).await.unwrap().is_err());
    assert_eq!(ALIAS_CALLS.load(SeqCst), 3);
    assert_eq!(parse_port_cache().get(&"8080".to_string()), Some(8080));

    assert!(timeout(BOUND, lookup(0)).await.unwrap().is_err());
    assert!(timeout(BOUND, lookup(0)).await.unwrap().is_err());
    assert_eq!(timeout(BOUND, lookup(5)).await.unwrap().unwrap(), "#5");
    assert_eq!(timeout(BOUND, lookup(5)).await.unwrap().unwrap(), "#5");
    assert_eq!(LOOKUP_CALLS.load(SeqCst), 3);
}
