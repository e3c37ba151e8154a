//! The conformance suite every backend passes (run by this crate's unit
//! tests for [`LocalBackend`](super::LocalBackend) and by the integration
//! tests for the Redis backend against a real server). Not a stable API.
//!
//! It uses real (or paused) `tokio::time`: leases of 100 ms expire by
//! sleeping past them. Each `insert` and `invalidate` is followed by
//! `notify`, as the tier does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::hub::L1Sink;
use super::slot::{CacheKeys, Slot, notice};
use super::{Acquire, Found, SharedBackend};

const LEASE: Duration = Duration::from_millis(100);
const TTL: Duration = Duration::from_secs(30);
const NOTICE_BOUND: Duration = Duration::from_secs(5);

/// Runs every check against `backend`; panics on the first failure.
pub async fn run(backend: SharedBackend) {
    let run_id = format!("{:08x}", fastrand::u32(..));
    locks(&backend, &run_id).await;
    values_and_fencing(&backend, &run_id).await;
    failures(&backend, &run_id).await;
    notices(&backend, &run_id).await;
    invalidation(&backend, &run_id).await;
    tags(&backend, &run_id).await;
}

fn slot_of(backend: &SharedBackend, name: &str, key: &str) -> Slot {
    Slot::new(backend.inner.prefix(), name, key)
}

async fn locks(backend: &SharedBackend, run: &str) {
    let b = &backend.inner;
    let s = slot_of(backend, &format!("conf.{run}.locks"), "01");
    assert_eq!(
        b.lock(&s, "a", LEASE, true, true).await.unwrap(),
        Acquire::Locked
    );
    assert_eq!(
        b.lock(&s, "b", LEASE, false, true).await.unwrap(),
        Acquire::Held(None)
    );
    assert!(b.read(&s).await.unwrap().locked);
    assert!(b.renew(&s, "a", LEASE).await.unwrap(), "holder renews");
    assert!(!b.renew(&s, "b", LEASE).await.unwrap(), "others cannot");
    assert!(!b.release(&s, "b").await.unwrap(), "others cannot release");
    assert!(b.release(&s, "a").await.unwrap(), "holder releases");
    assert!(!b.read(&s).await.unwrap().locked);
    assert_eq!(
        b.lock(&s, "b", LEASE, true, true).await.unwrap(),
        Acquire::Locked
    );
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(
        b.lock(&s, "c", LEASE, true, true).await.unwrap(),
        Acquire::Locked,
        "a lapsed lease frees the lock"
    );
    assert!(
        !b.renew(&s, "b", LEASE).await.unwrap(),
        "the lapsed holder cannot renew"
    );
    assert!(b.release(&s, "c").await.unwrap());
}

async fn values_and_fencing(backend: &SharedBackend, run: &str) {
    let b = &backend.inner;
    let name = format!("conf.{run}.values");
    let cache = CacheKeys::new(b.prefix(), &name);
    let s = slot_of(backend, &name, "02");
    assert_eq!(b.read(&s).await.unwrap(), Found::default());

    // Fencing: a writer without the lock, or whose lease lapsed, is refused.
    assert!(
        !b.write(&s, "nobody", b"x", TTL).await.unwrap(),
        "no lock, no write"
    );
    assert_eq!(
        b.lock(&s, "old", LEASE, true, true).await.unwrap(),
        Acquire::Locked
    );
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(
        b.lock(&s, "new", TTL, true, true).await.unwrap(),
        Acquire::Locked
    );
    assert_eq!(
        b.lock(&s, "new", TTL, true, true).await.unwrap(),
        Acquire::Locked,
        "a replayed lock attempt (its connection dropped after it ran) is its own"
    );
    assert!(
        b.write(&s, "new", b"newer", TTL).await.unwrap(),
        "holder writes"
    );
    assert!(
        b.write(&s, "new", b"newer", TTL).await.unwrap(),
        "a replayed fenced write is not mistaken for a lost lease"
    );
    assert!(
        !b.write(&s, "old", b"older", TTL).await.unwrap(),
        "lapsed holder is fenced"
    );
    let found = b.read(&s).await.unwrap();
    let (bytes, left) = found.value.expect("the value");
    assert_eq!(bytes, b"newer");
    assert!(
        left <= TTL && left > TTL - Duration::from_secs(5),
        "time left by the backend's clock: {left:?}"
    );
    assert!(!found.locked, "the fenced write released the lock");

    // lock(or_value): the value if present (no lock taken)...
    assert!(
        matches!(b.lock(&s, "b", LEASE, true, true).await.unwrap(), Acquire::Value(v, _) if v == b"newer")
    );
    assert!(!b.read(&s).await.unwrap().locked, "and the lock stays free");
    // ...or the lock regardless (a refresh of a present value).
    assert_eq!(
        b.lock(&s, "b", LEASE, false, true).await.unwrap(),
        Acquire::Locked
    );

    // A write wins over a load in flight: insert drops the lock, so the
    // loader's fenced write is refused and the inserted value stays.
    b.insert(&s, &cache, b"inserted", TTL, &notice(9, 0, Some("02")))
        .await
        .unwrap();
    b.notify(&cache, &notice(9, 0, Some("02"))).await.unwrap();
    assert!(
        !b.write(&s, "b", b"loaded-before", TTL).await.unwrap(),
        "superseded by insert"
    );
    assert_eq!(b.read(&s).await.unwrap().value.unwrap().0, b"inserted");

    // Values expire with their ttl.
    let short = slot_of(backend, &name, "05");
    assert_eq!(
        b.lock(&short, "a", LEASE, true, true).await.unwrap(),
        Acquire::Locked
    );
    assert!(b.write(&short, "a", b"v", LEASE).await.unwrap());
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(
        b.read(&short).await.unwrap().value,
        None,
        "value expires with its ttl"
    );
    b.invalidate(&s, &cache, &notice(9, 0, Some("02")))
        .await
        .unwrap();
    b.notify(&cache, &notice(9, 0, Some("02"))).await.unwrap();
}

