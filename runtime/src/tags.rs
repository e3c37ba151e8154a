//! Tags: group invalidation across every cache of the process (and, with
//! `shared`, of the fleet) — `invalidate_tag("category:books")`.
//!
//! Lazy, as FusionCache does it, so an invalidation costs O(1) in the
//! number of cached entries:
//!
//! - a process-wide *tag epoch* counts tag invalidations; each tag
//!   remembers the epoch it was last invalidated at;
//! - a tagged entry carries its tags and the epoch its load *started* at;
//! - a read of a tagged entry written before the latest tag invalidation
//!   checks its tags once: invalidated since → the entry is dropped (a
//!   miss); not → it is re-stamped with the current epoch, so it is not
//!   checked again until the next tag invalidation;
//! - loads in flight carrying the tag are superseded at once, exactly as by
//!   `invalidate`: they answer their callers but cache nothing.
//!
//! Untagged caches pay nothing; a tagged hit pays one atomic load while no
//! tag invalidation happened since its entry was written or checked.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

/// The tags of one entry, shared by the entry and its flight.
pub(crate) type Tags = Arc<[Arc<str>]>;

/// Tag invalidations so far in this process.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The epoch each tag was last invalidated at. Bounded: past
/// [`MAX_REMEMBERED`] tags the map is cleared and [`FLOOR`] raised to the
/// current epoch, so every tagged entry written before counts as invalidated
/// (a reload, never a stale value).
static INVALIDATED: RwLock<Option<HashMap<Arc<str>, u64>>> = RwLock::new(None);
static FLOOR: AtomicU64 = AtomicU64::new(0);
const MAX_REMEMBERED: usize = 100_000;

/// The caches with a tags function, to supersede their flights.
static TARGETS: Mutex<Vec<Weak<dyn TagTarget>>> = Mutex::new(Vec::new());

/// A cache whose entries carry tags.
pub(crate) trait TagTarget: Send + Sync {
    /// Drops the flights of this process carrying `tag` (they answer their
    /// callers but cache nothing).
    fn supersede_flights(&self, tag: &str);
}

/// The current tag epoch: what a load starting now is stamped with.
#[inline]
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

pub(crate) fn register(target: Weak<dyn TagTarget>) {
    let mut targets = TARGETS.lock().unwrap_or_else(|e| e.into_inner());
    targets.retain(|t| t.strong_count() > 0);
    targets.push(target);
}

/// Whether an entry with `tags`, stamped at `stamped`, was invalidated by a
/// tag since. Only called when `stamped < epoch()`.
pub(crate) fn invalidated_since(tags: &[Arc<str>], stamped: u64) -> bool {
    if stamped < FLOOR.load(Ordering::Acquire) {
        return true;
    }
    let map = INVALIDATED.read().unwrap_or_else(|e| e.into_inner());
    let Some(map) = map.as_ref() else {
        return false;
    };
    tags.iter()
        .any(|tag| map.get(tag).is_some_and(|at| *at > stamped))
}

/// Applies an invalidation of `tag` in this process: entries carrying it
/// become misses, flights carrying it are superseded.
pub(crate) fn apply(tag: &str) {
    {
        let mut map = INVALIDATED.write().unwrap_or_else(|e| e.into_inner());
        let map = map.get_or_insert_with(HashMap::new);
        let epoch = EPOCH.fetch_add(1, Ordering::AcqRel) + 1;
        if map.len() >= MAX_REMEMBERED && !map.contains_key(tag) {
            map.clear();
            FLOOR.store(epoch, Ordering::Release);
        }
        map.insert(Arc::from(tag), epoch);
    }
    for target in targets() {
        target.supersede_flights(tag);
    }
}

fn targets() -> Vec<Arc<dyn TagTarget>> {
    let mut targets = TARGETS.lock().unwrap_or_else(|e| e.into_inner());
    targets.retain(|t| t.strong_count() > 0);
    targets.iter().filter_map(Weak::upgrade).collect()
}
