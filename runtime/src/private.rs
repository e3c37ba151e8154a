//! Paths the `#[stampede_cached]` expansion names. Not public API: it may change in any release.
//!
//! Every bound the macro needs is checked here, through a trait whose
//! `#[diagnostic::on_unimplemented]` message tells the user what to change, so the
//! expansion stays a thin call into the runtime.

use std::borrow::Cow;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;

pub use std::sync::OnceLock;
pub use std::time::Duration;

use crate::{Cache, CacheBuilder, LoadTimeout, SharedKey, SharedValue, Strategy};

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

/// The default name of a method's cache: `<module path>::<Self type>::<fn>`, without the
/// type's generic arguments: the one static cache of a method in `impl<T> Repo<T>` serves
/// every `Repo<T>`, and its name must not depend on which of them used it first.
pub fn method_name<S: ?Sized>(fn_name: &str) -> String {
    let ty = std::any::type_name::<S>();
    let ty = ty.split_once('<').map_or(ty, |(path, _)| path);
    format!("{ty}::{fn_name}")
}

/// What `#[stampede_cached]` sets on a cache: one setter per attribute argument, applied
/// to a [`CacheBuilder`] by [`cache`] or [`shared_cache`], whose bounds check the key and
/// value types and, through [`TimeoutError`], the error type `E` of a `load_timeout` fn
/// ([`NoTimeout`] without it).
#[must_use]
pub struct Options<E = NoTimeout> {
    name: Cow<'static, str>,
    ttl: Option<Duration>,
    strategy: Option<Strategy>,
    capacity: Option<u64>,
    lock_ttl: Option<Duration>,
    fail_safe: Option<Duration>,
    soft_timeout: Option<Duration>,
    load_timeout: Option<Duration>,
    timeout_error: PhantomData<fn() -> E>,
}

impl Options {
    /// Options of the cache called `name`, every one at the builder's default.
    #[inline]
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Options {
            name: name.into(),
            ttl: None,
            strategy: None,
            capacity: None,
            lock_ttl: None,
            fail_safe: None,
            soft_timeout: None,
            load_timeout: None,
            timeout_error: PhantomData,
        }
    }
}

impl<E> Options<E> {
    /// `ttl = ".."`.
    #[inline]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// `strategy = ".."` with `stale` / `beta`.
    #[inline]
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// `capacity = n`.
    #[inline]
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// `lock_ttl = ".."` (applied by [`shared_cache`] only).
    #[inline]
    pub fn lock_ttl(mut self, lock_ttl: Duration) -> Self {
        self.lock_ttl = Some(lock_ttl);
        self
    }

    /// `fail_safe = ".."`.
    #[inline]
    pub fn fail_safe(mut self, window: Duration) -> Self {
        self.fail_safe = Some(window);
        self
    }

    /// `soft_timeout = ".."`.
    #[inline]
    pub fn soft_timeout(mut self, after: Duration) -> Self {
        self.soft_timeout = Some(after);
        self
    }

    /// `load_timeout = ".."` on a fn whose error type is `R`; [`cache`] / [`shared_cache`]
    /// check that it can report a timeout.
    #[inline]
    pub fn load_timeout<R>(self, bound: Duration) -> Options<R> {
        Options {
            name: self.name,
            ttl: self.ttl,
            strategy: self.strategy,
            capacity: self.capacity,
            lock_ttl: self.lock_ttl,
            fail_safe: self.fail_safe,
            soft_timeout: self.soft_timeout,
            load_timeout: Some(bound),
            timeout_error: PhantomData,
        }
    }

    fn apply<K: KeyPart, V: Value>(
        self,
        builder: CacheBuilder<K, V>,
    ) -> (CacheBuilder<K, V>, Option<Duration>)
    where
        E: TimeoutError,
    {
        let mut b = builder;
        if let Some(ttl) = self.ttl {
            b = b.ttl(ttl);
        }
        if let Some(strategy) = self.strategy {
            b = b.strategy(strategy);
        }
        if let Some(c) = self.capacity {
            b = b.capacity(usize::try_from(c).unwrap_or(usize::MAX));
        }
        if let Some(window) = self.fail_safe {
            b = b.fail_safe(window);
        }
        if let Some(after) = self.soft_timeout {
            b = b.soft_timeout(after);
        }
        if let Some(bound) = self.load_timeout {
            b = E::load_timeout(b, bound);
        }
        (b, self.lock_ttl)
    }
}

/// The static cache of one in-process function.
pub fn cache<K: KeyPart, V: Value>(mut options: Options<impl TimeoutError>) -> Cache<K, V> {
    let b = Cache::builder(std::mem::take(&mut options.name));
    options.apply(b).0.build()
}

/// The static cache of one `shared` function.
pub fn shared_cache<K: SharedKey, V: SharedValue>(
    mut options: Options<impl TimeoutError>,
) -> Cache<K, V> {
    let b = Cache::builder(std::mem::take(&mut options.name)).shared();
    let (mut b, lock_ttl) = options.apply(b);
    if let Some(l) = lock_ttl {
        b = b.lock_ttl(l);
    }
    b.build()
}

/// The `E` of [`Options`] without `load_timeout`.
pub enum NoTimeout {}

/// The error type `E` of a fn with `load_timeout` (`Result<T, E>` under any alias): a load
/// that timed out is reported as `Err(E::from(LoadTimeout))`.
#[diagnostic::on_unimplemented(
    message = "#[stampede_cached(load_timeout = ..)] reports a load that timed out as `Err(<{Self}>::from(LoadTimeout))`, but `{Self}` does not implement `From<stampede_cache::LoadTimeout>`",
    label = "`{Self}` needs `From<stampede_cache::LoadTimeout>` (and `Clone + Send + Sync + 'static`)",
    note = "add: `impl From<stampede_cache::LoadTimeout> for {Self} {{ fn from(t: stampede_cache::LoadTimeout) -> Self {{ /* e.g. Self::Timeout(t) */ }} }}`",
    note = "an error type of another crate cannot get that impl in yours: wrap it in an error type of your own, or remove `load_timeout`"
)]
pub trait TimeoutError {
    /// `builder.load_timeout::<Self>(bound)`.
    fn load_timeout<K: KeyPart, V: Value>(
        builder: CacheBuilder<K, V>,
        bound: Duration,
    ) -> CacheBuilder<K, V>;
}

impl TimeoutError for NoTimeout {
    #[inline]
    fn load_timeout<K: KeyPart, V: Value>(
        builder: CacheBuilder<K, V>,
        _: Duration,
    ) -> CacheBuilder<K, V> {
        builder
    }
}

impl<E: From<LoadTimeout> + Clone + Send + Sync + 'static> TimeoutError for E {
    #[inline]
    fn load_timeout<K: KeyPart, V: Value>(
        builder: CacheBuilder<K, V>,
        bound: Duration,
    ) -> CacheBuilder<K, V> {
        builder.load_timeout::<E>(bound)
    }
}
