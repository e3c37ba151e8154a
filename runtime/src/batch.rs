//! One batch loader call for the flights of many keys (`get_many_or_load`).
//!
//! Every key of a batch gets its own flight, exactly as a single call's
//! would (so every per-key rule — coalescing, writes win, tags, fail-safe,
//! timeouts, the fleet lock — holds unchanged); what the batch shares is
//! the *origin*. Each flight's origin is a [`Member`] of one [`Gather`]:
//! when the flight needs the origin it registers its key, and the gather
//! calls the user's loader once for every registered key (in chunks of at
//! most `max_batch`) as soon as no member may still need it:
//!
//! - the call that started the flights has started them all (`seal`), and
//! - every member has registered, ended without needing the origin (its
//!   flight found the value in the shared tier), or is *parked*: waiting
//!   on another process's load of its key, which it may never need to
//!   repeat. A parked member that later takes over registers into a new
//!   round, which goes as soon as nobody else is deciding.
//!
//! The loader runs as its own spawned task, bounded by `load_timeout`:
//! like a single load, no caller — cancelled, slow or never polled — can
//! cancel or stall it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::panic::resume_unwind;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::backend::OriginLoad;
use crate::core::Inner;
use crate::landing::StartOrigin;
use crate::load::{CatchUnwind, ErasedError, LoadTimeout, NotFound, Parking, panic_message};
use crate::stats::Counters;

/// The default [`max_batch`](crate::CacheBuilder::max_batch): the most keys
/// one loader call is given.
pub const DEFAULT_MAX_BATCH: usize = 1000;

/// What a batch loader may return: its rows, by key.
///
/// - `HashMap<K, V>`: a key the loader leaves out is **not found** — its
///   callers get no value for it, nothing is cached, and its old value is
///   dropped (the origin says it is gone).
/// - `HashMap<K, T>` for a cache of `Option<T>`: a key the loader leaves
///   out is cached as `None` (negative caching: the next call for it is a
///   hit, not another query).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::collections::HashMap;
/// use stampede_cache::Cache;
///
/// let users: Cache<u32, Option<String>> = Cache::builder("doc.rows").build();
/// let rows = users
///     .get_many_or_load([1, 2], |ids: Vec<u32>| async move {
///         // a `WHERE id = ANY($1)` that finds only id 1
///         ids.into_iter().filter(|id| *id == 1).map(|id| (id, format!("user {id}"))).collect::<HashMap<_, _>>()
///     })
///     .await;
/// assert_eq!(rows[&1].as_deref(), Some("user 1"));
/// assert_eq!(rows[&2], None); // cached as absent
/// assert_eq!(users.get(&2), Some(None));
/// # }
/// ```
pub trait BatchRows<K, V>: Send + 'static {
    /// The value of each requested key the rows give one.
    fn into_rows(self, requested: &[K]) -> HashMap<K, V>;
}

impl<K, V> BatchRows<K, V> for HashMap<K, V>
where
    K: Send + 'static,
    V: Send + 'static,
{
    fn into_rows(self, _requested: &[K]) -> HashMap<K, V> {
        self
    }
}

impl<K, T> BatchRows<K, Option<T>> for HashMap<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
{
    fn into_rows(mut self, requested: &[K]) -> HashMap<K, Option<T>> {
        requested
            .iter()
            .map(|key| (key.clone(), self.remove(key)))
            .collect()
    }
}

/// The user's batch loader, erased: keys in, rows (or the erased error) out.
pub(crate) type BatchCall<K, V> = Arc<
    dyn Fn(Vec<K>) -> Pin<Box<dyn Future<Output = Result<HashMap<K, V>, ErasedError>> + Send>>
        + Send
        + Sync,
>;

/// What a member's key got from its loader call.
enum Answer<V> {
    Value(V),
    /// The loader's error (to every key of the call), a [`NotFound`], or a
    /// [`LoadTimeout`] of the call.
    Failed(ErasedError),
    /// The loader panicked: every key's flight panics with this message.
    Panicked(String),
}

/// Where one member stands. Invariant: `State::undecided` counts the
/// members that are `Undecided`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Its flight may still need the origin.
    Undecided,
    /// Its flight waits on another process's load of its key.
    Parked,
    Registered,
    /// Its flight ended without the origin.
    Gone,
}

struct State<K, V> {
    /// Who may still add members: each call while it starts its flights
    /// (synchronously), and the gather's tick while it is open. While any
    /// is, nothing is called.
    contributors: usize,
    /// The tick ended: no call joins any more.
    closed: bool,
    /// A force-fire timer runs for the ready keys (see [`DECIDE_BOUND`]).
    timer_armed: bool,
    statuses: Vec<Status>,
    undecided: usize,
    /// Registered keys waiting for the next loader call, with the member's
    /// index (the caller's key order) and where its answer goes.
    ready: Vec<Ready<K, V>>,
}

