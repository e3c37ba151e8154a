//! `none_ttl`, `jitter` and `tags(..)` through `#[stampede_cached]`, on tokio's paused clock:
//! a cached `None` expires at `none_ttl` while values keep the `ttl`; every load's expiry
//! falls in `[ttl, ttl + jitter]` and the loads of one instant spread over it; a write
//! `invalidate_tag`s exactly the entries whose tag expressions named it.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use stampede_cache::{invalidate_tag, stampede_cached};
use tokio::time::{advance, timeout};

const BOUND: Duration = Duration::from_secs(3600);

async fn bounded<F: Future>(f: F) -> F::Output {
    timeout(BOUND, f).await.expect("call hung")
}

// ---- none_ttl ----------------------------------------------------------------------------

static FIND_CALLS: AtomicUsize = AtomicUsize::new(0);

/// Ids above 100 do not exist.
#[stampede_cached(ttl = "30s", none_ttl = "5s")]
async fn find(id: u64) -> Option<String> {
    FIND_CALLS.fetch_add(1, SeqCst);
    (id <= 100).then(|| format!("user {id}"))
}

#[tokio::test(start_paused = true)]
async fn a_cached_none_expires_at_none_ttl_and_a_value_at_ttl() {
    assert_eq!(bounded(find(7)).await.as_deref(), Some("user 7"));
    assert_eq!(bounded(find(404)).await, None);
    assert_eq!(FIND_CALLS.load(SeqCst), 2);

    // Within 5 s: both served from the cache.
    advance(Duration::from_millis(4900)).await;
    assert_eq!(bounded(find(404)).await, None);
    assert_eq!(bounded(find(7)).await.as_deref(), Some("user 7"));
    assert_eq!(FIND_CALLS.load(SeqCst), 2);

    // Past 5 s: the `None` is reloaded once, the value is not.
    advance(Duration::from_millis(200)).await;
    assert_eq!(find_cache().get(&404), None, "the None expired");
    assert_eq!(bounded(find(404)).await, None);
    assert_eq!(bounded(find(404)).await, None);
    assert_eq!(bounded(find(7)).await.as_deref(), Some("user 7"));
    assert_eq!(FIND_CALLS.load(SeqCst), 3);

    // The value lasts its 30 s, and not beyond.
    advance(Duration::from_secs(24)).await; // t = 29.1 s
    assert_eq!(bounded(find(7)).await.as_deref(), Some("user 7"));
    assert_eq!(FIND_CALLS.load(SeqCst), 3);
    advance(Duration::from_secs(1)).await; // t = 30.1 s
    assert_eq!(bounded(find(7)).await.as_deref(), Some("user 7"));
    assert_eq!(FIND_CALLS.load(SeqCst), 4);
}

static TRY_FIND_CALLS: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Debug, PartialEq)]
pub struct DbDown;

/// `Result<Option<T>, E>`: `Ok(None)` gets `none_ttl`, `Ok(Some(..))` the `ttl`, and an
/// `Err` is never cached.
#[stampede_cached(ttl = "1m", none_ttl = "2s")]
async fn try_find(id: u64) -> Result<Option<u64>, DbDown> {
    let n = TRY_FIND_CALLS.fetch_add(1, SeqCst);
    match id {
        0 if n == 0 => Err(DbDown),
        0 => Ok(None),
        id => Ok(Some(id * 10)),
    }
}

#[tokio::test(start_paused = true)]
async fn result_option_fns_cache_ok_none_for_none_ttl() {
    assert_eq!(bounded(try_find(0)).await, Err(DbDown));
    assert_eq!(bounded(try_find(0)).await, Ok(None), "an Err is not cached");
    assert_eq!(bounded(try_find(3)).await, Ok(Some(30)));
    assert_eq!(TRY_FIND_CALLS.load(SeqCst), 3);
    advance(Duration::from_millis(1900)).await;
    assert_eq!(bounded(try_find(0)).await, Ok(None));
    assert_eq!(TRY_FIND_CALLS.load(SeqCst), 3);
    advance(Duration::from_millis(200)).await;
    assert_eq!(bounded(try_find(0)).await, Ok(None));
    assert_eq!(bounded(try_find(3)).await, Ok(Some(30)));
    assert_eq!(
        TRY_FIND_CALLS.load(SeqCst),
        4,
        "only the Ok(None) was reloaded"
    );
}

// ---- jitter ------------------------------------------------------------------------------

static JITTER_CALLS: AtomicUsize = AtomicUsize::new(0);

