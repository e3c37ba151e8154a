//! The `#[stampede_cached]` attribute. Use it through the `stampede-cache` crate,
//! which re-exports it: `use stampede_cache::stampede_cached;`.

#![warn(missing_docs)]

use proc_macro::TokenStream;

mod args;
mod batch;
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
///     #[stampede_cached(ttl = "30s", none_ttl = "5s")]
///     async fn find_user(&self, id: i64) -> Result<Option<User>, RepoError> { /* query */ }
///
///     #[stampede_cached(ttl = "30s", strategy = "swr", stale = "10m", jitter = "5s",
///                       tags(format!("category:{category}")))]
///     pub async fn top_products(&self, category: &str, limit: u32) -> Vec<Product> { /* query */ }
/// }
/// UserRepo::find_user_cache().invalidate(&42);          // after a write
/// stampede_cache::invalidate_tag("category:books");      // every page of a category
/// ```
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
/// | `jitter = "5s"` | each load's ttl gets a uniform random extra in `[0, jitter]`, so keys loaded together do not expire together | 0 |
/// | `none_ttl = "5s"` | ttl of a cached `None`, for fns that return `Option<T>` or `Result<Option<T>, E>` (other values keep `ttl`; jitter applies to both), > 0 | `ttl` |
/// | `tags(expr, ..)` | the entry's tags, for [`invalidate_tag`]: expressions over the arguments that form the key, each `Into<String>` (`format!("category:{category}")`, `"pages"`) | none |
/// | `key = <expr>` | the key, computed from the arguments (which it must not move); its type is inferred when certain: an argument (`key = id`: the other arguments are left out of the key), `format!(..)`, `x.to_string()`, `String::from(..)`, a literal, `x as T`, `arg.clone()`, `*arg`, tuples of these | all non-skipped arguments |
/// | `key: Type = <expr>` | a computed key of any type (the cache's static must name it) | |
/// | `skip(a, b)` | leave arguments out of the key; the load takes its own copy of them (by value: moved; `&T`: `T: Clone`) | none |
/// | `shared` | fleet-wide coordination; key `Serialize`, value `Serialize + DeserializeOwned` | off |
/// | `lock_ttl = "10s"` | `shared` only: lease of the fleet lock | `DEFAULT_LOCK_TTL` |
/// | `name = "users.by_id"` | stable name for stats, tracing, Redis keys and [`lookup`] | see [Names](#names) |
/// | `fail_safe = "10m"` | keep the last good value this long past expiry and serve it when a load fails, panics or times out (counted in `fail_safe_hits`), > 0 | off |
/// | `soft_timeout = "200ms"` | a caller that waited this long on a load gets the fail-safe or stale value; the load goes on and lands. Needs `fail_safe` or `strategy = "swr"` (something to serve), > 0 | off |
/// | `load_timeout = "5s"` | no load runs longer: it is dropped, and its callers get the fail-safe value, else `Err(E::from(LoadTimeout))`. Needs `-> Result<T, E>` (any alias) with `impl From<stampede_cache::LoadTimeout> for E`, > 0 | off |
/// | `batch` | the fn takes a list of keys and returns the rows it found by key: one call of the body for the misses of many keys (see [Batch](#batch)) | off |
/// | `max_batch = 500` | `batch` only: the most keys one call of the body is given (more misses: several calls, made at once), > 0 | `DEFAULT_MAX_BATCH` (1000) |
/// | `trait_impl` | the fn is a method of a trait impl (see [Shapes](#shapes)) | off |
/// | `returns = "result" \| "value"` | `"result"`: cache `Ok`, share `Err`, for an alias not named `Result` (`type Fallible<T> = Result<T, E>`); `"value"`: cache the return value as is, errors included | a type named `Result` (any path: `io::Result<T>`, `anyhow::Result<T>`) is a result |
/// | `crate = path` | where the runtime is, for crates that re-export it | `::stampede_cache` |
///
/// Tags are computed from the key when a load starts, so a `tags(..)` expression may use the
/// arguments that form the key (as references: `&String` for a `&str` argument, `&u32` for a
/// `u32`), or `key` itself with a computed `key = ..`; one that uses a skipped argument,
/// `self`, or (with a computed key) any argument is refused on that token.
///
/// # Shapes
///
/// | shape | handle |
/// |---|---|
/// | free `async fn` (any visibility) | `<fn>_cache()` beside it |
/// | `async fn` with `&self` in an inherent `impl` | `Type::<fn>_cache()` |
/// | receiver-less `async fn` in an inherent `impl` (`async fn count(pool: &PgPool) -> i64`) | `Type::<fn>_cache()` |
/// | method of a trait impl, native `async fn`, with `trait_impl` | none: [`lookup`]`::<K, V>(name)` |
/// | method of an `#[async_trait]` impl (recognised without `trait_impl`) | none: [`lookup`]`::<K, V>(name)` |
///
/// - `&self`: the receiver is cloned into the load (`Self: Clone + Send + Sync + 'static`),
///   only when a load starts and only if the body uses `self`; it is never part of the key.
///   One cache per function, shared by all instances; in a generic `impl<T> Repo<T>`, by
///   every `T`.
/// - arguments by value (moved into the key) or `&T` (`&str` → `String`, `&[T]` → `Vec<T>`,
///   `&T` → `T`, needing `T: Clone`); lifetimes are fine. Key: one argument → its owned type,
///   none → `()`, several → a tuple in argument order.
/// - `-> T`, `-> Option<T>` (`None` is cached too; see `none_ttl`), `-> Result<T, E>` (only
///   `Ok` cached, `E: Clone`: wrap it in `Arc`; with `load_timeout`, also
///   `E: From<LoadTimeout>`, so an error type of your own rather than `Arc<io::Error>`).
/// - attributes and doc comments stay on the function; `cfg` and lint attributes also reach
///   the handle; stacks with `#[tracing::instrument]` on either side (below: every call is
///   traced; above: only loads are). `where Self: Sized` and lifetime bounds are accepted.
///
/// **Trait impls.** An attribute cannot see the `impl` it is in, and a trait impl can hold
/// no item the trait does not declare, so the `<fn>_cache()` handle cannot be added there:
/// write `trait_impl` on a method of a trait impl. (Without it, rustc reports
/// ``method `<fn>_cache` is not a member of trait``.) The cache then lives in the method,
/// registered under its name; reach it with [`lookup`]:
///
/// ```text
/// impl UserStore for PgRepo {
///     #[stampede_cached(ttl = "30s", trait_impl, name = "users.by_id")]
///     async fn find_user(&self, id: i64) -> Result<Option<User>, RepoError> { /* query */ }
/// }
///
/// // after a write
/// if let Some(users) = stampede_cache::lookup::<i64, Option<User>>("users.by_id") {
///     users.invalidate(&id);
/// }
/// ```
///
/// `#[async_trait]` goes on the impl, so it always expands first; the attribute recognises
/// the method it rewrote (not `async`, returning `Pin<Box<dyn Future<Output = T> ..>>`,
/// body `Box::pin(async move { .. })`), caches it as the `async fn` it was, and keeps
/// `#[async_trait]`'s signature (`Send` and `?Send` alike). There is no attribute order to
/// get right.
///
/// # Batch
///
/// With `batch`, the fn loads many keys at once (the cure for N+1 list endpoints):
///
/// ```text
/// impl UserRepo {
///     #[stampede_cached(ttl = "30s", none_ttl = "5s", batch, max_batch = 500)]
///     async fn find_users(&self, ids: &[i64]) -> Result<HashMap<i64, User>, DbError> {
///         /* one query: WHERE id = ANY($1) */
///     }
/// }
/// let users = repo.find_users(&[1, 2, 3]).await?;   // the found ids only
/// UserRepo::find_users_cache().invalidate(&2);       // a `&'static Cache<i64, Option<User>>`
/// ```
///
/// - It takes one argument besides `&self`, the list: `&[K]`, `Vec<K>` or `&Vec<K>`
///   (anything else the body needs is reached through `self`); `K` is the key.
/// - It returns `HashMap<K, V>` or `Result<HashMap<K, V>, E>` (any `Result` path or alias
///   named `Result`; another alias with `returns = "result"`), with `HashMap` written out
///   (any path, std's hasher): the cache's static names `V`.
/// - The cache is a `Cache<K, Option<V>>`. A call serves the keys the cache has, joins the
///   loads of keys already in flight (a batch's or a single call's), and runs the body
///   **once** for all the other keys — with only those keys, in the caller's order, each
///   once, in calls of at most `max_batch` keys. Each key then lands on its own, with every
///   per-key rule of the cache (strategy, fail-safe, timeouts, jitter, writes win). A key the
///   body leaves out is cached as `None` (for `none_ttl`, else `ttl`): a list with deleted
///   rows does not query them again. The call returns the found keys.
/// - An `Err` of the body answers every key of that call of the body (and the callers waiting
///   on them); nothing is cached for them, and the call returns the first error among its
///   keys.
/// - `tags(..)` are per key: their expressions see `key` (a `&K`), e.g.
///   `tags(format!("user:{key}"))`; the list and `self` are refused.
/// - `key = ..`, `skip(..)`, `returns = "value"` and a second argument are refused (a spanned
///   error that names the fix); every other argument applies as to a single-key fn (`shared`:
///   each key takes its own fleet lock).
/// - The body runs as a detached task, as any load: with `&self`, the receiver is cloned for
///   the call (also when every key is a hit) and for each call of the body.
///
/// # Names
///
/// `name = ".."` when given. Otherwise a method (with a receiver, or with `trait_impl`) is
/// named `type_name::<Self>()` without generic arguments, then `::fn`
/// (`my_crate::repo::UserRepo::find_user`): two types with a method of the same name get two
/// caches with two names. A free or receiver-less associated fn is named
/// `module_path!()::fn` (the attribute cannot tell them apart, and a receiver-less fn has no
/// `Self` to name); two receiver-less fns of the same name in one module still get two
/// caches, but share a name, so give them `name`s if you [`lookup`] them or make them
/// `shared`. With `shared`, always give a `name`: `type_name`'s output is not guaranteed
/// across compiler versions.
///
/// # Fleet failures (`shared`)
///
/// A `shared` fn returning `Result<T, E>` sets `remote_errors::<E>()` on its cache when
/// `E: From<stampede_cache::RemoteLoadError> + Debug`: a process waiting on a load that
/// failed in another process gets `Err(E::from(RemoteLoadError))` (or the fail-safe value)
/// instead of loading again, so a failing origin is called once per flight fleet-wide. For
/// any other `E` (an error type that cannot hold a remote failure) nothing is required and
/// nothing changes: such a process loads in process. The choice is made at compile time on
/// the concrete `E`, by autoref specialization (`__private::ErrorProbe`).
///
/// # What it expands to
///
/// All behaviour is in the runtime; the expansion names the key and value types, builds the
/// cache on first use, and hands the runtime the key and a closure that builds the load,
/// which the runtime calls only when a load starts (a hit clones neither the receiver nor
/// the skipped arguments). The load runs the fn's own body, with `self` renamed to a
/// hygienic `this` (a `&Self` to the receiver's clone) and each argument rebound under its
/// own name. The `top_products` above expands to (a pinned snapshot,
/// `macros/tests/expand/inherent_method.expanded.rs`, which the ui-tests compile):
///
/// ```text
/// pub async fn top_products(&self, category: &str, limit: u32) -> Vec<Product> {
///     let key = (::stampede_cache::__private::owned_key::<str, _>(category), limit);
///     ::stampede_cache::__private::cached::<
///         (::std::string::String, u32),
///         Vec<Product>,
///         _,
///         _,
///     >(
///             ::stampede_cache::__private::Local,
///             {
///                 static CACHE: ::stampede_cache::__private::CacheCell<
///                     (::std::string::String, u32),
///                     Vec<Product>,
///                 > = ::stampede_cache::__private::CacheCell::shared(
///                     ::core::concat!(
///                         ::core::module_path!(), "::top_products@", ::core::file!(),
///                         ":", ::core::line!(), ":", ::core::column!()
///                     ),
///                 );
///                 &CACHE
///             },
///             || ::stampede_cache::__private::method_name::<Self>("top_products"),
///             |options| {
///                 options
///                     .ttl(::stampede_cache::__private::Duration::from_secs(30))
///                     .strategy(::stampede_cache::Strategy::Swr {
///                         stale: ::stampede_cache::__private::Duration::from_secs(600),
///                     })
///                     .jitter(::stampede_cache::__private::Duration::from_secs(5))
///                     .tags(|(category, _)| [
///                         ::stampede_cache::__private::tag(
///                             format!("category:{category}"),
///                         ),
///                     ])
///             },
///             ::core::option::Option::Some(key),
///             || {
///                 let this = ::stampede_cache::__private::receiver::<Self>(self);
///                 move |(category, limit)| async move {
///                     let this = &this;
///                     let category: &str = &category;
///                     {
///                         let _ = category;
///                         this.db.iter().take(limit as usize).cloned().collect()
///                     }
///                 }
///             },
///         )
///         .await
/// }
/// ```
///
/// and `top_products_cache()`, whose body makes the same `cached::<..>(..)` call with
/// `None` for the key and `__private::no_loader` for the load, then takes `.cache()`. The
/// fn and its handle each declare a `CacheCell` of the fn's site: they share one cache, and
/// the fn need not call its handle (a receiver-less fn could not: it cannot tell whether the
/// handle is `count_cache()` or `Self::count_cache()`). In a trait impl the cell is the
/// method's own.
///
/// Durations are written `from_secs` / `from_millis` where exact. The one call whose
/// bounds check the key, value and error types, `__private::cached` (or `try_cached`), is
/// made by the fn and by its handle with the same tokens on the fn's name, so rustc reports
/// a type that cannot be cached once, with a message that names the type and the fix.
///
/// # Errors
///
/// Every compile error is spanned on the offending token and names the fix; one misuse is
/// one error. Mistakes in the arguments are all reported at once, each on its own token;
/// the fn is then kept as written and its handle still declared, so its callers add no
/// errors of their own. Refused with a spanned message: non-`async` fns, generic type or
/// const parameters, `impl Trait` arguments or return types, `self` by value, `&mut self`,
/// `&mut` arguments, destructuring patterns, returned references, `Self` in the key or value
/// type, trait method declarations; with `batch`, a fn that does not take one list of keys
/// or does not return a `HashMap` of rows. A `batch` fn's map keyed by a type other than
/// the list's is reported on the fn's name. A key, value or error type that cannot be cached is
/// reported on the fn's name (the message names the type); a skipped argument the load
/// cannot copy, a receiver that is not `Clone`, an error type without
/// `From<LoadTimeout>`, `none_ttl` on a fn that caches no `Option`, and a tag that is not
/// `Into<String>` are reported on their own tokens.
///
/// [`invalidate_tag`]: https://docs.rs/stampede-cache/latest/stampede_cache/fn.invalidate_tag.html
/// [`lookup`]: https://docs.rs/stampede-cache/latest/stampede_cache/fn.lookup.html
#[proc_macro_attribute]
pub fn stampede_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(args.into(), item.into()).into()
}
