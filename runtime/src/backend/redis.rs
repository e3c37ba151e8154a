//! The Redis backend of `shared` caches (cargo feature `redis`).
//!
//! One Redis (or Valkey) primary holds, per key of a `shared` cache, the
//! value (L2) and the key's lock; pub/sub channels carry the ready and
//! invalidation notices. Keys are `<prefix>:{<cache name>:<hex of the key's
//! MessagePack bytes>}:<kind>`, so the lock, value and channels of one key
//! share a Redis Cluster hash slot.
//!
//! - Commands go through redis-rs's [`ConnectionManager`], which reconnects
//!   by itself; each is bounded by a command timeout
//!   ([`RedisBackendBuilder::command_timeout`]), after which the call fails
//!   open to the loader in process (counted in `fallbacks`).
//! - The lock is `SET NX PX`; release, renewal and the value write are Lua
//!   scripts (`redis::Script`) that compare the holder's token first, so a
//!   holder whose lease lapsed can neither release another's lock nor
//!   overwrite a newer value (fencing). The write script also publishes the
//!   ready notice and releases the lock.
//!
//! # Circuit breaker
//!
//! A hung Redis (stopped, overloaded, or a connection nobody answers on)
//! would cost every flight one command timeout. After
//! [`BREAKER_THRESHOLD`] consecutive command timeouts the backend's breaker
//! *opens*: every command fails at once, so calls fail open to their loader
//! with no wait. After a cool-down
//! ([`RedisBackendBuilder::breaker_cooldown`], default
//! [`DEFAULT_BREAKER_COOLDOWN`]) it is *half-open*: the next command is let
//! through as a probe (the others still fail at once); an answer closes the
//! breaker, another timeout opens it for one more cool-down. A hung Redis so
//! costs a process at most one command timeout per cool-down (plus the
//! commands already in flight when it hung). Opening is logged as a warning,
//! closing as info; see [`RedisBackend::breaker_trips`]. Only timeouts count:
//! an error reply or a refused connection is fast already.
//!
//! # Notices: what a process subscribes to
//!
//! Each process keeps ONE extra connection for notices, subscribed (plain
//! `SUBSCRIBE`, no pattern) to
//! - the invalidation channel of each `shared` cache built on this backend
//!   (`<prefix>:{<name>}:inval`), from the cache's construction on — a
//!   backend command waits (at most one command timeout) until those of the
//!   caches built so far are confirmed, so no value enters an L1 before its
//!   invalidations can reach it;
//! - the ready channel of a key (`<slot>:ready`) only while a flight of this
//!   process waits on another process's load of it; the waiter reads only
//!   once that subscription is confirmed (waiting at most one command
//!   timeout; its periodic re-read covers the rest).
//!
//! So a notice reaches the processes that use it, not the whole fleet: a
//! cold fill nobody waits for reaches no other process, an invalidation
//! reaches the processes holding that cache, once each. The ready channels
//! subscribed at any time are bounded by the keys being waited on.
//!
//! # Liveness of the subscription
//!
//! A subscription connection can die silently (a half-open TCP connection:
//! a NAT or firewall dropped it, the peer vanished), and notices sent
//! meanwhile are lost. So the notice connection is PINGed every
//! [`RedisBackendBuilder::ping_interval`] (default
//! [`DEFAULT_PING_INTERVAL`]); no PONG within the command timeout (or the
//! connection closing) counts as lost: **a dead subscription is noticed
//! within `ping_interval + command_timeout`.** Then the connection is
//! dropped and every L1 copy of this backend's caches is dropped at once
//! (invalidations may be being missed), and the connection is re-made —
//! each attempt (connect and re-subscribe everything current) bounded by
//! four command timeouts, retried with jittered exponential backoff from
//! 20 ms to 1 s. Once re-subscribed, L1 copies are dropped again (notices
//! of the outage are lost) and every waiter re-reads; loads in flight are
//! not orphaned — they finish and answer their callers. Loss and
//! re-establishment are logged (warn, info) and counted
//! ([`RedisBackend::subscription_losses`]).
//!
//! # TLS and ACL users
//!
//! A `rediss://` URL connects over TLS (rustls, with ring as its crypto
//! provider, installed as the process default unless the application
//! installed one first); the server is verified against the system's roots,
//! or the CA given with [`RedisBackendBuilder::tls`] ([`RedisTls`], which
//! also takes a client certificate for mutual TLS). A user and password go
//! in the URL (`rediss://user:password@host:port/`) or
//! [`RedisBackendBuilder::credentials`]. A wrong password or an untrusted
//! certificate fails [`connect`](RedisBackendBuilder::connect) with an error
//! that names it (`authentication failed`, `TLS handshake failed`). Once
//! connected, an error reply — a permission revoked at run time included —
//! fails open like any other: calls load in process, counted in
//! `fallbacks`, warned about once per 10 s.
//!
//! ## ACL permissions
//!
//! The user needs the backend's keys and channels and the commands it
//! sends, nothing more — [`acl_rules`] writes them for a prefix:
//!
//! ```text
//! ACL SETUSER stampede on >secret resetkeys ~stampede:* resetchannels &stampede:* -@all
//!     +get +set +del +pttl +exists +pexpire +publish +incr +time +zadd
//!     +zremrangebyscore +zrangestore +zpopmin +zcard +evalsha +script|load
//!     +cluster|slots +asking +subscribe +unsubscribe +ping
//! ```
//!
//! **An efficiency lock, not a correctness lock**: one primary, no Redlock.
//! A failover or a long pause can let two processes load the same key; the
//! fenced write keeps the value tier consistent, but do not rely on the lock
//! for mutual exclusion of side effects.
//!
//! ```no_run
//! # async fn start() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use stampede_cache::redis::RedisBackend;
//!
//! let backend = RedisBackend::builder("redis://127.0.0.1:6379/")
//!     .prefix("myapp")
//!     .command_timeout(Duration::from_millis(200))
//!     .breaker_cooldown(Duration::from_secs(2))
//!     .ping_interval(Duration::from_secs(1))
//!     .connect()
//!     .await?;
//! stampede_cache::install(backend);
//! # Ok(()) }
//! ```
//!
//! [`ConnectionManager`]: ::redis::aio::ConnectionManager

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::IntoConnectionInfo;
use ::redis::aio::{PubSub, PubSubSink, PubSubStream};
use ::redis::{Client, Script, Value};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::held::HeldLocks;
use super::hub::{Hub, Subscriber};
use super::redis_conn::Commands;
use super::slot::{CacheKeys, Channel, Slot, parse_channel, parse_notice, tag_set, tags_channel};
use super::writes::WriteBehind;
use super::{Acquire, Backend, BackendError, BackendFut, BackendResult, Found, SharedBackend};

/// Default bound on one Redis command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "stampede";
/// Consecutive command timeouts that open the circuit breaker.
pub const BREAKER_THRESHOLD: u32 = 3;
/// Default time the circuit breaker stays open before it lets a probe through.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(2);
/// Default interval of the liveness PING on the notice connection.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);

/// Reconnect backoff of the notice connection.
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Channels per (UN)SUBSCRIBE command.
const CHUNK: usize = 256;

/// KEYS: value, lock, fail. Returns {value or false, its PTTL, failure record or false, lock exists}.
const READ: &str = r"
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[3]), redis.call('EXISTS', KEYS[2])}
";

