//! The shared tier of one `shared` cache: the fleet protocol — L2 reads,
//! the lock and its lease, waiting, failure records, generations, and
//! failing open when the backend fails.
//!
//! One local flight of a key runs [`Core::load`]:
//!
//! 1. `lock(or_value)`: one atomic step returns the L2 value if there is
//!    one, else the key's failure record if its last load failed recently,
//!    else takes the lock (or finds it held).
//! 2. A usable value is the answer. A failure record is the answer too: the
//!    origin is not called again until it expires (the retry backoff), in
//!    any process. The lock makes this process the leader: it loads (lease
//!    renewed, up to a cap), then writes the value — or the failure record —
//!    with a fenced script that also releases the lock and wakes the waiters.
//! 3. A held lock makes this process a waiter: it watches the key's ready
//!    notices (re-reading now and then, since pub/sub may drop one) until a
//!    value or a failure record appears, or the lock is gone (then it tries
//!    to take over).
//!
//! Writes win: `insert`, `invalidate` delete the key's lock, so a load that
//! started before them cannot write; `invalidate_all` bumps the cache's
//! generation, and values loaded under an older one are never used again.

use std::marker::PhantomData;
use std::panic::resume_unwind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::claims::NameClaim;
use super::codec::{self, Decoded, Failure, FailureKind};
use super::hub::L1Sink;
use super::slot::{CacheKeys, Slot, notice};
use super::writes::Write;
use super::{
    Acquire, Backend, BackendError, BoxFut, CacheCore, Loaded, OriginLoad, RemoteLoadError,
    RemotePolicy, SharedBackend, SharedKey, SharedTier, SharedValue, TierSpec, Want,
};
use crate::load::{CatchUnwind, ErasedError, LoadTimeout, Need, NotFound, panic_message};
use crate::stats::Counters;
use crate::strategy::{FOREVER, after};
use crate::tags::Tags;

/// An L2 value is "newer" than an L1 copy when it stays fresh at least this
/// much longer (absorbs the millisecond granularity of the backend's clock).
const NEWER_BY: Duration = Duration::from_millis(2);

/// A failure record lives at least this long, so the waiters woken by it
/// can still read it even with a zero retry backoff.
const MIN_FAILURE_TTL: Duration = Duration::from_millis(50);

/// How long a flight waits for this process's own earlier writes of its
/// key to land before it loads without the shared tier.
const SETTLE_BOUND: Duration = Duration::from_secs(1);

/// Rate limit of the fail-open warning, per process.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// `Core::generation` before it was read from the backend (or after a gap).
const UNKNOWN: u64 = u64::MAX;

pub(crate) struct Tier<K, V> {
    core: Arc<Core<K, V>>,
    /// Registered (weakly) with the backend's hub; lives as long as the tier.
    _sink: Arc<dyn L1Sink>,
    /// This cache's claim on its name in this process (released on drop).
    _claim: NameClaim,
}

struct Core<K, V> {
    backend: Arc<dyn Backend>,
    /// The cache core: per-entry ttl, jitter and early-refresh draws.
    l1: Weak<dyn CacheCore<K, V>>,
    name: String,
    cache_keys: CacheKeys,
    ttl: Duration,
    stale: Duration,
    lock_ttl: Duration,
    retry_backoff: Duration,
    max_hold: Duration,
    remote: Option<RemotePolicy>,
    counters: Arc<Counters>,
    /// This tier's id: the sender of its notices (it skips its own).
    id: u64,
    /// The cache generation this process knows, or [`UNKNOWN`]. Only ever
    /// raised (by clear notices, by our own `invalidate_all`, by envelopes
    /// written under a newer one), except after a subscription gap, when it
    /// is forgotten and read again by the next flight.
    generation: AtomicU64,
    /// One counter read at a time: the flights that find the generation
    /// unknown together (a batch's keys, a cold pod's first callers) wait
    /// for one read instead of each sending its own.
    generation_read: tokio::sync::Mutex<()>,
    /// How long a write of this cache stays worth retrying: the longest a
    /// value it supersedes can live in the backend (ttl + jitter + stale;
    /// forever with a per-entry ttl).
    longest_life: Duration,
    _types: PhantomData<fn(K) -> V>,
}

/// The cache's L1 as the invalidation bus sees it.
struct Sink<K, V> {
    core: Arc<Core<K, V>>,
    l1: Weak<dyn CacheCore<K, V>>,
}

impl<K: SharedKey, V: SharedValue> L1Sink for Sink<K, V> {
    fn drop_key(&self, encoded: &str) {
        let Some(l1) = self.l1.upgrade() else { return };
        match codec::decode_key::<K>(encoded) {
            Some(key) => l1.evict(&key),
            // A key this process cannot decode is not one it holds.
            None => {
                tracing::debug!(cache = %self.core.name, "invalidation of an undecodable key ignored")
            }
        }
    }

    fn drop_all(&self, generation: u64) {
        // The counter's value at that increment, told in order: current
        // (a counter read still in flight may answer an older one).
        self.core.learn_generation(generation);
        if let Some(l1) = self.l1.upgrade() {
            l1.evict_all();
        }
    }

    fn after_gap(&self) {
        self.core.generation.store(UNKNOWN, Ordering::Relaxed);
        if let Some(l1) = self.l1.upgrade() {
            l1.forget_after_gap();
        }
    }
}

fn next_id() -> u64 {
    // 64 random bits: two tiers of a fleet sharing an id (and so skipping
    // each other's notices) is a 2^-64 event per pair. Never 0, which the
    // notice format reserves for "no sender".
    fastrand::u64(1..)
}

