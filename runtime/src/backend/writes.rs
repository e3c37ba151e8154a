//! The write-behind of one backend: this process's writes to the shared
//! tier — `insert`, `invalidate`, `invalidate_tag`, `invalidate_all` — applied
//! in call order, each retried until it lands.
//!
//! A write that supersedes cached values must never be lost in silence: a
//! lost `invalidate` lets every other pod read the old value back for its
//! remaining ttl. So a write that fails (an error, a timeout, an open
//! breaker) is retried with backoff, and the writes behind it wait: one
//! queue, one consumer, so an `insert` followed by an `invalidate` of the
//! same key cannot land in the other order. A write is given up only once
//! what it protects against is gone by itself (its `give_up` instant: every
//! value it would replace or delete has expired in the backend by then), or
//! when the queue is full (logged at error level and counted). Until a write
//! has landed its keys are *pending*: this process's flights of those keys
//! wait for it (bounded), and load without the shared tier if it has not
//! landed by then, so no flight here reads back what it was told to forget.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{BackendError, BoxFut};

/// Retry backoff of a failed write: doubles from the first to the last.
const FIRST_RETRY: Duration = Duration::from_millis(20);
const LAST_RETRY: Duration = Duration::from_secs(1);

/// The most writes queued at once; past it a write is refused (logged at
/// error level, counted in [`WriteBehind::refused`]).
pub(crate) const MAX_QUEUED: usize = 100_000;

/// One attempt at a write; called again on every retry.
pub(crate) type Attempt = Box<dyn FnMut() -> BoxFut<Result<(), BackendError>> + Send>;

/// A write waiting its turn.
pub(crate) struct Write {
    /// What it is, for the log: `"invalidate"`, `"insert"`, ...
    pub what: &'static str,
    /// The cache it belongs to (empty for a tag, which spans caches).
    pub cache: String,
    /// The pending keys it holds until it lands or is given up: slots,
    /// `*<cache>` for a whole cache, `#<tag>` for a tag.
    pub pending: Vec<String>,
    /// Past this instant the write is moot (what it supersedes has expired).
    pub give_up: Instant,
    /// Called when a failed attempt is retried or the write is given up
    /// (counts the backend error in the cache's stats).
    pub on_error: Box<dyn Fn(&BackendError) + Send>,
    pub attempt: Attempt,
}

/// Releases a write's pending keys when it is dropped: landed, given up,
/// or lost with its runtime.
struct Held {
    writes: Weak<WriteBehind>,
    keys: Vec<String>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(writes) = self.writes.upgrade() {
            writes.release(&self.keys);
        }
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<(Write, Held)>,
    /// Whether a consumer task is running (it exits when the queue is empty).
    draining: bool,
    /// Pending keys, with how many queued writes hold each.
    pending: HashMap<String, usize>,
}

/// The ordered, retried write-behind of one backend (see the module docs).
#[derive(Default)]
pub(crate) struct WriteBehind {
    state: Mutex<State>,
    /// Rung whenever a write lands or is given up.
    progress: Notify,
    retries: AtomicU64,
    refused: AtomicU64,
    given_up: AtomicU64,
}

