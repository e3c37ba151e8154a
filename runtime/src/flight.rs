//! One flight and the map of them: per key at most one detached load, any
//! number of callers awaiting its [`Outcome`]. Starting and landing a flight
//! is `landing.rs`'s job; this file holds only what they share with the
//! call path, and imports nothing of the cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::Notify;

use crate::load::{ErasedError, PanicPayload};
use crate::tags::Tags;

/// How a flight ended.
#[derive(Clone)]
pub(crate) enum Outcome<V> {
    Loaded(V),
    /// The loader's error, or an `Arc<LoadTimeout>`.
    Failed(ErasedError),
    /// The loader panicked. The starter re-raises the panic; others retry.
    Panicked,
    /// The load ended without an outcome: its task was dropped (runtime shut
    /// down, task aborted) or never ran.
    Abandoned,
}

/// One in-flight load of one key.
pub(crate) struct Flight<V> {
    outcome: OnceLock<Outcome<V>>,
    done: Notify,
    panic: Mutex<Option<PanicPayload>>,
    /// The tags of the entry being loaded: a tag invalidation supersedes the flight.
    tags: Option<Tags>,
    /// The load's span: a waiter's span follows from it, so a slow
    /// request's trace shows which load it waited on.
    pub(crate) span: tracing::Span,
}

impl<V> Flight<V> {
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::traced(None, tracing::Span::none())
    }

    pub(crate) fn traced(tags: Option<Tags>, span: tracing::Span) -> Self {
        Self {
            outcome: OnceLock::new(),
            done: Notify::new(),
            panic: Mutex::new(None),
            tags,
            span,
        }
    }

    /// Whether the entry this flight loads carries `tag`.
    pub(crate) fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_ref()
            .is_some_and(|tags| tags.iter().any(|t| &**t == tag))
    }

    /// Publishes the outcome and wakes every waiter. Only the first call counts.
    pub(crate) fn complete(&self, outcome: Outcome<V>) {
        if self.outcome.set(outcome).is_ok() {
            self.done.notify_waiters();
        }
    }

    pub(crate) fn store_panic(&self, payload: PanicPayload) {
        *self.panic.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
    }

    /// The loader's panic payload, for the caller that started the flight.
    pub(crate) fn take_panic(&self) -> Option<PanicPayload> {
        self.panic.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl<V: Clone> Flight<V> {
    /// Waits until the flight ends. Cancel-safe: dropping the future only stops waiting.
    pub(crate) async fn wait(&self) -> Outcome<V> {
        loop {
            // Registered before the check, so a completion between the check
            // and the await still wakes us (notify_waiters reaches every
            // `Notified` created before it).
            let notified = self.done.notified();
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            notified.await;
        }
    }
}

/// The running flights of one cache, by key.
///
/// Invariant: a key maps to the flight whose outcome may still be cached.
/// `insert` and `invalidate` remove it (under this lock) so that the flight
/// lands nothing, and a flight caches its value only if it is still the
/// key's flight, checked and stored under this lock.
pub(crate) struct Flights<K, V>(Mutex<FlightMap<K, V>>);

/// The map behind [`Flights`]' lock. No user code (a `tags` or `ttl_for`
/// closure) and no lookup that takes this lock again runs while it is held.
pub(crate) type FlightMap<K, V> = HashMap<K, Arc<Flight<V>>>;

impl<K, V> Default for Flights<K, V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K, V> Flights<K, V> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, FlightMap<K, V>> {
        // Nothing panics while holding this lock in our code; if a user's
        // Hash or Eq did, the map is still consistent, so poisoning is ignored.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{CatchUnwind, panic_message};
    use std::time::Duration;

    #[tokio::test]
    async fn every_waiter_sees_the_outcome_even_if_registered_late() {
        let flight = Arc::new(Flight::<u32>::new());
        let early: Vec<_> = (0..10)
            .map(|_| {
                let f = flight.clone();
                tokio::spawn(async move { f.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        flight.complete(Outcome::Loaded(7));
        flight.complete(Outcome::Loaded(8)); // ignored: the first outcome wins
        for w in early {
            assert!(matches!(w.await.unwrap(), Outcome::Loaded(7)));
        }
        assert!(matches!(flight.wait().await, Outcome::Loaded(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_waiter_does_not_disturb_the_others() {
        let flight = Arc::new(Flight::<u32>::new());
        let f = flight.clone();
        let cancelled =
            tokio::time::timeout(Duration::from_millis(10), async move { f.wait().await }).await;
        assert!(cancelled.is_err());
        let f = flight.clone();
        let waiter = tokio::spawn(async move { f.wait().await });
        flight.complete(Outcome::Loaded(1));
        assert!(matches!(waiter.await.unwrap(), Outcome::Loaded(1)));
    }

    #[tokio::test]
    async fn catch_unwind_turns_a_panic_into_its_payload() {
        let caught = CatchUnwind::new(async {
            tokio::task::yield_now().await;
            panic!("boom in the second poll");
        })
        .await;
        let payload = caught.expect_err("the panic is caught");
        assert_eq!(panic_message(&payload), "boom in the second poll");
        assert_eq!(CatchUnwind::new(async { 5 }).await.ok(), Some(5));
    }
}
