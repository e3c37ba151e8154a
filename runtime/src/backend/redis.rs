//! The Redis backend of `shared` caches (cargo feature `redis`).
//!
//! One Redis (or Valkey) primary holds, per key of a `shared` cache, the
//! value (L2) and the key's lock; a pub/sub channel carries the ready and
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
//! - Each process keeps ONE extra connection subscribed (`PSUBSCRIBE
//!   <prefix>:*`) and fans the notices out to its waiters; after a gap in
//!   that subscription it drops its L1 copies, since invalidations may have
//!   been missed.
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
//!     .connect()
//!     .await?;
//! stampede_cache::install(backend);
//! # Ok(()) }
//! ```
//!
//! [`ConnectionManager`]: ::redis::aio::ConnectionManager

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Script, Value};
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::hub::Hub;
use super::slot::{CacheKeys, Channel, Slot, parse_channel, parse_notice, tag_set, tags_channel};
use super::{Acquire, Backend, BackendError, BackendFut, BackendResult, Found, SharedBackend};

/// Default bound on one Redis command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "stampede";

/// KEYS: value, lock, fail. Returns {value or false, its PTTL, failure record or false, lock exists}.
const READ: &str = r"
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), redis.call('GET', KEYS[3]), redis.call('EXISTS', KEYS[2])}
";

/// KEYS: value, lock, fail. ARGV: token, lease ms, or_value.
/// Returns {1, value, PTTL} | {2, failure record} | {3} (locked) | {4} (held).
const LOCK: &str = r"
if ARGV[3] == '1' then
  local v = redis.call('GET', KEYS[1])
  if v then return {1, v, redis.call('PTTL', KEYS[1])} end
end
local f = redis.call('GET', KEYS[3])
if f then return {2, f} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {3} end
return {4}
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
const WRITE_FENCED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('PUBLISH', ARGV[4], '')
return 1
";

/// KEYS: lock, fail. ARGV: token, record, ttl ms, ready channel.
const FAIL_FENCED: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
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

/// KEYS: the tag's slot set. ARGV: slot ... (each: its value, lock and fail keys are derived).
/// Deletes every recorded slot's value, lock and failure record, the set, and publishes ARGV... see `invalidate_tag`.
const INVALIDATE_TAG: &str = r"
local slots = redis.call('SMEMBERS', KEYS[1])
for _, slot in ipairs(slots) do
  redis.call('DEL', slot .. ':value', slot .. ':lock', slot .. ':fail')
  redis.call('PUBLISH', slot .. ':ready', '')
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return #slots
";

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

/// Configures a [`RedisBackend`]; from [`RedisBackend::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .connect()"]
pub struct RedisBackendBuilder {
    url: String,
    prefix: String,
    command_timeout: Duration,
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
    invalidate_tag: Script,
}

struct RedisInner {
    prefix: String,
    timeout: Duration,
    conn: ConnectionManager,
    hub: Arc<Hub>,
    scripts: Scripts,
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

