//! The process side of the notice channel: one subscription per backend per
//! process, fanned out to the local waiters and caches.
//!
//! A backend delivers three kinds of events here: "look again" at a key (a
//! value was written, a lock released, a load failed), a key was
//! invalidated, a whole cache was invalidated — and, after a gap in its
//! subscription, that events may have been lost. Waiters watch a key (a
//! `watch` channel per watched key, so a notice that lands between
//! "register" and "await" is never lost); caches register their L1 by name.
//!
//! # What a process subscribes to
//!
//! A backend whose notices travel over subscriptions (Redis) gives the hub a
//! [`Subscriber`]; the hub tells it which channels this process needs, so a
//! process only hears what concerns it — O(pods) deliveries per notice
//! fleet-wide at most, not every notice of every key to every process:
//!
//! - the invalidation channel of every cache registered here, from the
//!   cache's first [`Hub::register`] on;
//! - the ready channel of a key only while some local waiter watches it,
//!   from its first [`Hub::watch`] to the drop of its last [`Watch`].
//!
//! Subscribing takes a round trip, so a waiter awaits [`Watch::subscribed`]
//! before its first read: a notice published after that read then reaches
//! it. When the subscription is confirmed the hub also wakes the key's
//! watchers once ("look again"), so a waiter that did not wait for it re-reads
//! at once instead of at its next periodic re-read. A backend that delivers
//! synchronously ([`LocalBackend`](super::LocalBackend)) has no subscriber:
//! its watches are subscribed from the start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

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

/// How a backend whose notices arrive over channel subscriptions learns
/// which channels this process needs. Called with the hub's locks held, in
/// the order the needs change: implementations only record the need (and
/// wake their subscription task), never call back into the hub.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) trait Subscriber: Send + Sync {
    /// Cache `name` registered its first L1 here: subscribe its invalidation
    /// channel, for good.
    fn cache(&self, name: &str);
    /// A first local waiter watches `slot`: subscribe its ready channel.
    /// Returns a flag set to `true` once the subscription is confirmed (the
    /// hub has been told [`Hub::ready`] for `slot` just before), or `None`
    /// when no confirmation is coming soon (the subscription connection is
    /// down): the waiter then does not wait for one.
    fn watch(&self, slot: &str) -> Option<watch::Receiver<bool>>;
    /// The last local waiter of `slot` is gone: unsubscribe its ready channel.
    fn unwatch(&self, slot: &str);
}

/// Registered sinks by cache name, each with the id of the tier it belongs
/// to (a tier does not apply the notices it sent itself).
type Sinks = HashMap<String, Vec<(u64, Weak<dyn L1Sink>)>>;

/// One watched key.
struct Watched {
    /// Bumped at every notice of the key.
    tx: watch::Sender<u64>,
    /// Live [`Watch`]es of the key.
    count: usize,
    /// Set once the key's channel subscription is confirmed (`None`: no
    /// confirmation to wait for).
    subscribed: Option<watch::Receiver<bool>>,
}

type Watches = HashMap<String, Watched>;

#[derive(Default)]
pub(crate) struct Hub {
    watches: Mutex<Watches>,
    sinks: Mutex<Sinks>,
    /// The backend's subscriber, and how long a waiter waits for a
    /// confirmation before reading anyway.
    subscriber: Option<(Arc<dyn Subscriber>, Duration)>,
}

/// A waiter's registration on one key; unregisters on drop.
pub(crate) struct Watch {
    hub: Arc<Hub>,
    slot: String,
    rx: watch::Receiver<u64>,
    subscribed: Option<watch::Receiver<bool>>,
}