#[stampede_cached(ttl = "10s", jitter = "5s", capacity = 1000)]
async fn jittered(id: u32) -> u32 {
    JITTER_CALLS.fetch_add(1, SeqCst);
    id
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_expiry_over_ttl_to_ttl_plus_jitter() {
    const KEYS: u32 = 200;
    for id in 0..KEYS {
        bounded(jittered(id)).await;
    }
    let cache = jittered_cache();
    let fresh = || (0..KEYS).filter(|id| cache.get(id).is_some()).count();

    // Never before the ttl.
    advance(Duration::from_millis(9990)).await;
    assert_eq!(fresh(), KEYS as usize, "no entry expires before its ttl");

    // Spread over [ttl, ttl + jitter]: some expire in its first half, some in its second.
    advance(Duration::from_millis(2510)).await; // t = 12.5 s
    let half = fresh();
    assert!(
        half > 0 && half < KEYS as usize,
        "{half} of {KEYS} still fresh at ttl + jitter / 2: the expiries are spread"
    );

    // And none after ttl + jitter.
    advance(Duration::from_millis(2510)).await; // t = 15.01 s
    assert_eq!(fresh(), 0, "every entry expires by ttl + jitter");

    // The reloads follow the expiries: one per key.
    for id in 0..KEYS {
        bounded(jittered(id)).await;
    }
    assert_eq!(JITTER_CALLS.load(SeqCst), 2 * KEYS as usize);
}

// ---- tags ------------------------------------------------------------------------------------

static PAGE_CALLS: AtomicUsize = AtomicUsize::new(0);

/// The README example: every page of a category carries its tag; `trace` is not in the key.
#[stampede_cached(
    ttl = "10m",
    skip(trace),
    tags(format!("category:{category}"), "pages")
)]
async fn top_products(category: &str, page: u32, trace: u64) -> Vec<String> {
    let _ = trace;
    PAGE_CALLS.fetch_add(1, SeqCst);
    vec![format!("{category} #{page}")]
}

#[tokio::test(start_paused = true)]
async fn invalidate_tag_drops_exactly_the_entries_that_carry_it() {
    for category in ["books", "games"] {
        for page in 1..=3 {
            bounded(top_products(category, page, 0)).await;
        }
    }
    assert_eq!(PAGE_CALLS.load(SeqCst), 6);

    invalidate_tag("category:books");
    let cache = top_products_cache();
    assert_eq!(cache.get(&("books".to_string(), 1)), None);
    assert!(cache.get(&("games".to_string(), 1)).is_some());
    for page in 1..=3 {
        assert_eq!(
            bounded(top_products("books", page, 1)).await,
            vec![format!("books #{page}")]
        );
        bounded(top_products("games", page, 1)).await;
    }
    assert_eq!(PAGE_CALLS.load(SeqCst), 9, "the three books pages reloaded");

    // A tag of no entry drops nothing; a tag every entry carries drops all.
    invalidate_tag("category:garden");
    bounded(top_products("games", 1, 2)).await;
    assert_eq!(PAGE_CALLS.load(SeqCst), 9);
    invalidate_tag("pages");
    bounded(top_products("games", 1, 2)).await;
    bounded(top_products("books", 1, 2)).await;
    assert_eq!(PAGE_CALLS.load(SeqCst), 11);
}

static SCOPED_CALLS: AtomicUsize = AtomicUsize::new(0);

/// A computed key: the tag expression sees it as `key`; it is evaluated when a load starts.
#[stampede_cached(
    ttl = "10m",
    key = format!("{tenant}/{id}"),
    tags(format!("tenant:{}", key.split('/').next().unwrap_or_default()))
)]
async fn scoped(tenant: &str, id: u64) -> String {
    SCOPED_CALLS.fetch_add(1, SeqCst);
    format!("{tenant} {id}")
}

#[tokio::test(start_paused = true)]
async fn tags_of_a_computed_key_are_computed_from_the_key() {
    bounded(scoped("acme", 1)).await;
    bounded(scoped("acme", 2)).await;
    bounded(scoped("initech", 1)).await;
    assert_eq!(SCOPED_CALLS.load(SeqCst), 3);
    invalidate_tag("tenant:acme");
    assert_eq!(scoped_cache().get(&"acme/1".to_string()), None);
    assert_eq!(
        scoped_cache().get(&"initech/1".to_string()).as_deref(),
        Some("initech 1")
    );
    bounded(scoped("acme", 1)).await;
    bounded(scoped("initech", 1)).await;
    assert_eq!(SCOPED_CALLS.load(SeqCst), 4);
}