/// KEYS: value, lock, fail. ARGV: token, lease ms, or_value, honour_failure.
/// Returns {1, value, PTTL} | {2, failure record} | {3} (locked) |
/// {4, failure record or false} (held).
/// Idempotent: a replay of an attempt that already took the lock (the
/// client re-sends a command whose connection dropped) answers `{3}` again.
const LOCK: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then return {3} end
if ARGV[3] == '1' then
  local v = redis.call('GET', KEYS[1])
  if v then return {1, v, redis.call('PTTL', KEYS[1])} end
end
local f = redis.call('GET', KEYS[3])
if f and ARGV[4] == '1' then return {2, f} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {3} end
return {4, f}
";

/// KEYS: lock. ARGV: token, lease ms.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// KEYS: lock. ARGV: token, ready channel.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '')
  return 1
end
return 0
";

/// KEYS: lock, value, fail. ARGV: token, bytes, ttl ms, ready channel.
/// Idempotent: a replay of a write that already ran (the lock is gone, the
/// value is these bytes) answers 1 again, not "superseded".
const WRITE_FENCED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('PUBLISH', ARGV[4], '')
return 1
";

/// KEYS: lock, fail. ARGV: token, record, ttl ms, ready channel.
/// Idempotent under replay, as [`WRITE_FENCED`].
const FAIL_FENCED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if redis.call('GET', KEYS[2]) == ARGV[2] then return 1 end
  return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[4], '')
return 1
";

/// KEYS: value, lock, fail. ARGV: bytes, ttl ms, ready channel, invalidation channel, notice.
const INSERT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[3], '')
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

/// KEYS: value, lock, fail. ARGV: ready channel, invalidation channel, notice.
const INVALIDATE: &str = r"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[1], '')
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
";

/// KEYS: tag sets (sorted sets: slot → the instant it may be forgotten,
/// ms by Redis's clock). ARGV: slot, keep ms. Records the slot under each
/// tag and trims members past their instant, so a set follows its live
/// entries (O(log n + trimmed) per call) instead of growing for ever.
const TAG: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local keep = tonumber(ARGV[2])
for _, set in ipairs(KEYS) do
  redis.call('ZADD', set, 'GT', now + keep, ARGV[1])
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  redis.call('PEXPIRE', set, keep, 'GT')
  redis.call('PEXPIRE', set, keep, 'NX')
end
return #KEYS
";

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
const TAG_SNAPSHOT_POP: &str = r"
if ARGV[2] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZRANGESTORE', KEYS[2], KEYS[1], 0, -1) == 0 then return {0, {}} end
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local popped = redis.call('ZPOPMIN', KEYS[2], tonumber(ARGV[1]))
local slots = {}
for i = 1, #popped, 2 do
  local slot = popped[i]
  if ARGV[4] == '1' then
    redis.call('DEL', slot .. ':value', slot .. ':lock', slot .. ':fail')
    redis.call('PUBLISH', slot .. ':ready', '')
  else
    slots[#slots + 1] = slot
  end
end
return {redis.call('ZCARD', KEYS[2]), slots}
";

/// KEYS: value, lock, fail. ARGV: ready channel. A tag invalidation's
/// step for one slot: its value, lock and failure record deleted, its
/// waiters woken.
const DROP_SLOT: &str = r"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[1], '')
return 1
";

/// How long an invalidation's snapshot of its tag may outlive a process
/// that died half-way through it.
const TAG_SNAPSHOT_TTL: Duration = Duration::from_secs(60);

/// Slots one `TAG_SNAPSHOT_POP` call hands out.
const TAG_CHUNK: usize = 256;

/// KEYS: generation. ARGV: invalidation channel, sender.
const INVALIDATE_ALL: &str = r"
local g = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. g .. ' *')
return g
";

/// A [`SharedBackend`] on one Redis or Valkey primary; see the
/// [module docs](self). Cloning shares the connections.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<RedisInner>,
}

/// The ACL rules a Redis user needs for a backend with key prefix `prefix`
/// (append them to `ACL SETUSER <user> on ><password>`): its keys and
/// channels only, and exactly the commands the backend sends (and its
/// scripts run). Redis 7 denies channels by default, hence `&<prefix>:*`.
///
/// ```
/// let rules = stampede_cache::redis::acl_rules("stampede");
/// assert!(rules.starts_with("resetkeys ~stampede:* resetchannels &stampede:* -@all"));
/// // ACL SETUSER app on >secret resetkeys ~stampede:* resetchannels &stampede:* -@all +get ...
/// ```
pub fn acl_rules(prefix: &str) -> String {
    let commands = [
        // the scripts' commands (ACL checks commands a script runs, too)
        "get",
        "set",
        "del",
        "pttl",
        "exists",
        "pexpire",
        "publish",
        "incr",
        "time",
        "zadd",
        "zremrangebyscore",
        "zrangestore",
        "zpopmin",
        "zcard",
        // scripts are sent by hash, loaded on NOSCRIPT
        "evalsha",
        "script|load",
        // a Cluster's slot map, and a redirect during a slot migration
        "cluster|slots",
        "asking",
        // the notice connection
        "subscribe",
        "unsubscribe",
        "ping",
    ];
    let mut rules = format!("resetkeys ~{prefix}:* resetchannels &{prefix}:* -@all");
    for command in commands {
        rules.push_str(" +");
        rules.push_str(command);
    }
    rules
}

/// Configures a [`RedisBackend`]; from [`RedisBackend::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .connect()"]
pub struct RedisBackendBuilder {
    url: String,
    /// With [`RedisBackend::cluster_builder`]: the other seed nodes (`url`
    /// is the first), and that it is a Cluster.
    seeds: Vec<String>,
    cluster: bool,
    prefix: String,
    command_timeout: Duration,
    breaker_cooldown: Duration,
    ping_interval: Duration,
    tls: Option<RedisTls>,
    /// ACL user and password, overriding the URL's.
    credentials: Option<(Option<String>, String)>,
}

/// TLS settings of a `rediss://` connection beyond the URL: the CA that
/// signed the server's certificate (instead of the system's roots) and a
/// client certificate for mutual TLS. Without them a `rediss://` URL
/// verifies the server against the system's trust store.
///
/// ```no_run
/// # async fn start() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use stampede_cache::redis::{RedisBackend, RedisTls};
///
/// let tls = RedisTls::new().ca_pem(std::fs::read("/etc/redis/ca.crt")?);
/// let backend = RedisBackend::builder("rediss://cache.internal:6380/")
///     .tls(tls)
///     .credentials(Some("stampede"), "secret")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct RedisTls {
    ca_pem: Option<Vec<u8>>,
    client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTls {
    /// The system's trust store, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the CA(s) in `pem` (PEM-encoded certificates) instead of the
    /// system's roots: what a managed Redis's own CA, or a private one, needs.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this client certificate and key (both PEM) for mutual TLS.
    pub fn client_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_pem = Some((cert.into(), key.into()));
        self
    }
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints key material.
        f.debug_struct("RedisTls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_pem.is_some())
            .finish()
    }
}

struct Scripts {
    read: Script,
    lock: Script,
    renew: Script,
    release: Script,
    write_fenced: Script,
    fail_fenced: Script,
    insert: Script,
    invalidate: Script,
    invalidate_all: Script,
    tag_snapshot_pop: Script,
    drop_slot: Script,
    tag: Script,
}

