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

/// A cached value with its timing. Every hit clones it out of the store,
/// so it stays small: a tagged entry's tags live in the side store.
#[derive(Clone)]
pub(crate) struct Entry<V> {
    pub value: V,
    pub freshness: Freshness,
    /// The tag epoch its load started at (or it was last checked at): a tag
    /// invalidated after it drops the entry (tagged caches only).
    pub tag_epoch: u64,
}

pub(crate) struct Store<K, V> {
    entries: quick_cache::sync::Cache<K, Entry<V>>,
    /// The tags of the entries of a tagged cache, looked at only after a tag
    /// invalidation. Bounded like `entries`; an entry whose tags were
    /// evicted from here counts as invalidated (a reload, never stale).
    tags: Option<quick_cache::sync::Cache<K, Tags>>,
}

impl<K, V> Store<K, V>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    pub(crate) fn new(capacity: usize, tagged: bool) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            tags: tagged.then(|| quick_cache::sync::Cache::new(capacity.max(1))),
        }
    }

    /// Whether entries carry tags.
    #[inline]
    pub(crate) fn tagged(&self) -> bool {
        self.tags.is_some()
    }

    /// The tags `key`'s entry was stored with (tagged caches).
    pub(crate) fn tags(&self, key: &K) -> Option<Tags> {
        self.tags.as_ref()?.get(key)
    }

    /// Stores `entry` with its tags (for a tagged cache).
    pub(crate) fn insert_tagged(&self, key: K, entry: Entry<V>, tags: Option<Tags>) {
        if let (Some(store), Some(tags)) = (&self.tags, tags) {
            store.insert(key.clone(), tags);
        }
        self.entries.insert(key, entry);
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
        if let Some(tags) = &self.tags {
            tags.remove(key);
        }
    }

    pub(crate) fn clear(&self) {
        self.entries.clear();
        if let Some(tags) = &self.tags {
            tags.clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
