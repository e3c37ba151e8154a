//! The backend's Lua scripts (in `lua/`, one file each), documented with
//! the KEYS and ARGV they take. Every script touches the keys of one hash
//! slot only, so each runs on a Redis Cluster as on one primary.

use std::time::Duration;

use ::redis::Script;

/// KEYS: value, lock, fail. Returns {value or false, its PTTL, failure record or false, lock exists}.
pub(super) const READ: &str = include_str!("lua/read.lua");

/// KEYS: value, lock, fail. ARGV: token, lease ms, or_value, honour_failure.
/// Returns {1, value, PTTL} | {2, failure record} | {3} (locked) |
/// {4, failure record or false} (held).
/// Idempotent: a replay of an attempt that already took the lock (the
/// client re-sends a command whose connection dropped) answers `{3}` again.
pub(super) const LOCK: &str = include_str!("lua/lock.lua");

/// KEYS: lock. ARGV: token, lease ms.
pub(super) const RENEW: &str = include_str!("lua/renew.lua");

/// KEYS: lock. ARGV: token, ready channel.
pub(super) const RELEASE: &str = include_str!("lua/release.lua");

/// KEYS: lock, value, fail. ARGV: token, bytes, ttl ms, ready channel.
/// Idempotent: a replay of a write that already ran (the lock is gone, the
/// value is these bytes) answers 1 again, not "superseded".
pub(super) const WRITE_FENCED: &str = include_str!("lua/write_fenced.lua");

/// KEYS: lock, fail. ARGV: token, record, ttl ms, ready channel.
/// Idempotent under replay, as [`WRITE_FENCED`].
pub(super) const FAIL_FENCED: &str = include_str!("lua/fail_fenced.lua");

/// KEYS: value, lock, fail. ARGV: bytes, ttl ms, ready channel, invalidation
/// channel (empty on a Cluster: another slot's, published after), notice.
pub(super) const INSERT: &str = include_str!("lua/insert.lua");

/// KEYS: value, lock, fail. ARGV: ready channel, invalidation channel (empty
/// on a Cluster: another slot's, published after), notice.
pub(super) const INVALIDATE: &str = include_str!("lua/invalidate.lua");

/// KEYS: tag sets (sorted sets: slot → the instant it may be forgotten,
/// ms by Redis's clock). ARGV: slot, keep ms. Records the slot under each
/// tag and trims members past their instant, so a set follows its live
/// entries (O(log n + trimmed) per call) instead of growing for ever.
pub(super) const TAG: &str = include_str!("lua/tag.lua");

/// KEYS: a tag set, a snapshot key beside it (one hash slot). ARGV: chunk
/// size, `1` on the first call, the snapshot's lifetime (ms), `1` to drop
/// the slots here. The first call copies the tag's live members into the
/// snapshot (one native copy); every call pops up to a chunk of the
/// snapshot's slots and returns `{slots left, slots popped}`. On one
/// primary the popped slots are dropped here (their value, lock and failure
/// record deleted, their waiters woken); on a Cluster — where a script may
/// only touch its own hash slot — they are returned, and each is dropped by
/// [`DROP_SLOT`] on its own shard. Called until none is left, so no one
/// call blocks Redis for a whole large tag.
///
/// The tag's own record keeps its members: a load recorded under the tag
/// just before this invalidation, whose lock lands just after it, must
/// still be found by the next invalidation (members leave only when their
/// instant passes).
pub(super) const TAG_SNAPSHOT_POP: &str = include_str!("lua/tag_snapshot_pop.lua");

/// KEYS: value, lock, fail. ARGV: ready channel. A tag invalidation's
/// step for one slot: its value, lock and failure record deleted, its
/// waiters woken.
pub(super) const DROP_SLOT: &str = include_str!("lua/drop_slot.lua");

/// KEYS: generation. ARGV: invalidation channel, sender.
pub(super) const INVALIDATE_ALL: &str = include_str!("lua/invalidate_all.lua");

/// How long an invalidation's snapshot of its tag may outlive a process
/// that died half-way through it.
pub(super) const TAG_SNAPSHOT_TTL: Duration = Duration::from_secs(60);

/// Slots one `TAG_SNAPSHOT_POP` call hands out.
pub(super) const TAG_CHUNK: usize = 256;

/// The scripts, each sent by its SHA (loaded on `NOSCRIPT`).
pub(super) struct Scripts {
    pub(super) read: Script,
    pub(super) lock: Script,
    pub(super) renew: Script,
    pub(super) release: Script,
    pub(super) write_fenced: Script,
    pub(super) fail_fenced: Script,
    pub(super) insert: Script,
    pub(super) invalidate: Script,
    pub(super) invalidate_all: Script,
    pub(super) tag_snapshot_pop: Script,
    pub(super) drop_slot: Script,
    pub(super) tag: Script,
}

impl Scripts {
    /// The scripts; `sharded` (a Cluster): their notices go out with
    /// `SPUBLISH` to the shard that owns the channel — always the script's
    /// own slot — instead of being broadcast to every node.
    pub(super) fn new(sharded: bool) -> Self {
        let script = |source: &str| {
            if sharded {
                Script::new(&source.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'"))
            } else {
                Script::new(source)
            }
        };
        Scripts {
            read: script(READ),
            lock: script(LOCK),
            renew: script(RENEW),
            release: script(RELEASE),
            write_fenced: script(WRITE_FENCED),
            fail_fenced: script(FAIL_FENCED),
            insert: script(INSERT),
            invalidate: script(INVALIDATE),
            invalidate_all: script(INVALIDATE_ALL),
            tag_snapshot_pop: script(TAG_SNAPSHOT_POP),
            drop_slot: script(DROP_SLOT),
            tag: script(TAG),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_scripts_publish_with_spublish_only() {
        for source in [
            RELEASE,
            WRITE_FENCED,
            FAIL_FENCED,
            INSERT,
            INVALIDATE,
            INVALIDATE_ALL,
            TAG_SNAPSHOT_POP,
            DROP_SLOT,
        ] {
            assert!(source.contains("redis.call('PUBLISH'"), "{source}");
            let sharded = source.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'");
            assert!(!sharded.contains("'PUBLISH'"), "{sharded}");
        }
    }
}
