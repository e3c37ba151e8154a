//! Paths the `#[stampede_cached]` expansion names. Not public API: it may change in any release.
//!
//! Every bound the macro needs is checked here, through a trait whose
//! `#[diagnostic::on_unimplemented]` message tells the user what to change, so the
//! expansion stays a thin call into the runtime. The blanket impls carry
//! `#[diagnostic::do_not_recommend]`: rustc then reports the one trait that is missing,
//! with our message, instead of each of its supertraits in turn (`Hash`, then `Eq`, ...).
//!
//! One function, [`cached`] (or [`try_cached`]), holds every bound on the key, value and
//! error types, through [`Tier`]. The fn and its `<fn>_cache()` handle both call it, with the
//! same tokens on the same span: rustc reports a bound the fn's types fail once per body,
//! and the two bodies' reports are identical, so one is printed. (A bound checked by two
//! functions would be reported twice; and the fn awaits the runtime's future, whose type
//! re-checks the bounds of the function that returned it.)

use std::any::TypeId;
use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Debug;
use std::future::{Future, IntoFuture, Ready};
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, OnceLock};

pub use std::time::Duration;

use crate::{Cache, CacheBuilder, LoadTimeout, RemoteLoadError, SharedKey, SharedValue, Strategy};

// ---- what the types must be -------------------------------------------------------------

/// A `&self` receiver the detached load can own a copy of.
#[diagnostic::on_unimplemented(
    message = "#[stampede_cached] on a `&self` method needs `{Self}: Clone + Send + Sync + 'static`: the load runs as a detached task on a clone of the receiver",
    label = "`{Self}` must be `Clone + Send + Sync + 'static`",
    note = "add `#[derive(Clone)]` to `{Self}`, or hold its state in an `Arc`"
)]
pub trait Receiver: Clone + Send + Sync + 'static {}
#[diagnostic::do_not_recommend]
impl<T: Clone + Send + Sync + 'static> Receiver for T {}

/// A cache key (the owned arguments that form it, or a computed key).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a #[stampede_cached] key: keys need `Hash + Eq + Clone + Send + Sync + 'static`",
    label = "the key is `{Self}`",
    note = "`skip(..)` the arguments that cannot be part of a key, or compute one with `key = ..` (e.g. `key = format!(\"{{x}}\")` for a float)"
)]
pub trait KeyPart: Hash + Eq + Clone + Send + Sync + 'static {}
#[diagnostic::do_not_recommend]
impl<T: Hash + Eq + Clone + Send + Sync + 'static> KeyPart for T {}

/// The key of a `shared` cache.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the key of a `shared` #[stampede_cached] fn: it crosses the fleet, so it needs serde's `Serialize + DeserializeOwned` (and `Hash + Eq + Clone + Send + Sync + 'static`)",
    label = "the key is `{Self}`",
    note = "derive them: `#[derive(serde::Serialize, serde::Deserialize)]`, or drop `shared` to keep this cache in-process"
)]
pub trait SharedKeyPart: KeyPart + SharedKey {}
#[diagnostic::do_not_recommend]
impl<T: KeyPart + SharedKey> SharedKeyPart for T {}

/// A value the cache holds.
#[diagnostic::on_unimplemented(
    message = "#[stampede_cached] cannot cache `{Self}`: cached values need `Clone + Send + Sync + 'static`",
    label = "the cached value is `{Self}`",
    note = "wrap it in an `Arc` (every hit clones the value)"
)]
pub trait Value: Clone + Send + Sync + 'static {}
#[diagnostic::do_not_recommend]
impl<T: Clone + Send + Sync + 'static> Value for T {}

/// The value of a `shared` cache.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the value of a `shared` #[stampede_cached] fn: it crosses the fleet, so it needs serde's `Serialize + DeserializeOwned` (and `Clone + Send + Sync + 'static`)",
    label = "the cached value is `{Self}`",
    note = "derive them: `#[derive(serde::Serialize, serde::Deserialize)]`, or drop `shared` to keep this cache in-process"
)]
pub trait SharedValuePart: Value + SharedValue {}
#[diagnostic::do_not_recommend]
impl<T: Value + SharedValue> SharedValuePart for T {}

/// The error of a `Result`-returning cached fn.
#[diagnostic::on_unimplemented(
    message = "the error type `{Self}` must be `Clone + Send + Sync + 'static`: #[stampede_cached] hands the `Err` of one load to every caller waiting on it",
    label = "the error type is `{Self}`",
    note = "return `Result<T, Arc<{Self}>>`, or derive `Clone`"
)]
pub trait Error: Clone + Send + Sync + 'static {}
#[diagnostic::do_not_recommend]
impl<T: Clone + Send + Sync + 'static> Error for T {}