impl WriteBehind {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `write` behind this process's earlier writes, its keys
    /// pending from now on. Outside a tokio runtime it cannot run: refused
    /// (logged).
    pub(crate) fn push(self: &Arc<Self>, write: Write) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(cache = %write.cache, what = write.what, "no tokio runtime: this write to the shared tier cannot run; other processes may keep the old value until it expires");
            return;
        };
        let start = {
            let mut state = self.lock();
            if state.queue.len() >= MAX_QUEUED {
                drop(state);
                self.refused.fetch_add(1, Ordering::Relaxed);
                (write.on_error)(&BackendError::new("write-behind queue full"));
                tracing::error!(cache = %write.cache, what = write.what, queued = MAX_QUEUED, "the shared tier has been unreachable for too long: write refused; other processes may keep the old value until it expires");
                return;
            }
            for key in &write.pending {
                *state.pending.entry(key.clone()).or_default() += 1;
            }
            let held = Held {
                writes: Arc::downgrade(self),
                keys: write.pending.clone(),
            };
            state.queue.push_back((write, held));
            !std::mem::replace(&mut state.draining, true)
        };
        if start {
            self.spawn_consumer(&runtime);
        }
    }

    fn spawn_consumer(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        // Moved into the task, so a task dropped unpolled clears `draining` too.
        let consumer = Consumer {
            writes: self.clone(),
            finished: false,
        };
        runtime.spawn(consumer.drain());
    }

    /// Writes queued but no consumer (the runtime of the one that ran them
    /// shut down — another test's, another runtime of the application):
    /// start one on the caller's runtime, so a waiter never waits on a
    /// queue nobody drains.
    fn resume(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let start = {
            let mut state = self.lock();
            !state.queue.is_empty() && !std::mem::replace(&mut state.draining, true)
        };
        if start {
            self.spawn_consumer(&runtime);
        }
    }

    fn release(&self, keys: &[String]) {
        {
            let mut state = self.lock();
            for key in keys {
                if let Some(count) = state.pending.get_mut(key) {
                    *count -= 1;
                    if *count == 0 {
                        state.pending.remove(key);
                    }
                }
            }
        }
        self.progress.notify_waiters();
    }

    fn any_pending(&self, keys: &[&str]) -> bool {
        let state = self.lock();
        keys.iter().any(|key| state.pending.contains_key(*key))
    }

    /// Waits until none of `keys` is pending, at most `bound`: whether they
    /// all landed (else the caller must not read the shared tier for them).
    pub(crate) async fn settled(self: &Arc<Self>, keys: &[&str], bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            let progress = self.progress.notified();
            self.resume();
            if !self.any_pending(keys) {
                return true;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return !self.any_pending(keys);
            }
        }
    }

    /// Waits until every write queued so far has landed (or been given
    /// up), at most `bound`: whether the queue is empty.
    pub(crate) async fn flushed(self: &Arc<Self>, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        loop {
            let progress = self.progress.notified();
            self.resume();
            if self.lock().pending.is_empty() {
                return true;
            }
            if tokio::time::timeout_at(deadline, progress).await.is_err() {
                return self.lock().pending.is_empty();
            }
        }
    }

    /// Failed attempts retried so far.
    pub(crate) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Writes refused (queue full, no runtime) or given up so far.
    pub(crate) fn lost(&self) -> u64 {
        self.refused.load(Ordering::Relaxed) + self.given_up.load(Ordering::Relaxed)
    }
}

/// The one task applying a backend's writes. Dropped before it finished
/// (its runtime shut down, polled or not), it clears `draining`, so the
/// next `push` starts another.
struct Consumer {
    writes: Arc<WriteBehind>,
    /// Set when it exits on an empty queue (having cleared `draining` itself).
    finished: bool,
}

impl Consumer {
    /// The consumer: one write at a time, in order, each until it lands or
    /// is given up. Exits when the queue is empty; if its runtime drops it,
    /// the next `push` starts another.
    async fn drain(mut self) {
        let writes = self.writes.clone();
        loop {
            let next = {
                let mut state = writes.lock();
                match state.queue.pop_front() {
                    Some(next) => next,
                    None => {
                        state.draining = false;
                        self.finished = true;
                        return;
                    }
                }
            };
            // Put back at the head if this task is dropped mid-write.
            let mut in_hand = InHand {
                writes: writes.clone(),
                item: Some(next),
            };
            let (write, _) = in_hand.item.as_mut().expect("just set");
            let mut backoff = FIRST_RETRY;
            loop {
                match (write.attempt)().await {
                    Ok(()) => break,
                    Err(error) => {
                        (write.on_error)(&error);
                        let now = Instant::now();
                        if now >= write.give_up {
                            writes.given_up.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(cache = %write.cache, what = write.what, %error, "a write to the shared tier was given up: what it superseded has expired by now");
                            break;
                        }
                        writes.retries.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(cache = %write.cache, what = write.what, %error, retry_in = ?backoff, "write to the shared tier failed; retrying");
                        // The last retry is at the give-up instant, never skipped.
                        tokio::time::sleep(backoff.min(write.give_up - now)).await;
                        backoff = (backoff * 2).min(LAST_RETRY);
                    }
                }
            }
            // Landed or given up: its pending keys are released.
            in_hand.item = None;
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if !self.finished {
            self.writes.lock().draining = false;
            // Waiters (flush, settling flights) resume the queue.
            self.writes.progress.notify_waiters();
        }
    }
}

/// The write the consumer is working on. If the consumer is dropped
/// mid-write (its runtime shut down), the write goes back to the head of
/// the queue, so the next consumer — started by the next `push`, from any
/// runtime — tries it again first.
struct InHand {
    writes: Arc<WriteBehind>,
    item: Option<(Write, Held)>,
}

impl Drop for InHand {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.writes.lock().queue.push_front(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn write(
        pending: &str,
        give_up: Duration,
        log: Arc<Mutex<Vec<String>>>,
        fail_first: usize,
    ) -> Write {
        let tries = Arc::new(AtomicUsize::new(0));
        let name = pending.to_owned();
        Write {
            what: "test",
            cache: "c".into(),
            pending: vec![pending.to_owned()],
            give_up: Instant::now() + give_up,
            on_error: Box::new(|_| {}),
            attempt: Box::new(move || {
                let (tries, log, name) = (tries.clone(), log.clone(), name.clone());
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    if tries.fetch_add(1, Ordering::SeqCst) < fail_first {
                        return Err(BackendError::new("down"));
                    }
                    log.lock().unwrap().push(name);
                    Ok(())
                })
            }),
        }
    }