impl Watch {
    /// Resolves once notices of the key are sure to reach this watch — at
    /// once when the backend has no subscriptions (or no confirmation is
    /// coming), else when the key's subscription is confirmed, waiting at
    /// most the bound the backend gave (its command timeout). Whether it was
    /// confirmed: if not, notices published before the subscription lands
    /// may be missed, which the waiter's periodic re-read covers.
    ///
    /// A waiter awaits this before its first read: every notice published
    /// after that read then wakes it. Notices seen so far are marked seen
    /// (the read that follows covers them).
    pub(crate) async fn subscribed(&mut self) -> bool {
        let Some(mut confirmed) = self.subscribed.take() else {
            return true;
        };
        let bound = self
            .hub
            .subscriber
            .as_ref()
            .map_or(Duration::ZERO, |(_, bound)| *bound);
        let ok = matches!(
            tokio::time::timeout(bound, confirmed.wait_for(|done| *done)).await,
            Ok(Ok(_))
        );
        if ok {
            self.rx.borrow_and_update();
        }
        ok
    }

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
        if let Some(watched) = watches.get_mut(&self.slot) {
            watched.count -= 1;
            if watched.count == 0 {
                watches.remove(&self.slot);
                if let Some((subscriber, _)) = &self.hub.subscriber {
                    subscriber.unwatch(&self.slot);
                }
            }
        }
    }
}