/// An argument taken by value and moved into the detached load (a skipped argument).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be moved into the detached load of #[stampede_cached]: it must be `Send + 'static`",
    label = "moved into the load",
    note = "take an owned, `Send` argument (e.g. an `Arc<T>`), or make the argument part of the key"
)]
pub trait Movable: Send + 'static {}
#[diagnostic::do_not_recommend]
impl<T: Send + 'static> Movable for T {}

/// An argument taken by reference and left out of the key: the detached load takes its own
/// copy of it.
#[diagnostic::on_unimplemented(
    message = "#[stampede_cached] cannot give the detached load its own copy of `&{Self}`: `{Self}` is not `Clone`",
    label = "the load runs as a detached task and takes its own copy of this argument",
    note = "derive `Clone` for `{Self}` (cheap when its state is in an `Arc`), or take the argument as an `Arc<{Self}>`"
)]
pub trait LoadArg<Owned> {
    /// `ToOwned::to_owned`.
    fn own(&self) -> Owned;
}
#[diagnostic::do_not_recommend]
impl<T: ?Sized + ToOwned> LoadArg<T::Owned> for T {
    #[inline(always)]
    fn own(&self) -> T::Owned {
        self.to_owned()
    }
}

/// An argument taken by reference that is part of the key: the key holds an owned copy.
#[diagnostic::on_unimplemented(
    message = "#[stampede_cached] cannot put an owned copy of `&{Self}` in the key: `{Self}` is not `Clone` (or `ToOwned`)",
    label = "part of the key, which the cache owns",
    note = "derive `Clone` for `{Self}`, `skip(..)` the argument, or compute a key with `key = ..`"
)]
pub trait KeyArg<Owned> {
    /// `ToOwned::to_owned`.
    fn own(&self) -> Owned;
}
#[diagnostic::do_not_recommend]
impl<T: ?Sized + ToOwned> KeyArg<T::Owned> for T {
    #[inline(always)]
    fn own(&self) -> T::Owned {
        self.to_owned()
    }
}

/// The return type of a fn the macro treats as fallible: `Result<T, E>` under any alias.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Result`, but #[stampede_cached] treats it as one",
    label = "not a `Result`",
    note = "remove `returns = \"result\"`, or return `Result<T, E>`"
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

/// The cached value of a fn with `none_ttl`: an `Option`.
#[diagnostic::on_unimplemented(
    message = "`none_ttl` needs a fn that returns `Option<T>` or `Result<Option<T>, E>`, but the cached value is `{Self}`",
    label = "`none_ttl` is the ttl of a cached `None`",
    note = "remove `none_ttl`, or return an `Option`"
)]
pub trait IsOption {
    /// Whether this is `None`.
    fn is_none(&self) -> bool;
}
impl<T> IsOption for Option<T> {
    #[inline]
    fn is_none(&self) -> bool {
        Option::is_none(self)
    }
}

/// What a `tags(..)` expression yields.
#[diagnostic::on_unimplemented(
    message = "a `tags(..)` expression must yield a tag: something `Into<String>`, not `{Self}`",
    label = "this tag is a `{Self}`",
    note = "write e.g. `tags(format!(\"user:{{id}}\"))`"
)]
pub trait Tag {
    /// The tag's text.
    fn into_tag(self) -> String;
}
#[diagnostic::do_not_recommend]
impl<T: Into<String>> Tag for T {
    #[inline]
    fn into_tag(self) -> String {
        self.into()
    }
}

/// What a `batch` fn returns (the `Ok` of a fallible one): its rows, by key.
#[diagnostic::on_unimplemented(
    message = "a `batch` #[stampede_cached] fn returns the rows it found keyed by the elements of its list, `HashMap<{K}, {T}>`, not `{Self}`",
    label = "the keys of the list are `{K}`",
    note = "key the map by the list's element type, or take the list as `&[K]` / `Vec<K>` of the map's key type"
)]
pub trait Rows<K, T>: Sized {
    /// The map.
    fn into_map(self) -> HashMap<K, T>;
    /// Back from the map (the found keys the wrapper returns).
    fn from_map(map: HashMap<K, T>) -> Self;
}
impl<K, T> Rows<K, T> for HashMap<K, T> {
    #[inline(always)]
    fn into_map(self) -> Self {
        self
    }
    #[inline(always)]
    fn from_map(map: Self) -> Self {
        map
    }
}

