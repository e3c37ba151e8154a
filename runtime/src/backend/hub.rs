//! The process side of the notice channel: one subscription per backend per
//! process, fanned out to the local waiters and caches.
//!
//! A backend delivers three kinds of events here: a key's value is ready (or
//! its lock was released without one), a key was invalidated, a whole cache
//! was invalidated. Waiters watch a key (a `watch` channel per watched key, so
//! a notice that lands between "register" and "await" is never lost); caches
//! register an L1 sink by name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

/// Something that holds L1 copies of a cache's keys.
pub(crate) trait L1Sink: Send + Sync {
    /// Who this sink is: events a sink sent itself are not applied to it.
    fn id(&self) -> u64;
    /// Drop the copy of the key encoded as `encoded`, or every copy if `None`.
    fn drop_copies(&self, encoded: Option<&str>);
}

type Sinks = HashMap<String, Vec<Weak<dyn L1Sink>>>;

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

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Wakes every waiter (after a gap in the subscription: notices may have been lost).
    pub(crate) fn wake_all(&self) {
        for (tx, _) in self.lock_watches().values() {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Registers a cache's L1 under its name.
    pub(crate) fn register(&self, name: &str, sink: Weak<dyn L1Sink>) {
        let mut sinks = self.lock_sinks();
        let list = sinks.entry(name.to_owned()).or_default();
        list.retain(|s| s.strong_count() > 0);
        list.push(sink);
    }

    /// Key `encoded` of cache `name` (or all of its keys) was invalidated by `sender`.
    pub(crate) fn invalidated(&self, name: &str, encoded: Option<&str>, sender: u64) {
        let targets: Vec<Arc<dyn L1Sink>> = self
            .lock_sinks()
            .get(name)
            .map(|list| list.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        for sink in targets {
            if sink.id() != sender {
                sink.drop_copies(encoded);
            }
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    /// Drops every registered L1 (after a gap in the subscription:
    /// invalidations may have been lost).
    pub(crate) fn drop_all_copies(&self) {
        let targets: Vec<Arc<dyn L1Sink>> = self
            .lock_sinks()
            .values()
            .flat_map(|list| list.iter().filter_map(Weak::upgrade))
            .collect();
        for sink in targets {
            sink.drop_copies(None);
        }
    }
}
