//! The in-memory shared backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::held::HeldLocks;
use super::hub::Hub;
use super::slot::{CacheKeys, Slot, notice, parse_notice, split_tag, tag_set};
use super::writes::WriteBehind;
use super::{Acquire, Backend, BackendError, BackendFut, Found, SharedBackend};
use crate::strategy::after;

/// An in-memory shared tier: the value store, locks and notices of a
/// "fleet" that lives in one process.
///
/// Every `Cache` given the same `LocalBackend` (clones share it) behaves
/// toward the others as processes sharing one Redis do: one load per key
/// among them, values read from the shared tier, invalidations dropping the
/// others' L1 copies. It is what `shared` caches use when no backend is
/// installed, and what a fleet simulation in one process — or a demo without
/// Redis — uses. Expiry follows `tokio::time`, so it works on a paused clock;
/// expired entries are swept as new ones arrive, so memory follows the live
/// entries, not every key ever written.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use stampede_cache::{Cache, LocalBackend};
///
/// let fleet = LocalBackend::new();
/// let pods: Vec<Cache<u32, String>> = (0..3)
///     .map(|_| Cache::builder("prices").ttl(Duration::from_secs(30)).backend(fleet.clone()).build())
///     .collect();
/// for pod in &pods {
///     assert_eq!(pod.get_or_load(7, |k| async move { format!("price {k}") }).await, "price 7");
/// }
/// let loads: u64 = pods.iter().map(|p| p.stats().loads).sum();
/// assert_eq!(loads, 1); // the other pods read the shared tier
/// # }
/// ```
#[derive(Clone)]
pub struct LocalBackend {
    inner: Arc<LocalInner>,
}

struct LocalInner {
    prefix: String,
    hub: Arc<Hub>,
    writes: Arc<WriteBehind>,
    held: Arc<HeldLocks>,
    state: Mutex<State>,
    /// An outage in progress ([`LocalBackend::set_outage`]): every
    /// operation fails, as a Redis that cannot be reached.
    down: AtomicBool,
    /// How long each operation takes ([`LocalBackend::with_round_trip`]);
    /// zero: every operation completes when called.
    round_trip: Duration,
}

/// Entries that expire at an instant, swept in amortised O(1).
struct Expiring<T> {
    entries: HashMap<String, (T, Instant)>,
    /// Sweep when the map has grown past this (twice its live size at the
    /// last sweep), so each insert pays O(1) amortised.
    sweep_at: usize,
}

impl<T> Default for Expiring<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            sweep_at: 64,
        }
    }
}

impl<T: Clone> Expiring<T> {
    fn get(&mut self, key: &str, now: Instant) -> Option<(T, Instant)> {
        match self.entries.get(key) {
            Some((_, until)) if *until <= now => {
                self.entries.remove(key);
                None
            }
            Some((value, until)) => Some((value.clone(), *until)),
            None => None,
        }
    }

    fn insert(&mut self, key: String, value: T, until: Instant, now: Instant) {
        self.entries.insert(key, (value, until));
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, (_, until)| *until > now);
            self.sweep_at = (self.entries.len() * 2).max(64);
        }
    }

    fn remove(&mut self, key: &str) -> Option<T> {
        self.entries.remove(key).map(|(value, _)| value)
    }
}

#[derive(Default)]
struct State {
    values: Expiring<Vec<u8>>,
    locks: Expiring<String>,
    failures: Expiring<Vec<u8>>,
    generations: HashMap<String, u64>,
    /// Slots by tag (`tag_set` key), each kept until the instant given:
    /// every set follows its live entries (amortised sweeps), and sets
    /// left empty are dropped once the map doubles.
    tagged: HashMap<String, Expiring<()>>,
    /// Sweep `tagged` of emptied sets when it has grown past this.
    tags_sweep_at: usize,
}

impl State {
    fn holder(&mut self, slot: &Slot, now: Instant) -> Option<String> {
        self.locks.get(slot.as_str(), now).map(|(token, _)| token)
    }

    fn value(&mut self, slot: &Slot, now: Instant) -> Option<(Vec<u8>, Duration)> {
        self.values
            .get(slot.as_str(), now)
            .map(|(bytes, until)| (bytes, until - now))
    }
}