/// The error type `E` of a fn with `load_timeout` (`Result<T, E>` under any alias): a load
/// that timed out is reported as `Err(E::from(LoadTimeout))`.
#[diagnostic::on_unimplemented(
    message = "#[stampede_cached(load_timeout = ..)] reports a load that timed out as `Err(<{Self}>::from(LoadTimeout))`, but `{Self}` does not implement `From<stampede_cache::LoadTimeout>`",
    label = "`{Self}` needs `From<stampede_cache::LoadTimeout>` (and `Clone + Send + Sync + 'static`)",
    note = "add: `impl From<stampede_cache::LoadTimeout> for {Self} {{ fn from(t: stampede_cache::LoadTimeout) -> Self {{ /* e.g. Self::Timeout(t) */ }} }}`",
    note = "an error type of another crate cannot get that impl in yours: wrap it in an error type of your own, or remove `load_timeout`"
)]
pub trait TimeoutError: Send + 'static {
    /// `builder.load_timeout::<Self>(bound)`.
    fn load_timeout<K: KeyPart, V: Value>(
        builder: CacheBuilder<K, V>,
        bound: Duration,
    ) -> CacheBuilder<K, V>;
}
#[diagnostic::do_not_recommend]
impl<E: From<LoadTimeout> + Clone + Send + Sync + 'static> TimeoutError for E {
    #[inline]
    fn load_timeout<K: KeyPart, V: Value>(
        builder: CacheBuilder<K, V>,
        bound: Duration,
    ) -> CacheBuilder<K, V> {
        builder.load_timeout::<E>(bound)
    }
}

// ---- the arguments ----------------------------------------------------------------------

/// The receiver's clone the detached load runs on.
#[inline(always)]
pub fn receiver<S: Receiver>(this: &S) -> S {
    this.clone()
}

/// The owned key part of an argument taken by reference (`&str` → `String`).
#[inline(always)]
pub fn owned_key<T: ?Sized + KeyArg<O>, O>(arg: &T) -> O {
    arg.own()
}

/// The load's own copy of a skipped argument taken by reference.
#[inline(always)]
pub fn owned<T: ?Sized + LoadArg<O>, O: Movable>(arg: &T) -> O {
    arg.own()
}

/// A skipped argument taken by value, moved into the load.
#[inline(always)]
pub fn moved<T: Movable>(arg: T) -> T {
    arg
}

/// The list argument of a `batch` fn: `&[K]` / `&Vec<K>` (cloned, where the key bounds are
/// known) or `Vec<K>` (moved).
pub enum Keys<'a, K> {
    /// `&[K]`, `&Vec<K>`.
    Borrowed(&'a [K]),
    /// `Vec<K>`.
    Owned(Vec<K>),
}

impl<K: Clone> Keys<'_, K> {
    fn into_vec(self) -> Vec<K> {
        match self {
            Keys::Borrowed(keys) => keys.to_vec(),
            Keys::Owned(keys) => keys,
        }
    }
}

/// `none_ttl = ".."`: the ttl of an entry is `none` for a cached `None`, else `ttl`. The one
/// place that requires an `Option` (the expansion spans it on `none_ttl`).
#[inline]
pub fn none_ttl<V: IsOption>(none: Duration, ttl: Duration) -> NoneTtl<V> {
    NoneTtl {
        none,
        ttl,
        is_none: <V as IsOption>::is_none,
    }
}

/// What [`none_ttl`] gives [`Options::none_ttl`].
pub struct NoneTtl<V> {
    none: Duration,
    ttl: Duration,
    is_none: fn(&V) -> bool,
}

/// One tag of an entry.
#[inline(always)]
pub fn tag<T: Tag>(tag: T) -> String {
    tag.into_tag()
}

// ---- the call -----------------------------------------------------------------------------

/// Whether a cache is in-process ([`Local`]) or fleet-wide ([`Shared`]), and the bounds on
/// its key, value and error types that come with it (`E` is the error type of a fn that
/// returns a `Result`).
pub trait Tier<K, V, E = Infallible>: Copy {
    /// Builds the cache.
    fn build(self, name: Name, options: Options<K, V>) -> Cache<K, V>;

    /// `Cache::get_or_load_with`.
    fn load<F, Fut>(
        self,
        cache: &'static Cache<K, V>,
        key: K,
        make_loader: impl FnOnce() -> F,
    ) -> impl Future<Output = V>
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static;

    /// `Cache::try_get_or_load_with`.
    fn try_load<F, Fut>(
        self,
        cache: &'static Cache<K, V>,
        key: K,
        make_loader: impl FnOnce() -> F,
    ) -> impl Future<Output = Result<V, E>>
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static;
}

/// An in-process cache.
#[derive(Clone, Copy)]
pub struct Local;

/// A `shared` cache.
#[derive(Clone, Copy)]
pub struct Shared;

impl<K: KeyPart, V: Value, E: Error> Tier<K, V, E> for Local {
    fn build(self, name: Name, options: Options<K, V>) -> Cache<K, V> {
        options.apply(name).0.build()
    }

    #[inline(always)]
    fn load<F, Fut>(
        self,
        cache: &'static Cache<K, V>,
        key: K,
        make_loader: impl FnOnce() -> F,
    ) -> impl Future<Output = V>
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        cache.get_or_load_with(key, make_loader)
    }

    #[inline(always)]
    fn try_load<F, Fut>(
        self,
        cache: &'static Cache<K, V>,
        key: K,
        make_loader: impl FnOnce() -> F,
    ) -> impl Future<Output = Result<V, E>>
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        cache.try_get_or_load_with(key, make_loader)
    }
}

