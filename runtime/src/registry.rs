//! Every live cache by name, for handles the attribute cannot generate (a
//! trait-impl method's cache lives inside the method) and for tools.

use std::any::Any;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use crate::Cache;
use crate::core::Inner;
use crate::metrics::Reported;

/// A live cache, as `lookup` (by type) and the metrics report see it.
struct Entry {
    any: Weak<dyn Any + Send + Sync>,
    reported: Weak<dyn Reported>,
}

type Registered = Vec<Entry>;

static CACHES: Mutex<Option<HashMap<String, Registered>>> = Mutex::new(None);

pub(crate) fn register<K, V>(name: &str, inner: &Arc<Inner<K, V>>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let weak = Entry {
        any: Arc::downgrade(inner) as Weak<dyn Any + Send + Sync>,
        reported: Arc::downgrade(inner) as Weak<dyn Reported>,
    };
    let mut caches = CACHES.lock().unwrap_or_else(|e| e.into_inner());
    let caches = caches.get_or_insert_with(HashMap::new);
    // Names whose caches are all gone leave (dynamic names do not pile up);
    // O(names) per cache built, which is rare.
    caches.retain(|_, list| {
        list.retain(|c| c.any.strong_count() > 0);
        !list.is_empty()
    });
    caches.entry(name.to_owned()).or_default().push(weak);
}

/// How many names have a live cache (those of dropped caches leave at the
/// next registration).
#[cfg(test)]
fn names() -> usize {
    let caches = CACHES.lock().unwrap_or_else(|e| e.into_inner());
    caches.as_ref().map_or(0, HashMap::len)
}

/// The live cache named `name` with key type `K` and value type `V`, if any
/// (the first built, when several share the name).
///
/// This is how the cache of a trait-impl method is reached, since the
/// attribute cannot add a `<fn>_cache()` handle to a trait impl:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use stampede_cache::Cache;
///
/// let built: Cache<u64, String> = Cache::builder("users.by_id").ttl(Duration::from_secs(30)).build();
/// built.insert(42, "Ada".to_owned());
/// let found = stampede_cache::lookup::<u64, String>("users.by_id").expect("registered");
/// assert_eq!(found.get(&42).as_deref(), Some("Ada"));
/// found.invalidate(&42);
/// assert_eq!(built.get(&42), None);
/// assert!(stampede_cache::lookup::<u64, u64>("users.by_id").is_none(), "other types");
/// # }
/// ```
pub fn lookup<K, V>(name: &str) -> Option<Cache<K, V>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let caches = CACHES.lock().unwrap_or_else(|e| e.into_inner());
    caches
        .as_ref()?
        .get(name)?
        .iter()
        .filter_map(|entry| entry.any.upgrade())
        .find_map(|any| any.downcast::<Inner<K, V>>().ok())
        .map(|inner| Cache { inner })
}

/// Runs `f` on every live cache (the registry's lock is not held while it
/// runs: `f` may build caches).
pub(crate) fn each(mut f: impl FnMut(&dyn Reported)) {
    let live: Vec<Arc<dyn Reported>> = {
        let caches = CACHES.lock().unwrap_or_else(|e| e.into_inner());
        caches
            .iter()
            .flat_map(|by_name| by_name.values())
            .flatten()
            .filter_map(|entry| entry.reported.upgrade())
            .collect()
    };
    for cache in live {
        f(&*cache);
    }
}

#[cfg(test)]
mod tests {
    use crate::Cache;

    #[test]
    fn names_of_dropped_caches_leave() {
        for i in 0..1000 {
            let cache: Cache<u32, u32> = Cache::builder(format!("registry.dynamic.{i}")).build();
            drop(cache);
        }
        let _kept: Cache<u32, u32> = Cache::builder("registry.dynamic.kept").build();
        // Other tests of this crate build caches concurrently: a bound, not
        // an exact count (v2 kept all 1000 names).
        assert!(super::names() < 200, "{} names registered", super::names());
    }
}