async fn failures(backend: &SharedBackend, run: &str) {
    let b = &backend.inner;
    let name = format!("conf.{run}.failures");
    let cache = CacheKeys::new(b.prefix(), &name);
    let s = slot_of(backend, &name, "06");
    assert!(
        !b.fail(&s, "nobody", b"rec", LEASE, false).await.unwrap(),
        "no lock, no record"
    );
    assert_eq!(
        b.lock(&s, "a", LEASE, true, true).await.unwrap(),
        Acquire::Locked
    );
    assert!(
        b.fail(&s, "a", b"rec", LEASE * 3, false).await.unwrap(),
        "holder records its failure"
    );
    let found = b.read(&s).await.unwrap();
    assert_eq!(found.failure.as_deref(), Some(&b"rec"[..]));
    assert!(!found.locked, "the failure released the lock");
    assert_eq!(
        b.lock(&s, "b", LEASE, true, true).await.unwrap(),
        Acquire::Failed(b"rec".to_vec()),
        "while the record lasts, a flight with a value to serve is throttled by it"
    );
    assert_eq!(
        b.lock(&s, "x", LEASE, true, false).await.unwrap(),
        Acquire::Locked,
        "a flight with nothing to serve ignores the record and takes the lock"
    );
    assert_eq!(
        b.lock(&s, "y", LEASE, true, false).await.unwrap(),
        Acquire::Held(Some(b"rec".to_vec())),
        "held: with the record there was, so a waiter tells a newer failure from it"
    );
    assert!(b.fail(&s, "x", b"rec-x", LEASE * 3, false).await.unwrap());
    assert_eq!(
        b.read(&s).await.unwrap().failure.as_deref(),
        Some(&b"rec-x"[..]),
        "the new flight's record replaces the old one"
    );
    tokio::time::sleep(LEASE * 4).await;
    assert_eq!(
        b.lock(&s, "b", LEASE, true, true).await.unwrap(),
        Acquire::Locked,
        "the record expires"
    );
    assert!(b.fail(&s, "b", b"rec2", TTL, false).await.unwrap());
    // A write clears the failure record.
    b.insert(&s, &cache, b"v", TTL, &notice(9, 0, Some("06")))
        .await
        .unwrap();
    b.notify(&cache, &notice(9, 0, Some("06"))).await.unwrap();
    assert_eq!(
        b.read(&s).await.unwrap().failure,
        None,
        "insert clears the record"
    );
    assert_eq!(
        b.lock(&s, "c", LEASE, false, true).await.unwrap(),
        Acquire::Locked
    );
    assert!(b.fail(&s, "c", b"rec3", TTL, false).await.unwrap());
    assert!(
        b.read(&s).await.unwrap().value.is_some(),
        "a failure keeps the value (fail-safe elsewhere)"
    );
    assert_eq!(
        b.lock(&s, "d", LEASE, false, false).await.unwrap(),
        Acquire::Locked
    );
    assert!(b.fail(&s, "d", b"gone", TTL, true).await.unwrap());
    let found = b.read(&s).await.unwrap();
    assert_eq!(
        (found.value, found.failure.as_deref()),
        (None, Some(&b"gone"[..])),
        "a not-found drops the value with the record, in one step"
    );
    b.invalidate(&s, &cache, &notice(9, 0, Some("06")))
        .await
        .unwrap();
    b.notify(&cache, &notice(9, 0, Some("06"))).await.unwrap();
    assert_eq!(
        b.read(&s).await.unwrap(),
        Found::default(),
        "invalidate clears everything"
    );
}