impl<K: SharedKeyPart, V: SharedValuePart, E: Error> Tier<K, V, E> for Shared {
    fn build(self, name: Name, options: Options<K, V>) -> Cache<K, V> {
        let (b, lock_ttl) = options.apply(name);
        let mut b = b.shared();
        if let Some(l) = lock_ttl {
            b = b.lock_ttl(l);
        }
        b.build()
    }

    #[inline(always)]
    fn load<F, Fut>(
        self,
        cache: &'static Cache<K, V>,
        key: K,
        make_loader: impl FnOnce() -> F,
    ) -> impl Future<Output = V>
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        cache.get_or_load_with(key, make_loader)
    }

    #[inline(always)]
    fn try_load<F, Fut>(
        self,
        cache: &'static Cache<K, V>,
        key: K,
        make_loader: impl FnOnce() -> F,
    ) -> impl Future<Output = Result<V, E>>
    where
        F: FnOnce(K) -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        cache.try_get_or_load_with(key, make_loader)
    }
}

/// A fn's cache and, when it is called with a key, the lookup of that key: awaiting it
/// gives the value (loaded if needed); [`Cached::cache`] gives the cache.
pub struct Cached<K: 'static, V: 'static, Fut> {
    cache: &'static Cache<K, V>,
    lookup: Option<Fut>,
}

impl<K, V, Fut> Cached<K, V, Fut> {
    /// The cache (for the `<fn>_cache()` handle).
    #[inline]
    pub fn cache(self) -> &'static Cache<K, V> {
        self.cache
    }
}

impl<K, V, Fut: Future> IntoFuture for Cached<K, V, Fut> {
    type Output = Fut::Output;
    type IntoFuture = Fut;

    #[inline]
    fn into_future(self) -> Fut {
        self.lookup
            .expect("stampede-cache: a cache handle was awaited as a lookup")
    }
}

/// The loader factory of a handle's [`cached`] call, which looks no key up.
pub fn no_loader<K, O>() -> fn(K) -> Ready<O> {
    |_| unreachable!("stampede-cache: a cache handle has no loader")
}

/// The cache of a fn that returns `V` (`T` or `Option<T>`): built in `cell` on first use by
/// `tier`, named by `name`, configured by `configure`; with `Some(key)`, the lookup of
/// `key`, which runs `make_loader()`'s loader when a load starts (a handle passes `None`
/// and [`no_loader`]). Every bound on `K` and `V` is here (through `Tier`).
#[inline(always)]
pub fn cached<K, V, F, Fut>(
    tier: impl Tier<K, V>,
    cell: &'static CacheCell<K, V>,
    name: impl FnOnce() -> Name,
    configure: impl FnOnce(Options<K, V>) -> Options<K, V>,
    key: Option<K>,
    make_loader: impl FnOnce() -> F,
) -> Cached<K, V, impl Future<Output = V>>
where
    F: FnOnce(K) -> Fut + Send + 'static,
    Fut: Future<Output = V> + Send + 'static,
{
    let cache = cell.get_or_init(|| tier.build(name(), configure(Options::new())));
    Cached {
        cache,
        // The loader is handed on through closures of this fn rather than as the caller's
        // own: a caller's closures carry the caller's lifetime parameters (e.g.
        // `'async_trait`), and rustc then fails to prove the lookup `Send` for all of them
        // ("one type is more general than the other") when `#[async_trait]` boxes it.
        lookup: key.map(|key| {
            tier.load(cache, key, move || {
                let loader = make_loader();
                move |key| loader(key)
            })
        }),
    }
}

/// [`cached`] for a fn that returns `R`, a `Result<V, E>` under any alias: `Ok` is cached,
/// the `Err` of a load goes to every caller that waited on it. The expansion names `V` and
/// `E` (`<R as IsResult>::Ok` for an alias), so that an `R` that is no `Result` is reported
/// once, by `IsResult`, and not again by the bounds here.
#[inline(always)]
pub fn try_cached<K, V, E, R, F, Fut>(
    tier: impl Tier<K, V, E>,
    cell: &'static CacheCell<K, V>,
    name: impl FnOnce() -> Name,
    configure: impl FnOnce(Options<K, V>) -> Options<K, V>,
    key: Option<K>,
    make_loader: impl FnOnce() -> F,
) -> Cached<K, V, impl Future<Output = R>>
where
    R: IsResult<Ok = V, Err = E>,
    F: FnOnce(K) -> Fut + Send + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let cache = cell.get_or_init(|| tier.build(name(), configure(Options::new())));
    Cached {
        cache,
        lookup: key.map(|key| {
            let load = tier.try_load(cache, key, move || {
                let loader = make_loader();
                move |key| {
                    let load = loader(key);
                    async move { load.await.into_result() }
                }
            });
            async move { R::from_result(load.await) }
        }),
    }
}

// ---- the batch call -----------------------------------------------------------------------