fn new_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

impl<K: SharedKey, V: SharedValue> Tier<K, V> {
    pub(crate) fn build(
        spec: TierSpec<K, V>,
        backend: SharedBackend,
        claim: NameClaim,
    ) -> Arc<dyn SharedTier<K, V>> {
        let id = next_id();
        let core = Arc::new(Core {
            l1: spec.l1.clone(),
            cache_keys: CacheKeys::new(backend.inner.prefix(), &spec.name),
            backend: backend.inner,
            name: spec.name,
            ttl: spec.ttl,
            stale: spec.strategy.stale_window(),
            lock_ttl: spec.lock_ttl,
            retry_backoff: spec.retry_backoff,
            max_hold: spec.max_hold,
            remote: spec.remote,
            counters: spec.counters,
            id,
            generation: AtomicU64::new(UNKNOWN),
            generation_read: tokio::sync::Mutex::new(()),
            longest_life: spec.longest_life,
            _types: PhantomData,
        });
        let sink: Arc<dyn L1Sink> = Arc::new(Sink {
            core: core.clone(),
            l1: spec.l1,
        });
        core.backend
            .hub()
            .register(&core.name, id, Arc::downgrade(&sink));
        Arc::new(Tier {
            core,
            _sink: sink,
            _claim: claim,
        })
    }
}

/// A batch flight parked while it waits on another process (unparked when
/// the wait ends, however it ends).
struct Parked<'a>(Option<&'a dyn crate::load::Parking>);

impl<'a> Parked<'a> {
    fn new(parking: Option<&'a dyn crate::load::Parking>) -> Self {
        if let Some(parking) = parking {
            parking.park();
        }
        Self(parking)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        if let Some(parking) = self.0 {
            parking.unpark();
        }
    }
}

/// What waiting on another process's load gave.
enum Waited<V> {
    Value(Loaded<V>),
    Failed(Vec<u8>),
    /// The lock is gone without a value: try to take over.
    Free,
    /// This flight's own `load_timeout` passed while it waited.
    OutOfTime,
}

/// Whether an L2 value can answer a flight that needs `need`, and with what
/// timing — a pure function of what was read and `now`.
///
/// `left` is the time until the value key expires by the backend's own
/// clock (the end of its stale window), so the pods' clock skew plays no
/// part; the result is clamped to this cache's own ttl (`max_fresh`: the
/// entry's ttl plus the whole jitter) and stale window, so neither a
/// misconfigured writer nor corrupt bytes can stretch a value's life. A value loaded under an older cache generation (before an
/// `invalidate_all`) is never usable.
pub(crate) fn usable<V>(
    decoded: Decoded<V>,
    left: Duration,
    need: Need,
    now: Instant,
    max_fresh: Duration,
    stale: Duration,
    generation: u64,
) -> Option<Loaded<V>> {
    if decoded.generation < generation {
        return None;
    }
    let fresh_for = left.saturating_sub(decoded.stale).min(max_fresh);
    if fresh_for.is_zero() {
        return None;
    }
    if let Need::Refresh(seen) = need
        && now + fresh_for < seen.fresh_until() + NEWER_BY
    {
        // The very copy we are refreshing: a refresh must load.
        return None;
    }
    Some(Loaded {
        value: decoded.value,
        fresh_for,
        stale_for: decoded.stale.min(stale),
        delta: decoded.delta,
        refresh_lead: decoded.lead,
        superseded: false,
    })
}

impl<K: SharedKey, V: SharedValue> Core<K, V> {
    fn slot(&self, key: &K) -> Result<(Slot, String), BackendError> {
        let encoded = codec::encode_key(key)
            .map_err(|e| BackendError::new(format!("key does not serialise: {e}")))?;
        Ok((
            Slot::new(self.backend.prefix(), &self.name, &encoded),
            encoded,
        ))
    }

    /// How long a loaded value of this cache lives in the shared tier, as
    /// far as the tag record taken before its lock covers: ttl + jitter +
    /// stale window (with a per-entry ttl, the cache's; a value that lives
    /// longer extends its record before it is written).
    fn record_life(&self) -> Duration {
        if self.longest_life >= FOREVER {
            self.ttl.saturating_add(self.stale)
        } else {
            self.longest_life
        }
    }