/// A registered key waiting for its loader call.
struct Ready<K, V> {
    /// The member's index: the caller's key order.
    index: usize,
    key: K,
    answer: oneshot::Sender<Answer<V>>,
    seat: Arc<Seat>,
}

/// A member's place in the loader call that loads its key, once there is
/// one: when the last member waiting on a call leaves (its flight was cut
/// by its own deadline, or dropped), the call is cut at once — as dropping
/// a single load's future cuts it — so no second load of those keys can
/// start beside it.
#[derive(Default)]
struct Seat(OnceLock<Arc<LoaderCall>>);

impl Seat {
    fn leave(&self) {
        if let Some(call) = self.0.get() {
            call.leave();
        }
    }
}

/// How long keys ready for a loader call wait for the batch's other keys
/// to decide (a flight settling this process's own write of its key, a
/// slow lock round trip): then the call goes with the ready ones, the
/// others follow in a later call. A bound, so one slow key never holds
/// back — or, under `load_timeout`, times out — the rest of its batch.
const DECIDE_BOUND: Duration = Duration::from_millis(25);

/// The end of a gather's tick: closes it (when the tick's task runs, or
/// is dropped unpolled) and takes it out of the cache's open slot.
struct Tick<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    inner: std::sync::Weak<Inner<K, V>>,
    gather: Arc<Gather<K, V>>,
}

impl<K, V> Drop for Tick<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            let mut open = inner.open_batch.lock().unwrap_or_else(|e| e.into_inner());
            if open.as_ref().is_some_and(|g| Arc::ptr_eq(g, &self.gather)) {
                *open = None;
            }
        }
        self.gather.close();
    }
}

/// The open gather of a cache: the one batch calls arriving now join.
pub(crate) type OpenBatch<K, V> = std::sync::Mutex<Option<Arc<Gather<K, V>>>>;

/// The shared origin of one batch's flights.
pub(crate) struct Gather<K, V> {
    call: BatchCall<K, V>,
    max_batch: usize,
    /// `load_timeout`: no loader call runs longer.
    bound: Option<Duration>,
    cache: Arc<str>,
    counters: Arc<Counters>,
    state: Mutex<State<K, V>>,
}

