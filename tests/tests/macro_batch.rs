//! `#[stampede_cached(batch)]`: a fn that takes a list of keys and returns the rows it found
//! by key. The misses of concurrent calls are one call of the body, keys it leaves out are
//! cached as absent, errors reach the callers and are never cached, `max_batch` splits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_cache::stampede_cached;
use stampede_cache_tests::bounded;
use tokio::time::sleep;

#[derive(Clone, Debug, PartialEq)]
struct User {
    id: i64,
    name: String,
}

#[derive(Clone, Debug, PartialEq)]
struct DbError(&'static str);

/// A table of users; every query is logged with the ids it was given.
#[derive(Clone, Default)]
struct UserRepo {
    rows: Arc<Vec<i64>>,
    queries: Arc<Mutex<Vec<Vec<i64>>>>,
    down: Arc<AtomicBool>,
}

impl UserRepo {
    fn new(rows: &[i64]) -> Self {
        UserRepo {
            rows: Arc::new(rows.to_vec()),
            ..UserRepo::default()
        }
    }

    fn queries(&self) -> Vec<Vec<i64>> {
        self.queries.lock().unwrap().clone()
    }

    /// `SELECT .. WHERE id = ANY($1)`, taking a second.
    async fn query(&self, ids: &[i64]) -> Result<HashMap<i64, User>, DbError> {
        self.queries.lock().unwrap().push(ids.to_vec());
        sleep(Duration::from_secs(1)).await;
        if self.down.load(SeqCst) {
            return Err(DbError("db down"));
        }
        Ok(ids
            .iter()
            .filter(|id| self.rows.contains(id))
            .map(|&id| {
                let name = format!("user {id}");
                (id, User { id, name })
            })
            .collect())
    }

    #[stampede_cached(ttl = "30s", batch)]
    async fn concurrent(&self, ids: &[i64]) -> Result<HashMap<i64, User>, DbError> {
        self.query(ids).await
    }

    #[stampede_cached(ttl = "30s", batch)]
    async fn absent(&self, ids: &[i64]) -> Result<HashMap<i64, User>, DbError> {
        self.query(ids).await
    }

    #[stampede_cached(ttl = "30s", batch)]
    async fn failing(&self, ids: &[i64]) -> Result<HashMap<i64, User>, DbError> {
        self.query(ids).await
    }

    // The `&Vec<K>` form of the list is part of what this covers.
    #[allow(clippy::ptr_arg)]
    #[stampede_cached(ttl = "30s", batch)]
    async fn invalidated(&self, ids: &Vec<i64>) -> Result<HashMap<i64, User>, DbError> {
        self.query(ids).await
    }

    #[stampede_cached(ttl = "30s", batch, max_batch = 2)]
    async fn chunked(&self, ids: Vec<i64>) -> Result<HashMap<i64, User>, DbError> {
        self.query(&ids).await
    }

    #[stampede_cached(ttl = "30s", none_ttl = "5s", batch, tags(format!("user:{key}")))]
    async fn tagged(&self, ids: &[i64]) -> Result<HashMap<i64, User>, DbError> {
        self.query(ids).await
    }
}

fn ids(map: &HashMap<i64, User>) -> Vec<i64> {
    let mut ids: Vec<i64> = map.keys().copied().collect();
    ids.sort_unstable();
    ids
}

#[tokio::test(start_paused = true)]
async fn the_misses_of_concurrent_list_calls_are_one_query() {
    let repo = UserRepo::new(&[1, 2, 3, 4, 5]);
    let callers: Vec<_> = (0..10)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.concurrent(&[1, 2, 3]).await })
        })
        .collect();
    for caller in callers {
        let users = bounded(caller).await.unwrap().unwrap();
        assert_eq!(ids(&users), [1, 2, 3]);
        assert_eq!(users[&2].name, "user 2");
    }
    assert_eq!(repo.queries(), [vec![1, 2, 3]], "one query for ten callers");

    // A later list asks the origin for its misses only.
    let users = bounded(repo.concurrent(&[2, 3, 4, 5])).await.unwrap();
    assert_eq!(ids(&users), [2, 3, 4, 5]);
    assert_eq!(repo.queries(), [vec![1, 2, 3], vec![4, 5]]);
    let stats = UserRepo::concurrent_cache().stats();
    assert_eq!(stats.batch_calls, 2);
}