impl Default for LocalBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalBackend {
    /// A new, empty shared tier.
    pub fn new() -> Self {
        Self::with_prefix("stampede")
    }

    /// A new, empty shared tier whose keys carry `prefix` (only visible in
    /// logs; kept for symmetry with the Redis backend).
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self::build(prefix.into(), Duration::ZERO)
    }

    /// A new, empty shared tier whose every operation takes `round_trip`,
    /// as a network backend's does: it takes effect half-way and answers at
    /// the end. On a paused clock this gives fleet simulations the
    /// interleavings a real Redis gives — another process's command landing
    /// between two of ours — deterministically.
    pub fn with_round_trip(round_trip: Duration) -> Self {
        Self::build("stampede".to_owned(), round_trip)
    }

    fn build(prefix: String, round_trip: Duration) -> Self {
        Self {
            inner: Arc::new(LocalInner {
                prefix,
                hub: Arc::default(),
                writes: Arc::default(),
                held: Arc::default(),
                state: Mutex::default(),
                down: AtomicBool::new(false),
                round_trip,
            }),
        }
    }

    /// Number of entries held (values, locks, failure records and tag
    /// records), expired ones included until swept.
    pub fn len(&self) -> usize {
        let state = self.inner.lock();
        let tag_records: usize = state.tagged.values().map(|set| set.entries.len()).sum();
        state.values.entries.len()
            + state.locks.entries.len()
            + state.failures.entries.len()
            + tag_records
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts (`true`) or ends (`false`) a simulated outage, for fleet
    /// simulations: meanwhile every operation fails with a
    /// [`BackendError`](crate::BackendError), as an unreachable Redis's
    /// commands do, so the caches fail open and their writes wait in the
    /// write-behind. Ending it is reported to the caches as a gap in the
    /// notices (as a Redis reconnect is): every process drops its L1 copies.
    /// The stored entries themselves survive, as Redis's do.
    pub fn set_outage(&self, down: bool) {
        let was = self.inner.down.swap(down, Ordering::SeqCst);
        if was && !down {
            self.inner.hub.gap();
        }
    }
}

impl LocalInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers an invalidation notice of `slot`'s cache (or of cache `name`).
    fn publish_invalidation(&self, name: &str, payload: &str) {
        if let Some(notice) = parse_notice(payload) {
            self.hub.invalidated(name, &notice);
        }
    }

    /// A fenced step: only if `token` holds `slot`'s lock, apply `step`,
    /// release the lock and wake the waiters (the leader's last write).
    /// Without the lock, `landed` says whether this very step ran already
    /// (a replay: answered `true`, as the Redis scripts do).
    fn fenced(
        &self,
        slot: &Slot,
        token: &str,
        step: impl FnOnce(&mut State, Instant),
        landed: impl FnOnce(&mut State, Instant) -> bool,
    ) -> bool {
        let now = Instant::now();
        let (held, ok) = {
            let mut state = self.lock();
            let held = state.holder(slot, now).as_deref() == Some(token);
            if held {
                step(&mut state, now);
                state.locks.remove(slot.as_str());
            }
            (held, held || landed(&mut state, now))
        };
        if held {
            self.hub.ready(slot.as_str());
        }
        ok
    }

    fn name_of<'a>(&self, slot: &'a Slot) -> Option<&'a str> {
        let tag = slot
            .as_str()
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix('}')?;
        split_tag(tag).map(|(name, _)| name)
    }
}

impl From<LocalBackend> for SharedBackend {
    fn from(backend: LocalBackend) -> Self {
        SharedBackend::new(backend.inner, "local")
    }
}

impl LocalInner {
    /// One operation as a remote backend runs it: `apply` takes effect half
    /// a round trip after the call and answers half a round trip later
    /// (at once with no round trip). During a simulated outage it fails.
    fn op<'a, T: Send + 'a>(
        &'a self,
        apply: impl FnOnce() -> Result<T, BackendError> + Send + 'a,
    ) -> BackendFut<'a, T> {
        let apply = move || {
            if self.down.load(Ordering::SeqCst) {
                return Err(BackendError::new("local backend: simulated outage"));
            }
            apply()
        };
        if self.round_trip.is_zero() {
            return Box::pin(std::future::ready(apply()));
        }
        let half = self.round_trip / 2;
        Box::pin(async move {
            tokio::time::sleep(half).await;
            let answer = apply();
            tokio::time::sleep(self.round_trip - half).await;
            answer
        })
    }
}