impl<K, V> Gather<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(inner: &Inner<K, V>, call: BatchCall<K, V>) -> Arc<Self> {
        Arc::new(Self {
            call,
            max_batch: inner.max_batch,
            bound: inner.load_timeout.map(|policy| policy.bound),
            cache: Arc::from(&*inner.name),
            counters: inner.counters.clone(),
            state: Mutex::new(State {
                contributors: 1,
                closed: false,
                timer_armed: false,
                statuses: Vec::new(),
                undecided: 0,
                ready: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<K, V>> {
        // No user code runs under this lock; a panic cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new member, for a flight about to start.
    pub(crate) fn member(self: &Arc<Self>) -> Arc<Member<K, V>> {
        let mut state = self.lock();
        state.statuses.push(Status::Undecided);
        state.undecided += 1;
        Arc::new(Member {
            gather: self.clone(),
            index: state.statuses.len() - 1,
        })
    }

    /// Another call adds members (its misses go into the same loader
    /// call), unless the gather's tick has ended.
    fn contribute(&self) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.contributors += 1;
        true
    }

    /// A contributor is done adding: the loader may go once every other
    /// contributor is done and no member is still deciding.
    pub(crate) fn seal(self: &Arc<Self>) {
        let state = self.lock();
        self.done_contributing(state, false);
    }

    /// The gather's tick ended: no call joins any more.
    fn close(self: &Arc<Self>) {
        let state = self.lock();
        self.done_contributing(state, true);
    }

    fn done_contributing(self: &Arc<Self>, mut state: MutexGuard<'_, State<K, V>>, close: bool) {
        state.closed |= close;
        state.contributors = state.contributors.saturating_sub(1);
        self.go_if_ready(state, false);
    }

    /// The gather a batch call adds its misses to (already counted as one
    /// of its contributors: `seal` it once its flights are started), and
    /// whether the loader is this call's own.
    ///
    /// Calls arriving together share one: the cache's open gather stays
    /// open for one tick — a spawned task yields once (after the calls
    /// scheduled beside it have run), then closes it; DataLoader's batching
    /// window. The tick is the spawned task's, never a caller's: a call
    /// that is never polled again cannot hold anyone's keys back. Outside
    /// a runtime the gather is the call's own.
    pub(crate) fn join(inner: &Arc<Inner<K, V>>, call: &BatchCall<K, V>) -> (Arc<Self>, bool) {
        let mut open = inner.open_batch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(gather) = open.as_ref()
            && gather.contribute()
        {
            return (gather.clone(), false);
        }
        let gather = Self::new(inner, call.clone());
        // The new gather's first contributor is this call; the tick is a second.
        gather.lock().contributors += 1;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            gather.lock().contributors -= 1;
            return (gather, true);
        };
        *open = Some(gather.clone());
        let tick = Tick {
            inner: Arc::downgrade(inner),
            gather: gather.clone(),
        };
        // Closes the gather however the task ends (also dropped unpolled
        // by a runtime shutting down).
        runtime.spawn(async move {
            let _tick = tick;
            tokio::task::yield_now().await;
        });
        (gather, true)
    }

    /// Moves member `index` to `status` (keeping `undecided` true), and
    /// calls the loader if that was the last member deciding.
    fn set(self: &Arc<Self>, index: usize, status: Status, ready: Option<Ready<K, V>>) {
        let mut state = self.lock();
        let was = state.statuses[index];
        if was == status || was == Status::Gone || was == Status::Registered {
            return;
        }
        if was == Status::Undecided {
            state.undecided -= 1;
        }
        if status == Status::Undecided {
            state.undecided += 1;
        }
        state.statuses[index] = status;
        if let Some(ready) = ready {
            state.ready.push(ready);
        }
        self.go_if_ready(state, false);
    }

    /// Calls the loader for the ready keys once nobody may add to them —
    /// or, `force`d, when they have waited [`DECIDE_BOUND`] for members
    /// still deciding (those go into a later call).
    fn go_if_ready(self: &Arc<Self>, mut state: MutexGuard<'_, State<K, V>>, force: bool) {
        if state.ready.is_empty() {
            return;
        }
        if !force && (state.contributors > 0 || state.undecided > 0) {
            if !state.timer_armed
                && let Ok(runtime) = tokio::runtime::Handle::try_current()
            {
                state.timer_armed = true;
                let gather = Arc::downgrade(self);
                runtime.spawn(async move {
                    tokio::time::sleep(DECIDE_BOUND).await;
                    if let Some(gather) = gather.upgrade() {
                        let mut state = gather.lock();
                        state.timer_armed = false;
                        gather.go_if_ready(state, true);
                    }
                });
            }
            return;
        }
        let mut ready = std::mem::take(&mut state.ready);
        drop(state);
        ready.sort_unstable_by_key(|ready| ready.index);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Only when the last member left as its runtime shut down: the
            // answers are dropped, the flights end without an outcome.
            return;
        };
        while !ready.is_empty() {
            let rest = ready.split_off(ready.len().min(self.max_batch));
            let chunk = std::mem::replace(&mut ready, rest);
            self.call_loader(&runtime, chunk);
        }
    }

    /// Spawns one loader call for `chunk`, its rows handed to each key's
    /// flight.
    fn call_loader(&self, runtime: &tokio::runtime::Handle, chunk: Vec<Ready<K, V>>) {
        // Keys whose flight is already gone are not asked for.
        let chunk: Vec<Ready<K, V>> = chunk
            .into_iter()
            .filter(|r| !r.answer.is_closed())
            .collect();
        if chunk.is_empty() {
            return;
        }
        self.counters.batch_calls.incr();
        // A key can be in one chunk twice (its flight was superseded by a
        // write and a call of the same tick started a new one): asked once,
        // its row answers both.
        let mut asked = std::collections::HashSet::with_capacity(chunk.len());
        let keys: Vec<K> = chunk
            .iter()
            .filter(|ready| asked.insert(&ready.key))
            .map(|ready| ready.key.clone())
            .collect();
        self.counters.loads.add(keys.len());
        tracing::debug!(cache = %self.cache, keys = keys.len(), "batch loader call");
        let call = self.call.clone();
        let (bound, cache, counters) = (self.bound, self.cache.clone(), self.counters.clone());
        let size = keys.len();
        // The call is made inside the catch: a loader that panics before
        // its first await is caught like one that panics later.
        let load = CatchUnwind::new(async move { call(keys).await });
        let load: CallFuture<K, V> = Box::pin(async move {
            let mut timer = crate::metrics::LoadTimer::start(cache.clone(), true);
            let outcome = match bound {
                None => load.await,
                Some(bound) => match tokio::time::timeout(bound, load).await {
                    Ok(outcome) => outcome,
                    Err(_elapsed) => {
                        counters.load_timeouts.add(size);
                        timer.end("timeout");
                        return Ok(Err(Arc::new(LoadTimeout::new(&cache, bound)) as ErasedError));
                    }
                },
            };
            timer.end(match &outcome {
                Ok(Ok(_)) => "ok",
                Ok(Err(_)) => "error",
                Err(_) => "panic",
            });
            outcome
        });
        let loader_call = Arc::new(LoaderCall {
            load: Mutex::new(Some(Box::new(load))),
            waiting: Mutex::new(chunk.len()),
        });
        for ready in &chunk {
            let _ = ready.seat.0.set(loader_call.clone());
        }
        runtime.spawn(answer_chunk(loader_call, chunk));
    }
}

/// A loader call's future: its rows, its error, or its panic.
type CallFuture<K, V> = Pin<
    Box<
        dyn Future<Output = Result<Result<HashMap<K, V>, ErasedError>, crate::load::PanicPayload>>
            + Send,
    >,
>;

/// One running loader call, cut (its future dropped) when no key waits
/// for it any more.
struct LoaderCall {
    /// `None` once it finished or was cut. Erased (`dyn Any`) so a
    /// [`Seat`] needs no `K`, `V`.
    load: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    /// Members still waiting for this call.
    waiting: Mutex<usize>,
}

impl LoaderCall {
    fn leave(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        *waiting = waiting.saturating_sub(1);
        if *waiting > 0 {
            return;
        }
        drop(waiting);
        let cut = self.load.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Dropped outside the lock: the user's future may run code on drop.
        drop(cut);
    }
}

/// The task of one loader call: polls it until it ends (or is cut), then
/// hands each key its answer.
async fn answer_chunk<K, V>(call: Arc<LoaderCall>, chunk: Vec<Ready<K, V>>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let outcome = std::future::poll_fn(|cx| {
        let mut slot = call.load.lock().unwrap_or_else(|e| e.into_inner());
        let Some(load) = slot.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let load = load
            .downcast_mut::<CallFuture<K, V>>()
            .expect("a loader call holds its own future type");
        match load.as_mut().poll(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(outcome) => {
                *slot = None;
                std::task::Poll::Ready(Some(outcome))
            }
        }
    })
    .await;
    let Some(outcome) = outcome else {
        return; // cut: nobody waits
    };
    match outcome {
        Ok(Ok(rows)) => {
            for ready in chunk {
                let _ = ready.answer.send(match rows.get(&ready.key) {
                    Some(value) => Answer::Value(value.clone()),
                    None => Answer::Failed(Arc::new(NotFound)),
                });
            }
        }
        Ok(Err(error)) => {
            for ready in chunk {
                let _ = ready.answer.send(Answer::Failed(error.clone()));
            }
        }
        Err(payload) => {
            let message = panic_message(&payload).to_owned();
            for ready in chunk {
                let _ = ready.answer.send(Answer::Panicked(message.clone()));
            }
        }
    }
}

/// One flight's share of a batch.
pub(crate) struct Member<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    gather: Arc<Gather<K, V>>,
    index: usize,
}

impl<K, V> Parking for Member<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn park(&self) {
        self.gather.set(self.index, Status::Parked, None);
    }

