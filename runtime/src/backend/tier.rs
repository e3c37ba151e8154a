//! The shared tier of one `shared` cache: lock, lease, L2, waiting, fail-open.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::hub::L1Sink;
use super::{
    Backend, BackendError, BoxFut, L1Evictor, Loaded, Need, OriginLoad, SharedBackend, SharedKey,
    SharedTier, SharedValue, TierSpec,
};
use crate::codec;
use crate::flight::ErasedError;
use crate::stats::Counters;

/// An L2 value is "newer" than an L1 copy when it stays fresh at least this
/// much longer (absorbs the wall-clock/monotonic conversion jitter).
const NEWER_BY: Duration = Duration::from_millis(1);

/// Rate limit of the fail-open warning, per process.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct Tier<K, V> {
    core: Arc<Core<K>>,
    _sink: Arc<dyn L1Sink>,
    _value: PhantomData<fn() -> V>,
}

struct Core<K> {
    backend: Arc<dyn Backend>,
    name: String,
    ttl: Duration,
    stale: Duration,
    lock_ttl: Duration,
    counters: Arc<Counters>,
    id: u64,
    /// Invalidations of this process not yet applied to the backend, by slot
    /// (`""`: all keys): a load waits for them, so it cannot read back the
    /// value it was just told to forget.
    pending: Mutex<HashMap<String, watch::Receiver<bool>>>,
    _key: PhantomData<fn(K)>,
}

struct Sink<K> {
    id: u64,
    l1: Weak<dyn L1Evictor<K>>,
}

impl<K: SharedKey> L1Sink for Sink<K> {
    fn id(&self) -> u64 {
        self.id
    }

    fn drop_copies(&self, encoded: Option<&str>) {
        let Some(l1) = self.l1.upgrade() else { return };
        match encoded {
            None => l1.evict_all(),
            Some(encoded) => {
                l1.evict_where(&|key: &K| codec::encode_key(key).is_ok_and(|e| e == encoded))
            }
        }
    }
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    // Unique in the process, and (with the random high bits) across processes.
    (fastrand::u64(..) & !0xffff_ffff) | NEXT.fetch_add(1, Ordering::Relaxed)
}

fn new_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

impl<K: SharedKey, V: SharedValue> Tier<K, V> {
    pub(crate) fn build(spec: TierSpec<K>, backend: SharedBackend) -> Arc<dyn SharedTier<K, V>> {
        let id = next_id();
        let sink: Arc<dyn L1Sink> = Arc::new(Sink { id, l1: spec.l1 });
        backend
            .inner
            .hub()
            .register(&spec.name, Arc::downgrade(&sink));
        Arc::new(Tier {
            core: Arc::new(Core {
                backend: backend.inner,
                name: spec.name,
                ttl: spec.ttl,
                stale: spec.strategy.stale_window(),
                lock_ttl: spec.lock_ttl,
                counters: spec.counters,
                id,
                pending: Mutex::default(),
                _key: PhantomData,
            }),
            _sink: sink,
            _value: PhantomData,
        })
    }
}

impl<K: SharedKey> Core<K> {
    fn slot(&self, key: &K) -> Result<String, BackendError> {
        let encoded = codec::encode_key(key)
            .map_err(|e| BackendError::new(format!("key does not serialise: {e}")))?;
        Ok(super::slot(self.backend.prefix(), &self.name, &encoded))
    }