struct RedisInner {
    prefix: String,
    timeout: Duration,
    conn: Commands,
    hub: Arc<Hub>,
    writes: Arc<WriteBehind>,
    held: Arc<HeldLocks>,
    scripts: Scripts,
    breaker: Breaker,
    subs: Arc<Subs>,
    subscriber: JoinHandle<()>,
    commands: AtomicU64,
}

impl Drop for RedisInner {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl RedisBackend {
    /// Connects with the default prefix ([`DEFAULT_PREFIX`]) and command
    /// timeout ([`DEFAULT_COMMAND_TIMEOUT`]). Fails if Redis cannot be
    /// reached now; once connected, later outages are survived (calls fail
    /// open, the connections come back by themselves).
    ///
    /// `url` is a redis-rs connection URL: `redis://[user:pass@]host:port/[db]`.
    pub async fn connect(url: &str) -> Result<Self, BackendError> {
        Self::builder(url).connect().await
    }

    /// Connects to the Redis Cluster that `nodes` (seed URLs, any of them
    /// reachable is enough) belong to, with the defaults; see
    /// [`cluster_builder`](Self::cluster_builder).
    pub async fn connect_cluster<I, S>(nodes: I) -> Result<Self, BackendError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::cluster_builder(nodes).connect().await
    }

    /// Starts configuring a backend on a Redis Cluster (or a managed
    /// cluster endpoint: ElastiCache, MemoryDB, Azure Cache in cluster mode)
    /// from seed URLs — `redis://` or `rediss://`, every one with the same
    /// credentials. Commands follow the cluster's slot map (redirects,
    /// fail-overs and slot migrations are followed by redis-rs); each key's
    /// value, lock and failure record share one hash slot, so every script
    /// touches one slot. Notices travel as classic pub/sub, which a Cluster
    /// delivers on every node: the notice connection is on one node at a
    /// time and moves to the next seed when that one is lost.
    pub fn cluster_builder<I, S>(nodes: I) -> RedisBackendBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let url = if nodes.is_empty() {
            String::new()
        } else {
            nodes.remove(0)
        };
        RedisBackendBuilder {
            seeds: nodes,
            cluster: true,
            ..Self::builder(&url)
        }
    }

    /// Starts configuring a backend for `url`.
    pub fn builder(url: &str) -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: url.to_owned(),
            seeds: Vec::new(),
            cluster: false,
            prefix: DEFAULT_PREFIX.to_owned(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            breaker_cooldown: DEFAULT_BREAKER_COOLDOWN,
            ping_interval: DEFAULT_PING_INTERVAL,
            tls: None,
            credentials: None,
        }
    }

    /// Redis commands (script invocations included) this backend has sent:
    /// the round trips, for benchmarks and diagnostics. Commands the open
    /// circuit breaker failed at once are not sent, so not counted here.
    pub fn commands_sent(&self) -> u64 {
        self.inner.commands.load(Ordering::Relaxed)
    }

    /// How many times the circuit breaker opened after
    /// [`BREAKER_THRESHOLD`] consecutive command timeouts (a failed probe
    /// keeps it open; that is not counted again). See the
    /// [module docs](self#circuit-breaker).
    pub fn breaker_trips(&self) -> u64 {
        self.inner.breaker.trips.load(Ordering::Relaxed)
    }

    /// Commands the open circuit breaker failed at once (each one a call
    /// that ran its loader in process without waiting for Redis).
    pub fn breaker_rejections(&self) -> u64 {
        self.inner.breaker.rejected.load(Ordering::Relaxed)
    }

    /// Whether the circuit breaker is open or half-open now (commands fail
    /// at once, but for one probe per cool-down).
    pub fn breaker_is_open(&self) -> bool {
        !matches!(*self.inner.breaker.lock(), BreakerState::Closed { .. })
    }

    /// Notices (ready and invalidation messages) received on this backend's
    /// notice connection: what the fleet's pub/sub costs this process.
    pub fn notices_received(&self) -> u64 {
        self.inner.subs.notices.load(Ordering::Relaxed)
    }

    /// How many times the notice subscription was lost (the connection
    /// closed, or a liveness PING went unanswered) after being established.
    pub fn subscription_losses(&self) -> u64 {
        self.inner.subs.losses.load(Ordering::Relaxed)
    }

    /// Channels the notice connection is subscribed to now: the tag
    /// channel, one per `shared` cache built on this backend, and one per
    /// key a local flight is waiting on. 0 while the connection is down or
    /// being re-established (non-zero again once the L1 copies of the outage
    /// are dropped).
    pub fn subscribed_channels(&self) -> usize {
        if self.inner.subs.up.load(Ordering::Relaxed) {
            self.inner.subs.channels.load(Ordering::Relaxed)
        } else {
            0
        }
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.inner.prefix)
            .field("command_timeout", &self.inner.timeout)
            .field("breaker_cooldown", &self.inner.breaker.cooldown)
            .finish_non_exhaustive()
    }
}