    /// Starts configuring a backend for `url`.
    pub fn builder(url: &str) -> RedisBackendBuilder {
        RedisBackendBuilder {
            url: url.to_owned(),
            prefix: DEFAULT_PREFIX.to_owned(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// Redis commands (script invocations included) this backend has sent:
    /// the round trips, for benchmarks and diagnostics.
    pub fn commands_sent(&self) -> u64 {
        self.inner.commands.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.inner.prefix)
            .field("command_timeout", &self.inner.timeout)
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
    /// call runs its loader in process. Default [`DEFAULT_COMMAND_TIMEOUT`].
    ///
    /// # Panics
    /// If `timeout` is zero.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        assert!(
            !timeout.is_zero(),
            "stampede-cache: the command timeout must be > 0"
        );
        self.command_timeout = timeout;
        self
    }

    /// Connects the command connection and the notice subscription.
    pub async fn connect(self) -> Result<RedisBackend, BackendError> {
        let client = Client::open(self.url.as_str()).map_err(redis_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500));
        let conn = bounded(
            self.command_timeout * 4,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await?;
        let hub = Arc::new(Hub::default());
        let pattern = format!("{}:*", glob_escape(&self.prefix));
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let subscriber = tokio::spawn(subscribe(
            client,
            pattern,
            self.prefix.clone(),
            hub.clone(),
            subscribed_tx,
        ));
        match tokio::time::timeout(self.command_timeout * 4, subscribed_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                subscriber.abort();
                return Err(error);
            }
            _ => {
                subscriber.abort();
                return Err(BackendError::timeout(self.command_timeout * 4));
            }
        }
        Ok(RedisBackend {
            inner: Arc::new(RedisInner {
                prefix: self.prefix,
                timeout: self.command_timeout,
                conn,
                hub,
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
                    invalidate_tag: Script::new(INVALIDATE_TAG),
                },
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

fn redis_error(error: ::redis::RedisError) -> BackendError {
    BackendError::new(format!("redis: {error}"))
}

async fn bounded<T>(
    timeout: Duration,
    op: impl Future<Output = ::redis::RedisResult<T>>,
) -> BackendResult<T> {
    match tokio::time::timeout(timeout, op).await {
        Ok(result) => result.map_err(redis_error),
        Err(_) => Err(BackendError::timeout(timeout)),
    }
}

/// Escapes Redis glob metacharacters.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The notice subscription: one connection, `PSUBSCRIBE <prefix>:*`,
/// re-established with backoff whenever it drops.
async fn subscribe(
    client: Client,
    pattern: String,
    prefix: String,
    hub: Arc<Hub>,
    subscribed: tokio::sync::oneshot::Sender<BackendResult<()>>,
) {
    let mut subscribed = Some(subscribed);
    let mut backoff = Duration::from_millis(20);
    loop {
        let connected = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(&pattern).await?;
            Ok::<_, ::redis::RedisError>(pubsub)
        }
        .await;
        match connected {
            Ok(pubsub) => {
                backoff = Duration::from_millis(20);
                match subscribed.take() {
                    Some(tx) => {
                        let _ = tx.send(Ok(()));
                    }
                    None => {
                        // Notices and invalidations may have been published
                        // while we were away: forget L1, re-check waiters.
                        tracing::info!("redis notice subscription re-established");
                        hub.gap();
                    }
                }
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    dispatch(
                        &hub,
                        &prefix,
                        msg.get_channel_name(),
                        msg.get_payload_bytes(),
                    );
                }
                tracing::warn!("redis notice subscription lost; reconnecting");
            }
            Err(error) => {
                if let Some(tx) = subscribed.take() {
                    let _ = tx.send(Err(redis_error(error)));
                    return;
                }
                tracing::debug!(%error, "redis notice subscription: reconnect failed");
            }
        }
        tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64())).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Routes one notice by its channel (see [`slot`](super::slot)).
fn dispatch(hub: &Hub, prefix: &str, channel: &str, payload: &[u8]) {
    match parse_channel(prefix, channel) {
        Some(Channel::Ready(slot)) => hub.ready(slot),
        Some(Channel::Invalidations(name)) => {
            if let Some(notice) = std::str::from_utf8(payload).ok().and_then(parse_notice) {
                hub.invalidated(name, &notice);
            }
        }
        Some(Channel::Tags) => {
            if let Ok(tag) = std::str::from_utf8(payload) {
                crate::tags::apply(tag);
            }
        }
        None => {}
    }
}

impl RedisInner {
    async fn invoke<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> BackendResult<T> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.conn.clone();
        bounded(self.timeout, invocation.invoke_async(&mut conn)).await
    }

    async fn command<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> BackendResult<T> {
        self.commands.fetch_add(1, Ordering::Relaxed);
        let mut conn = self.conn.clone();
        bounded(self.timeout, cmd.query_async(&mut conn)).await
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
                        .arg(if or_value { "1" } else { "0" }),
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
                [tag] if int_of(tag) == 4 => Ok(Acquire::Held),
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
            let released: i64 = self
                .invoke(
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
            let mut pipe = ::redis::pipe();
            for tag in tags {
                let set = tag_set(&self.prefix, tag);
                pipe.cmd("SADD").arg(&set).arg(slot.as_str()).ignore();
                // GT: the set lives as long as its longest-lived member.
                pipe.cmd("PEXPIRE")
                    .arg(&set)
                    .arg(millis(ttl))
                    .arg("GT")
                    .ignore();
                pipe.cmd("PEXPIRE")
                    .arg(&set)
                    .arg(millis(ttl))
                    .arg("NX")
                    .ignore();
            }
            self.commands.fetch_add(1, Ordering::Relaxed);
            let mut conn = self.conn.clone();
            bounded(self.timeout, pipe.query_async::<()>(&mut conn)).await
        })
    }

    fn invalidate_tag<'a>(&'a self, tag: &'a str) -> BackendFut<'a, ()> {
        Box::pin(async move {
            let _: i64 = self
                .invoke(
                    self.scripts
                        .invalidate_tag
                        .key(tag_set(&self.prefix, tag))
                        .arg(tags_channel(&self.prefix))
                        .arg(tag),
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
    fn glob_metacharacters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