async fn notices(backend: &SharedBackend, run: &str) {
    let b = &backend.inner;
    let s = slot_of(backend, &format!("conf.{run}.notices"), "03");
    let mut watch = b.hub().watch(s.as_str());
    assert_eq!(
        b.lock(&s, "t", TTL, true, true).await.unwrap(),
        Acquire::Locked
    );
    assert!(b.write(&s, "t", b"v", TTL).await.unwrap());
    tokio::time::timeout(NOTICE_BOUND, watch.changed())
        .await
        .expect("the fenced write publishes a ready notice");
    assert_eq!(
        b.lock(&s, "u", TTL, false, true).await.unwrap(),
        Acquire::Locked
    );
    assert!(b.release(&s, "u").await.unwrap());
    tokio::time::timeout(NOTICE_BOUND, watch.changed())
        .await
        .expect("a release publishes a ready notice");
    assert_eq!(
        b.lock(&s, "w", TTL, false, true).await.unwrap(),
        Acquire::Locked
    );
    assert!(b.fail(&s, "w", b"rec", LEASE, false).await.unwrap());
    tokio::time::timeout(NOTICE_BOUND, watch.changed())
        .await
        .expect("a failure record publishes a ready notice");
}

/// What an L1 sink was told.
#[derive(Clone, Debug, PartialEq)]
enum Told {
    Key(String),
    All(u64),
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Told>>,
}

impl L1Sink for Recorder {
    fn drop_key(&self, encoded: &str) {
        self.seen
            .lock()
            .unwrap()
            .push(Told::Key(encoded.to_owned()));
    }

    fn drop_all(&self, generation: u64) {
        self.seen.lock().unwrap().push(Told::All(generation));
    }

    fn after_gap(&self) {}
}

