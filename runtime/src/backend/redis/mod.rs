//! The Redis backend of `shared` caches (cargo feature `redis`).
//!
//! One Redis (or Valkey) primary — or a Redis Cluster
//! ([`RedisBackend::cluster_builder`]) — holds, per key of a `shared` cache,
//! the value (L2) and the key's lock; pub/sub channels carry the ready and
//! invalidation notices. Keys are `<prefix>:{<cache name>:<hex of the key's
//! MessagePack bytes>}:<kind>`, so the lock, value, failure record and
//! ready channel of one key share a Cluster hash slot, and every script
//! touches one slot.
//!
//! Files: `builder.rs` (configure, connect), `conn.rs` (one primary or a
//! cluster: the only place they differ), `ops.rs` (the operations),
//! `scripts.rs` with `lua/` (the scripts), `breaker.rs`, `subscription.rs`
//! (the notice connection).
//!
//! - Commands go through redis-rs's [`ConnectionManager`] (one primary) or
//!   its async cluster connection (a Cluster: redirects, fail-overs and slot
//!   migrations followed, explicit response timeouts and two retries),
//!   which reconnect by themselves; each is bounded by a command timeout
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
//! `SUBSCRIBE`, no pattern; on a Cluster, sharded `SSUBSCRIBE` on a RESP3
//! cluster connection of its own, each channel on the shard that owns its
//! slot, so no notice is broadcast to every node — a slot that moves
//! counts as a lost subscription, see `subscription.rs`) to
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
//!     +cluster|slots +asking +subscribe +unsubscribe +ssubscribe +sunsubscribe
//!     +spublish +ping
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

mod breaker;
mod builder;
mod conn;
mod ops;
mod scripts;
mod subscription;

pub use builder::{MAX_SETTING, RedisBackendBuilder, RedisTls};

use breaker::{Breaker, BreakerState, Pass};
use scripts::{Scripts, TAG_CHUNK, TAG_SNAPSHOT_TTL};
use subscription::{NoticeSource, SubConfig, Subs, subscription};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::IntoConnectionInfo;
use ::redis::aio::{PubSubSink, PubSubStream};
use ::redis::{Client, Value};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::held::HeldLocks;
use super::hub::{Hub, Subscriber};
use super::slot::{CacheKeys, Channel, Slot, parse_channel, parse_notice, tag_set, tags_channel};
use super::writes::WriteBehind;
use super::{Acquire, Backend, BackendError, BackendFut, BackendResult, Found, SharedBackend};
use conn::{ClusterTopology, Commands};

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
        // the notice connection (classic on one primary, sharded on a Cluster)
        "subscribe",
        "unsubscribe",
        "ssubscribe",
        "sunsubscribe",
        "spublish",
        "ping",
    ];
    let mut rules = format!("resetkeys ~{prefix}:* resetchannels &{prefix}:* -@all");
    for command in commands {
        rules.push_str(" +");
        rules.push_str(command);
    }
    rules
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
    /// Its metrics label (`redis-<n>`), read once from the backend list.
    label: std::sync::OnceLock<String>,
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
    /// value, lock, failure record and ready channel share one hash slot,
    /// so every script touches one slot. Notices travel over sharded
    /// pub/sub (`SPUBLISH`/`SSUBSCRIBE`): each reaches only the shard that
    /// owns its channel and the processes subscribed there.
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

impl From<RedisBackend> for SharedBackend {
    fn from(backend: RedisBackend) -> Self {
        SharedBackend::new(backend.inner, "redis")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_channel_is_the_slots() {
        let slot = Slot::new("app", "users", "0a");
        assert_eq!(ready_channel(slot.as_str()), slot.ready());
    }
}
