//! The in-memory shared backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::hub::Hub;
use super::{Backend, BackendFut, SharedBackend, split_tag};

/// An in-memory shared tier: the value store, locks and notices of a
/// "fleet" that lives in one process.
///
/// Every `Cache` given the same `LocalBackend` (clones share it) behaves
/// toward the others as processes sharing one Redis do: one load per key
/// among them, values read from the shared tier, invalidations dropping the
/// others' L1 copies. It is what `shared` caches use when no backend is
/// installed, and what a fleet simulation in one process — or a demo without
/// Redis — uses. Expiry follows `tokio::time`, so it works on a paused clock.
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
    /// Wall time at `Instant` `epoch.1`: the backend's wall clock follows
    /// `tokio::time`, so it stays consistent with L1 on a paused clock.
    epoch: (SystemTime, Instant),
    hub: Arc<Hub>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    values: HashMap<String, (Vec<u8>, Instant)>,
    locks: HashMap<String, (String, Instant)>,
}

impl State {
    fn holder(&mut self, slot: &str, now: Instant) -> Option<&str> {
        if self.locks.get(slot).is_some_and(|(_, until)| *until <= now) {
            self.locks.remove(slot);
        }
        self.locks.get(slot).map(|(token, _)| token.as_str())
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
        Self {
            inner: Arc::new(LocalInner {
                prefix: prefix.into(),
                epoch: (SystemTime::now(), Instant::now()),
                hub: Arc::default(),
                state: Mutex::default(),
            }),
        }
    }

    /// Number of values held (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.inner.lock().values.len()
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl LocalInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tag<'a>(&self, slot: &'a str) -> Option<&'a str> {
        slot.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix('}')
    }
}

impl From<LocalBackend> for SharedBackend {
    fn from(backend: LocalBackend) -> Self {
        SharedBackend::new(backend.inner, "local")
    }
}

fn ready<T: Send + 'static>(value: T) -> BackendFut<'static, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl Backend for LocalInner {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn wall_now(&self) -> SystemTime {
        self.epoch.0 + self.epoch.1.elapsed()
    }

    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn read<'a>(&'a self, slot: &'a str) -> BackendFut<'a, Option<Vec<u8>>> {
        let now = Instant::now();
        let mut state = self.lock();
        let value = match state.values.get(slot) {
            Some((_, until)) if *until <= now => {
                state.values.remove(slot);
                None
            }
            Some((bytes, _)) => Some(bytes.clone()),
            None => None,
        };
        ready(value)
    }

    fn read_or_lock<'a>(
        &'a self,
        slot: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFut<'a, (Option<Vec<u8>>, bool)> {
        let now = Instant::now();
        let mut state = self.lock();
        match state.values.get(slot) {
            Some((bytes, until)) if *until > now => return ready((Some(bytes.clone()), false)),
            Some(_) => {
                state.values.remove(slot);
            }
            None => {}
        }
        let taken = state.holder(slot, now).is_none();
        if taken {
            state
                .locks
                .insert(slot.to_owned(), (token.to_owned(), now + lease));
        }
        ready((None, taken))
    }

    fn try_lock<'a>(
        &'a self,
        slot: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BackendFut<'a, bool> {
        let now = Instant::now();
        let mut state = self.lock();
        let taken = state.holder(slot, now).is_none();
        if taken {
            state
                .locks
                .insert(slot.to_owned(), (token.to_owned(), now + lease));
        }
        ready(taken)
    }

    fn renew<'a>(&'a self, slot: &'a str, token: &'a str, lease: Duration) -> BackendFut<'a, bool> {
        let now = Instant::now();
        let mut state = self.lock();
        let held = state.holder(slot, now) == Some(token);
        if held {
            state
                .locks
                .insert(slot.to_owned(), (token.to_owned(), now + lease));
        }
        ready(held)
    }

    fn release<'a>(&'a self, slot: &'a str, token: &'a str, notify: bool) -> BackendFut<'a, bool> {
        let now = Instant::now();
        let released = {
            let mut state = self.lock();
            let held = state.holder(slot, now) == Some(token);
            if held {
                state.locks.remove(slot);
            }
            held
        };
        if released && notify {
            self.hub.ready(slot);
        }
        ready(released)
    }

    fn write<'a>(
        &'a self,
        slot: &'a str,
        fence: Option<&'a str>,
        bytes: &'a [u8],
        ttl: Duration,
        sender: u64,
    ) -> BackendFut<'a, bool> {
        let now = Instant::now();
        let written = {
            let mut state = self.lock();
            let allowed = match fence {
                Some(token) => state.holder(slot, now) == Some(token),
                None => true,
            };
            if allowed {
                state
                    .values
                    .insert(slot.to_owned(), (bytes.to_vec(), now + ttl));
                if fence.is_some() {
                    state.locks.remove(slot);
                }
            }
            allowed
        };
        if written {
            self.hub.ready(slot);
            if fence.is_none()
                && let Some((name, encoded)) = self.tag(slot).and_then(split_tag)
            {
                self.hub.invalidated(name, Some(encoded), sender);
            }
        }
        ready(written)
    }

    fn invalidate<'a>(&'a self, slot: &'a str, sender: u64) -> BackendFut<'a, ()> {
        {
            let mut state = self.lock();
            state.values.remove(slot);
            state.locks.remove(slot);
        }
        if let Some((name, encoded)) = self.tag(slot).and_then(split_tag) {
            self.hub.invalidated(name, Some(encoded), sender);
        }
        ready(())
    }

    fn invalidate_all<'a>(&'a self, name: &'a str, sender: u64) -> BackendFut<'a, ()> {
        self.lock()
            .values
            .retain(|slot, _| self.tag(slot).and_then(split_tag).map(|(n, _)| n) != Some(name));
        self.hub.invalidated(name, None, sender);
        ready(())
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