impl Backend for LocalInner {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn writes(&self) -> &Arc<WriteBehind> {
        &self.writes
    }

    fn held(&self) -> &Arc<HeldLocks> {
        &self.held
    }

    fn read<'a>(&'a self, slot: &'a Slot) -> BackendFut<'a, Found> {
        self.op(move || {
            let now = Instant::now();
            let mut state = self.lock();
            let found = Found {
                value: state.value(slot, now),
                failure: state.failures.get(slot.as_str(), now).map(|(f, _)| f),
                locked: state.holder(slot, now).is_some(),
            };
            Ok(found)
        })
    }

    fn lock<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        lease: Duration,
        or_value: bool,
        honour_failure: bool,
    ) -> BackendFut<'a, Acquire> {
        self.op(move || {
            let now = Instant::now();
            let mut state = self.lock();
            if state.holder(slot, now).as_deref() == Some(token) {
                return Ok(Acquire::Locked);
            }
            if or_value && let Some((bytes, left)) = state.value(slot, now) {
                return Ok(Acquire::Value(bytes, left));
            }
            let failure = state.failures.get(slot.as_str(), now).map(|(f, _)| f);
            if honour_failure && let Some(failure) = failure {
                return Ok(Acquire::Failed(failure));
            }
            if state.holder(slot, now).is_some() {
                return Ok(Acquire::Held(failure));
            }
            let until = after(now, lease);
            state
                .locks
                .insert(slot.as_str().to_owned(), token.to_owned(), until, now);
            Ok(Acquire::Locked)
        })
    }

    fn renew<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        lease: Duration,
    ) -> BackendFut<'a, bool> {
        self.op(move || {
            let now = Instant::now();
            let mut state = self.lock();
            let held = state.holder(slot, now).as_deref() == Some(token);
            if held {
                let until = after(now, lease);
                state
                    .locks
                    .insert(slot.as_str().to_owned(), token.to_owned(), until, now);
            }
            Ok(held)
        })
    }

    fn release<'a>(&'a self, slot: &'a Slot, token: &'a str) -> BackendFut<'a, bool> {
        self.op(move || {
            let now = Instant::now();
            let released = {
                let mut state = self.lock();
                let held = state.holder(slot, now).as_deref() == Some(token);
                if held {
                    state.locks.remove(slot.as_str());
                }
                held
            };
            if released {
                self.hub.ready(slot.as_str());
            }
            Ok(released)
        })
    }

    fn write<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        bytes: &'a [u8],
        ttl: Duration,
    ) -> BackendFut<'a, bool> {
        self.op(move || {
            Ok(self.fenced(
                slot,
                token,
                |state, now| {
                    let until = after(now, ttl);
                    state
                        .values
                        .insert(slot.as_str().to_owned(), bytes.to_vec(), until, now);
                    state.failures.remove(slot.as_str());
                },
                |state, now| state.value(slot, now).is_some_and(|(v, _)| v == bytes),
            ))
        })
    }

    fn fail<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        record: &'a [u8],
        ttl: Duration,
        drop_value: bool,
    ) -> BackendFut<'a, bool> {
        self.op(move || {
            Ok(self.fenced(
                slot,
                token,
                |state, now| {
                    let until = after(now, ttl);
                    state
                        .failures
                        .insert(slot.as_str().to_owned(), record.to_vec(), until, now);
                    if drop_value {
                        state.values.remove(slot.as_str());
                    }
                },
                |state, now| {
                    state
                        .failures
                        .get(slot.as_str(), now)
                        .is_some_and(|(f, _)| f == record)
                },
            ))
        })
    }

    fn insert<'a>(
        &'a self,
        slot: &'a Slot,
        _cache: &'a CacheKeys,
        bytes: &'a [u8],
        ttl: Duration,
        notice: &'a str,
    ) -> BackendFut<'a, ()> {
        self.op(move || {
            let now = Instant::now();
            {
                let mut state = self.lock();
                let until = after(now, ttl);
                state
                    .values
                    .insert(slot.as_str().to_owned(), bytes.to_vec(), until, now);
                state.locks.remove(slot.as_str());
                state.failures.remove(slot.as_str());
            }
            self.hub.ready(slot.as_str());
            if let Some(name) = self.name_of(slot) {
                self.publish_invalidation(name, notice);
            }
            Ok(())
        })
    }

    fn invalidate<'a>(
        &'a self,
        slot: &'a Slot,
        _cache: &'a CacheKeys,
        notice: &'a str,
    ) -> BackendFut<'a, ()> {
        self.op(move || {
            {
                let mut state = self.lock();
                state.values.remove(slot.as_str());
                state.locks.remove(slot.as_str());
                state.failures.remove(slot.as_str());
            }
            self.hub.ready(slot.as_str());
            if let Some(name) = self.name_of(slot) {
                self.publish_invalidation(name, notice);
            }
            Ok(())
        })
    }

    fn tag<'a>(
        &'a self,
        slot: &'a Slot,
        tags: &'a [Arc<str>],
        ttl: Duration,
    ) -> BackendFut<'a, ()> {
        self.op(move || {
            let now = Instant::now();
            let until = after(now, ttl);
            let mut state = self.lock();
            for tag in tags {
                let slots = state.tagged.entry(tag_set(&self.prefix, tag)).or_default();
                // Only ever later (Redis: `ZADD GT`): a shorter record taken
                // before a lock must not undo a longer-lived value's.
                let until = slots
                    .entries
                    .get(slot.as_str())
                    .map_or(until, |(_, kept)| until.max(*kept));
                slots.insert(slot.as_str().to_owned(), (), until, now);
            }
            if state.tagged.len() >= state.tags_sweep_at.max(64) {
                for slots in state.tagged.values_mut() {
                    slots.entries.retain(|_, (_, until)| *until > now);
                }
                state.tagged.retain(|_, slots| !slots.entries.is_empty());
                state.tags_sweep_at = state.tagged.len() * 2;
            }
            Ok(())
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BackendFut<'a, ()> {
        self.op(move || {
            let now = Instant::now();
            let mut state = self.lock();
            // The record keeps its members (they leave when their instant
            // passes): a load recorded just before this invalidation whose
            // lock lands just after it must be found by the next one.
            let slots: Vec<String> = match state.tagged.get_mut(&tag_set(&self.prefix, tag)) {
                Some(set) => {
                    set.entries.retain(|_, (_, until)| *until > now);
                    set.entries.keys().cloned().collect()
                }
                None => Vec::new(),
            };
            for slot in &slots {
                state.values.remove(slot);
                state.locks.remove(slot);
                state.failures.remove(slot);
            }
            drop(state);
            // The processes of a LocalBackend fleet share this one: the tag was
            // applied to their caches by `invalidate_tag` already. Waiters look again.
            for slot in &slots {
                self.hub.ready(slot);
            }
            Ok(())
        })
    }

    fn generation<'a>(&'a self, cache: &'a CacheKeys) -> BackendFut<'a, u64> {
        self.op(move || {
            let generation = self
                .lock()
                .generations
                .get(&cache.generation())
                .copied()
                .unwrap_or(0);
            Ok(generation)
        })
    }

    fn invalidate_all<'a>(&'a self, cache: &'a CacheKeys, sender: u64) -> BackendFut<'a, u64> {
        self.op(move || {
            let generation = {
                let mut state = self.lock();
                let generation = state.generations.entry(cache.generation()).or_insert(0);
                *generation += 1;
                *generation
            };
            // `<prefix>:{<name>}:gen` → the name between the braces.
            let key = cache.generation();
            if let Some(name) = key
                .strip_prefix(self.prefix.as_str())
                .and_then(|k| k.strip_prefix(":{"))
                .and_then(|k| k.strip_suffix("}:gen"))
            {
                self.publish_invalidation(name, &notice(sender, generation, None));
            }
            Ok(generation)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::LocalBackend;
    use crate::{Cache, Strategy};

    #[tokio::test(start_paused = true)]
    async fn passes_the_conformance_suite() {
        crate::backend::conformance::run(LocalBackend::new().into()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn passes_the_conformance_suite_with_a_round_trip() {
        let backend = LocalBackend::with_round_trip(Duration::from_millis(1));
        crate::backend::conformance::run(backend.into()).await;
    }

    fn pods(n: usize, backend: Option<&LocalBackend>, strategy: Strategy) -> Vec<Cache<u64, u64>> {
        (0..n)
            .map(|_| {
                let b = Cache::builder("local.pods")
                    .ttl(Duration::from_secs(10))
                    .strategy(strategy)
                    .lock_ttl(Duration::from_secs(1));
                match backend {
                    Some(backend) => b.backend(backend.clone()).build(),
                    None => b.build(),
                }
            })
            .collect()
    }

    async fn stampede(pods: &[Cache<u64, u64>], origin: &Arc<AtomicU64>) -> Vec<u64> {
        let calls = pods.iter().map(|pod| {
            let (pod, origin) = (pod.clone(), origin.clone());
            tokio::spawn(async move {
                pod.get_or_load(1, move |k| async move {
                    origin.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    k + 100
                })
                .await
            })
        });
        let mut values = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            values.push(call.await.unwrap());
        }
        values
    }

    #[tokio::test(start_paused = true)]
    async fn two_hundred_pods_share_one_load() {
        let origin = Arc::new(AtomicU64::new(0));
        let isolated = pods(200, None, Strategy::Lock);
        assert!(stampede(&isolated, &origin).await.iter().all(|v| *v == 101));
        assert_eq!(
            origin.swap(0, Ordering::SeqCst),
            200,
            "in-process locks: one load per pod"
        );

        let fleet = LocalBackend::new();
        let shared = pods(200, Some(&fleet), Strategy::Lock);
        assert!(stampede(&shared, &origin).await.iter().all(|v| *v == 101));
        assert_eq!(
            origin.load(Ordering::SeqCst),
            1,
            "shared: one load for the fleet"
        );
        let remote: u64 = shared.iter().map(|p| p.stats().remote_hits).sum();
        assert_eq!(remote, 199);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidation_drops_other_pods_copies() {
        let fleet = LocalBackend::new();
        let shared = pods(3, Some(&fleet), Strategy::Lock);
        let origin = Arc::new(AtomicU64::new(0));
        stampede(&shared, &origin).await;
        assert!(shared.iter().all(|p| p.get(&1) == Some(101)));
        shared[0].invalidate(&1);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            shared.iter().all(|p| p.get(&1).is_none()),
            "every pod dropped its copy"
        );
        stampede(&shared, &origin).await;
        assert_eq!(origin.load(Ordering::SeqCst), 2, "one reload for the fleet");
    }

    #[tokio::test(start_paused = true)]
    async fn xfetch_and_swr_refresh_once_per_cycle() {
        let second = Duration::from_secs(1);
        for strategy in [
            Strategy::XFetch { beta: 1.0 },
            Strategy::Swr { stale: second },
        ] {
            let fleet = LocalBackend::new();
            let shared: Vec<Cache<u64, u64>> = (0..20)
                .map(|_| {
                    Cache::builder("local.cycles")
                        .ttl(second)
                        .strategy(strategy)
                        .backend(fleet.clone())
                        .build()
                })
                .collect();
            let origin = Arc::new(AtomicU64::new(0));
            stampede(&shared, &origin).await;
            let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
            // Every pod called every 10 ms for 10 TTL cycles: nobody may wait
            // for a load (a pod may wait for an L2 read, 0 on this backend).
            for _ in 0..1000 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                for pod in &shared {
                    let starts = starts.clone();
                    let started = tokio::time::Instant::now();
                    pod.get_or_load(1, move |k| async move {
                        starts.lock().unwrap().push(tokio::time::Instant::now());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        k + 100
                    })
                    .await;
                    assert_eq!(
                        started.elapsed(),
                        Duration::ZERO,
                        "{strategy:?}: a reader waited"
                    );
                }
            }
            let starts = starts.lock().unwrap().clone();
            assert!(
                starts.len() >= 9,
                "{strategy:?}: {} refreshes in 10 cycles",
                starts.len()
            );
            for pair in starts.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(
                    gap > second / 2,
                    "{strategy:?}: two refreshes in one cycle ({gap:?} apart)"
                );
            }
        }
    }
}
