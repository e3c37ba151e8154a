//! What a load is and how it can end, shared by the single flight and the
//! fleet tier (a leaf: it imports neither): the erased error, the
//! `load_timeout` error, why a flight runs, and catching a loader's panic.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::strategy::Freshness;

/// A loader error, type-erased so one flight map serves every error type.
pub(crate) type ErasedError = Arc<dyn Any + Send + Sync>;

/// A panic payload, held until the flight's starter takes it.
pub(crate) type PanicPayload = Box<dyn Any + Send>;

/// The error of a load that ran past the cache's `load_timeout`: the load was
/// dropped. Callers of a `Result` fn receive it as `E::from(LoadTimeout)`
/// (when no fail-safe value can stand in).
///
/// ```
/// use stampede_cache::LoadTimeout;
///
/// #[derive(Clone, Debug)]
/// enum RepoError { Timeout(LoadTimeout), Db(String) }
/// impl From<LoadTimeout> for RepoError {
///     fn from(timeout: LoadTimeout) -> Self { RepoError::Timeout(timeout) }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadTimeout {
    cache: Arc<str>,
    after: Duration,
}

impl LoadTimeout {
    pub(crate) fn new(cache: &str, after: Duration) -> Self {
        Self {
            cache: cache.into(),
            after,
        }
    }

    /// The name of the cache whose load timed out.
    pub fn cache(&self) -> &str {
        &self.cache
    }

    /// The bound the load ran past (the cache's `load_timeout`).
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for LoadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stampede-cache `{}`: the load timed out after {:?} and was dropped",
            self.cache, self.after
        )
    }
}

impl std::error::Error for LoadTimeout {}

/// Why a flight runs: a caller that has no usable value, or a background
/// refresh of a value that is still being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// No usable value: the caller waits; any fresh value will do.
    Value,
    /// A refresh (XFetch early, `swr` stale) of the entry with this timing:
    /// only a value newer than that one will do, and it starts only while
    /// that entry is still the one cached.
    Refresh(Freshness),
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

/// A batch's view of one of its flights (see `batch.rs`): the batch calls
/// its loader once no flight it started may still need it, so a flight that
/// is about to wait on another process's load says so — it does not hold
/// back the loader call of the keys that are ready.
pub(crate) trait Parking: Send + Sync {
    /// This flight waits on a load elsewhere: do not wait for it.
    fn park(&self);
    /// This flight is deciding again (it may need the loader after all).
    fn unpark(&self);
}

/// The erased error of a key a batch loader did not return: "not found".
/// The flight caches nothing and drops the key's old value (the origin
/// says it is gone); a batch caller leaves the key out of its map, a
/// single caller that joined loads it with its own loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NotFound;