    /// Runs `invalidation` (of `slot`, or of all keys for `""`) in the
    /// background, registered as pending until it is done.
    fn invalidate_behind(
        self: Arc<Self>,
        slot: String,
        invalidation: impl Future<Output = ()> + Send + 'static,
    ) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return tracing::warn!(cache = %self.name, "no tokio runtime: the shared tier was not invalidated");
        };
        let (done, rx) = watch::channel(false);
        self.lock_pending().insert(slot.clone(), rx);
        let core = self.clone();
        handle.spawn(async move {
            invalidation.await;
            let _ = done.send(true);
            let mut pending = core.lock_pending();
            if pending.get(&slot).is_some_and(|rx| *rx.borrow()) {
                pending.remove(&slot);
            }
        });
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<bool>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for this process's own invalidations of `slot` to reach the backend.
    async fn settle_invalidations(&self, slot: &str) {
        let waits: Vec<watch::Receiver<bool>> = {
            let pending = self.lock_pending();
            [slot, ""]
                .iter()
                .filter_map(|s| pending.get(*s).cloned())
                .collect()
        };
        for mut rx in waits {
            // Err: the task was dropped (runtime shutdown): nothing to wait for.
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    /// Counts and (rate-limited) logs a backend failure.
    fn backend_failed(&self, what: &str, error: &BackendError) {
        self.counters.backend_errors.incr();
        warn_limited(&self.name, what, error);
    }

    /// Reads L2; a value is returned only when `need` can use it.
    async fn read_usable<V: SharedValue>(
        &self,
        slot: &str,
        need: Need,
    ) -> Result<Option<Loaded<V>>, BackendError> {
        let bytes = self.backend.read(slot).await?;
        Ok(bytes.and_then(|bytes| self.usable(&bytes, need)))
    }

    /// Decodes L2 bytes into a value `need` can use, if they are one.
    /// Undecodable bytes are a miss, counted in `backend_errors`.
    fn usable<V: SharedValue>(&self, bytes: &[u8], need: Need) -> Option<Loaded<V>> {
        let decoded = match codec::decode::<K, V>(bytes) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.counters.backend_errors.incr();
                tracing::warn!(cache = %self.name, %error, "shared entry unusable: treated as a miss");
                return None;
            }
        };
        let fresh_for = decoded
            .fresh_until
            .duration_since(self.backend.wall_now())
            .unwrap_or_default();
        if fresh_for.is_zero() {
            return None;
        }
        if let Need::Refresh(seen) = need
            && Instant::now() + fresh_for < seen.fresh_until + NEWER_BY
        {
            // The very copy we are refreshing: a refresh must load.
            return None;
        }
        let stale_for = decoded
            .stale_until
            .duration_since(decoded.fresh_until)
            .unwrap_or_default();
        Some(Loaded {
            value: decoded.value,
            fresh_for,
            stale_for,
            delta: decoded.delta,
        })
    }

    fn guard(&self, slot: &str, token: String) -> LockGuard {
        self.counters.lock_acquired.incr();
        LockGuard {
            backend: self.backend.clone(),
            slot: slot.to_owned(),
            token,
            armed: true,
        }
    }

    /// The whole flight: L2, lock, load or wait, fail open on backend errors.
    ///
    /// A cold miss costs the leader two round trips: `read_or_lock` (finds
    /// no value, takes the lock atomically) and the fenced write that also
    /// releases the lock. A refresh, or a present but unusable value, adds a
    /// lock attempt and a re-read.
    async fn load<V: SharedValue>(
        self: Arc<Self>,
        slot: Result<String, BackendError>,
        origin: OriginLoad<V>,
        need: Need,
    ) -> Result<Loaded<V>, ErasedError> {
        let slot = match slot {
            Ok(slot) => slot,
            Err(error) => return self.fall_back(&error, origin).await,
        };
        self.settle_invalidations(&slot).await;
        loop {
            let token = new_token();
            let (bytes, locked) = match self
                .backend
                .read_or_lock(&slot, &token, self.lock_ttl)
                .await
            {
                Ok(found) => found,
                Err(error) => return self.fall_back(&error, origin).await,
            };
            if locked {
                return self.lead(self.guard(&slot, token), origin).await;
            }
            if let Some(bytes) = bytes {
                if let Some(loaded) = self.usable(&bytes, need) {
                    self.counters.remote_hits.incr();
                    return Ok(loaded);
                }
                // Present but not for us (stale, the copy being refreshed,
                // undecodable): take the lock, then look again.
                match self.backend.try_lock(&slot, &token, self.lock_ttl).await {
                    Err(error) => return self.fall_back(&error, origin).await,
                    Ok(true) => {
                        let guard = self.guard(&slot, token);
                        match self.read_usable(&slot, need).await {
                            Ok(Some(loaded)) => {
                                guard.release(false).await;
                                self.counters.remote_hits.incr();
                                return Ok(loaded);
                            }
                            Ok(None) => {}
                            Err(error) => self.backend_failed("re-read after lock", &error),
                        }
                        return self.lead(guard, origin).await;
                    }
                    Ok(false) => {}
                }
            }
            self.counters.lock_contended.incr();
            match self.wait(&slot, need).await {
                Ok(Some(loaded)) => {
                    self.counters.remote_hits.incr();
                    return Ok(loaded);
                }
                // Lease over, or released without a value: try to take over.
                Ok(None) => {}
                Err(error) => return self.fall_back(&error, origin).await,
            }
        }
    }

    /// We hold the lock: load with the lease renewed, write L2 (fenced), release.
    async fn lead<V: SharedValue>(
        &self,
        guard: LockGuard,
        origin: OriginLoad<V>,
    ) -> Result<Loaded<V>, ErasedError> {
        let renewer = AbortOnDrop(tokio::spawn(renew(
            self.backend.clone(),
            guard.slot.clone(),
            guard.token.clone(),
            self.lock_ttl,
            self.name.clone(),
        )));
        let loaded = origin.await;
        drop(renewer);
        let (value, delta) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                guard.release(true).await;
                return Err(error);
            }
        };
        let mut written = false;
        match codec::encode::<K, V>(&value, self.backend.wall_now(), self.ttl, self.stale, delta) {
            Ok(bytes) => {
                let expiry = self
                    .ttl
                    .saturating_add(self.stale)
                    .min(crate::strategy::FOREVER);
                match self
                    .backend
                    .write(&guard.slot, Some(&guard.token), &bytes, expiry, self.id)
                    .await
                {
                    Ok(true) => written = true,
                    Ok(false) => {
                        // Not our lock any more: nothing to release either.
                        written = true;
                        self.counters.backend_errors.incr();
                        tracing::warn!(cache = %self.name, "lease lost while loading: value not written to the shared tier (fenced)");
                    }
                    Err(error) => self.backend_failed("write", &error),
                }
            }
            Err(error) => {
                self.counters.backend_errors.incr();
                tracing::warn!(cache = %self.name, %error, "value does not serialise: not shared");
            }
        }
        if written {
            guard.disarm(); // the fenced write released the lock
        } else {
            guard.release(true).await;
        }
        Ok(Loaded {
            value,
            fresh_for: self.ttl,
            stale_for: self.stale,
            delta,
        })
    }

    /// Another process holds the lock: wait for its ready notice (re-reading
    /// now and then, since pub/sub may drop it), at most one lease long.
    async fn wait<V: SharedValue>(
        &self,
        slot: &str,
        need: Need,
    ) -> Result<Option<Loaded<V>>, BackendError> {
        let mut watch = self.backend.hub().watch(slot);
        // The value may have landed between our lock attempt and the watch.
        if let Some(loaded) = self.read_usable(slot, need).await? {
            return Ok(Some(loaded));
        }
        let deadline = Instant::now() + self.lock_ttl;
        let base = (self.lock_ttl / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let jittered = base.mul_f64(0.5 + fastrand::f64());
            let nap = jittered.min(deadline - now);
            tokio::select! {
                () = watch.changed() => {
                    // The holder wrote (or gave up): either way, look once and decide.
                    return self.read_usable(slot, need).await;
                }
                () = tokio::time::sleep(nap) => {
                    if let Some(loaded) = self.read_usable(slot, need).await? {
                        return Ok(Some(loaded));
                    }
                }
            }
        }
    }

    /// The backend failed: load in process, like a cache that is not shared.
    async fn fall_back<V: SharedValue>(
        &self,
        error: &BackendError,
        origin: OriginLoad<V>,
    ) -> Result<Loaded<V>, ErasedError> {
        self.counters.fallbacks.incr();
        warn_limited(&self.name, "falling back to the in-process path", error);
        let (value, delta) = origin.await?;
        Ok(Loaded {
            value,
            fresh_for: self.ttl,
            stale_for: self.stale,
            delta,
        })
    }
}

