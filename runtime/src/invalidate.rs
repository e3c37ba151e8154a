//! `invalidate_tag`: group invalidation, in this process and in the shared
//! tier. Its own file so that neither the tag bookkeeping nor the backends
//! need to know of the other.

use crate::{backend, tags};

/// Drops every entry carrying `tag`, in every cache of this process, and
/// supersedes the loads of such entries now in flight, exactly as
/// [`Cache::invalidate`](crate::Cache::invalidate) does for one key: they
/// answer their callers but cache nothing, and no call is served a value
/// loaded before this invalidation afterwards. With `shared` caches, the
/// same holds across the fleet: the tag's values and locks are deleted from
/// the shared tier (superseding loads running anywhere) and every process is
/// told to drop its copies — once per backend this process has made (the
/// installed one, or one given to a builder), whether or not it has built a
/// cache using the tag: a writer service that never reads the cache can
/// invalidate it. Like every write to the shared tier it is applied in call
/// order behind this process's earlier writes and retried until it lands.
///
/// Costs O(1) in the number of cached entries: entries are checked lazily,
/// once each, when next read.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use stampede_cache::Cache;
///
/// let pages: Cache<(String, u32), String> = Cache::builder("doc.tags")
///     .tags(|(category, _page): &(String, u32)| [format!("category:{category}")])
///     .build();
/// pages.get_or_load(("books".into(), 1), |_| async { "page 1".to_owned() }).await;
/// pages.get_or_load(("games".into(), 1), |_| async { "page 1".to_owned() }).await;
/// stampede_cache::invalidate_tag("category:books");
/// assert_eq!(pages.get(&("books".into(), 1)), None);
/// assert!(pages.get(&("games".into(), 1)).is_some());
/// # }
/// ```
pub fn invalidate_tag(tag: &str) {
    tags::apply(tag);
    backend::invalidate_tag(tag);
    tracing::debug!(tag, "tag invalidated");
}