impl Hub {
    /// A hub whose channel subscriptions `subscriber` keeps; a waiter waits
    /// at most `bound` for its key's subscription to be confirmed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn with_subscriber(subscriber: Arc<dyn Subscriber>, bound: Duration) -> Self {
        Self {
            subscriber: Some((subscriber, bound)),
            ..Self::default()
        }
    }

    fn lock_watches(&self) -> std::sync::MutexGuard<'_, Watches> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sinks(&self) -> std::sync::MutexGuard<'_, Sinks> {
        self.sinks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts watching `slot` for ready notices (subscribing its channel if
    /// this is the key's first watch; see [`Watch::subscribed`]).
    pub(crate) fn watch(self: &Arc<Self>, slot: &str) -> Watch {
        let mut watches = self.lock_watches();
        let watched = watches.entry(slot.to_owned()).or_insert_with(|| Watched {
            tx: watch::channel(0).0,
            count: 0,
            subscribed: self
                .subscriber
                .as_ref()
                .and_then(|(subscriber, _)| subscriber.watch(slot)),
        });
        watched.count += 1;
        Watch {
            hub: self.clone(),
            slot: slot.to_owned(),
            rx: watched.tx.subscribe(),
            subscribed: watched.subscribed.clone(),
        }
    }

    /// A ready notice for `slot` (value written, or lock released without one).
    pub(crate) fn ready(&self, slot: &str) {
        if let Some(watched) = self.lock_watches().get(slot) {
            watched.tx.send_modify(|n| *n += 1);
        }
    }

    /// Keys watched now.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.lock_watches().len()
    }

    /// Wakes every waiter (after a gap in the subscription: notices may have been lost).
    fn wake_all(&self) {
        for watched in self.lock_watches().values() {
            watched.tx.send_modify(|n| *n += 1);
        }
    }

    /// Registers the L1 of tier `id` under its cache's name (subscribing the
    /// cache's invalidation channel at its first registration).
    pub(crate) fn register(&self, name: &str, id: u64, sink: Weak<dyn L1Sink>) {
        let mut sinks = self.lock_sinks();
        if !sinks.contains_key(name)
            && let Some((subscriber, _)) = &self.subscriber
        {
            subscriber.cache(name);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the hub asked for; confirms a watch when told to.
    #[derive(Default)]
    struct Recording {
        log: Mutex<Vec<String>>,
        pending: Mutex<HashMap<String, watch::Sender<bool>>>,
        down: std::sync::atomic::AtomicBool,
    }

    impl Recording {
        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        /// What a backend does when a subscription is confirmed.
        fn confirm(&self, hub: &Hub, slot: &str) {
            hub.ready(slot);
            let _ = self.pending.lock().unwrap()[slot].send(true);
        }
    }

    impl Subscriber for Recording {
        fn cache(&self, name: &str) {
            self.log.lock().unwrap().push(format!("cache {name}"));
        }

        fn watch(&self, slot: &str) -> Option<watch::Receiver<bool>> {
            self.log.lock().unwrap().push(format!("watch {slot}"));
            if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            let (tx, rx) = watch::channel(false);
            self.pending.lock().unwrap().insert(slot.to_owned(), tx);
            Some(rx)
        }

        fn unwatch(&self, slot: &str) {
            self.log.lock().unwrap().push(format!("unwatch {slot}"));
        }
    }

    struct Nothing;
    impl L1Sink for Nothing {
        fn drop_key(&self, _: &str) {}
        fn drop_all(&self, _: u64) {}
        fn after_gap(&self) {}
    }

    const BOUND: Duration = Duration::from_millis(250);

    fn hub() -> (Arc<Hub>, Arc<Recording>) {
        let rec = Arc::new(Recording::default());
        (Arc::new(Hub::with_subscriber(rec.clone(), BOUND)), rec)
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_subscriber_a_watch_is_subscribed_at_once() {
        let hub = Arc::new(Hub::default());
        let mut watch = hub.watch("s");
        assert!(watch.subscribed().await);
        hub.ready("s");
        tokio::time::timeout(Duration::from_millis(1), watch.changed())
            .await
            .expect("delivered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_subscribed_while_watched_and_a_cache_once() {
        let (hub, rec) = hub();
        let sink: Arc<dyn L1Sink> = Arc::new(Nothing);
        hub.register("c", 1, Arc::downgrade(&sink));
        hub.register("c", 2, Arc::downgrade(&sink));
        let a = hub.watch("s");
        let b = hub.watch("s");
        assert_eq!(hub.watched(), 1);
        drop(a);
        assert_eq!(
            rec.log(),
            ["cache c", "watch s"],
            "one subscription per key"
        );
        drop(b);
        assert_eq!(hub.watched(), 0);
        let _c = hub.watch("s");
        assert_eq!(
            rec.log(),
            ["cache c", "watch s", "unwatch s", "watch s"],
            "unsubscribed with the last watch, subscribed again with the next"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_waits_for_the_confirmation_and_is_woken_by_it() {
        let (hub, rec) = hub();
        let mut waiter = hub.watch("s");
        let mut other = hub.watch("s");
        let started = tokio::time::Instant::now();
        let confirm = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            rec.confirm(&hub, "s");
        };
        let (subscribed, ()) = tokio::join!(waiter.subscribed(), confirm);
        assert!(subscribed);
        assert_eq!(started.elapsed(), Duration::from_millis(10));
        // The wake of the confirmation is marked seen by the waiter that
        // waited for it (its first read covers it)...
        assert!(
            tokio::time::timeout(Duration::from_millis(1), waiter.changed())
                .await
                .is_err()
        );
        // ...and wakes a watcher that did not wait: it looks again.
        tokio::time::timeout(Duration::from_millis(1), other.changed())
            .await
            .expect("woken by the confirmation");
        hub.ready("s");
        tokio::time::timeout(Duration::from_millis(1), waiter.changed())
            .await
            .expect("later notices delivered");
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_and_skipped_when_the_connection_is_down() {
        let (hub, rec) = hub();
        let mut watch = hub.watch("s");
        let started = tokio::time::Instant::now();
        assert!(!watch.subscribed().await, "no confirmation");
        assert_eq!(started.elapsed(), BOUND, "waited the bound, no more");
        assert!(watch.subscribed().await, "asked once");

        rec.down.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut watch = hub.watch("t");
        let started = tokio::time::Instant::now();
        assert!(watch.subscribed().await);
        assert_eq!(started.elapsed(), Duration::ZERO, "nothing to wait for");

        // A subscription that failed (its flag dropped) ends the wait at once.
        rec.down.store(false, std::sync::atomic::Ordering::Relaxed);
        let mut watch = hub.watch("u");
        rec.pending.lock().unwrap().remove("u");
        let started = tokio::time::Instant::now();
        assert!(!watch.subscribed().await);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