impl RedisBackendBuilder {
    /// Prefix of every key and channel. Default [`DEFAULT_PREFIX`]. Give
    /// each application (or environment) sharing a Redis its own.
    ///
    /// # Panics
    /// If `prefix` is empty or contains `{` or `}` (it would break the hash tag).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(
            !prefix.is_empty() && !prefix.contains(['{', '}']),
            "stampede-cache: the Redis key prefix must be non-empty and free of braces, got {prefix:?}"
        );
        self.prefix = prefix;
        self
    }

    /// Bound on one Redis command (and on a connection attempt); past it the
    /// call runs its loader in process. Also the bound on a liveness PING
    /// of the notice connection. Default [`DEFAULT_COMMAND_TIMEOUT`].
    ///
    /// Saturated at [`MAX_SETTING`].
    ///
    /// # Panics
    /// If `timeout` is zero.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = positive("command timeout", timeout);
        self
    }

    /// How long the circuit breaker stays open after
    /// [`BREAKER_THRESHOLD`] consecutive command timeouts before one probe
    /// command may try Redis again: a hung Redis costs this process at most
    /// one command timeout per cool-down. Shorter notices a recovered Redis
    /// sooner; longer wastes fewer timeouts on a hung one. Default
    /// [`DEFAULT_BREAKER_COOLDOWN`].
    ///
    /// Saturated at [`MAX_SETTING`].
    ///
    /// # Panics
    /// If `cooldown` is zero.
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.breaker_cooldown = positive("circuit-breaker cool-down", cooldown);
        self
    }

    /// Interval of the liveness PING on the notice connection: a dead
    /// subscription (invalidations silently lost) is noticed within
    /// `ping_interval + command_timeout`, and the process's L1 copies are
    /// dropped then. Default [`DEFAULT_PING_INTERVAL`].
    ///
    /// Saturated at [`MAX_SETTING`].
    ///
    /// # Panics
    /// If `interval` is zero.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = positive("ping interval", interval);
        self
    }

    /// TLS settings for a `rediss://` URL: a custom CA, a client
    /// certificate (see [`RedisTls`]). Applies to every connection of the
    /// backend (commands and notices).
    pub fn tls(mut self, tls: RedisTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The ACL user (`None`: the `default` user) and password to
    /// authenticate with, instead of any in the URL. The user needs the
    /// permissions listed in the [module docs](self#acl-permissions).
    pub fn credentials(mut self, username: Option<&str>, password: &str) -> Self {
        self.credentials = Some((username.map(str::to_owned), password.to_owned()));
        self
    }

    /// The client, with TLS and credentials applied. A `rediss://` URL uses
    /// rustls; its crypto provider (ring) is installed as the process
    /// default unless the application installed one already.
    fn client(&self, url: &str) -> Result<(Client, ::redis::ConnectionInfo), BackendError> {
        let mut info = url.into_connection_info().map_err(|error| {
            BackendError::new(format!("redis: bad URL {:?}: {error}", redact(url)))
        })?;
        if let Some((username, password)) = &self.credentials {
            let mut settings = info.redis_settings().clone().set_password(password);
            if let Some(username) = username {
                settings = settings.set_username(username);
            }
            info = info.set_redis_settings(settings);
        }
        let tls = matches!(info.addr(), ::redis::ConnectionAddr::TcpTls { .. });
        if tls && rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err: another thread installed one meanwhile; either is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if self.tls.is_some() && !tls {
            return Err(BackendError::new(format!(
                "redis: TLS settings were given but {:?} is not a rediss:// URL",
                redact(url)
            )));
        }
        let client = match self.certificates() {
            Some(certificates) => Client::build_with_tls(info.clone(), certificates),
            None => Client::open(info.clone()),
        };
        Ok((client.map_err(connect_error)?, info))
    }

    /// The TLS certificates given with [`tls`](Self::tls), in redis-rs's terms.
    fn certificates(&self) -> Option<::redis::TlsCertificates> {
        self.tls.as_ref().map(|settings| ::redis::TlsCertificates {
            client_tls: settings
                .client_pem
                .as_ref()
                .map(|(cert, key)| ::redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: settings.ca_pem.clone(),
        })
    }

    /// Connects the command connection and the notice subscription.
    ///
    /// # Errors
    /// Redis unreachable within four command timeouts; a wrong user or
    /// password (the error says `authentication failed`); an untrusted or
    /// mismatched server certificate (`TLS`); a malformed URL.
    pub async fn connect(self) -> Result<RedisBackend, BackendError> {
        if self.url.is_empty() {
            return Err(BackendError::new("redis: no node URL given"));
        }
        let urls: Vec<String> = std::iter::once(self.url.clone())
            .chain(self.seeds.iter().cloned())
            .collect();
        let mut clients = Vec::with_capacity(urls.len());
        let mut infos = Vec::with_capacity(urls.len());
        for url in &urls {
            let (client, info) = self.client(url)?;
            clients.push(client);
            infos.push(info);
        }
        let connect_bound = self.command_timeout * 4;
        let commands = if self.cluster {
            let credentials = self.credentials.clone();
            Commands::cluster(
                infos,
                credentials,
                self.certificates(),
                self.command_timeout,
            )
            .boxed()
        } else {
            Commands::single(clients[0].clone(), self.command_timeout).boxed()
        };
        let conn = match tokio::time::timeout(connect_bound, commands).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => return Err(connect_error(error)),
            Err(_) => return Err(BackendError::timeout(connect_bound)),
        };
        let (subs, doorbell) = Subs::new(self.prefix.clone());
        let hub = Arc::new(Hub::with_subscriber(subs.clone(), self.command_timeout));
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let subscriber = tokio::spawn(subscription(
            clients,
            subs.clone(),
            hub.clone(),
            SubConfig {
                timeout: self.command_timeout,
                ping_interval: self.ping_interval,
            },
            subscribed_tx,
            doorbell,
        ));
        match tokio::time::timeout(connect_bound * 2, subscribed_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                subscriber.abort();
                return Err(error);
            }
            _ => {
                subscriber.abort();
                return Err(BackendError::timeout(connect_bound * 2));
            }
        }
        Ok(RedisBackend {
            inner: Arc::new(RedisInner {
                prefix: self.prefix,
                timeout: self.command_timeout,
                conn,
                hub,
                writes: Arc::default(),
                held: Arc::default(),
                scripts: Scripts {
                    read: Script::new(READ),
                    lock: Script::new(LOCK),
                    renew: Script::new(RENEW),
                    release: Script::new(RELEASE),
                    write_fenced: Script::new(WRITE_FENCED),
                    fail_fenced: Script::new(FAIL_FENCED),
                    insert: Script::new(INSERT),
                    invalidate: Script::new(INVALIDATE),
                    invalidate_all: Script::new(INVALIDATE_ALL),
                    tag_snapshot_pop: Script::new(TAG_SNAPSHOT_POP),
                    drop_slot: Script::new(DROP_SLOT),
                    tag: Script::new(TAG),
                },
                breaker: Breaker::new(self.breaker_cooldown),
                subs,
                subscriber,
                commands: AtomicU64::new(0),
            }),
        })
    }
}

impl From<RedisBackend> for SharedBackend {
    fn from(backend: RedisBackend) -> Self {
        SharedBackend::new(backend.inner, "redis")
    }
}

/// The longest any duration setting of the builder is taken as: longer ones
/// (`Duration::MAX` included) saturate here, so no bound, timer or backoff
/// derived from them can overflow.
pub const MAX_SETTING: Duration = Duration::from_secs(24 * 60 * 60);

/// `duration`, after checking it is not zero (a builder setting's
/// contract), saturated at [`MAX_SETTING`].
fn positive(what: &str, duration: Duration) -> Duration {
    assert!(
        !duration.is_zero(),
        "stampede-cache: the {what} must be > 0"
    );
    duration.min(MAX_SETTING)
}

fn redis_error(error: ::redis::RedisError) -> BackendError {
    BackendError::new(format!("redis: {error}"))
}

/// A failed connect, with its cause named: authentication, TLS, or other.
fn connect_error(error: ::redis::RedisError) -> BackendError {
    let text = error.to_string();
    let lower = text.to_lowercase();
    if error.kind() == ::redis::ErrorKind::AuthenticationFailed
        || lower.contains("wrongpass")
        || lower.contains("noauth")
        || lower.contains("invalid username-password")
    {
        return BackendError::new(format!(
            "redis: authentication failed (wrong user or password, or the ACL user is disabled): {text}"
        ));
    }
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        return BackendError::new(format!(
            "redis: TLS handshake failed (is the server's certificate signed by the CA given with RedisTls::ca_pem, or by a system root, and does it name this host?): {text}"
        ));
    }
    redis_error(error)
}

/// `url` with any password replaced by `***`, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Runs `op` for at most `timeout`; a timeout (ours, or one redis-rs
/// reports) is a [`BackendError::is_timeout`].
async fn bounded<T>(
    timeout: Duration,
    op: impl Future<Output = ::redis::RedisResult<T>>,
) -> BackendResult<T> {
    match tokio::time::timeout(timeout, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) if error.is_timeout() => Err(BackendError::timeout(timeout)),
        Ok(Err(error)) => Err(redis_error(error)),
        Err(_) => Err(BackendError::timeout(timeout)),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The ready channel of a slot (as [`Slot::ready`] names it).
fn ready_channel(slot: &str) -> String {
    format!("{slot}:ready")
}

// ---------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------

enum BreakerState {
    /// Commands go through; `timeouts` consecutive ones timed out.
    Closed { timeouts: u32 },
    /// Commands fail at once until `until`.
    Open { until: Instant },
    /// One probe went through at `since`; the others fail at once.
    Probing { since: Instant },
}

/// How a command was let through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Normal,
    Probe,
}

struct Breaker {
    state: Mutex<BreakerState>,
    cooldown: Duration,
    trips: AtomicU64,
    rejected: AtomicU64,
}

