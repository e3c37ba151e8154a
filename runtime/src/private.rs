//! Paths the `#[stampede_cached]` expansion names. Not public API: it may change in any release.
//!
//! Every bound the macro needs is checked here, through a trait whose
//! `#[diagnostic::on_unimplemented]` message tells the user what to change, so the
//! expansion stays a thin call into the runtime.

use std::borrow::Cow;
use std::future::Future;
use std::hash::Hash;

pub use std::sync::LazyLock;
pub use std::time::Duration;

use crate::{Cache, SharedKey, SharedValue, Strategy};

/// A `&self` receiver the detached load can own a copy of.
#[diagnostic::on_unimplemented(
    message = "#[stampede_cached] on a `&self` method needs `{Self}: Clone + Send + Sync + 'static`: the load runs as a detached task on a clone of the receiver\nhelp: add `#[derive(Clone)]` to `{Self}`, or hold its state in an `Arc`"
)]
pub trait Receiver: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Receiver for T {}

/// A part of a cache key.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a #[stampede_cached] key: keys need `Hash + Eq + Clone + Send + Sync + 'static`\nhelp: `skip(..)` this argument, or compute a key with `key: Type = <expr>`"
)]
pub trait KeyPart: Hash + Eq + Clone + Send + Sync + 'static {}
impl<T: Hash + Eq + Clone + Send + Sync + 'static> KeyPart for T {}

/// An argument moved (as an owned copy) into the detached load.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be moved into the detached load of #[stampede_cached]: it must be `Send + 'static`\nhelp: take an owned, `Send` argument (e.g. an `Arc<T>`)"
)]
pub trait Movable: Send + 'static {}
impl<T: Send + 'static> Movable for T {}

/// An argument taken by reference whose owned copy the detached load takes.
#[diagnostic::on_unimplemented(
    message = "#[stampede_cached] needs an owned copy of `&{Self}` for the detached load, but `{Self}` is not `ToOwned` (or `Clone`)\nhelp: derive `Clone` for `{Self}`, or take the argument by value (e.g. an `Arc<{Self}>`)"
)]
pub trait Borrowed {
    /// `<Self as ToOwned>::Owned`.
    type Owned;
    /// `ToOwned::to_owned`.
    fn own(&self) -> Self::Owned;
}
impl<T: ?Sized + ToOwned> Borrowed for T {
    type Owned = T::Owned;
    #[inline(always)]
    fn own(&self) -> T::Owned {
        self.to_owned()
    }
}

/// A cached value.
#[diagnostic::on_unimplemented(
    message = "#[stampede_cached] cannot cache `{Self}`: cached values need `Clone + Send + Sync + 'static`\nhelp: wrap it in an `Arc` (every hit clones the value)"
)]
pub trait Value: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Value for T {}

/// The error of a `Result`-returning cached fn.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` must be `Clone + Send + Sync + 'static`: #[stampede_cached] hands the `Err` of one load to every caller waiting on it\nhelp: return `Result<T, Arc<{Self}>>`, or derive `Clone`"
)]
pub trait Error: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Error for T {}

/// The return type of a fn the macro treats as fallible: `Result<T, E>` under any alias.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Result`, but #[stampede_cached] treats it as one\nhelp: remove `returns = \"result\"`, or return `Result<T, E>`"
)]
pub trait IsResult {
    /// The `Ok` type: the cached value.
    type Ok;
    /// The `Err` type: shared with the waiters of a failed load, never cached.
    type Err;
    /// Into a plain `Result`.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
    /// From a plain `Result`.
    fn from_result(r: Result<Self::Ok, Self::Err>) -> Self;
}
impl<T, E> IsResult for Result<T, E> {
    type Ok = T;
    type Err = E;
    #[inline(always)]
    fn into_result(self) -> Self {
        self
    }
    #[inline(always)]
    fn from_result(r: Self) -> Self {
        r
    }
}

/// The receiver's clone the detached load runs on.
#[inline(always)]
pub fn receiver<S: Receiver>(this: &S) -> S {
    this.clone()
}

/// An owned key part, moved.
#[inline(always)]
pub fn key<T: KeyPart>(part: T) -> T {
    part
}

/// The owned key part of a borrowed argument.
#[inline(always)]
pub fn key_owned<T: ?Sized + Borrowed>(part: &T) -> T::Owned
where
    T::Owned: KeyPart,
{
    part.own()
}

/// An owned argument moved into the load.
#[inline(always)]
pub fn moved<T: Movable>(arg: T) -> T {
    arg
}

/// The owned copy of a borrowed argument for the load.
#[inline(always)]
pub fn owned<T: ?Sized + Borrowed>(arg: &T) -> T::Owned
where
    T::Owned: Movable,
{
    arg.own()
}

/// `Cache::get_or_load_with`, for `-> T` and `-> Option<T>`. The loader is
/// built (receiver and skipped arguments cloned) only when a load starts.
#[inline(always)]
pub fn load<K, V, M, F, Fut>(
    cache: &'static Cache<K, V>,
    key: K,
    make_loader: M,
) -> impl Future<Output = V>
where
    K: KeyPart,
    V: Value,
    M: FnOnce() -> F,
    F: FnOnce(K) -> Fut + Send + 'static,
    Fut: Future<Output = V> + Send + 'static,
{
    cache.get_or_load_with(key, make_loader)
}

/// `Cache::try_get_or_load_with`, for `-> Result<T, E>` and its aliases (`R: IsResult`).
#[inline(always)]
pub fn try_load<R, K, M, F, Fut>(
    cache: &'static Cache<K, R::Ok>,
    key: K,
    make_loader: M,
) -> impl Future<Output = R>
where
    R: IsResult,
    K: KeyPart,
    R::Ok: Value,
    R::Err: Error,
    M: FnOnce() -> F,
    F: FnOnce(K) -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let fut = cache.try_get_or_load_with(key, move || {
        let loader = make_loader();
        move |key| {
            let load = loader(key);
            async move { load.await.into_result() }
        }
    });
    async move { R::from_result(fut.await) }
}

/// The static cache of one in-process function.
pub fn cache<K: KeyPart, V: Value>(
    name: impl Into<Cow<'static, str>>,
    ttl: Duration,
    strategy: Strategy,
    capacity: Option<u64>,
) -> Cache<K, V> {
    let mut b = Cache::builder(name).ttl(ttl).strategy(strategy);
    if let Some(c) = capacity {
        b = b.capacity(usize::try_from(c).unwrap_or(usize::MAX));
    }
    b.build()
}

/// The static cache of one `shared` function.
pub fn shared_cache<K: SharedKey, V: SharedValue>(
    name: impl Into<Cow<'static, str>>,
    ttl: Duration,
    strategy: Strategy,
    capacity: Option<u64>,
    lock_ttl: Option<Duration>,
) -> Cache<K, V> {
    let mut b = Cache::builder(name).ttl(ttl).strategy(strategy).shared();
    if let Some(c) = capacity {
        b = b.capacity(usize::try_from(c).unwrap_or(usize::MAX));
    }
    if let Some(l) = lock_ttl {
        b = b.lock_ttl(l);
    }
    b.build()
}