/// [`Tier`] for a `batch` fn: a cache of `Option<T>` whose loader returns `HashMap<K, T>`
/// (a key it leaves out is cached as `None`: `BatchRows`), with every bound on `K`, `T` and `E` (named
/// on `T`, not `Option<T>`, so that a message names the user's type).
pub trait BatchTier<K, T, E = Infallible>: Copy {
    /// Builds the cache.
    fn build(self, name: Name, options: Options<K, Option<T>>) -> Cache<K, Option<T>>;

    /// The keys of the list argument.
    fn keys(self, keys: Keys<'_, K>) -> Vec<K>;

    /// `Cache::try_get_many_or_load_with`, the found keys of it.
    fn try_load_many<M, F, Fut>(
        self,
        cache: &'static Cache<K, Option<T>>,
        keys: Vec<K>,
        make_loader: M,
    ) -> impl Future<Output = Result<HashMap<K, T>, E>>
    where
        M: FnOnce() -> F,
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, T>, E>> + Send + 'static;
}

impl<K: KeyPart, T: Value, E: Error> BatchTier<K, T, E> for Local {
    fn build(self, name: Name, options: Options<K, Option<T>>) -> Cache<K, Option<T>> {
        Tier::<K, Option<T>, E>::build(self, name, options)
    }

    #[inline(always)]
    fn keys(self, keys: Keys<'_, K>) -> Vec<K> {
        keys.into_vec()
    }

    #[inline(always)]
    fn try_load_many<M, F, Fut>(
        self,
        cache: &'static Cache<K, Option<T>>,
        keys: Vec<K>,
        make_loader: M,
    ) -> impl Future<Output = Result<HashMap<K, T>, E>>
    where
        M: FnOnce() -> F,
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, T>, E>> + Send + 'static,
    {
        let load = cache.try_get_many_or_load_with(keys, make_loader);
        async move { load.await.map(found) }
    }
}

// The same body as `Local`'s on purpose: the bounds live on each impl, so a
// type that misses one is reported once, naming that impl (pinned in the
// ui-tests' `.stderr`); a shared default method would move the bounds to
// every call site.
impl<K: SharedKeyPart, T: SharedValuePart, E: Error> BatchTier<K, T, E> for Shared {
    fn build(self, name: Name, options: Options<K, Option<T>>) -> Cache<K, Option<T>> {
        Tier::<K, Option<T>, E>::build(self, name, options)
    }

    #[inline(always)]
    fn keys(self, keys: Keys<'_, K>) -> Vec<K> {
        keys.into_vec()
    }

    #[inline(always)]
    fn try_load_many<M, F, Fut>(
        self,
        cache: &'static Cache<K, Option<T>>,
        keys: Vec<K>,
        make_loader: M,
    ) -> impl Future<Output = Result<HashMap<K, T>, E>>
    where
        M: FnOnce() -> F,
        F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HashMap<K, T>, E>> + Send + 'static,
    {
        let load = cache.try_get_many_or_load_with(keys, make_loader);
        async move { load.await.map(found) }
    }
}

/// The found keys of a batch (a key cached as absent is left out).
fn found<K: Hash + Eq, T>(values: HashMap<K, Option<T>>) -> HashMap<K, T> {
    values
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect()
}

/// [`cached`] for a `batch` fn that returns `R`, a `HashMap<K, T>`: the cache of `Option<T>`
/// built in `cell`; with `Some(keys)`, the lookup of every key of the list, the misses
/// loaded by calls of `make_loader()`'s loader (at most `max_batch` keys each), the found
/// keys returned. A handle passes `None` and [`no_loader`].
#[inline(always)]
pub fn cached_many<K, T, R, F, Fut>(
    tier: impl BatchTier<K, T>,
    cell: &'static CacheCell<K, Option<T>>,
    name: impl FnOnce() -> Name,
    configure: impl FnOnce(Options<K, Option<T>>) -> Options<K, Option<T>>,
    keys: Option<Keys<'_, K>>,
    make_loader: impl FnOnce() -> F,
) -> Cached<K, Option<T>, impl Future<Output = R>>
where
    R: Rows<K, T>,
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let cache = cell.get_or_init(|| tier.build(name(), configure(Options::new())));
    Cached {
        cache,
        lookup: keys.map(|keys| {
            let keys = tier.keys(keys);
            // Built (the receiver cloned) only when a key must load.
            let make_loader = move || {
                let loader = make_loader();
                move |keys| {
                    let load = loader(keys);
                    async move { Ok::<_, Infallible>(load.await.into_map()) }
                }
            };
            let load = tier.try_load_many(cache, keys, make_loader);
            async move {
                match load.await {
                    Ok(values) => R::from_map(values),
                    Err(never) => match never {},
                }
            }
        }),
    }
}