impl Breaker {
    fn new(cooldown: Duration) -> Self {
        Self {
            state: Mutex::new(BreakerState::Closed { timeouts: 0 }),
            cooldown,
            trips: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a command through, or fails it at once while open.
    fn admit(&self) -> BackendResult<Pass> {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => return Ok(Pass::Normal),
            BreakerState::Open { until } if now >= until => {
                *state = BreakerState::Probing { since: now };
                return Ok(Pass::Probe);
            }
            // A probe whose outcome never came (its caller was dropped):
            // let another through.
            BreakerState::Probing { since } if now >= since + self.cooldown => {
                *state = BreakerState::Probing { since: now };
                return Ok(Pass::Probe);
            }
            BreakerState::Open { .. } | BreakerState::Probing { .. } => {}
        }
        drop(state);
        self.rejected.fetch_add(1, Ordering::Relaxed);
        Err(BackendError::new(format!(
            "redis: circuit breaker open after {BREAKER_THRESHOLD} consecutive command timeouts (a probe goes through every {:?})",
            self.cooldown
        )))
    }

    /// Records the outcome of a command let through as `pass`.
    fn settle<T>(&self, pass: Pass, result: &BackendResult<T>) {
        let timed_out = matches!(result, Err(error) if error.is_timeout());
        let mut state = self.lock();
        match (pass, &mut *state) {
            (Pass::Probe, BreakerState::Probing { .. }) if timed_out => {
                *state = BreakerState::Open {
                    until: Instant::now() + self.cooldown,
                };
                tracing::debug!(cooldown = ?self.cooldown, "redis circuit breaker probe timed out; open for another cool-down");
            }
            (Pass::Probe, BreakerState::Probing { .. }) => {
                *state = BreakerState::Closed { timeouts: 0 };
                tracing::info!("redis answers again: circuit breaker closed");
            }
            (Pass::Normal, BreakerState::Closed { timeouts }) if timed_out => {
                *timeouts += 1;
                if *timeouts >= BREAKER_THRESHOLD {
                    *state = BreakerState::Open {
                        until: Instant::now() + self.cooldown,
                    };
                    self.trips.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        cooldown = ?self.cooldown,
                        "redis: {BREAKER_THRESHOLD} consecutive command timeouts: circuit breaker open; calls run their loaders in process without waiting, one probe per cool-down"
                    );
                }
            }
            (Pass::Normal, BreakerState::Closed { timeouts }) => *timeouts = 0,
            // Outcomes of commands let through before the state changed.
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Notice subscription
// ---------------------------------------------------------------------------

/// The channels this process needs, shared by the hub (which changes them)
/// and the subscription task (which subscribes them).
struct Subs {
    prefix: String,
    /// This backend's id on the tags channel: its own tag notices are
    /// skipped (it applied the tag before sending).
    id: u64,
    desired: Mutex<Desired>,
    /// Rung when `desired` changed (capacity 1: a ring is never lost).
    doorbell: mpsc::Sender<()>,
    /// Whether a subscription connection is established.
    up: AtomicBool,
    /// Caches registered so far (`Desired::caches.len()`).
    caches_wanted: AtomicU64,
    /// Caches whose invalidation channel a live connection confirmed.
    caches_confirmed: watch::Sender<u64>,
    /// A command stopped waiting for the caches up to this one (timed out).
    caches_given_up: AtomicU64,
    notices: AtomicU64,
    losses: AtomicU64,
    channels: AtomicUsize,
}

#[derive(Default)]
struct Desired {
    /// The tags channel, then the caches' invalidation channels in
    /// registration order (never removed: one per cache name).
    caches: Vec<String>,
    /// Watched slots, each with the flag to set once its subscription is
    /// confirmed (taken when the subscription is sent).
    ready: HashMap<String, Option<watch::Sender<bool>>>,
    /// Slots watched or unwatched since the task last looked.
    dirty: HashSet<String>,
}

/// What one live connection is subscribed to.
#[derive(Default)]
struct Live {
    caches: usize,
    ready: HashSet<String>,
}

/// One round of changes to a live connection's subscriptions.
#[derive(Default)]
struct Plan {
    subscribe: Vec<String>,
    /// Slots among `subscribe`.
    ready_added: Vec<String>,
    /// Slots to unsubscribe.
    unsubscribe: Vec<String>,
    /// `Desired::caches.len()` when planned.
    caches: usize,
    /// Watches of slots already subscribed: confirmed at once.
    confirm_now: Vec<(String, watch::Sender<bool>)>,
    /// Confirmed once `subscribe` is.
    confirm_after: Vec<(String, watch::Sender<bool>)>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty() && self.confirm_now.is_empty()
    }
}

impl Subs {
    fn new(prefix: String) -> (Arc<Self>, mpsc::Receiver<()>) {
        let (doorbell, rx) = mpsc::channel(1);
        // The tag-invalidation channel is the process's from the start.
        let desired = Desired {
            caches: vec![tags_channel(&prefix)],
            ..Desired::default()
        };
        let subs = Arc::new(Self {
            id: fastrand::u64(..),
            caches_wanted: AtomicU64::new(desired.caches.len() as u64),
            desired: Mutex::new(desired),
            prefix,
            doorbell,
            up: AtomicBool::new(false),
            caches_confirmed: watch::channel(0).0,
            caches_given_up: AtomicU64::new(0),
            notices: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            channels: AtomicUsize::new(0),
        });
        (subs, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Desired> {
        self.desired.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ring(&self) {
        let _ = self.doorbell.try_send(());
    }

    /// A new connection: everything desired is to be subscribed on it.
    fn connection_started(&self) {
        let mut desired = self.lock();
        let Desired { ready, dirty, .. } = &mut *desired;
        dirty.extend(ready.keys().cloned());
    }

    /// The connection is lost: no waiter waits for a confirmation any more.
    fn connection_lost(&self) {
        self.up.store(false, Ordering::Relaxed);
        self.channels.store(0, Ordering::Relaxed);
        self.losses.fetch_add(1, Ordering::Relaxed);
        for pending in self.lock().ready.values_mut() {
            *pending = None;
        }
    }

    fn plan(&self, live: &Live) -> Plan {
        let mut desired = self.lock();
        let mut plan = Plan {
            subscribe: desired.caches[live.caches..].to_vec(),
            caches: desired.caches.len(),
            ..Plan::default()
        };
        for slot in std::mem::take(&mut desired.dirty) {
            let on = live.ready.contains(&slot);
            match desired.ready.get_mut(&slot) {
                Some(pending) => {
                    let confirm = pending.take();
                    if on {
                        plan.confirm_now.extend(confirm.map(|tx| (slot, tx)));
                    } else {
                        plan.subscribe.push(ready_channel(&slot));
                        plan.ready_added.push(slot.clone());
                        plan.confirm_after.extend(confirm.map(|tx| (slot, tx)));
                    }
                }
                None if on => plan.unsubscribe.push(slot),
                None => {}
            }
        }
        plan
    }

    /// Before a command: waits (at most `bound`) until the invalidation
    /// channels of the caches registered so far are subscribed, so no value
    /// reaches an L1 that its invalidations cannot reach. Skipped while the
    /// connection is down (the re-subscription drops L1 copies anyway).
    async fn caches_subscribed(&self, bound: Duration) {
        let wanted = self.caches_wanted.load(Ordering::Acquire);
        if wanted <= *self.caches_confirmed.borrow()
            || wanted <= self.caches_given_up.load(Ordering::Relaxed)
            || !self.up.load(Ordering::Relaxed)
        {
            return;
        }
        let mut confirmed = self.caches_confirmed.subscribe();
        if tokio::time::timeout(bound, confirmed.wait_for(|c| *c >= wanted))
            .await
            .is_err()
        {
            self.caches_given_up.fetch_max(wanted, Ordering::Relaxed);
            tracing::debug!("redis: invalidation channels not confirmed in time; going on");
        }
    }
}

impl Subscriber for Subs {
    fn cache(&self, name: &str) {
        let mut desired = self.lock();
        desired
            .caches
            .push(CacheKeys::new(&self.prefix, name).invalidations());
        self.caches_wanted
            .store(desired.caches.len() as u64, Ordering::Release);
        drop(desired);
        self.ring();
    }

    fn watch(&self, slot: &str) -> Option<watch::Receiver<bool>> {
        let (tx, rx) = if self.up.load(Ordering::Relaxed) {
            let (tx, rx) = watch::channel(false);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let mut desired = self.lock();
        desired.ready.insert(slot.to_owned(), tx);
        desired.dirty.insert(slot.to_owned());
        drop(desired);
        self.ring();
        rx
    }

    fn unwatch(&self, slot: &str) {
        let mut desired = self.lock();
        desired.ready.remove(slot);
        desired.dirty.insert(slot.to_owned());
        drop(desired);
        self.ring();
    }
}

struct SubConfig {
    timeout: Duration,
    ping_interval: Duration,
}

impl SubConfig {
    /// Bound on one connection attempt, and on subscribing everything on it.
    fn attempt_bound(&self) -> Duration {
        self.timeout * 4
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The notice subscription task: (re)connects with backoff, keeps the
/// connection's subscriptions in line with what the hub needs, checks its
/// liveness. The first connection's outcome goes to `first`.
async fn subscription(
    clients: Vec<Client>,
    subs: Arc<Subs>,
    hub: Arc<Hub>,
    config: SubConfig,
    first: oneshot::Sender<BackendResult<()>>,
    mut doorbell: mpsc::Receiver<()>,
) {
    let mut first = Some(first);
    let mut backoff = MIN_BACKOFF;
    // On a Cluster, the seed nodes in turn: classic pub/sub reaches every
    // node, so any one will do, and a lost one is not waited for.
    let mut node = 0;
    loop {
        let client = &clients[node % clients.len()];
        let outcome = match bounded(config.attempt_bound(), client.get_async_pubsub()).await {
            Ok(pubsub) => serve(pubsub, &subs, &hub, &config, &mut first, &mut doorbell).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => backoff = MIN_BACKOFF,
            Err(error) => {
                if first.is_some() && node + 1 < clients.len() {
                    tracing::debug!(%error, "redis notice subscription: seed node unreachable, trying the next");
                } else if let Some(tx) = first.take() {
                    let _ = tx.send(Err(error));
                    return;
                } else {
                    tracing::debug!(%error, "redis notice subscription: reconnect attempt failed");
                }
            }
        }
        node += 1;
        tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64())).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs one connection: subscribes everything current, then dispatches
/// notices, follows the hub's needs and PINGs, until the connection is lost
/// (`Ok`) — or fails before it was established (`Err`).
async fn serve(
    pubsub: PubSub,
    subs: &Arc<Subs>,
    hub: &Arc<Hub>,
    config: &SubConfig,
    first: &mut Option<oneshot::Sender<BackendResult<()>>>,
    doorbell: &mut mpsc::Receiver<()>,
) -> BackendResult<()> {
    let (mut sink, stream) = pubsub.split();
    let mut live = Live::default();
    subs.connection_started();
    match tokio::time::timeout(
        config.attempt_bound(),
        reconcile(&mut sink, subs, hub, &mut live, config.timeout),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(error),
        Err(_) => return Err(BackendError::timeout(config.attempt_bound())),
    }
    match first.take() {
        Some(tx) => {
            subs.up.store(true, Ordering::Relaxed);
            let _ = tx.send(Ok(()));
        }
        None => {
            // Notices may have been published while we were away: forget
            // L1, re-check waiters.
            hub.gap();
            subs.up.store(true, Ordering::Relaxed);
            tracing::info!("redis notice subscription re-established; L1 copies dropped");
        }
    }
    let mut reader = AbortOnDrop(tokio::spawn(read(stream, hub.clone(), subs.clone())));
    let mut next_ping = Instant::now() + config.ping_interval;
    let reason = loop {
        tokio::select! {
            _ = &mut reader.0 => break "the connection closed".to_owned(),
            () = tokio::time::sleep_until(next_ping) => {
                match tokio::time::timeout(config.timeout, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => next_ping = Instant::now() + config.ping_interval,
                    Ok(Err(error)) => break format!("PING failed: {error}"),
                    Err(_) => break format!("no PONG within {:?}", config.timeout),
                }
            }
            Some(()) = doorbell.recv() => {
                if let Err(error) = reconcile(&mut sink, subs, hub, &mut live, config.timeout).await {
                    break error.to_string();
                }
            }
        }
    };
    drop(reader);
    subs.connection_lost();
    tracing::warn!(
        %reason,
        "redis notice subscription lost: L1 copies dropped (invalidations may be missed until it is back); reconnecting"
    );
    hub.gap();
    Ok(())
}

/// Brings the live connection's subscriptions in line with `subs`, each
/// (UN)SUBSCRIBE bounded by `timeout`; then confirms the watches.
async fn reconcile(
    sink: &mut PubSubSink,
    subs: &Subs,
    hub: &Hub,
    live: &mut Live,
    timeout: Duration,
) -> BackendResult<()> {
    loop {
        let plan = subs.plan(live);
        if plan.is_empty() {
            return Ok(());
        }
        for (slot, tx) in plan.confirm_now {
            hub.ready(&slot);
            let _ = tx.send(true);
        }
        if !plan.unsubscribe.is_empty() {
            let channels: Vec<String> = plan.unsubscribe.iter().map(|s| ready_channel(s)).collect();
            for chunk in channels.chunks(CHUNK) {
                bounded(timeout, sink.unsubscribe(chunk)).await?;
            }
            for slot in &plan.unsubscribe {
                live.ready.remove(slot);
            }
        }
        for chunk in plan.subscribe.chunks(CHUNK) {
            bounded(timeout, sink.subscribe(chunk)).await?;
        }
        live.caches = plan.caches;
        live.ready.extend(plan.ready_added);
        subs.channels
            .store(live.caches + live.ready.len(), Ordering::Relaxed);
        subs.caches_confirmed.send_if_modified(|confirmed| {
            let raise = plan.caches as u64 > *confirmed;
            if raise {
                *confirmed = plan.caches as u64;
            }
            raise
        });
        for (slot, tx) in plan.confirm_after {
            // Wake first, then confirm: a waiter that waited for the
            // confirmation marks this wake seen.
            hub.ready(&slot);
            let _ = tx.send(true);
        }
    }
}

/// Dispatches the notices of one connection until it closes.
async fn read(mut stream: PubSubStream, hub: Arc<Hub>, subs: Arc<Subs>) {
    while let Some(msg) = stream.next().await {
        subs.notices.fetch_add(1, Ordering::Relaxed);
        dispatch(&hub, &subs, msg.get_channel_name(), msg.get_payload_bytes());
    }
}

/// Routes one notice by its channel (see [`slot`](super::slot)).
fn dispatch(hub: &Hub, subs: &Subs, channel: &str, payload: &[u8]) {
    let prefix = subs.prefix.as_str();
    match parse_channel(prefix, channel) {
        Some(Channel::Ready(slot)) => hub.ready(slot),
        Some(Channel::Invalidations(name)) => {
            if let Some(notice) = std::str::from_utf8(payload).ok().and_then(parse_notice) {
                hub.invalidated(name, &notice);
            }
        }
        Some(Channel::Tags) => {
            // "<sender id> <tag>"; the tag may contain spaces, the id does not.
            let notice = std::str::from_utf8(payload)
                .ok()
                .and_then(|p| p.split_once(' '));
            if let Some((sender, tag)) = notice
                && sender.parse::<u64>().ok() != Some(subs.id)
            {
                crate::tags::apply(tag);
            }
        }
        None => {}
    }
}

impl RedisInner {
    /// Lets a command through the breaker (or fails it at once), once the
    /// caches' invalidation channels are subscribed.
    async fn admit(&self) -> BackendResult<Pass> {
        let pass = self.breaker.admit()?;
        self.subscribed(pass).await
    }

    async fn subscribed(&self, pass: Pass) -> BackendResult<Pass> {
        self.subs.caches_subscribed(self.timeout).await;
        self.commands.fetch_add(1, Ordering::Relaxed);
        Ok(pass)
    }

    async fn invoke<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> BackendResult<T> {
        let pass = self.admit().await?;
        self.send(pass, invocation).await
    }

    async fn send<T: ::redis::FromRedisValue>(
        &self,
        pass: Pass,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> BackendResult<T> {
        let mut conn = self.conn.clone();
        let result = bounded(self.timeout, invocation.invoke_async(&mut conn)).await;
        self.breaker.settle(pass, &result);
        result
    }

    /// A release the open breaker refused: sent anyway, without waiting for
    /// it. It is queued on the connection behind the lock command that
    /// timed out (the reason for most releases while open), so it still
    /// deletes that lock if Redis runs both later; nobody waits for it.
    fn release_in_background(&self, slot: &Slot, token: &str) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.commands.fetch_add(1, Ordering::Relaxed);
        let (script, mut conn, timeout) = (
            self.scripts.release.clone(),
            self.conn.clone(),
            self.timeout,
        );
        let (lock, ready, token) = (slot.lock(), slot.ready(), token.to_owned());
        handle.spawn(async move {
            let mut invocation = script.key(lock);
            invocation.arg(token).arg(ready);
            let _ = tokio::time::timeout(timeout, invocation.invoke_async::<i64>(&mut conn)).await;
        });
    }

    async fn command<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> BackendResult<T> {
        let pass = self.admit().await?;
        let mut conn = self.conn.clone();
        let result = bounded(self.timeout, cmd.query_async(&mut conn)).await;
        self.breaker.settle(pass, &result);
        result
    }
}

/// Bytes of a bulk-string reply, `None` for nil/false.
fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        _ => None,
    }
}

fn int_of(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        _ => 0,
    }
}

fn malformed(what: &str) -> BackendError {
    BackendError::new(format!("redis: malformed reply to {what}"))
}

/// The time left of a value from its `PTTL` (a key without expiry: "forever").
fn time_left(pttl: i64) -> Duration {
    match u64::try_from(pttl) {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) if pttl == -1 => crate::strategy::FOREVER,
        Err(_) => Duration::ZERO,
    }
}

impl Backend for RedisInner {
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn writes(&self) -> &Arc<WriteBehind> {
        &self.writes
    }

    fn held(&self) -> &Arc<HeldLocks> {
        &self.held
    }

    /// A lock command that times out may still run when Redis resumes; the
    /// lock it leaves then lapses after this short lease (the leader renews
    /// to the full lease at once), and the tier queues a release behind it.
    fn initial_lease(&self, lease: Duration) -> Duration {
        lease.min((self.timeout * 4).max(Duration::from_millis(200)))
    }

    fn read<'a>(&'a self, slot: &'a Slot) -> BackendFut<'a, Found> {
        Box::pin(async move {
            let reply: Vec<Value> = self
                .invoke(
                    self.scripts
                        .read
                        .key(slot.value())
                        .key(slot.lock())
                        .key(slot.fail()),
                )
                .await?;
            let [value, pttl, failure, locked] = reply.as_slice() else {
                return Err(malformed("read"));
            };
            Ok(Found {
                value: bytes_of(value).map(|bytes| (bytes, time_left(int_of(pttl)))),
                failure: bytes_of(failure),
                locked: int_of(locked) == 1,
            })
        })
    }

    fn lock<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        lease: Duration,
        or_value: bool,
        honour_failure: bool,
    ) -> BackendFut<'a, Acquire> {
        Box::pin(async move {
            let reply: Vec<Value> = self
                .invoke(
                    self.scripts
                        .lock
                        .key(slot.value())
                        .key(slot.lock())
                        .key(slot.fail())
                        .arg(token)
                        .arg(millis(lease))
                        .arg(if or_value { "1" } else { "0" })
                        .arg(if honour_failure { "1" } else { "0" }),
                )
                .await?;
            match reply.as_slice() {
                [tag, value, pttl] if int_of(tag) == 1 => Ok(Acquire::Value(
                    bytes_of(value).ok_or_else(|| malformed("lock"))?,
                    time_left(int_of(pttl)),
                )),
                [tag, record] if int_of(tag) == 2 => Ok(Acquire::Failed(
                    bytes_of(record).ok_or_else(|| malformed("lock"))?,
                )),
                [tag] if int_of(tag) == 3 => Ok(Acquire::Locked),
                [tag, record] if int_of(tag) == 4 => Ok(Acquire::Held(bytes_of(record))),
                _ => Err(malformed("lock")),
            }
        })
    }

    fn renew<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        lease: Duration,
    ) -> BackendFut<'a, bool> {
        Box::pin(async move {
            let renewed: i64 = self
                .invoke(
                    self.scripts
                        .renew
                        .key(slot.lock())
                        .arg(token)
                        .arg(millis(lease)),
                )
                .await?;
            Ok(renewed == 1)
        })
    }