fn warn_limited(cache: &str, what: &str, error: &BackendError) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(std::time::Instant::now);
    let now_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
    let last = LAST.load(Ordering::Relaxed);
    let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
    if (last == 0 || now_ms.saturating_sub(last) >= every)
        && LAST
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(cache, %error, "shared backend failed ({what}); calls fail open to the loader (further warnings suppressed for {WARN_EVERY:?})");
    } else {
        tracing::debug!(cache, %error, "shared backend failed ({what})");
    }
}

/// Renews the lease every third of it until aborted.
async fn renew(
    backend: Arc<dyn Backend>,
    slot: String,
    token: String,
    lease: Duration,
    cache: String,
) {
    let every = (lease / 3).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        ticker.tick().await;
        match backend.renew(&slot, &token, lease).await {
            Ok(true) => tracing::trace!(cache, "lease renewed"),
            Ok(false) => {
                tracing::warn!(
                    cache,
                    "lease lost while loading; the value will not be written"
                );
                return;
            }
            Err(error) => tracing::debug!(cache, %error, "lease renewal failed; retrying"),
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A held lock. Released explicitly after the L2 write; if the flight is
/// dropped or its loader panics first, `Drop` releases it in a spawned task,
/// so a lock is never leaked for longer than the release takes.
struct LockGuard {
    backend: Arc<dyn Backend>,
    slot: String,
    token: String,
    armed: bool,
}

impl LockGuard {
    fn disarm(mut self) {
        self.armed = false;
    }

    async fn release(mut self, notify: bool) {
        self.armed = false;
        if let Err(error) = self.backend.release(&self.slot, &self.token, notify).await {
            tracing::debug!(%error, "lock release failed; it expires with its lease");
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (backend, slot, token) = (
            self.backend.clone(),
            std::mem::take(&mut self.slot),
            std::mem::take(&mut self.token),
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = backend.release(&slot, &token, true).await;
            });
        }
    }
}

impl<K: SharedKey, V: SharedValue> SharedTier<K, V> for Tier<K, V> {
    fn load(
        &self,
        key: K,
        origin: OriginLoad<V>,
        need: Need,
    ) -> BoxFut<Result<Loaded<V>, ErasedError>> {
        let core = self.core.clone();
        let slot = core.slot(&key);
        Box::pin(core.load(slot, origin, need))
    }

    fn store(&self, key: &K, value: &V) {
        let core = self.core.clone();
        let (slot, bytes) = match (
            core.slot(key),
            codec::encode::<K, V>(
                value,
                core.backend.wall_now(),
                core.ttl,
                core.stale,
                Duration::ZERO,
            ),
        ) {
            (Ok(slot), Ok(bytes)) => (slot, bytes),
            (Err(error), _) => return core.backend_failed("insert", &error),
            (_, Err(error)) => {
                return core.backend_failed("insert", &BackendError::new(error.to_string()));
            }
        };
        let name = core.name.clone();
        spawn_or_skip(&name, async move {
            let expiry = core
                .ttl
                .saturating_add(core.stale)
                .min(crate::strategy::FOREVER);
            if let Err(error) = core
                .backend
                .write(&slot, None, &bytes, expiry, core.id)
                .await
            {
                core.backend_failed("insert", &error);
            }
        });
    }

    fn invalidate(&self, key: &K) {
        let core = self.core.clone();
        let slot = match core.slot(key) {
            Ok(slot) => slot,
            Err(error) => return core.backend_failed("invalidate", &error),
        };
        let task_core = core.clone();
        let task_slot = slot.clone();
        core.invalidate_behind(slot, async move {
            if let Err(error) = task_core.backend.invalidate(&task_slot, task_core.id).await {
                task_core.backend_failed("invalidate", &error);
            }
        });
    }

    fn invalidate_all(&self) {
        let core = self.core.clone();
        let task_core = core.clone();
        core.invalidate_behind(String::new(), async move {
            if let Err(error) = task_core
                .backend
                .invalidate_all(&task_core.name, task_core.id)
                .await
            {
                task_core.backend_failed("invalidate_all", &error);
            }
        });
    }
}

/// Runs a backend write-behind in the current runtime; outside of one, the
/// shared copy is left to expire (logged).
fn spawn_or_skip(cache: &str, task: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(task);
        }
        Err(_) => tracing::warn!(cache, "no tokio runtime: the shared tier was not updated"),
    }
}