/// [`cached_many`] for a `batch` fn that returns `R`, a `Result<HashMap<K, T>, E>` under any
/// alias: the `Err` of a loader call answers its keys (and their waiters), nothing is
/// cached for them, and the call returns the first error among its keys.
#[inline(always)]
pub fn try_cached_many<K, T, E, R, F, Fut>(
    tier: impl BatchTier<K, T, E>,
    cell: &'static CacheCell<K, Option<T>>,
    name: impl FnOnce() -> Name,
    configure: impl FnOnce(Options<K, Option<T>>) -> Options<K, Option<T>>,
    keys: Option<Keys<'_, K>>,
    make_loader: impl FnOnce() -> F,
) -> Cached<K, Option<T>, impl Future<Output = R>>
where
    R: IsResult<Err = E>,
    R::Ok: Rows<K, T>,
    F: Fn(Vec<K>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
{
    let cache = cell.get_or_init(|| tier.build(name(), configure(Options::new())));
    Cached {
        cache,
        lookup: keys.map(|keys| {
            let keys = tier.keys(keys);
            // Built (the receiver cloned) only when a key must load.
            let make_loader = move || {
                let loader = make_loader();
                move |keys| {
                    let load = loader(keys);
                    async move { load.await.into_result().map(Rows::into_map) }
                }
            };
            let load = tier.try_load_many(cache, keys, make_loader);
            async move { R::from_result(load.await.map(Rows::from_map)) }
        }),
    }
}

// ---- the cache ----------------------------------------------------------------------------

/// A cache's name.
pub type Name = Cow<'static, str>;

/// The default name of a method's cache: `<module path>::<Self type>::<fn>`, without the
/// type's generic arguments: the one static cache of a method in `impl<T> Repo<T>` serves
/// every `Repo<T>`, and its name must not depend on which of them used it first.
pub fn method_name<S: ?Sized>(fn_name: &str) -> Name {
    let ty = std::any::type_name::<S>();
    let ty = ty.split_once('<').map_or(ty, |(path, _)| path);
    Cow::Owned(format!("{ty}::{fn_name}"))
}

/// The static that holds a fn's cache, built on first use.
///
/// [`CacheCell::new`] is private to the item that declares it. [`CacheCell::shared`] cells
/// with the same site share one cache: a receiver-less fn and its `<fn>_cache()` handle each
/// declare one (the fn cannot call the handle: it does not know whether it is a free fn or an
/// associated fn, so whether the path is `f_cache()` or `Self::f_cache()`).
pub struct CacheCell<K: 'static, V: 'static> {
    site: Option<&'static str>,
    cell: OnceLock<&'static Cache<K, V>>,
}

// SAFETY: a `CacheCell` only ever shares a `Cache<K, V>`, and a `Cache<K, V>` can only be
// built (by `Cache::builder`, whose bounds are `K, V: Send + Sync + 'static`) for types that
// make it `Send + Sync` (checked generically by `cache_is_send_and_sync` below). The cell is
// declared `Sync` without those bounds so that a key or value type that is not `Send` or
// `Sync` is reported once, by `load`'s and `cache`'s bounds with their messages, instead of
// a second time by the `static` item.
unsafe impl<K: 'static, V: 'static> Sync for CacheCell<K, V> {}

#[allow(dead_code)]
fn cache_is_send_and_sync<K: KeyPart, V: Value>() {
    fn check<T: Send + Sync>() {}
    check::<Cache<K, V>>();
}

/// Shared cells: site → (type of the cache, address of the leaked `Cache<K, V>`).
static SITES: Mutex<Option<HashMap<&'static str, (TypeId, usize)>>> = Mutex::new(None);

impl<K: 'static, V: 'static> CacheCell<K, V> {
    /// A cell private to the item that declares it.
    pub const fn new() -> Self {
        CacheCell {
            site: None,
            cell: OnceLock::new(),
        }
    }

    /// A cell that shares its cache with every other cell of `site`.
    pub const fn shared(site: &'static str) -> Self {
        CacheCell {
            site: Some(site),
            cell: OnceLock::new(),
        }
    }

    /// The cache, built by `build` on first use (by the first of the cells of a site).
    #[inline]
    pub fn get_or_init(&'static self, build: impl FnOnce() -> Cache<K, V>) -> &'static Cache<K, V> {
        self.cell.get_or_init(|| match self.site {
            None => Box::leak(Box::new(build())),
            Some(site) => site_cache(site, build),
        })
    }
}

impl<K: 'static, V: 'static> Default for CacheCell<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

fn site_cache<K: 'static, V: 'static>(
    site: &'static str,
    build: impl FnOnce() -> Cache<K, V>,
) -> &'static Cache<K, V> {
    let mut sites = SITES.lock().unwrap_or_else(|e| e.into_inner());
    let sites = sites.get_or_insert_with(HashMap::new);
    let ty = TypeId::of::<Cache<K, V>>();
    if let Some(&(found, address)) = sites.get(site) {
        assert!(
            found == ty,
            "stampede-cache: two #[stampede_cached] fns at `{site}` with different key or value types"
        );
        // SAFETY: `address` is a leaked `Cache<K, V>` (same `TypeId`), never freed.
        return unsafe { &*(address as *const Cache<K, V>) };
    }
    let cache: &'static Cache<K, V> = Box::leak(Box::new(build()));
    sites.insert(site, (ty, cache as *const Cache<K, V> as usize));
    cache
}

/// One builder step whose type parameter was checked where the macro set it
/// (`load_timeout::<E>`, `remote_errors::<E>`), applied when the cache is built.
pub trait Step<K, V>: Send {
    /// Applies the step to `builder`.
    fn apply(self: Box<Self>, builder: CacheBuilder<K, V>) -> CacheBuilder<K, V>
    where
        K: KeyPart,
        V: Value;
}

struct LoadTimeoutStep<E>(Duration, PhantomData<fn() -> E>);

impl<K, V, E: TimeoutError> Step<K, V> for LoadTimeoutStep<E> {
    fn apply(self: Box<Self>, builder: CacheBuilder<K, V>) -> CacheBuilder<K, V>
    where
        K: KeyPart,
        V: Value,
    {
        E::load_timeout(builder, self.0)
    }
}

struct RemoteErrorsStep<E>(PhantomData<fn() -> E>);

impl<K, V, E> Step<K, V> for RemoteErrorsStep<E>
where
    E: From<RemoteLoadError> + Debug + Clone + Send + Sync + 'static,
{
    fn apply(self: Box<Self>, builder: CacheBuilder<K, V>) -> CacheBuilder<K, V>
    where
        K: KeyPart,
        V: Value,
    {
        builder.remote_errors::<E>()
    }
}

type TtlFor<K, V> = Arc<dyn Fn(&K, &V) -> Duration + Send + Sync>;
type TagsOf<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// What `#[stampede_cached]` sets on a cache: one setter per attribute argument, applied to
/// a [`CacheBuilder`] by its [`Tier`] when the cache is built.
#[must_use]
pub struct Options<K, V> {
    ttl: Option<Duration>,
    strategy: Option<Strategy>,
    capacity: Option<u64>,
    lock_ttl: Option<Duration>,
    fail_safe: Option<Duration>,
    soft_timeout: Option<Duration>,
    jitter: Option<Duration>,
    max_batch: Option<u64>,
    ttl_for: Option<TtlFor<K, V>>,
    tags: Option<TagsOf<K>>,
    steps: Vec<Box<dyn Step<K, V>>>,
}

impl<K, V> Options<K, V> {
    fn new() -> Self {
        Options {
            ttl: None,
            strategy: None,
            capacity: None,
            lock_ttl: None,
            fail_safe: None,
            soft_timeout: None,
            jitter: None,
            max_batch: None,
            ttl_for: None,
            tags: None,
            steps: Vec::new(),
        }
    }

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

    /// `lock_ttl = ".."` (applied by [`Shared`] only).
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

    /// `jitter = ".."`.
    #[inline]
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// `max_batch = n` (a `batch` fn).
    #[inline]
    pub fn max_batch(mut self, max_batch: u64) -> Self {
        self.max_batch = Some(max_batch);
        self
    }

    /// `none_ttl = ".."` (see [`none_ttl`]).
    #[inline]
    pub fn none_ttl(mut self, none_ttl: NoneTtl<V>) -> Self
    where
        K: 'static,
        V: 'static,
    {
        let NoneTtl { none, ttl, is_none } = none_ttl;
        self.ttl_for = Some(Arc::new(
            move |_: &K, value: &V| {
                if is_none(value) { none } else { ttl }
            },
        ));
        self
    }

    /// `tags(..)`: the tags of an entry, from its key, computed when its load starts.
    #[inline]
    pub fn tags<const N: usize>(
        mut self,
        tags: impl Fn(&K) -> [String; N] + Send + Sync + 'static,
    ) -> Self
    where
        K: 'static,
    {
        self.tags = Some(Arc::new(move |key: &K| tags(key).into()));
        self
    }

    /// `load_timeout = ".."` on a fn whose error type is `E`.
    #[inline]
    pub fn load_timeout<E: TimeoutError>(mut self, bound: Duration) -> Self {
        self.steps
            .push(Box::new(LoadTimeoutStep::<E>(bound, PhantomData)));
        self
    }

    /// `shared` with `-> Result<_, E>`: the step [`ErrorProbe`] picked for `E`.
    #[inline]
    pub fn remote_errors(mut self, step: Option<Box<dyn Step<K, V>>>) -> Self {
        self.steps.extend(step);
        self
    }

    fn apply(self, name: Cow<'static, str>) -> (CacheBuilder<K, V>, Option<Duration>)
    where
        K: KeyPart,
        V: Value,
    {
        let mut b = Cache::builder(name);
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
        if let Some(jitter) = self.jitter {
            b = b.jitter(jitter);
        }
        if let Some(n) = self.max_batch {
            b = b.max_batch(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(ttl_for) = self.ttl_for {
            b = b.ttl_for(move |key, value| ttl_for(key, value));
        }
        if let Some(tags) = self.tags {
            b = b.tags(move |key| tags(key));
        }
        for step in self.steps {
            b = step.apply(b);
        }
        (b, self.lock_ttl)
    }
}

// ---- remote errors: autoref specialization on the fn's error type ------------------------

/// Picks, for a concrete error type `E`, whether a `shared` cache hands its callers the
/// failure of a load that ran in another process (`E: From<RemoteLoadError> + Debug`) or
/// loads again in process (any other `E`). The expansion calls
/// `(&ErrorProbe::<E>::new()).remote_errors()` with [`RemoteErrorsFrom`] and
/// [`NoRemoteErrors`] in scope: method lookup tries the receiver `&ErrorProbe<E>` first,
/// where only `RemoteErrorsFrom` (implemented when `E` has the impls) applies, then
/// `&&ErrorProbe<E>`, where `NoRemoteErrors` (implemented for every `E`) does. This is
/// autoref specialization (dtolnay); it needs `E` to be a concrete type, as it is in the
/// expansion.
pub struct ErrorProbe<E>(PhantomData<fn() -> E>);

impl<E> ErrorProbe<E> {
    /// The probe for `E`.
    #[inline]
    pub const fn new() -> Self {
        ErrorProbe(PhantomData)
    }
}

impl<E> Default for ErrorProbe<E> {
    fn default() -> Self {
        Self::new()
    }
}

/// The branch of [`ErrorProbe`] for `E: From<RemoteLoadError> + Debug`.
pub trait RemoteErrorsFrom {
    /// `Some(builder.remote_errors::<E>())`.
    fn remote_errors<K, V>(&self) -> Option<Box<dyn Step<K, V>>>;
}

impl<E> RemoteErrorsFrom for ErrorProbe<E>
where
    E: From<RemoteLoadError> + Debug + Clone + Send + Sync + 'static,
{
    #[inline]
    fn remote_errors<K, V>(&self) -> Option<Box<dyn Step<K, V>>> {
        Some(Box::new(RemoteErrorsStep::<E>(PhantomData)))
    }
}

/// The branch of [`ErrorProbe`] for every other `E`.
pub trait NoRemoteErrors {
    /// `None`: a failure elsewhere makes this process load on its own.
    fn remote_errors<K, V>(&self) -> Option<Box<dyn Step<K, V>>>;
}

impl<E> NoRemoteErrors for &ErrorProbe<E> {
    #[inline]
    fn remote_errors<K, V>(&self) -> Option<Box<dyn Step<K, V>>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug)]
    struct Plain;

    #[derive(Clone, Debug)]
    enum Fleet {
        Remote(#[allow(dead_code)] RemoteLoadError),
    }

    impl From<RemoteLoadError> for Fleet {
        fn from(e: RemoteLoadError) -> Self {
            Fleet::Remote(e)
        }
    }

    /// The probe as the expansion writes it, for a concrete `E`.
    macro_rules! probe {
        ($e:ty) => {{
            #[allow(unused_imports)]
            use super::{NoRemoteErrors as _, RemoteErrorsFrom as _};
            (&ErrorProbe::<$e>::new())
                .remote_errors::<u64, u64>()
                .is_some()
        }};
    }

    #[test]
    fn the_probe_picks_remote_errors_only_for_error_types_that_can_hold_one() {
        assert!(probe!(Fleet), "E: From<RemoteLoadError> + Debug");
        assert!(!probe!(Plain), "no From<RemoteLoadError>");
        assert!(!probe!(String), "a foreign type without the impl");
        assert!(!probe!(Arc<std::io::Error>));
    }

    #[test]
    fn shared_cells_of_one_site_share_one_cache_and_private_cells_do_not() {
        static A: CacheCell<u64, u64> = CacheCell::shared("private.rs test site");
        static B: CacheCell<u64, u64> = CacheCell::shared("private.rs test site");
        static C: CacheCell<u64, u64> = CacheCell::new();
        let built = || {
            Tier::<u64, u64>::build(
                Local,
                "private.site".into(),
                Options::new().ttl(Duration::from_secs(1)),
            )
        };
        let a = A.get_or_init(built);
        let b = B.get_or_init(|| unreachable!("built by A"));
        assert!(std::ptr::eq(a, b));
        let c = C.get_or_init(built);
        assert!(!std::ptr::eq(a, c));
        assert!(std::ptr::eq(c, C.get_or_init(|| unreachable!())));
    }

    #[test]
    fn method_names_drop_generic_arguments() {
        struct Repo<T>(T);
        let name = method_name::<Repo<u8>>("find");
        assert!(name.ends_with("::Repo::find"), "{name}");
    }
}