    fn unpark(&self) {
        self.gather.set(self.index, Status::Undecided, None);
    }
}

impl<K, V> Drop for Member<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        // Dropped unregistered: its flight ended without the origin.
        self.gather.set(self.index, Status::Gone, None);
    }
}

/// Leaves a [`Seat`] on drop.
struct Leave(Arc<Seat>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// A member as a flight's origin: registers its key when the flight needs
/// the origin, then awaits its share of the loader call.
pub(crate) struct BatchOrigin<K, V>(pub Arc<Member<K, V>>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static;

impl<K, V> StartOrigin<K, V> for BatchOrigin<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn start(self, _inner: &Inner<K, V>, key: K) -> OriginLoad<V> {
        let member = self.0;
        Box::pin(async move {
            let started = Instant::now();
            let (send, answer) = oneshot::channel();
            let seat = Arc::new(Seat::default());
            let ready = Ready {
                index: member.index,
                key,
                answer: send,
                seat: seat.clone(),
            };
            // Leaves the loader call when this flight stops waiting for
            // it, however (answered, cut by its deadline, dropped).
            let _leave = Leave(seat);
            member
                .gather
                .set(member.index, Status::Registered, Some(ready));
            // Not bounded here: the loader call is (by `load_timeout`, from
            // when it starts), and answers with the timeout once it is cut
            // — a key's flight never times out while its query still runs.
            let answer = answer.await;
            match answer {
                Ok(Answer::Value(value)) => Ok((value, started.elapsed())),
                Ok(Answer::Failed(error)) => Err(error),
                Ok(Answer::Panicked(message)) => {
                    resume_unwind(Box::new(format!("batch loader panicked: {message}")))
                }
                // The loader call's task was dropped (its runtime shut down).
                Err(_dropped) => resume_unwind(Box::new(
                    "the batch loader call was dropped before it finished (runtime shut down?)"
                        .to_owned(),
                )),
            }
        })
    }
}
