//! The process side of the notice channel: one subscription per backend per
//! process, fanned out to the local waiters and caches.
//!
//! A backend delivers three kinds of events here: "look again" at a key (a
//! value was written, a lock released, a load failed), a key was
//! invalidated, a whole cache was invalidated — and, after a gap in its
//! subscription, that events may have been lost. Waiters watch a key (a
//! `watch` channel per watched key, so a notice that lands between
//! "register" and "await" is never lost); caches register their L1 by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

use super::slot::Notice;

/// The L1 of one `shared` cache, as the invalidation bus sees it.
pub(crate) trait L1Sink: Send + Sync {
    /// Drops the copy (and any flight) of the key encoded as `encoded`: O(1).
    fn drop_key(&self, encoded: &str);
    /// Drops every copy: the cache moved to `generation`.
    fn drop_all(&self, generation: u64);
    /// Notices may have been lost: drop every copy, but let loads in flight
    /// finish and answer their callers (without caching what they load).
    fn after_gap(&self);
}

/// Registered sinks by cache name, each with the id of the tier it belongs
/// to (a tier does not apply the notices it sent itself).
type Sinks = HashMap<String, Vec<(u64, Weak<dyn L1Sink>)>>;

#[derive(Default)]
pub(crate) struct Hub {
    watches: Mutex<HashMap<String, (watch::Sender<u64>, usize)>>,
    sinks: Mutex<Sinks>,
}

/// A waiter's registration on one key; unregisters on drop.
pub(crate) struct Watch {
    hub: Arc<Hub>,
    slot: String,
    rx: watch::Receiver<u64>,
}

impl Watch {
    /// Resolves at the next notice for the key since the watch was made (or
    /// since the previous `changed`).
    pub(crate) async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            // The sender lives as long as any watch of the key: unreachable,
            // but never spin on it.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watches = self.hub.lock_watches();
        if let Some((_, count)) = watches.get_mut(&self.slot) {
            *count -= 1;
            if *count == 0 {
                watches.remove(&self.slot);
            }
        }
    }
}

impl Hub {
    fn lock_watches(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (watch::Sender<u64>, usize)>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sinks(&self) -> std::sync::MutexGuard<'_, Sinks> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching `slot` for ready notices.
    pub(crate) fn watch(self: &Arc<Self>, slot: &str) -> Watch {
        let mut watches = self.lock_watches();
        let (tx, count) = watches
            .entry(slot.to_owned())
            .or_insert_with(|| (watch::channel(0).0, 0));
        *count += 1;
        let rx = tx.subscribe();
        Watch {
            hub: self.clone(),
            slot: slot.to_owned(),
            rx,
        }
    }

    /// A ready notice for `slot` (value written, or lock released without one).
    pub(crate) fn ready(&self, slot: &str) {
        if let Some((tx, _)) = self.lock_watches().get(slot) {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Wakes every waiter (after a gap in the subscription: notices may have been lost).
    fn wake_all(&self) {
        for (tx, _) in self.lock_watches().values() {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Registers the L1 of tier `id` under its cache's name.
    pub(crate) fn register(&self, name: &str, id: u64, sink: Weak<dyn L1Sink>) {
        let mut sinks = self.lock_sinks();
        let list = sinks.entry(name.to_owned()).or_default();
        list.retain(|(_, s)| s.strong_count() > 0);
        list.push((id, sink));
    }

    /// An invalidation notice of cache `name`: applied to every L1 of that
    /// cache but the sender's. O(L1s of that cache), not O(keys).
    pub(crate) fn invalidated(&self, name: &str, notice: &Notice<'_>) {
        let targets: Vec<Arc<dyn L1Sink>> = self
            .lock_sinks()
            .get(name)
            .map(|list| {
                list.iter()
                    .filter(|(id, _)| *id != notice.sender)
                    .filter_map(|(_, s)| s.upgrade())
                    .collect()
            })
            .unwrap_or_default();
        for sink in targets {
            match notice.key {
                Some(encoded) => sink.drop_key(encoded),
                None => sink.drop_all(notice.generation),
            }
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// After a gap in the subscription (invalidations may have been lost):
    /// every L1 drops its copies, every waiter looks again.
    pub(crate) fn gap(&self) {
        let targets: Vec<Arc<dyn L1Sink>> = self
            .lock_sinks()
            .values()
            .flat_map(|list| list.iter().filter_map(|(_, s)| s.upgrade()))
            .collect();
        for sink in targets {
            sink.after_gap();
        }
        self.wake_all();
    }
}