async fn seen_after(rec: &Recorder, n: usize) -> Vec<Told> {
    tokio::time::timeout(NOTICE_BOUND, async {
        loop {
            let seen = rec.seen.lock().unwrap().clone();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("invalidation delivered to the process's L1 sinks")
}

async fn invalidation(backend: &SharedBackend, run: &str) {
    let b = &backend.inner;
    let name = format!("conf.{run}.inval");
    let other = format!("{name}:sub"); // a name that extends ours must not be touched
    let cache = CacheKeys::new(b.prefix(), &name);
    let other_cache = CacheKeys::new(b.prefix(), &other);
    let s = slot_of(backend, &name, "04");
    let s_other = slot_of(backend, &other, "04");
    let me = Arc::new(Recorder::default());
    let peer = Arc::new(Recorder::default());
    let bystander = Arc::new(Recorder::default());
    let me_dyn: Arc<dyn L1Sink> = me.clone();
    let peer_dyn: Arc<dyn L1Sink> = peer.clone();
    let bystander_dyn: Arc<dyn L1Sink> = bystander.clone();
    b.hub().register(&name, 1, Arc::downgrade(&me_dyn));
    b.hub().register(&name, 2, Arc::downgrade(&peer_dyn));
    b.hub().register(&other, 3, Arc::downgrade(&bystander_dyn));

    b.insert(&s, &cache, b"v", TTL, &notice(1, 0, Some("04")))
        .await
        .unwrap();
    b.notify(&cache, &notice(1, 0, Some("04"))).await.unwrap();
    assert_eq!(
        seen_after(&peer, 1).await,
        vec![Told::Key("04".into())],
        "an insert invalidates the others' copies"
    );
    b.insert(&s_other, &other_cache, b"w", TTL, &notice(3, 0, Some("04")))
        .await
        .unwrap();
    b.notify(&other_cache, &notice(3, 0, Some("04")))
        .await
        .unwrap();
    assert_eq!(
        b.lock(&s, "loader", TTL, false, true).await.unwrap(),
        Acquire::Locked
    );
    b.invalidate(&s, &cache, &notice(1, 0, Some("04")))
        .await
        .unwrap();
    b.notify(&cache, &notice(1, 0, Some("04"))).await.unwrap();
    assert_eq!(seen_after(&peer, 2).await[1], Told::Key("04".into()));
    assert_eq!(
        b.read(&s).await.unwrap(),
        Found::default(),
        "invalidate deletes value and lock"
    );
    assert!(
        !b.write(&s, "loader", b"late", TTL).await.unwrap(),
        "invalidate drops the lock, so a load in flight cannot write its older value"
    );

    assert_eq!(b.generation(&cache).await.unwrap(), 0);
    let generation = b.invalidate_all(&cache, 1).await.unwrap();
    assert_eq!(generation, 1);
    assert_eq!(
        b.generation(&cache).await.unwrap(),
        1,
        "invalidate_all bumps the generation"
    );
    assert_eq!(
        seen_after(&peer, 3).await[2],
        Told::All(1),
        "and tells the others which"
    );
    assert_eq!(
        b.generation(&other_cache).await.unwrap(),
        0,
        "other caches keep theirs"
    );
    assert_eq!(
        b.read(&s_other).await.unwrap().value.map(|v| v.0),
        Some(b"w".to_vec()),
        "invalidate_all keeps other caches' values"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        me.seen.lock().unwrap().is_empty(),
        "a sender does not receive its own invalidations"
    );
    assert!(
        bystander.seen.lock().unwrap().is_empty(),
        "another cache's notices do not reach this one"
    );
    b.invalidate(&s_other, &other_cache, &notice(3, 0, Some("04")))
        .await
        .unwrap();
    b.notify(&other_cache, &notice(3, 0, Some("04")))
        .await
        .unwrap();
}

/// A tag record keeps its members across invalidations: a slot recorded
/// before invalidation #1 whose lock is taken after it is reached by #2
/// (whose lock and value it deletes), until the record's own instant passes.
async fn tags(backend: &SharedBackend, run: &str) {
    let b = &backend.inner;
    let name = format!("conf.{run}.tags");
    let tag: Arc<str> = Arc::from(format!("conf.{run}.tag"));
    let s = slot_of(backend, &name, "05");
    let untagged = slot_of(backend, &name, "06");
    let keep = Duration::from_millis(500);
    b.tag(&s, std::slice::from_ref(&tag), keep).await.unwrap();
    b.invalidate_tag(&tag).await.unwrap();
    assert_eq!(
        b.lock(&s, "after", TTL, false, true).await.unwrap(),
        Acquire::Locked
    );
    assert_eq!(
        b.lock(&untagged, "bystander", TTL, false, true)
            .await
            .unwrap(),
        Acquire::Locked
    );
    b.invalidate_tag(&tag).await.unwrap();
    assert!(
        !b.write(&s, "after", b"before write #2", TTL).await.unwrap(),
        "invalidation #2 reaches the slot recorded before #1: its lock is gone"
    );
    assert!(
        b.read(&untagged).await.unwrap().locked,
        "a slot not under the tag is untouched"
    );
    assert!(b.release(&untagged, "bystander").await.unwrap());
    // A record only ever gets later: a shorter one taken before a lock
    // does not undo a longer-lived value's.
    let long = slot_of(backend, &name, "07");
    b.tag(&long, std::slice::from_ref(&tag), keep * 8)
        .await
        .unwrap();
    b.tag(&long, std::slice::from_ref(&tag), keep)
        .await
        .unwrap();
    tokio::time::sleep(keep * 2).await;
    assert_eq!(
        b.lock(&long, "long", TTL, false, true).await.unwrap(),
        Acquire::Locked
    );
    b.invalidate_tag(&tag).await.unwrap();
    assert!(
        !b.write(&long, "long", b"v", TTL).await.unwrap(),
        "the longer record still reaches the slot"
    );
    assert_eq!(
        b.lock(&s, "late", TTL, false, true).await.unwrap(),
        Acquire::Locked
    );
    b.invalidate_tag(&tag).await.unwrap();
    assert!(
        b.write(&s, "late", b"v", TTL).await.unwrap(),
        "a record past its instant is forgotten"
    );
}
