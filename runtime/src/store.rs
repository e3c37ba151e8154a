//! The bounded L1 entry store.
//!
//! Backed by quick_cache: its sharded, read-locked lookups make a hit one
//! shared-lock acquisition and a clone (no allocation, no exclusive lock), and
//! its CLOCK-Pro eviction keeps hot keys when a scan of cold keys passes
//! through. It is the fastest proven bounded map we measured (see the
//! `hit_path` benchmark, which runs it beside us), so we wrap it rather than
//! write our own.

use std::hash::Hash;

use crate::strategy::Freshness;
use crate::tags::Tags;

/// A cached value with its timing.
#[derive(Clone)]
pub(crate) struct Entry<V> {
    pub value: V,
    pub freshness: Freshness,
    /// The entry's tags (`None` in a cache without tags: no cost).
    pub tags: Option<Tags>,
    /// The tag epoch its load started at (or it was last checked at): a tag
    /// invalidated after it drops the entry.
    pub tag_epoch: u64,
}

pub(crate) struct Store<K, V> {
    entries: quick_cache::sync::Cache<K, Entry<V>>,
}

impl<K, V> Store<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    #[inline]
    pub(crate) fn get(&self, key: &K) -> Option<Entry<V>> {
        self.entries.get(key)
    }

    pub(crate) fn insert(&self, key: K, entry: Entry<V>) {
        self.entries.insert(key, entry);
    }

    pub(crate) fn remove(&self, key: &K) {
        self.entries.remove(key);
    }

    pub(crate) fn clear(&self) {
        self.entries.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