#[tokio::test(start_paused = true)]
async fn only_found_keys_are_returned_and_absent_keys_are_cached_as_none() {
    let repo = UserRepo::new(&[1, 2]);
    let users = bounded(repo.absent(&[1, 2, 3, 4])).await.unwrap();
    assert_eq!(ids(&users), [1, 2], "the ids without a row are left out");
    let cache = UserRepo::absent_cache();
    assert_eq!(cache.get(&3), Some(None), "absent: cached as None");
    assert_eq!(cache.get(&1).flatten().map(|u| u.id), Some(1));

    // A list with the deleted rows again: no query at all.
    let users = bounded(repo.absent(&[4, 3, 2])).await.unwrap();
    assert_eq!(ids(&users), [2]);
    assert_eq!(repo.queries(), [vec![1, 2, 3, 4]]);
    // An empty list asks nothing.
    assert!(bounded(repo.absent(&[])).await.unwrap().is_empty());
    assert_eq!(repo.queries().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_error_reaches_every_caller_and_nothing_is_cached() {
    let repo = UserRepo::new(&[1, 2]);
    repo.down.store(true, SeqCst);
    let callers: Vec<_> = (0..5)
        .map(|_| {
            let repo = repo.clone();
            tokio::spawn(async move { repo.failing(&[1, 2]).await })
        })
        .collect();
    for caller in callers {
        assert_eq!(bounded(caller).await.unwrap(), Err(DbError("db down")));
    }
    assert_eq!(
        repo.queries().len(),
        1,
        "one failing query for five callers"
    );
    assert!(
        UserRepo::failing_cache().is_empty(),
        "an error is never cached"
    );

    repo.down.store(false, SeqCst);
    let users = bounded(repo.failing(&[1, 2])).await.unwrap();
    assert_eq!(ids(&users), [1, 2]);
    assert_eq!(repo.queries().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_cache_handle_invalidates_one_key() {
    let repo = UserRepo::new(&[1, 2, 3]);
    bounded(repo.invalidated(&vec![1, 2, 3])).await.unwrap();
    let cache: &'static stampede_cache::Cache<i64, Option<User>> = UserRepo::invalidated_cache();
    cache.invalidate(&2);
    let users = bounded(repo.invalidated(&vec![1, 2, 3])).await.unwrap();
    assert_eq!(ids(&users), [1, 2, 3]);
    assert_eq!(
        repo.queries(),
        [vec![1, 2, 3], vec![2]],
        "only the invalidated key"
    );
}

#[tokio::test(start_paused = true)]
async fn max_batch_splits_the_misses_into_calls_of_the_body() {
    let repo = UserRepo::new(&[1, 2, 3, 4, 5]);
    let users = bounded(repo.chunked(vec![1, 2, 3, 4, 5])).await.unwrap();
    assert_eq!(ids(&users), [1, 2, 3, 4, 5]);
    let mut queries = repo.queries();
    queries.sort();
    assert_eq!(queries, [vec![1, 2], vec![3, 4], vec![5]]);
    assert_eq!(UserRepo::chunked_cache().stats().batch_calls, 3);
}

#[tokio::test(start_paused = true)]
async fn tags_are_per_key_and_none_ttl_is_the_ttl_of_absent_keys() {
    let repo = UserRepo::new(&[1]);
    bounded(repo.tagged(&[1, 2])).await.unwrap();
    stampede_cache::invalidate_tag("user:1");
    let cache = UserRepo::tagged_cache();
    assert_eq!(cache.get(&1), None, "dropped by its tag");
    assert_eq!(cache.get(&2), Some(None));
    sleep(Duration::from_secs(6)).await;
    bounded(repo.tagged(&[1, 2])).await.unwrap();
    // Key 1 was invalidated, key 2's `None` expired after its none_ttl.
    assert_eq!(repo.queries(), [vec![1, 2], vec![1, 2]]);
}

static PAGES: AtomicUsize = AtomicUsize::new(0);

/// A free fn: `Vec<u64>` in, a plain `HashMap` out.
#[stampede_cached(ttl = "1m", batch)]
async fn squares(ns: Vec<u64>) -> HashMap<u64, u64> {
    PAGES.fetch_add(1, SeqCst);
    ns.into_iter()
        .filter(|n| n % 2 == 1)
        .map(|n| (n, n * n))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_free_fn_with_an_owned_list_and_a_plain_map() {
    let got = bounded(squares(vec![1, 2, 3])).await;
    assert_eq!(got, HashMap::from([(1, 1), (3, 9)]));
    let got = bounded(squares(vec![3, 2, 5])).await;
    assert_eq!(got, HashMap::from([(3, 9), (5, 25)]));
    assert_eq!(PAGES.load(SeqCst), 2, "the second call queried 5 only");
    assert_eq!(squares_cache().get(&2), Some(None));
}

/// A receiver that counts its clones (the detached load takes one).
struct Counted {
    clones: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, SeqCst);
        Counted {
            clones: self.clones.clone(),
        }
    }
}

impl Counted {
    #[stampede_cached(ttl = "30s", batch)]
    async fn lookup(&self, ids: &[u32]) -> HashMap<u32, u32> {
        // Uses the receiver, so the load takes a copy of it.
        let factor = if self.clones.load(SeqCst) == usize::MAX {
            0
        } else {
            2
        };
        ids.iter().map(|id| (*id, id * factor)).collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_list_call_whose_keys_are_all_hits_clones_no_receiver() {
    let repo = Counted {
        clones: Arc::new(AtomicUsize::new(0)),
    };
    let first = bounded(repo.lookup(&[1, 2, 3])).await;
    assert_eq!(first, HashMap::from([(1, 2), (2, 4), (3, 6)]));
    let after_load = repo.clones.load(SeqCst);
    assert!(
        after_load >= 1,
        "the load took its own copy ({after_load} clones)"
    );
    for _ in 0..10 {
        assert_eq!(
            bounded(repo.lookup(&[3, 1])).await,
            HashMap::from([(1, 2), (3, 6)])
        );
    }
    assert_eq!(repo.clones.load(SeqCst), after_load, "hits build no loader");
}