    fn release<'a>(&'a self, slot: &'a Slot, token: &'a str) -> BackendFut<'a, bool> {
        Box::pin(async move {
            let pass = match self.breaker.admit() {
                Ok(pass) => self.subscribed(pass).await?,
                Err(open) => {
                    self.release_in_background(slot, token);
                    return Err(open);
                }
            };
            let released: i64 = self
                .send(
                    pass,
                    self.scripts
                        .release
                        .key(slot.lock())
                        .arg(token)
                        .arg(slot.ready()),
                )
                .await?;
            Ok(released == 1)
        })
    }

    fn write<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        bytes: &'a [u8],
        ttl: Duration,
    ) -> BackendFut<'a, bool> {
        Box::pin(async move {
            let written: i64 = self
                .invoke(
                    self.scripts
                        .write_fenced
                        .key(slot.lock())
                        .key(slot.value())
                        .key(slot.fail())
                        .arg(token)
                        .arg(bytes)
                        .arg(millis(ttl))
                        .arg(slot.ready()),
                )
                .await?;
            Ok(written == 1)
        })
    }

    fn fail<'a>(
        &'a self,
        slot: &'a Slot,
        token: &'a str,
        record: &'a [u8],
        ttl: Duration,
    ) -> BackendFut<'a, bool> {
        Box::pin(async move {
            let failed: i64 = self
                .invoke(
                    self.scripts
                        .fail_fenced
                        .key(slot.lock())
                        .key(slot.fail())
                        .arg(token)
                        .arg(record)
                        .arg(millis(ttl))
                        .arg(slot.ready()),
                )
                .await?;
            Ok(failed == 1)
        })
    }

    fn insert<'a>(
        &'a self,
        slot: &'a Slot,
        cache: &'a CacheKeys,
        bytes: &'a [u8],
        ttl: Duration,
        notice: &'a str,
    ) -> BackendFut<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .invoke(
                    self.scripts
                        .insert
                        .key(slot.value())
                        .key(slot.lock())
                        .key(slot.fail())
                        .arg(bytes)
                        .arg(millis(ttl))
                        .arg(slot.ready())
                        .arg(cache.invalidations())
                        .arg(notice),
                )
                .await?;
            Ok(())
        })
    }

    fn invalidate<'a>(
        &'a self,
        slot: &'a Slot,
        cache: &'a CacheKeys,
        notice: &'a str,
    ) -> BackendFut<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .invoke(
                    self.scripts
                        .invalidate
                        .key(slot.value())
                        .key(slot.lock())
                        .key(slot.fail())
                        .arg(slot.ready())
                        .arg(cache.invalidations())
                        .arg(notice),
                )
                .await?;
            Ok(())
        })
    }

    fn tag<'a>(
        &'a self,
        slot: &'a Slot,
        tags: &'a [Arc<str>],
        ttl: Duration,
    ) -> BackendFut<'a, ()> {
        Box::pin(async move {
            // On a Cluster each tag's record is in its own hash slot: one
            // script per tag. On one primary, one for all.
            let groups: Vec<&[Arc<str>]> = if self.conn.is_cluster() {
                tags.chunks(1).collect()
            } else {
                vec![tags]
            };
            for group in groups {
                let mut invocation = self.scripts.tag.prepare_invoke();
                for tag in group {
                    invocation.key(tag_set(&self.prefix, tag));
                }
                invocation.arg(slot.as_str()).arg(millis(ttl));
                // Through the breaker like every command: with Redis hung,
                // tagged misses are refused at once, and count towards tripping it.
                let _: i64 = self.invoke(&invocation).await?;
            }
            Ok(())
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BackendFut<'a, ()> {
        Box::pin(async move {
            let set = tag_set(&self.prefix, tag);
            // Beside the set (same hash slot), one per invalidation.
            let snapshot = format!("{set}:inv:{:016x}", fastrand::u64(..));
            let here = !self.conn.is_cluster();
            let mut first = true;
            loop {
                let mut pop = self.scripts.tag_snapshot_pop.prepare_invoke();
                pop.key(&set)
                    .key(&snapshot)
                    .arg(TAG_CHUNK)
                    .arg(u8::from(first))
                    .arg(millis(TAG_SNAPSHOT_TTL))
                    .arg(u8::from(here));
                first = false;
                let (left, slots): (usize, Vec<String>) = self.invoke(&pop).await?;
                // One script per slot, sent together (pipelined on the
                // connection; spread over the shards on a Cluster).
                let drops = slots.into_iter().map(|raw| async move {
                    let slot = Slot::recorded(raw);
                    let mut drop = self.scripts.drop_slot.prepare_invoke();
                    drop.key(slot.value())
                        .key(slot.lock())
                        .key(slot.fail())
                        .arg(slot.ready());
                    self.invoke::<i64>(&drop).await
                });
                for dropped in futures_util::future::join_all(drops).await {
                    dropped?;
                }
                if left == 0 {
                    break;
                }
            }
            // Last, once every slot is deleted: a process that drops its
            // copies on this notice and reloads cannot read an old value back.
            let _: i64 = self
                .command(
                    ::redis::cmd("PUBLISH")
                        .arg(tags_channel(&self.prefix))
                        .arg(format!("{} {tag}", self.subs.id)),
                )
                .await?;
            Ok(())
        })
    }

    fn generation<'a>(&'a self, cache: &'a CacheKeys) -> BackendFut<'a, u64> {
        Box::pin(async move {
            let generation: Option<u64> = self
                .command(::redis::cmd("GET").arg(cache.generation()))
                .await?;
            Ok(generation.unwrap_or(0))
        })
    }

    fn invalidate_all<'a>(&'a self, cache: &'a CacheKeys, sender: u64) -> BackendFut<'a, u64> {
        Box::pin(async move {
            self.invoke(
                self.scripts
                    .invalidate_all
                    .key(cache.generation())
                    .arg(cache.invalidations())
                    .arg(sender),
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_channel_is_the_slots() {
        let slot = Slot::new("app", "users", "0a");
        assert_eq!(ready_channel(slot.as_str()), slot.ready());
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_consecutive_timeouts_and_probes_once_per_cooldown() {
        let cooldown = Duration::from_secs(2);
        let breaker = Breaker::new(cooldown);
        let timeout: BackendResult<()> = Err(BackendError::timeout(Duration::from_millis(1)));
        let answered: BackendResult<()> = Ok(());
        let failed: BackendResult<()> = Err(BackendError::new("refused"));

        // Timeouts must be consecutive; an answer or a fast error resets.
        for _ in 0..BREAKER_THRESHOLD - 1 {
            breaker.settle(breaker.admit().unwrap(), &timeout);
        }
        breaker.settle(breaker.admit().unwrap(), &answered);
        for _ in 0..BREAKER_THRESHOLD - 1 {
            breaker.settle(breaker.admit().unwrap(), &timeout);
        }
        breaker.settle(breaker.admit().unwrap(), &failed);
        assert_eq!(breaker.trips.load(Ordering::Relaxed), 0);

        for _ in 0..BREAKER_THRESHOLD {
            breaker.settle(breaker.admit().unwrap(), &timeout);
        }
        assert_eq!(breaker.trips.load(Ordering::Relaxed), 1, "open");
        let error = breaker.admit().err().expect("fails at once while open");
        assert!(!error.is_timeout());

        tokio::time::sleep(cooldown).await;
        let probe = breaker.admit().unwrap();
        assert!(probe == Pass::Probe, "one probe after the cool-down");
        assert!(breaker.admit().is_err(), "only one");
        breaker.settle(probe, &timeout);
        assert!(breaker.admit().is_err(), "a failed probe re-opens it");
        assert_eq!(breaker.trips.load(Ordering::Relaxed), 1, "not a new trip");

        tokio::time::sleep(cooldown).await;
        let probe = breaker.admit().unwrap();
        breaker.settle(probe, &answered);
        assert!(
            breaker.admit().unwrap() == Pass::Normal,
            "an answer closes it"
        );
        assert_eq!(breaker.rejected.load(Ordering::Relaxed), 3);

        // A probe whose outcome never comes does not keep it open forever.
        for _ in 0..BREAKER_THRESHOLD {
            breaker.settle(breaker.admit().unwrap(), &timeout);
        }
        tokio::time::sleep(cooldown).await;
        let _lost = breaker.admit().unwrap();
        assert!(breaker.admit().is_err());
        tokio::time::sleep(cooldown).await;
        assert!(breaker.admit().unwrap() == Pass::Probe);
    }
}
