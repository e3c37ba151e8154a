//! The `#[stampede_cached]` attribute. Use it through the `stampede-cache` crate,
//! which re-exports it: `use stampede_cache::stampede_cached;`.

#![warn(missing_docs)]

use proc_macro::TokenStream;

mod args;
mod body;
mod diag;
mod emit;
mod expand;
mod key_plan;
mod shape;
#[cfg(test)]
mod snapshots;

/// Memoises an `async fn` with stampede protection: concurrent misses of one key share
/// one load, which runs as a detached task, so a cancelled caller never cancels it.
/// (A compiled example is in the `stampede-cache` crate docs.)
///
/// ```text
/// use stampede_cache::stampede_cached;
///
/// impl UserRepo {
///     #[stampede_cached(ttl = "30s", strategy = "swr", stale = "10m", skip(trace))]
///     pub async fn top_products(&self, category: &str, limit: u32, trace: TraceId) -> Vec<Product> {
///         /* query */
///     }
/// }
/// UserRepo::top_products_cache().invalidate(&("books".to_string(), 10));
/// ```
///
/// # What it expands to
///
/// All behaviour is in the runtime; the expansion only names the key and value types and
/// calls [`Cache::get_or_load_with`] (or `try_get_or_load_with`) with a closure that builds the
/// load from owned copies. The runtime calls that closure only when a load starts, so a hit
/// clones neither the receiver nor the skipped arguments:
///
/// ```text
/// pub async fn top_products(&self, category: &str, limit: u32, trace: TraceId) -> Vec<Product> {
///     let key = (__private::key_owned::<str>(category), __private::key(limit)); // (String, u32)
///     __private::load(Self::top_products_cache(), key, || {
///         let this = __private::receiver::<Self>(self);          // Self: Clone + Send + Sync + 'static
///         let trace = __private::moved(trace);                   // skipped: moved, not in the key
///         move |(category, limit)| async move {
///             Self::__stampede_cached_top_products(&this, &category, limit, trace).await
///         }
///     })
///     .await
/// }
/// #[doc(hidden)]
/// async fn __stampede_cached_top_products(&self, category: &str, limit: u32, trace: TraceId)
///     -> Vec<Product> { /* your body, unchanged */ }
///
/// /// The cache behind [`Self::top_products`] …
/// pub fn top_products_cache() -> &'static Cache<(String, u32), Vec<Product>> {
///     static CACHE: OnceLock<Cache<(String, u32), Vec<Product>>> = OnceLock::new();
///     CACHE.get_or_init(|| {
///         __private::cache::<(String, u32), Vec<Product>>(
///             __private::Options::new(__private::method_name::<Self>("top_products"))
///                 .ttl(Duration::from_secs(30))
///                 .strategy(Strategy::Swr { stale: Duration::from_secs(600) }),
///         )
///     })
/// }
/// ```
///
/// The cache is built by the handle on first use: one `Options` setter per argument given
/// (`capacity`, `lock_ttl`, `fail_safe`, `soft_timeout`, `load_timeout::<E>`, ...), then
/// `__private::cache::<K, V>` (or `shared_cache` with `shared`), whose bounds check the key
/// and value types. It lives in a `OnceLock` filled in the handle's body rather than in a
/// `LazyLock` initialiser because a static cannot mention `Self` and the body can: a
/// method's cache is named after its `Self` type. A hit costs the same one atomic load.
///
/// Every `__private` helper carries a `#[diagnostic::on_unimplemented]` bound, so a type
/// that cannot be cached is reported on its own token with the fix.
///
/// # Arguments
///
/// | argument | meaning | default |
/// |---|---|---|
/// | `ttl = "30s"` | freshness lifetime, humantime syntax, parsed at compile time, > 0 | required |
/// | `strategy = "lock" \| "swr" \| "xfetch"` | what happens at expiry | `"lock"` |
/// | `stale = "10m"` | `swr` only: how long past `ttl` the stale value is served | `ttl` |
/// | `beta = 1.0` | `xfetch` only: eagerness, > 0 | `1.0` |
/// | `capacity = 10_000` | entry bound of this function's cache, > 0 | `DEFAULT_CAPACITY` (10 000) |
/// | `key = arg` | only that argument is the key | all non-skipped arguments |
/// | `key: Type = <expr>` | a computed key; the type is needed to name the static. The expression sees the arguments and must not move them | |
/// | `skip(a, b)` | leave arguments out of the key (they are still moved into the load) | none |
/// | `shared` | fleet-wide coordination; key `Serialize`, value `Serialize + DeserializeOwned` | off |
/// | `lock_ttl = "10s"` | `shared` only: lease of the fleet lock | `DEFAULT_LOCK_TTL` |
/// | `name = "users.by_id"` | stable name for stats, tracing, Redis keys | free fn: `module_path!()::fn_name`; method: `type_name::<Self>()` without generic arguments `::fn_name` (`my_crate::repo::UserRepo::find_user`). With `shared`, give a `name`: `type_name`'s output is not guaranteed across compiler versions |
/// | `fail_safe = "10m"` | keep the last good value this long past expiry and serve it when a load fails, panics or times out (counted in `fail_safe_hits`), > 0 | off |
/// | `soft_timeout = "200ms"` | a caller that waited this long on a load gets the fail-safe or stale value; the load goes on and lands. Needs `fail_safe` or `strategy = "swr"` (something to serve), > 0 | off |
/// | `load_timeout = "5s"` | no load runs longer: it is dropped, and its callers get the fail-safe value, else `Err(E::from(LoadTimeout))`. Needs `-> Result<T, E>` (any alias) with `impl From<stampede_cache::LoadTimeout> for E`, > 0 | off |
/// | `returns = "result" \| "value"` | `"result"`: cache `Ok`, share `Err`, for an alias not named `Result` (`type Fallible<T> = Result<T, E>`); `"value"`: cache the return value as is, errors included | a type named `Result` (any path: `io::Result<T>`, `anyhow::Result<T>`) is a result |
/// | `crate = path` | where the runtime is, for crates that re-export it | `::stampede_cache` |
///
/// # Shapes
///
/// - free `async fn` (any visibility): handle `<fn>_cache()` beside it.
/// - inherent-impl `async fn` with `&self`: the receiver is cloned into the load and never
///   part of the key (one cache per function, shared by all instances); the handle is an
///   associated fn. Two types with a method of the same name get two caches with two names.
///   In a generic `impl<T> Repo<T>`, all instantiations share the one cache, named
///   `..::Repo::fn_name`. A receiver-less associated fn is not supported (use a free fn).
/// - arguments by value (moved into the key) or `&T` with `T: ToOwned` (`&str` → `String`,
///   `&[T]` → `Vec<T>`, `&T` → `T`); lifetimes are fine. Key: one argument → its owned type,
///   none → `()`, several → a tuple in argument order.
/// - `-> T`, `-> Option<T>` (`None` is cached too), `-> Result<T, E>` (only `Ok` cached,
///   `E: Clone`: wrap it in `Arc`; with `load_timeout`, also `E: From<LoadTimeout>`, so an
///   error type of your own rather than `Arc<io::Error>`).
/// - attributes and doc comments stay on the function; `cfg` and lint attributes also reach the
///   generated items; stacks with `#[tracing::instrument]` on either side (below: every call is
///   traced; above: only loads are).
///
/// Every mistake in the arguments is reported at once, each on its own token.
///
/// Refused at compile time with a spanned message: non-`async` fns, generic type or const
/// parameters, `impl Trait` arguments or return types, `self` by value, `&mut self`, `&mut`
/// arguments, destructuring patterns, returned references, `Self` in the key or value type,
/// trait method declarations. On a method of a *trait* impl the generated handle is not a
/// member of the trait: rustc reports ``method `<fn>_cache` is not a member of trait``.
///
/// [`Cache::get_or_load_with`]: https://docs.rs/stampede-cache/latest/stampede_cache/struct.Cache.html#method.get_or_load_with
#[proc_macro_attribute]
pub fn stampede_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args.into(), item.into()).into()
}