    /// A write pushed from a runtime that shut down before its consumer ran
    /// (another test's, another runtime of the application): the queue had
    /// no consumer until the next push, and a flush waited on it in vain
    /// (an intermittent CI failure of `fleet_rules`). A waiter resumes it.
    #[test]
    fn a_queue_left_by_a_runtime_that_shut_down_is_drained_by_the_next_waiter() {
        let writes = Arc::new(WriteBehind::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // Pushed inside `first`, whose consumer task is never polled.
        first.block_on(async {
            writes.push(write("a", Duration::from_secs(60), log.clone(), 0));
        });
        drop(first);
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let flushed = second.block_on(writes.flushed(Duration::from_secs(2)));
        assert!(flushed, "the write waited for a consumer that was gone");
        assert_eq!(*log.lock().unwrap(), ["a"]);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_land_in_order_and_a_failing_one_is_retried_before_the_next() {
        let writes = Arc::new(WriteBehind::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let long = Duration::from_secs(60);
        writes.push(write("a", long, log.clone(), 3));
        writes.push(write("b", long, log.clone(), 0));
        assert!(writes.any_pending(&["a"]) && writes.any_pending(&["b"]));
        assert!(
            !writes.settled(&["b"], Duration::from_millis(10)).await,
            "b waits behind a's retries"
        );
        assert!(writes.settled(&["a", "b"], long).await);
        assert_eq!(*log.lock().unwrap(), ["a", "b"]);
        assert_eq!(writes.retries(), 3);
        assert_eq!(writes.lost(), 0);
        assert!(writes.settled(&["a"], Duration::ZERO).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_given_up_only_when_it_is_moot() {
        let writes = Arc::new(WriteBehind::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        writes.push(write("a", Duration::from_secs(2), log.clone(), usize::MAX));
        assert!(writes.settled(&["a"], Duration::from_secs(60)).await);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "retried meanwhile"
        );
        assert!(
            started.elapsed() <= Duration::from_millis(2005),
            "given up after its last attempt, made at the give-up instant"
        );
        assert_eq!(writes.lost(), 1);
        assert!(log.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_fails_until_just_before_it_is_moot_still_lands() {
        // Backoff 20, 40, .., 640 ms: the sixth failure is at 650 ms, the next
        // backoff would overshoot the 1.2 s give-up, so the retry is moved to
        // the give-up instant instead of dropping a write that would land.
        let writes = Arc::new(WriteBehind::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        writes.push(write("a", Duration::from_millis(1200), log.clone(), 6));
        assert!(writes.settled(&["a"], Duration::from_secs(60)).await);
        assert_eq!(*log.lock().unwrap(), ["a"], "the seventh attempt landed");
        assert_eq!(writes.lost(), 0);
    }

    #[test]
    fn a_write_whose_runtime_died_is_run_by_the_next_runtime() {
        let writes = Arc::new(WriteBehind::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let paused = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        let first = paused();
        first.block_on(async {
            writes.push(write("a", Duration::from_secs(60), log.clone(), 1));
            tokio::time::sleep(Duration::from_millis(1)).await;
        });
        drop(first);
        paused().block_on(async {
            writes.push(write("b", Duration::from_secs(60), log.clone(), 0));
            assert!(writes.settled(&["b"], Duration::from_secs(5)).await);
        });
        assert_eq!(
            *log.lock().unwrap(),
            ["a", "b"],
            "a, cut off with its runtime, ran first in the next one"
        );
    }
}
