//! The conformance suite every backend passes (run by this crate's unit
//! tests for [`LocalBackend`](super::LocalBackend) and by the integration
//! tests for the Redis backend against a real server). Not a stable API.
//!
//! It uses real (or paused) `tokio::time`: leases of 100 ms expire by
//! sleeping past them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::hub::L1Sink;
use super::{SharedBackend, slot, split_tag};

const LEASE: Duration = Duration::from_millis(100);
const NOTICE_BOUND: Duration = Duration::from_secs(5);

/// Runs every check against `backend`; panics on the first failure.
pub async fn run(backend: SharedBackend) {
    let run_id = format!("{:08x}", fastrand::u32(..));
    locks(&backend, &run_id).await;
    values_and_fencing(&backend, &run_id).await;
    notices(&backend, &run_id).await;
    invalidation(&backend, &run_id).await;
}

fn slot_of(backend: &SharedBackend, name: &str, key: &str) -> String {
    slot(backend.inner.prefix(), name, key)
}

async fn locks(backend: &SharedBackend, run: &str) {
    let b = &backend.inner;
    let s = slot_of(backend, &format!("conf.{run}.locks"), "01");
    assert!(
        b.try_lock(&s, "a", LEASE).await.unwrap(),
        "free lock is taken"
    );
    assert!(
        !b.try_lock(&s, "b", LEASE).await.unwrap(),
        "held lock is refused"
    );
    assert!(b.renew(&s, "a", LEASE).await.unwrap(), "holder renews");
    assert!(
        !b.renew(&s, "b", LEASE).await.unwrap(),
        "non-holder cannot renew"
    );
    assert!(
        !b.release(&s, "b", false).await.unwrap(),
        "non-holder cannot release"
    );
    assert!(b.release(&s, "a", false).await.unwrap(), "holder releases");
    assert!(
        !b.release(&s, "a", false).await.unwrap(),
        "release is compare-and-delete"
    );
    assert!(
        b.try_lock(&s, "b", LEASE).await.unwrap(),
        "released lock is free"
    );
    // A lapsed lease frees the lock; renewing keeps it.
    tokio::time::sleep(LEASE / 2).await;
    assert!(b.renew(&s, "b", LEASE).await.unwrap());
    tokio::time::sleep(LEASE * 3 / 4).await;
    assert!(
        !b.try_lock(&s, "c", LEASE).await.unwrap(),
        "renewed lease still held"
    );
    tokio::time::sleep(LEASE * 2).await;
    assert!(
        b.try_lock(&s, "c", LEASE).await.unwrap(),
        "lapsed lease is free"
    );
    assert!(
        !b.renew(&s, "b", LEASE).await.unwrap(),
        "lapsed holder cannot renew"
    );
    assert!(b.release(&s, "c", false).await.unwrap());
}

