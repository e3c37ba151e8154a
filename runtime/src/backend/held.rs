//! The locks this process holds through one backend: what a graceful
//! shutdown hands back to the fleet ([`SharedBackend::shutdown`](super::SharedBackend::shutdown)).

use std::collections::HashMap;
use std::sync::Mutex;

use super::slot::Slot;

/// The locks of this process's loads in flight, by token.
///
/// Invariant: a token is here from the moment its lock was taken until its
/// holder disarmed or dropped its guard (the fenced write or release then
/// owns the lock's end) — so a lock taken and never given back is here.
#[derive(Default)]
pub(crate) struct HeldLocks {
    locks: Mutex<HashMap<String, Slot>>,
}

impl HeldLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `token` now holds `slot`'s lock.
    pub(crate) fn hold(&self, slot: &Slot, token: &str) {
        self.map().insert(token.to_owned(), slot.clone());
    }

    /// `token`'s holder has given its lock up (or written through it).
    pub(crate) fn let_go(&self, token: &str) {
        self.map().remove(token);
    }

    /// Every lock still held, forgotten here: the caller releases them.
    pub(crate) fn take_all(&self) -> Vec<(Slot, String)> {
        self.map()
            .drain()
            .map(|(token, slot)| (slot, token))
            .collect()
    }

    /// How many locks are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_until_let_go_or_taken() {
        let held = HeldLocks::default();
        let (a, b) = (Slot::new("p", "c", "a"), Slot::new("p", "c", "b"));
        held.hold(&a, "ta");
        held.hold(&b, "tb");
        held.let_go("ta");
        assert_eq!(held.len(), 1);
        let taken = held.take_all();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1, "tb");
        assert_eq!(held.len(), 0);
    }
}
