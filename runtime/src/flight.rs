//! Per-key single flight: one detached load, any number of callers awaiting it.
//!
//! The load runs as its own spawned task. Callers — the one that started it
//! included — only await its outcome, so a caller that is cancelled, slow or
//! never polled can neither cancel nor stall the load (the failure of moka
//! #240 and of crates whose flights die with their leader).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use tokio::sync::Notify;

/// A loader error, type-erased so one flight map serves every error type.
pub(crate) type ErasedError = Arc<dyn Any + Send + Sync>;

/// A panic payload, held until the flight's starter takes it.
type PanicPayload = Box<dyn Any + Send>;

/// How a flight ended.
#[derive(Clone)]
pub(crate) enum Outcome<V> {
    Loaded(V),
    Failed(ErasedError),
    /// The loader panicked. The starter re-raises the panic; others retry.
    Panicked,
    /// The load task was dropped before it finished (runtime shut down or task aborted).
    Abandoned,
}

/// One in-flight load of one key.
pub(crate) struct Flight<V> {
    outcome: OnceLock<Outcome<V>>,
    done: Notify,
    panic: Mutex<Option<PanicPayload>>,
}

impl<V> Flight<V> {
    pub(crate) fn new() -> Self {
        Self {
            outcome: OnceLock::new(),
            done: Notify::new(),
            panic: Mutex::new(None),
        }
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

/// Runs a future, turning a panic in any of its polls into `Err(payload)`.
pub(crate) struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(future: F) -> Self {
        Self(Box::pin(future))
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, PanicPayload>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// A readable message from a panic payload, for logs.
pub(crate) fn panic_message(payload: &PanicPayload) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic payload>"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