    /// A generation some process wrote under (an envelope's): a lower
    /// bound of the current one. It raises a known
    /// generation but never sets an unknown one — after a gap, an envelope
    /// written before an `invalidate_all` would make every value from
    /// before it servable again; the next flight reads the counter instead.
    fn raise_generation(&self, generation: u64) {
        let _ = self
            .generation
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |known| {
                (known != UNKNOWN && known < generation).then_some(generation)
            });
    }

    /// The generation read from the backend's counter, or told by a clear
    /// notice: current as of then, so it may set an unknown one.
    fn learn_generation(&self, generation: u64) {
        let _ = self
            .generation
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |known| {
                (known == UNKNOWN || known < generation).then_some(generation)
            });
    }

    /// The cache generation, read from the backend when not known.
    async fn generation(&self) -> Result<u64, BackendError> {
        let known = self.generation.load(Ordering::Relaxed);
        if known != UNKNOWN {
            return Ok(known);
        }
        let _one_read = self.generation_read.lock().await;
        let known = self.generation.load(Ordering::Relaxed);
        if known != UNKNOWN {
            return Ok(known);
        }
        let read = self.backend.generation(&self.cache_keys).await?;
        self.learn_generation(read);
        // A gap may have made it unknown again meanwhile: this flight
        // still goes by what it read.
        Ok(match self.generation.load(Ordering::Relaxed) {
            UNKNOWN => read,
            known => known.max(read),
        })
    }

    /// Queues a write of this cache behind this process's earlier writes
    /// (see [`writes`](super::writes)): retried until it lands, its keys
    /// pending until then.
    fn write_behind(
        self: &Arc<Self>,
        what: &'static str,
        pending: Vec<String>,
        attempt: super::writes::Attempt,
    ) {
        let core = self.clone();
        self.backend.writes().push(Write {
            what,
            cache: self.name.clone(),
            pending,
            give_up: after(Instant::now(), self.longest_life),
            on_error: Box::new(move |error| core.backend_failed(what, error)),
            attempt,
        });
    }

    /// Waits (bounded) for this process's own writes of `slot` (of the key,
    /// of the whole cache, of one of its `tags`) to reach the backend:
    /// whether they did. If not, the flight must not read the shared tier.
    async fn settle_writes(&self, slot: &Slot, tags: &[Arc<str>]) -> bool {
        let whole = whole_cache_pending(&self.name);
        let tag_keys: Vec<String> = tags.iter().map(|tag| tag_pending(tag)).collect();
        let mut keys: Vec<&str> = vec![slot.as_str(), &whole];
        keys.extend(tag_keys.iter().map(String::as_str));
        self.backend.writes().settled(&keys, SETTLE_BOUND).await
    }

    /// Counts and (rate-limited) logs a backend failure.
    fn backend_failed(&self, what: &str, error: &BackendError) {
        self.counters.backend_errors.incr();
        warn_limited(&self.name, what, error);
    }

    /// Decodes L2 bytes into a value `need` can use, if they are one.
    /// Undecodable bytes are a miss, counted in `backend_errors`.
    fn usable(
        &self,
        key: &K,
        bytes: &[u8],
        left: Duration,
        need: Need,
        generation: u64,
    ) -> Option<Loaded<V>> {
        let decoded = match codec::decode::<K, V>(bytes) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.counters.backend_errors.incr();
                tracing::warn!(cache = %self.name, %error, "shared entry unusable: treated as a miss");
                return None;
            }
        };
        // A writer that knew a newer generation: so do we now.
        self.raise_generation(decoded.generation);
        let max_fresh = self
            .l1
            .upgrade()
            .map_or(self.ttl, |l1| l1.max_fresh_for(key, &decoded.value));
        usable(
            decoded,
            left,
            need,
            Instant::now(),
            max_fresh,
            self.stale,
            generation,
        )
    }

    fn guard(&self, slot: &Slot, token: String) -> LockGuard {
        self.counters.lock_acquired.incr();
        self.backend.held().hold(slot, &token);
        LockGuard {
            backend: self.backend.clone(),
            slot: slot.clone(),
            token,
            armed: true,
        }
    }

    /// A lock command timed out: it may still run when the backend resumes
    /// and leave a lock nobody holds. Queue a compare-and-delete behind it
    /// (same connection, so it runs after it); the short initial lease
    /// bounds the rest.
    fn release_behind(&self, slot: &Slot, token: &str, error: &BackendError) {
        if !error.is_timeout() {
            return;
        }
        let (backend, slot, token) = (self.backend.clone(), slot.clone(), token.to_owned());
        spawn_or_skip(&self.name, async move {
            let _ = backend.release(&slot, &token).await;
        });
    }

    /// The whole flight: L2, lock, load or wait, fail open on backend errors.
    ///
    /// A cold miss costs the leader two round trips: `lock` (finds no
    /// value, takes the lock atomically) and the fenced write that also
    /// releases the lock. A refresh, or a present but unusable value, adds a
    /// lock attempt and a re-read.
    async fn load(
        self: Arc<Self>,
        key: K,
        slot: Result<Slot, BackendError>,
        origin: OriginLoad<V>,
        want: Want,
    ) -> Result<Loaded<V>, ErasedError> {
        let slot = match slot {
            Ok(slot) => slot,
            Err(error) => return self.fall_back(&key, &error, origin).await,
        };
        let Want {
            need,
            fallback,
            remote_errors,
            tags,
            load_timeout,
            parking,
        } = want;
        // A waiter is bounded by its own load_timeout too, from now — and
        // so is every load this flight makes, leading or falling back: a
        // call waits at most its bound, as without `shared`.
        let deadline = load_timeout.map(|bound| (after(Instant::now(), bound), bound));
        let origin = self.within(deadline, origin);
        let tags: &[Arc<str>] = tags.as_deref().unwrap_or(&[]);
        if !self.settle_writes(&slot, tags).await {
            // Our own write of this key has not reached the backend: what
            // the shared tier holds may be what it supersedes.
            let error = BackendError::new("an earlier write of this key has not landed yet");
            return self.fall_back(&key, &error, origin).await;
        }
        let generation = match self.generation().await {
            Ok(generation) => generation,
            Err(error) => return self.fall_back(&key, &error, origin).await,
        };
        let lease = self.backend.initial_lease(self.lock_ttl);
        // A failure record answers this flight only if it has a value to
        // serve instead (the retry backoff throttles it, as in process) and
        // can answer with it; else it loads, under the lock.
        let mut honour_failure = fallback;
        let mut first_attempt = true;
        loop {
            // A later attempt (a takeover) starts only within the bound.
            if !std::mem::take(&mut first_attempt)
                && let Some(timeout) = self.out_of_time(deadline)
            {
                return Err(timeout);
            }
            if !tags.is_empty() {
                // Recorded before every lock attempt (a waiter taking over
                // after a tag invalidation deleted the set included): a tag
                // invalidation from now on deletes the lock this attempt
                // may take, so its load cannot land stale.
                let keep = self.max_hold + self.record_life();
                if let Err(error) = self.backend.tag(&slot, tags, keep).await {
                    return self.fall_back(&key, &error, origin).await;
                }
            }
            let token = new_token();
            let attempt = self
                .backend
                .lock(&slot, &token, lease, true, honour_failure);
            let mut acquired = match attempt.await {
                Ok(acquired) => acquired,
                Err(error) => {
                    self.release_behind(&slot, &token, &error);
                    return self.fall_back(&key, &error, origin).await;
                }
            };
            let mut look_again = false;
            if let Acquire::Value(bytes, left) = &acquired {
                if let Some(loaded) = self.usable(&key, bytes, *left, need, generation) {
                    self.counters.remote_hits.incr();
                    role("remote_hit");
                    return Ok(loaded);
                }
                // Present but not for us (the copy being refreshed, stale,
                // older generation, undecodable): take the lock regardless.
                acquired = match self
                    .backend
                    .lock(&slot, &token, lease, false, honour_failure)
                    .await
                {
                    Ok(acquired) => acquired,
                    Err(error) => {
                        self.release_behind(&slot, &token, &error);
                        return self.fall_back(&key, &error, origin).await;
                    }
                };
                look_again = true;
            }
            let seen = match acquired {
                Acquire::Failed(record) => {
                    match self.remote_failure(&key, &record, fallback, remote_errors) {
                        Some(answer) => return answer,
                        None => {
                            // Nothing this flight can answer with: it takes
                            // the lock and loads, past the record.
                            honour_failure = false;
                            continue;
                        }
                    }
                }
                Acquire::Locked => {
                    let guard = self.guard(&slot, token);
                    if look_again {
                        // A value may have landed between the two steps.
                        match self.backend.read(&slot).await {
                            Ok(found) => {
                                if let Some((bytes, left)) = found.value
                                    && let Some(loaded) =
                                        self.usable(&key, &bytes, left, need, generation)
                                {
                                    guard.release_behind();
                                    self.counters.remote_hits.incr();
                                    role("remote_hit");
                                    return Ok(loaded);
                                }
                            }
                            Err(error) => self.backend_failed("re-read after lock", &error),
                        }
                    }
                    let leading = Leading {
                        first_lease: lease,
                        generation,
                        tags,
                    };
                    role("leader");
                    return self.lead(&key, guard, origin, leading).await;
                }
                Acquire::Held(seen) => seen,
                Acquire::Value(..) => None,
            };
            self.counters.lock_contended.incr();
            role("waiter");
            // Waiting on another process: a batch does not hold its loader
            // call back for this key meanwhile.
            let parked = Parked::new(parking.as_deref());
            let waited = self
                .wait(&key, &slot, need, generation, seen, deadline)
                .await;
            drop(parked);
            match waited {
                Ok(Waited::Value(loaded)) => {
                    self.counters.remote_hits.incr();
                    role("waiter_answered");
                    return Ok(loaded);
                }
                Ok(Waited::Failed(record)) => {
                    // The load waited on found no row: a batch takes that
                    // as its answer (a single caller's loader decides for
                    // itself, so it takes over).
                    if parking.is_some()
                        && codec::decode_failure(&record)
                            .is_some_and(|failure| failure.kind == FailureKind::NotFound)
                    {
                        return Err(Arc::new(NotFound));
                    }
                    // A timeout is not an error of the origin, nor a panic
                    // an answer (a bug of that one call): with nothing to
                    // serve, the waiters take over and one of them loads —
                    // as waiters in process start a new flight. So does a
                    // flight whose caller cannot return another process's
                    // error: it loads, but under the lock (one at a time
                    // fleet-wide), not beside the others in process.
                    let expressible = remote_errors && self.remote.is_some();
                    let takes_over = codec::decode_failure(&record).is_some_and(|failure| {
                        matches!(
                            failure.kind,
                            FailureKind::Timeout | FailureKind::Panic | FailureKind::NotFound
                        ) || !expressible
                    });
                    if takes_over && !fallback {
                        if let Some(timeout) = self.out_of_time(deadline) {
                            return Err(timeout);
                        }
                        continue;
                    }
                    match self.remote_failure(&key, &record, fallback, remote_errors) {
                        Some(answer) => return answer,
                        None => {
                            honour_failure = false;
                            if let Some(timeout) = self.out_of_time(deadline) {
                                return Err(timeout);
                            }
                            continue;
                        }
                    }
                }
                Ok(Waited::OutOfTime) => {
                    let timeout = self.out_of_time(deadline).expect("the deadline passed");
                    return Err(timeout);
                }
                Ok(Waited::Free) => {}
                Err(error) => return self.fall_back(&key, &error, origin).await,
            }
        }
    }

    /// We hold the lock: load with the lease renewed, then write the value
    /// (or the failure record) fenced, which releases the lock.
    async fn lead(
        &self,
        key: &K,
        guard: LockGuard,
        origin: OriginLoad<V>,
        leading: Leading<'_>,
    ) -> Result<Loaded<V>, ErasedError> {
        let Leading {
            first_lease,
            generation,
            tags,
        } = leading;
        let let_go = Arc::new(AtomicBool::new(false));
        let renewer = AbortOnDrop(tokio::spawn(renew(
            self.backend.clone(),
            guard.slot.clone(),
            guard.token.clone(),
            (first_lease, self.lock_ttl),
            self.max_hold,
            (self.name.clone(), let_go.clone()),
        )));
        let outcome = CatchUnwind::new(origin).await;
        drop(renewer);
        let (value, delta) = match outcome {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(error)) => {
                let failure = self.failure_of(&error);
                self.publish_failure(guard, failure).await;
                return Err(error);
            }
            Err(payload) => {
                let failure = Failure {
                    kind: FailureKind::Panic,
                    message: panic_message(&payload).to_owned(),
                    after_ms: 0,
                    flight: String::new(),
                };
                self.publish_failure(guard, failure).await;
                resume_unwind(payload);
            }
        };
        let mut loaded = match self.l1.upgrade() {
            Some(l1) => l1.loaded_here(key, value, delta),
            None => Loaded {
                value,
                fresh_for: self.ttl,
                stale_for: self.stale,
                delta,
                refresh_lead: Duration::ZERO,
                superseded: false,
            },
        };
        let encoded = codec::encode::<K, V>(
            &loaded.value,
            generation,
            self.stale,
            delta,
            loaded.refresh_lead,
        );
        match encoded {
            Ok(bytes) => {
                // The drawn expiry (ttl + jitter) is what every process reads back.
                let expiry = loaded.fresh_for.saturating_add(self.stale).min(FOREVER);
                if !tags.is_empty() && expiry > self.record_life() {
                    // Longer-lived than the tag record taken before the
                    // lock covers (per-entry ttl): extend it to the value's
                    // life first, so `invalidate_tag` reaches it for as
                    // long as it can be read. Unrecorded, it is not shared.
                    let keep = expiry.saturating_add(self.max_hold).min(FOREVER);
                    if let Err(error) = self.backend.tag(&guard.slot, tags, keep).await {
                        self.backend_failed("tag record", &error);
                        guard.release_behind();
                        return Ok(loaded);
                    }
                }
                match self
                    .backend
                    .write(&guard.slot, &guard.token, &bytes, expiry)
                    .await
                {
                    Ok(true) => guard.disarm(),
                    Ok(false) => {
                        // Not our lock any more: a write superseded this
                        // load — or it outlived the lock hold and its lease
                        // lapsed (`let_go`): the two cannot be told apart
                        // here, and caching a value a write replaced is
                        // worse than loading again. Nothing to release.
                        if let_go.load(Ordering::Relaxed) {
                            tracing::warn!(cache = %self.name, "load outlived the lock hold (give the cache a load_timeout at least as long as its loads): not cached");
                        }
                        guard.disarm();
                        loaded.superseded = true;
                        self.counters.superseded_loads.incr();
                        tracing::info!(cache = %self.name, "load superseded by a write (or its lease lapsed): value not written to the shared tier");
                    }
                    Err(error) => {
                        self.backend_failed("write", &error);
                        guard.release_behind();
                    }
                }
            }
            Err(error) => {
                self.counters.backend_errors.incr();
                tracing::warn!(cache = %self.name, %error, "value does not serialise: not shared");
                guard.release_behind();
            }
        }
        Ok(loaded)
    }

    /// What the other processes are told of a failed load.
    fn failure_of(&self, error: &ErasedError) -> Failure {
        if error.downcast_ref::<NotFound>().is_some() {
            return Failure {
                kind: FailureKind::NotFound,
                message: "the batch loader did not return this key".to_owned(),
                after_ms: 0,
                flight: String::new(),
            };
        }
        if let Some(timeout) = error.downcast_ref::<LoadTimeout>() {
            return Failure {
                kind: FailureKind::Timeout,
                message: timeout.to_string(),
                after_ms: u64::try_from(timeout.after().as_millis()).unwrap_or(u64::MAX),
                flight: String::new(),
            };
        }
        let message = self
            .remote
            .as_ref()
            .and_then(|remote| (remote.describe)(error))
            .unwrap_or_else(|| "the loader returned an error".to_owned());
        Failure {
            kind: FailureKind::Error,
            message,
            after_ms: 0,
            flight: String::new(),
        }
    }

    /// Leaves the failure record (which releases the lock and wakes the
    /// waiters: they answer with it).
    ///
    /// Awaited, not spawned: a call of this process that starts once the
    /// callers have their answer must find the record (or the lock gone),
    /// never this flight's lock still held — it would wait on it and be
    /// answered with a failure that ended before it started.
    async fn publish_failure(&self, guard: LockGuard, mut failure: Failure) {
        failure.flight = guard.token.clone();
        // Not found: the origin has no row, so no process may read the old
        // one back from the shared tier.
        let gone = failure.kind == FailureKind::NotFound;
        let record = codec::encode_failure(&failure);
        let ttl = self.retry_backoff.max(MIN_FAILURE_TTL);
        match self
            .backend
            .fail(&guard.slot, &guard.token, &record, ttl, gone)
            .await
        {
            Ok(_) => guard.disarm(),
            Err(error) => {
                self.backend_failed("failure record", &error);
                guard.release_behind();
            }
        }
    }

    /// The key's load failed in some process recently: the answer of this
    /// flight from that record — the failure, when the starting call can
    /// return it; else the value to serve, if any — or `None`: this flight
    /// takes the lock and loads.
    fn remote_failure(
        &self,
        key: &K,
        record: &[u8],
        fallback: bool,
        remote_errors: bool,
    ) -> Option<Result<Loaded<V>, ErasedError>> {
        let Some(failure) = codec::decode_failure(record) else {
            self.counters.backend_errors.incr();
            tracing::warn!(cache = %self.name, "undecodable failure record: ignored");
            return None;
        };
        match failure.kind {
            // Not a failure of the origin: this flight's loader decides.
            FailureKind::NotFound => None,
            FailureKind::Timeout => {
                self.counters.remote_failures.incr();
                let after = Duration::from_millis(failure.after_ms);
                Some(Err(Arc::new(LoadTimeout::new(&self.name, after))))
            }
            FailureKind::Error | FailureKind::Panic if remote_errors && self.remote.is_some() => {
                self.counters.remote_failures.incr();
                let panicked = failure.kind == FailureKind::Panic;
                let error = RemoteLoadError::new(&self.name, failure.message, panicked);
                Some(Err(Arc::new(error)))
            }
            // No way to hand the callers that failure, but a value to serve
            // instead: serve it, decided here once for the whole flight (a
            // failure its callers cannot express must never reach them, even
            // if the fail-safe window ends before they read it). Marked
            // superseded: answered, never cached again.
            FailureKind::Error | FailureKind::Panic
                if fallback
                    && let Some(value) = self.l1.upgrade().and_then(|l1| l1.stand_in(key)) =>
            {
                self.counters.remote_failures.incr();
                Some(Ok(Loaded {
                    value,
                    fresh_for: Duration::ZERO,
                    stale_for: Duration::ZERO,
                    delta: Duration::ZERO,
                    refresh_lead: Duration::ZERO,
                    superseded: true,
                }))
            }
            // Nothing to answer with that the callers can take: this flight
            // loads itself, under the lock (one at a time fleet-wide).
            FailureKind::Error | FailureKind::Panic => None,
        }
    }

    /// Another process holds the lock: watch the key's notices (re-reading
    /// now and then, since pub/sub may drop one) until a value or a failure
    /// record appears, or the lock is gone. Bounded: a lease is renewed for
    /// at most `max_hold`, then lapses.
    async fn wait(
        &self,
        key: &K,
        slot: &Slot,
        need: Need,
        generation: u64,
        seen: Option<Vec<u8>>,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<Waited<V>, BackendError> {
        let mut watch = self.backend.hub().watch(slot.as_str());
        watch.subscribed().await;
        let base = (self.lock_ttl / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        loop {
            // Read after the watch is registered: a notice in between is kept.
            let found = self.backend.read(slot).await?;
            if let Some((bytes, left)) = &found.value
                && let Some(loaded) = self.usable(key, bytes, *left, need, generation)
            {
                return Ok(Waited::Value(loaded));
            }
            // Only the failure of a flight that ended while we waited: a
            // record that was already there when we found the lock held
            // is an older flight's, not ours to answer with.
            if let Some(record) = found.failure
                && seen.as_ref() != Some(&record)
            {
                return Ok(Waited::Failed(record));
            }
            if !found.locked {
                return Ok(Waited::Free);
            }
            if deadline.is_some_and(|(at, _)| Instant::now() >= at) {
                return Ok(Waited::OutOfTime);
            }
            let mut nap_until = Instant::now() + base.mul_f64(0.5 + fastrand::f64());
            if let Some((at, _)) = deadline {
                nap_until = nap_until.min(at);
            }
            tokio::select! {
                () = watch.changed() => {}
                () = tokio::time::sleep_until(nap_until) => {}
            }
        }
    }

    /// This flight's `load_timeout` has passed (waiting on another
    /// process's load): the timeout its callers get, counted.
    /// `origin` bounded by what is left of this flight's `load_timeout`: a
    /// flight that waited on another process and then took over loads in
    /// the time its callers have left, so a call waits at most its bound,
    /// as without `shared`.
    fn within(
        &self,
        deadline: Option<(Instant, Duration)>,
        origin: OriginLoad<V>,
    ) -> OriginLoad<V> {
        let Some((at, bound)) = deadline else {
            return origin;
        };
        let (counters, name) = (self.counters.clone(), self.name.clone());
        Box::pin(async move {
            match tokio::time::timeout_at(at, origin).await {
                Ok(outcome) => outcome,
                Err(_elapsed) => {
                    counters.load_timeouts.incr();
                    Err(Arc::new(LoadTimeout::new(&name, bound)) as ErasedError)
                }
            }
        })
    }

    fn out_of_time(&self, deadline: Option<(Instant, Duration)>) -> Option<ErasedError> {
        let (at, bound) = deadline?;
        if Instant::now() < at {
            return None;
        }
        self.counters.load_timeouts.incr();
        Some(Arc::new(LoadTimeout::new(&self.name, bound)))
    }

    /// The backend failed: load in process, like a cache that is not shared.
    async fn fall_back(
        &self,
        key: &K,
        error: &BackendError,
        origin: OriginLoad<V>,
    ) -> Result<Loaded<V>, ErasedError> {
        self.counters.fallbacks.incr();
        role("fallback");
        warn_limited(&self.name, "falling back to the in-process path", error);
        let (value, delta) = origin.await?;
        Ok(match self.l1.upgrade() {
            Some(l1) => l1.loaded_here(key, value, delta),
            None => Loaded {
                value,
                fresh_for: self.ttl,
                stale_for: self.stale,
                delta,
                refresh_lead: Duration::ZERO,
                superseded: false,
            },
        })
    }
}

/// This flight's role in the fleet, on its load span (the last one set
/// stands: a waiter that takes over becomes the leader).
fn role(role: &'static str) {
    tracing::Span::current().record("role", role);
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

/// Renews the lease — first after a third of the initial (short) lease,
/// extending it to the full one, then every third of that — until aborted,
/// or until the load has held the lock for `max_hold`: then the lease is
/// left to lapse, so a hung loader cannot hold the key for the whole fleet.
async fn renew(
    backend: Arc<dyn Backend>,
    slot: Slot,
    token: String,
    (first_lease, lease): (Duration, Duration),
    max_hold: Duration,
    (cache, let_go): (String, Arc<AtomicBool>),
) {
    let started = Instant::now();
    // The lease Redis holds now: the short initial one until a renewal
    // succeeds. A failed renewal is retried at a third of *that*, so a
    // transient error cannot let the short lease lapse.
    let mut held = first_lease;
    loop {
        tokio::time::sleep((held / 3).max(Duration::from_millis(1))).await;
        if started.elapsed() >= max_hold {
            tracing::warn!(
                cache,
                held = ?started.elapsed(),
                "a load has held its lock for the maximum; the lease is no longer renewed, so another process may take over"
            );
            let_go.store(true, Ordering::Relaxed);
            return;
        }
        match backend.renew(&slot, &token, lease).await {
            Ok(true) => {
                held = lease;
                tracing::trace!(cache, "lease renewed");
            }
            Ok(false) => {
                tracing::info!(
                    cache,
                    "lock lost while loading (a write superseded the load, or the lease lapsed); the value will not be written"
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

/// A held lock. Disarmed by the fenced write (which releases it); if the
/// flight is dropped first, `Drop` releases it in a spawned task, so a lock
/// is never leaked for longer than the release takes (or its lease).
/// What a leader knows of its flight besides the key, its lock and origin.
struct Leading<'a> {
    /// The lease the lock was taken with (short at first on Redis).
    first_lease: Duration,
    /// The cache generation the flight read: its value is written under it.
    generation: u64,
    /// The entry's tags, recorded before the lock.
    tags: &'a [Arc<str>],
}

struct LockGuard {
    backend: Arc<dyn Backend>,
    slot: Slot,
    token: String,
    armed: bool,
}

impl LockGuard {
    fn disarm(mut self) {
        self.armed = false;
        self.backend.held().let_go(&self.token);
    }

    /// Releases the lock in a spawned task, off the callers' path (a
    /// failed release only leaves the lock to its lease).
    fn release_behind(self) {
        drop(self);
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.backend.held().let_go(&self.token);
        // On a runtime shutting down this task never runs: the lock lapses
        // with its lease, unless `SharedBackend::shutdown` released it.
        let (backend, slot, token) = (
            self.backend.clone(),
            self.slot.clone(),
            std::mem::take(&mut self.token),
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = backend.release(&slot, &token).await;
            });
        }
    }
}

impl<K: SharedKey, V: SharedValue> SharedTier<K, V> for Tier<K, V> {
    fn load(
        &self,
        key: K,
        origin: OriginLoad<V>,
        want: Want,
    ) -> BoxFut<Result<Loaded<V>, ErasedError>> {
        let core = self.core.clone();
        let slot = core.slot(&key).map(|(slot, _)| slot);
        Box::pin(core.load(key, slot, origin, want))
    }

    fn store(&self, key: &K, value: &V, tags: Option<Tags>) {
        let core = self.core.clone();
        let (slot, encoded) = match core.slot(key) {
            Ok(slot) => slot,
            Err(error) => return core.backend_failed("insert", &error),
        };
        let ttl = core
            .l1
            .upgrade()
            .map_or(core.ttl, |l1| l1.ttl_of(key, value));
        let expiry = ttl.saturating_add(core.stale).min(FOREVER);
        let (value, pending) = (value.clone(), vec![slot.as_str().to_owned()]);
        let attempt_core = core.clone();
        // Set once the write itself landed: a retry (its notice failed)
        // only sends the notice, never the write again — a write repeated
        // after a later one would win over it.
        let landed = Arc::new(AtomicBool::new(false));
        core.write_behind(
            "insert",
            pending,
            Box::new(move || {
                let (core, slot, encoded) = (attempt_core.clone(), slot.clone(), encoded.clone());
                let (value, tags, landed) = (value.clone(), tags.clone(), landed.clone());
                Box::pin(async move {
                    let notice = notice(core.id, 0, Some(&encoded));
                    if landed.load(Ordering::Acquire) {
                        return core.backend.notify(&core.cache_keys, &notice).await;
                    }
                    let generation = core.generation().await?;
                    let bytes = codec::encode::<K, V>(
                        &value,
                        generation,
                        core.stale,
                        Duration::ZERO,
                        Duration::ZERO,
                    )
                    .map_err(|error| BackendError::new(error.to_string()))?;
                    if let Some(tags) = tags.as_deref().filter(|tags| !tags.is_empty()) {
                        // Recorded under its tags like a loaded value, so
                        // `invalidate_tag` reaches the shared copy too.
                        let keep = core.max_hold + expiry;
                        core.backend.tag(&slot, tags, keep).await?;
                    }
                    core.backend
                        .insert(&slot, &core.cache_keys, &bytes, expiry, &notice)
                        .await?;
                    landed.store(true, Ordering::Release);
                    core.backend.notify(&core.cache_keys, &notice).await
                })
            }),
        );
    }

    fn invalidate(&self, key: &K) {
        let core = self.core.clone();
        let (slot, encoded) = match core.slot(key) {
            Ok(slot) => slot,
            Err(error) => return core.backend_failed("invalidate", &error),
        };
        let attempt_core = core.clone();
        // As for `store`: a retry only re-sends the notice.
        let landed = Arc::new(AtomicBool::new(false));
        core.write_behind(
            "invalidate",
            vec![slot.as_str().to_owned()],
            Box::new(move || {
                let (core, slot, encoded) = (attempt_core.clone(), slot.clone(), encoded.clone());
                let landed = landed.clone();
                Box::pin(async move {
                    let notice = notice(core.id, 0, Some(&encoded));
                    if !landed.load(Ordering::Acquire) {
                        core.backend
                            .invalidate(&slot, &core.cache_keys, &notice)
                            .await?;
                        landed.store(true, Ordering::Release);
                    }
                    core.backend.notify(&core.cache_keys, &notice).await
                })
            }),
        );
    }

    fn invalidate_all(&self) {
        let core = self.core.clone();
        let attempt_core = core.clone();
        core.write_behind(
            "invalidate_all",
            vec![whole_cache_pending(&core.name)],
            Box::new(move || {
                let core = attempt_core.clone();
                Box::pin(async move {
                    let generation = core
                        .backend
                        .invalidate_all(&core.cache_keys, core.id)
                        .await?;
                    core.raise_generation(generation);
                    Ok(())
                })
            }),
        );
    }
}

/// Queues `invalidate_tag(tag)` on `backend`'s write-behind: the tag's
/// values and locks deleted fleet-wide, every process told. Once per
/// backend, whether or not this process has built a cache using it.
pub(crate) fn invalidate_tag_on(backend: &Arc<dyn Backend>, tag: &str) {
    let attempt_backend = backend.clone();
    let attempt_tag = tag.to_owned();
    backend.writes().push(Write {
        what: "invalidate_tag",
        cache: String::new(),
        pending: vec![tag_pending(tag)],
        // A tag's set lives as long as the longest-lived entry recorded in
        // it; without knowing every cache, retry for as long as the queue
        // allows.
        give_up: after(Instant::now(), FOREVER),
        on_error: Box::new(|_| {}),
        attempt: Box::new(move || {
            let (backend, tag) = (attempt_backend.clone(), attempt_tag.clone());
            Box::pin(async move { backend.invalidate_tag(&tag).await })
        }),
    });
}

/// The pending key of all of a cache's keys (slots never start with `*`).
fn whole_cache_pending(cache: &str) -> String {
    format!("*{cache}")
}

/// The pending-invalidation key of a tag (slots and `""` never start with `#`).
fn tag_pending(tag: &str) -> String {
    format!("#{tag}")
}

/// Runs a backend clean-up in the current runtime; outside of one, it is
/// left to its lease (logged).
fn spawn_or_skip(cache: &str, task: impl Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(task);
        }
        Err(_) => tracing::warn!(cache, "no tokio runtime: the shared tier was not updated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{Freshness, Windows};

    const TTL: Duration = Duration::from_secs(30);

    fn decoded(generation: u64, stale: Duration) -> Decoded<u32> {
        Decoded {
            value: 7,
            generation,
            stale,
            delta: Duration::from_millis(5),
            lead: Duration::ZERO,
        }
    }

    #[test]
    fn remote_freshness_is_the_backends_time_left_clamped_to_our_windows() {
        let now = Instant::now();
        let stale = Duration::from_secs(60);
        // 10 s fresh + 60 s stale left by the backend's clock.
        let left = Duration::from_secs(70);
        let loaded = usable(decoded(0, stale), left, Need::Value, now, TTL, stale, 0).unwrap();
        assert_eq!(loaded.fresh_for, Duration::from_secs(10));
        assert_eq!(loaded.stale_for, stale);
        // A writer with a longer ttl (or corrupt bytes) cannot stretch a value past ours.
        let huge = usable(decoded(0, stale), FOREVER, Need::Value, now, TTL, stale, 0).unwrap();
        assert_eq!(huge.fresh_for, TTL);
        let wide = usable(
            decoded(0, FOREVER),
            FOREVER,
            Need::Value,
            now,
            TTL,
            stale,
            0,
        );
        assert_eq!(
            wide.map(|l| l.stale_for),
            None,
            "all of it stale: not fresh"
        );
        // Only stale time left: not usable as fresh.
        assert!(usable(decoded(0, stale), stale, Need::Value, now, TTL, stale, 0).is_none());
    }

    #[test]
    fn values_of_an_older_generation_are_never_used() {
        let now = Instant::now();
        let left = Duration::from_secs(10);
        assert!(
            usable(
                decoded(2, Duration::ZERO),
                left,
                Need::Value,
                now,
                TTL,
                Duration::ZERO,
                3
            )
            .is_none()
        );
        assert!(
            usable(
                decoded(3, Duration::ZERO),
                left,
                Need::Value,
                now,
                TTL,
                Duration::ZERO,
                3
            )
            .is_some()
        );
        assert!(
            usable(
                decoded(4, Duration::ZERO),
                left,
                Need::Value,
                now,
                TTL,
                Duration::ZERO,
                3
            )
            .is_some()
        );
    }

    #[test]
    fn a_refresh_only_takes_a_newer_value() {
        let now = Instant::now();
        let seen = Freshness::written(
            now,
            Duration::from_secs(5),
            Windows::default(),
            Duration::ZERO,
            Duration::ZERO,
        );
        let need = Need::Refresh(seen);
        let same = usable(
            decoded(0, Duration::ZERO),
            Duration::from_secs(5),
            need,
            now,
            TTL,
            Duration::ZERO,
            0,
        );
        assert!(same.is_none(), "the copy being refreshed");
        let newer = usable(
            decoded(0, Duration::ZERO),
            Duration::from_secs(20),
            need,
            now,
            TTL,
            Duration::ZERO,
            0,
        );
        assert!(newer.is_some());
    }
}