async fn values_and_fencing(backend: &SharedBackend, run: &str) {
    let b = &backend.inner;
    let s = slot_of(backend, &format!("conf.{run}.values"), "02");
    assert_eq!(b.read(&s).await.unwrap(), None);
    assert!(
        b.write(&s, None, b"v1", LEASE, 0).await.unwrap(),
        "unfenced write"
    );
    assert_eq!(b.read(&s).await.unwrap().as_deref(), Some(&b"v1"[..]));
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(
        b.read(&s).await.unwrap(),
        None,
        "value expires with its ttl"
    );

    // Fencing: a writer without the lock, or whose lease lapsed, is refused.
    let ttl = Duration::from_secs(30);
    assert!(
        !b.write(&s, Some("nobody"), b"x", ttl, 0).await.unwrap(),
        "no lock, no write"
    );
    assert!(b.try_lock(&s, "old", LEASE).await.unwrap());
    tokio::time::sleep(LEASE * 2).await;
    assert!(
        b.try_lock(&s, "new", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        b.write(&s, Some("new"), b"newer", ttl, 0).await.unwrap(),
        "holder writes"
    );
    assert!(
        !b.write(&s, Some("old"), b"older", ttl, 0).await.unwrap(),
        "lapsed holder is fenced"
    );
    assert_eq!(b.read(&s).await.unwrap().as_deref(), Some(&b"newer"[..]));
    assert!(
        !b.release(&s, "new", false).await.unwrap(),
        "the fenced write released the lock"
    );

    // read_or_lock: the value if present (no lock), else the lock atomically.
    let s = slot_of(backend, &format!("conf.{run}.values"), "05");
    assert_eq!(b.read_or_lock(&s, "a", LEASE).await.unwrap(), (None, true));
    assert_eq!(
        b.read_or_lock(&s, "b", LEASE).await.unwrap(),
        (None, false),
        "held"
    );
    assert!(b.write(&s, Some("a"), b"v", ttl, 0).await.unwrap());
    assert_eq!(
        b.read_or_lock(&s, "b", LEASE).await.unwrap(),
        (Some(b"v".to_vec()), false),
        "a present value is returned without locking"
    );
    assert!(
        b.try_lock(&s, "b", LEASE).await.unwrap(),
        "and the lock stays free"
    );
    assert!(b.release(&s, "b", false).await.unwrap());
}

async fn notices(backend: &SharedBackend, run: &str) {
    let b = &backend.inner;
    let s = slot_of(backend, &format!("conf.{run}.notices"), "03");
    let mut watch = b.hub().watch(&s);
    assert!(b.try_lock(&s, "t", Duration::from_secs(30)).await.unwrap());
    assert!(
        b.write(&s, Some("t"), b"v", Duration::from_secs(30), 0)
            .await
            .unwrap()
    );
    tokio::time::timeout(NOTICE_BOUND, watch.changed())
        .await
        .expect("the fenced write publishes a ready notice");
    assert!(b.try_lock(&s, "u", Duration::from_secs(30)).await.unwrap());
    assert!(b.release(&s, "u", true).await.unwrap());
    tokio::time::timeout(NOTICE_BOUND, watch.changed())
        .await
        .expect("a release with notify publishes a ready notice");
}

struct Recorder {
    id: u64,
    seen: Mutex<Vec<Option<String>>>,
}

impl L1Sink for Recorder {
    fn id(&self) -> u64 {
        self.id
    }

    fn drop_copies(&self, encoded: Option<&str>) {
        self.seen.lock().unwrap().push(encoded.map(str::to_owned));
    }
}

async fn seen_after(rec: &Recorder, n: usize) -> Vec<Option<String>> {
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
    let s = slot_of(backend, &name, "04");
    let s_other = slot_of(backend, &other, "04");
    let me = Arc::new(Recorder {
        id: 1,
        seen: Mutex::default(),
    });
    let peer = Arc::new(Recorder {
        id: 2,
        seen: Mutex::default(),
    });
    let me_dyn: Arc<dyn L1Sink> = me.clone();
    let peer_dyn: Arc<dyn L1Sink> = peer.clone();
    b.hub().register(&name, Arc::downgrade(&me_dyn));
    b.hub().register(&name, Arc::downgrade(&peer_dyn));

    let ttl = Duration::from_secs(30);
    assert!(b.write(&s, None, b"v", ttl, 0).await.unwrap());
    assert!(b.write(&s_other, None, b"w", ttl, 0).await.unwrap());
    assert!(b.try_lock(&s, "loader", ttl).await.unwrap());
    let base = seen_after(&peer, 1).await.len(); // the unfenced writes invalidate too
    b.invalidate(&s, 1).await.unwrap();
    let seen = seen_after(&peer, base + 1).await;
    assert_eq!(
        seen.last().unwrap().as_deref(),
        split_tag(&format!("{name}:04")).map(|t| t.1)
    );
    assert_eq!(
        b.read(&s).await.unwrap(),
        None,
        "invalidate deletes the value"
    );
    assert!(
        !b.write(&s, Some("loader"), b"late", ttl, 0).await.unwrap(),
        "invalidate drops the lock, so a load in flight cannot write its older value"
    );
    assert!(b.try_lock(&s, "next", LEASE).await.unwrap());
    assert!(b.release(&s, "next", false).await.unwrap());

    b.write(&s, None, b"v", ttl, 0).await.unwrap();
    let base = seen_after(&peer, base + 2).await.len();
    b.invalidate_all(&name, 1).await.unwrap();
    let seen = seen_after(&peer, base + 1).await;
    assert_eq!(
        seen.last().unwrap(),
        &None,
        "invalidate_all drops every copy"
    );
    assert_eq!(b.read(&s).await.unwrap(), None);
    assert_eq!(
        b.read(&s_other).await.unwrap().as_deref(),
        Some(&b"w"[..]),
        "invalidate_all keeps other caches' values"
    );
    assert!(
        me.seen.lock().unwrap().iter().all(Option::is_some),
        "a sender does not receive its own invalidations"
    );
    b.invalidate(&s_other, 0).await.unwrap();
}
