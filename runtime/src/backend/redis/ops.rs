//! The backend's operations: every command through the breaker and the
//! command timeout, and the [`Backend`] trait on Redis.

use super::*;
use tokio::time::Instant;

impl RedisInner {
    /// Lets a command through the breaker (or fails it at once), once the
    /// caches' invalidation channels are subscribed.
    pub(super) async fn admit(&self) -> BackendResult<Pass> {
        let pass = self.breaker.admit()?;
        self.subscribed(pass).await
    }

    pub(super) async fn subscribed(&self, pass: Pass) -> BackendResult<Pass> {
        self.subs.caches_subscribed(self.timeout).await;
        self.commands.fetch_add(1, Ordering::Relaxed);
        Ok(pass)
    }

    pub(super) async fn invoke<T: ::redis::FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> BackendResult<T> {
        let pass = self.admit().await?;
        self.send(pass, invocation).await
    }

    pub(super) async fn send<T: ::redis::FromRedisValue>(
        &self,
        pass: Pass,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> BackendResult<T> {
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let result = bounded(self.timeout, invocation.invoke_async(&mut conn)).await;
        self.round_trip(started, &result);
        self.breaker.settle(pass, &result);
        result
    }

    /// One command's round trip, for the metrics.
    fn round_trip<T>(&self, started: Instant, result: &BackendResult<T>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(error) if error.is_timeout() => "timeout",
            Err(_) => "error",
        };
        let label = self.label.get_or_init(|| {
            crate::backend::label_of(self as *const Self as *const ())
                .unwrap_or_else(|| "redis".to_owned())
        });
        crate::metrics::round_trip(label, started.elapsed(), outcome);
    }

    /// A release the open breaker refused: sent anyway, without waiting for
    /// it. It is queued on the connection behind the lock command that
    /// timed out (the reason for most releases while open), so it still
    /// deletes that lock if Redis runs both later; nobody waits for it.
    pub(super) fn release_in_background(&self, slot: &Slot, token: &str) {
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

    pub(super) async fn command<T: ::redis::FromRedisValue>(
        &self,
        cmd: &::redis::Cmd,
    ) -> BackendResult<T> {
        let pass = self.admit().await?;
        let mut conn = self.conn.clone();
        let started = Instant::now();
        let result = bounded(self.timeout, cmd.query_async(&mut conn)).await;
        self.round_trip(started, &result);
        self.breaker.settle(pass, &result);
        result
    }
}

/// Bytes of a bulk-string reply, `None` for nil/false.
pub(super) fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes.clone()),
        _ => None,
    }
}

pub(super) fn int_of(value: &Value) -> i64 {
    match value {
        Value::Int(n) => *n,
        _ => 0,
    }
}

pub(super) fn malformed(what: &str) -> BackendError {
    BackendError::new(format!("redis: malformed reply to {what}"))
}

/// The time left of a value from its `PTTL` (a key without expiry: "forever").
pub(super) fn time_left(pttl: i64) -> Duration {
    match u64::try_from(pttl) {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) if pttl == -1 => crate::strategy::FOREVER,
        Err(_) => Duration::ZERO,
    }
}

impl RedisInner {
    /// `PUBLISH`, or on a Cluster `SPUBLISH` (sharded: to the one shard
    /// that owns the channel, not broadcast to every node).
    fn publish_command(&self) -> &'static str {
        if self.conn.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// The invalidation channel as a script publishing it takes it: on a
    /// Cluster none (it hashes to another slot than the key's script), and
    /// [`publish_after`](Self::publish_after) sends the notice instead.
    fn in_script(&self, cache: &CacheKeys) -> String {
        if self.conn.is_cluster() {
            String::new()
        } else {
            cache.invalidations()
        }
    }

    /// On a Cluster, the invalidation notice of a write that landed, sent
    /// to the channel's own shard (after the write, so a process that drops
    /// its copy on it and reloads reads the write).
    async fn publish_after(&self, channel: &str, notice: &str) -> BackendResult<()> {
        if self.conn.is_cluster() {
            let mut publish = ::redis::cmd("SPUBLISH");
            publish.arg(channel).arg(notice);
            let _: i64 = self.command(&publish).await?;
        }
        Ok(())
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

    fn breaker(&self) -> (bool, u64) {
        let open = !matches!(*self.breaker.lock(), BreakerState::Closed { .. });
        (open, self.breaker.trips.load(Ordering::Relaxed))
    }

    fn commands(&self) -> u64 {
        self.commands.load(Ordering::Relaxed)
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
        drop_value: bool,
    ) -> BackendFut<'a, bool> {
        Box::pin(async move {
            let failed: i64 = self
                .invoke(
                    self.scripts
                        .fail_fenced
                        .key(slot.lock())
                        .key(slot.fail())
                        .key(slot.value())
                        .arg(token)
                        .arg(record)
                        .arg(millis(ttl))
                        .arg(slot.ready())
                        .arg(if drop_value { "1" } else { "0" }),
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
                        .arg(self.in_script(cache))
                        .arg(notice),
                )
                .await?;
            Ok(())
        })
    }

    fn notify<'a>(&'a self, cache: &'a CacheKeys, notice: &'a str) -> BackendFut<'a, ()> {
        Box::pin(async move { self.publish_after(&cache.invalidations(), notice).await })
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
                        .arg(self.in_script(cache))
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
            let mut publish = ::redis::cmd(self.publish_command());
            publish
                .arg(tags_channel(&self.prefix))
                .arg(format!("{} {tag}", self.subs.id));
            let _: i64 = self.command(&publish).await?;
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
