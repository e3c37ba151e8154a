//! The notice subscription: one connection per process, subscribed to the
//! channels the hub needs (invalidations of every cache built, ready
//! channels of the keys waited on), PINGed for liveness, re-made on loss.
//!
//! On one primary it is a classic `SUBSCRIBE` connection. On a Cluster it
//! is a RESP3 cluster connection of its own, subscribed with `SSUBSCRIBE`,
//! one channel per command (several channels of different slots in one
//! command are refused, CROSSSLOT), each on the shard that owns it. Any
//! node connection lost, or the server unsubscribing a channel we still
//! want (its slot moved to another shard), counts as losing the whole
//! subscription: L1 copies are dropped, and a fresh connection subscribes
//! everything again where the slots are now — redis-rs's own re-subscribing
//! is not relied on (it does not follow a server's `SUNSUBSCRIBE`).

use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use ::redis::{PushInfo, PushKind};

use super::*;

/// Where notices come from.
pub(super) enum NoticeSource {
    /// Classic pub/sub on one primary — or on any node of these (each
    /// connection attempt tries the next).
    Nodes(Vec<Client>),
    /// Sharded pub/sub on a Cluster.
    Shards(ClusterTopology),
}

/// One notice connection's subscribe side, whatever its kind.
pub(super) trait NoticeSink: Send {
    fn subscribe(
        &mut self,
        channels: &[String],
    ) -> impl Future<Output = ::redis::RedisResult<()>> + Send;
    fn unsubscribe(
        &mut self,
        channels: &[String],
    ) -> impl Future<Output = ::redis::RedisResult<()>> + Send;
    fn ping(&mut self) -> impl Future<Output = ::redis::RedisResult<()>> + Send;
}

impl NoticeSink for PubSubSink {
    async fn subscribe(&mut self, channels: &[String]) -> ::redis::RedisResult<()> {
        PubSubSink::subscribe(self, channels).await
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> ::redis::RedisResult<()> {
        PubSubSink::unsubscribe(self, channels).await
    }

    async fn ping(&mut self) -> ::redis::RedisResult<()> {
        PubSubSink::ping::<Value>(self).await.map(drop)
    }
}

/// Sharded subscriptions on a Cluster connection of their own.
pub(super) struct ShardSink {
    con: ClusterConnection,
    /// Channels we are unsubscribing: their `SUNSUBSCRIBE` push is ours,
    /// not the server taking them away.
    leaving: Arc<Mutex<HashSet<String>>>,
}

impl NoticeSink for ShardSink {
    async fn subscribe(&mut self, channels: &[String]) -> ::redis::RedisResult<()> {
        // One command per channel, all at once (each to its own shard).
        let each = channels.iter().map(|channel| {
            let mut con = self.con.clone();
            async move { con.ssubscribe(channel).await }
        });
        futures_util::future::try_join_all(each).await.map(drop)
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> ::redis::RedisResult<()> {
        self.leaving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(channels.iter().cloned());
        let each = channels.iter().map(|channel| {
            let mut con = self.con.clone();
            async move { con.sunsubscribe(channel).await }
        });
        futures_util::future::try_join_all(each).await.map(drop)
    }

    async fn ping(&mut self) -> ::redis::RedisResult<()> {
        // Every primary: a silent node connection is a subscription lost.
        let routing = RoutingInfo::MultiNode((
            MultipleNodeRoutingInfo::AllMasters,
            Some(ResponsePolicy::AllSucceeded),
        ));
        self.con
            .route_command(::redis::cmd("PING"), routing)
            .await
            .map(drop)
    }
}

/// Dispatches a Cluster notice connection's pushes until it is lost: a
/// node connection closed, or the server unsubscribed a channel we did not
/// leave (its slot moved). Returns why.
async fn read_pushes(
    mut pushes: tokio::sync::mpsc::UnboundedReceiver<PushInfo>,
    hub: Arc<Hub>,
    subs: Arc<Subs>,
    leaving: Arc<Mutex<HashSet<String>>>,
) -> String {
    let text = |value: Option<&Value>| match value {
        Some(Value::BulkString(bytes)) => Some(bytes.clone()),
        Some(Value::SimpleString(s)) => Some(s.clone().into_bytes()),
        _ => None,
    };
    while let Some(push) = pushes.recv().await {
        match push.kind {
            PushKind::SMessage => {
                let (Some(channel), Some(payload)) =
                    (text(push.data.first()), text(push.data.get(1)))
                else {
                    continue;
                };
                subs.notices.fetch_add(1, Ordering::Relaxed);
                dispatch(&hub, &subs, &String::from_utf8_lossy(&channel), &payload);
            }
            PushKind::Disconnection => return "a node connection closed".to_owned(),
            PushKind::SUnsubscribe => {
                let channel = text(push.data.first())
                    .map(|c| String::from_utf8_lossy(&c).into_owned())
                    .unwrap_or_default();
                let ours = leaving
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&channel);
                if !ours {
                    return format!("the server unsubscribed {channel} (its slot moved)");
                }
            }
            _ => {}
        }
    }
    "the connection closed".to_owned()
}

/// Reconnect backoff of the notice connection.
pub(super) const MIN_BACKOFF: Duration = Duration::from_millis(20);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Channels per (UN)SUBSCRIBE command.
pub(super) const CHUNK: usize = 256;

/// The channels this process needs, shared by the hub (which changes them)
/// and the subscription task (which subscribes them).
pub(super) struct Subs {
    pub(super) prefix: String,
    /// This backend's id on the tags channel: its own tag notices are
    /// skipped (it applied the tag before sending).
    pub(super) id: u64,
    pub(super) desired: Mutex<Desired>,
    /// Rung when `desired` changed (capacity 1: a ring is never lost).
    pub(super) doorbell: mpsc::Sender<()>,
    /// Whether a subscription connection is established.
    pub(super) up: AtomicBool,
    /// Caches registered so far (`Desired::caches.len()`).
    pub(super) caches_wanted: AtomicU64,
    /// Caches whose invalidation channel a live connection confirmed.
    pub(super) caches_confirmed: watch::Sender<u64>,
    /// A command stopped waiting for the caches up to this one (timed out).
    pub(super) caches_given_up: AtomicU64,
    pub(super) notices: AtomicU64,
    pub(super) losses: AtomicU64,
    pub(super) channels: AtomicUsize,
}

#[derive(Default)]
pub(super) struct Desired {
    /// The tags channel, then the caches' invalidation channels in
    /// registration order (never removed: one per cache name).
    pub(super) caches: Vec<String>,
    /// Watched slots, each with the flag to set once its subscription is
    /// confirmed (taken when the subscription is sent).
    pub(super) ready: HashMap<String, Option<watch::Sender<bool>>>,
    /// Slots watched or unwatched since the task last looked.
    pub(super) dirty: HashSet<String>,
}

/// What one live connection is subscribed to.
#[derive(Default)]
pub(super) struct Live {
    pub(super) caches: usize,
    pub(super) ready: HashSet<String>,
}

/// One round of changes to a live connection's subscriptions.
#[derive(Default)]
pub(super) struct Plan {
    pub(super) subscribe: Vec<String>,
    /// Slots among `subscribe`.
    pub(super) ready_added: Vec<String>,
    /// Slots to unsubscribe.
    pub(super) unsubscribe: Vec<String>,
    /// `Desired::caches.len()` when planned.
    pub(super) caches: usize,
    /// Watches of slots already subscribed: confirmed at once.
    pub(super) confirm_now: Vec<(String, watch::Sender<bool>)>,
    /// Confirmed once `subscribe` is.
    pub(super) confirm_after: Vec<(String, watch::Sender<bool>)>,
}

impl Plan {
    pub(super) fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty() && self.confirm_now.is_empty()
    }
}

impl Subs {
    pub(super) fn new(prefix: String) -> (Arc<Self>, mpsc::Receiver<()>) {
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Desired> {
        self.desired.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn ring(&self) {
        let _ = self.doorbell.try_send(());
    }

    /// A new connection: everything desired is to be subscribed on it.
    pub(super) fn connection_started(&self) {
        let mut desired = self.lock();
        let Desired { ready, dirty, .. } = &mut *desired;
        dirty.extend(ready.keys().cloned());
    }

    /// The connection is lost: no waiter waits for a confirmation any more.
    pub(super) fn connection_lost(&self) {
        self.up.store(false, Ordering::Relaxed);
        self.channels.store(0, Ordering::Relaxed);
        self.losses.fetch_add(1, Ordering::Relaxed);
        for pending in self.lock().ready.values_mut() {
            *pending = None;
        }
    }

    pub(super) fn plan(&self, live: &Live) -> Plan {
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
    pub(super) async fn caches_subscribed(&self, bound: Duration) {
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

pub(super) struct SubConfig {
    pub(super) timeout: Duration,
    pub(super) ping_interval: Duration,
}

impl SubConfig {
    /// Bound on one connection attempt, and on subscribing everything on it.
    pub(super) fn attempt_bound(&self) -> Duration {
        self.timeout * 4
    }
}

pub(super) struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The notice subscription task: (re)connects with backoff, keeps the
/// connection's subscriptions in line with what the hub needs, checks its
/// liveness. The first connection's outcome goes to `first`.
pub(super) async fn subscription(
    source: NoticeSource,
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
    let nodes = match &source {
        NoticeSource::Nodes(clients) => clients.len(),
        NoticeSource::Shards(_) => 1,
    };
    loop {
        let mut attempt = Attempt {
            subs: &subs,
            hub: &hub,
            config: &config,
            first: &mut first,
            doorbell: &mut doorbell,
        };
        let outcome = match &source {
            NoticeSource::Nodes(clients) => {
                let client = &clients[node % clients.len()];
                match bounded(config.attempt_bound(), client.get_async_pubsub()).await {
                    Ok(pubsub) => {
                        let (sink, stream) = pubsub.split();
                        let (to_hub, to_subs) = (hub.clone(), subs.clone());
                        let reader = tokio::spawn(async move {
                            read(stream, to_hub, to_subs).await;
                            "the connection closed".to_owned()
                        });
                        serve(sink, reader, &mut attempt).await
                    }
                    Err(error) => Err(error),
                }
            }
            NoticeSource::Shards(topology) => {
                match bounded(config.attempt_bound(), topology.notices()).await {
                    Ok((con, pushes)) => {
                        let leaving = Arc::new(Mutex::new(HashSet::new()));
                        let sink = ShardSink {
                            con,
                            leaving: leaving.clone(),
                        };
                        let reader =
                            tokio::spawn(read_pushes(pushes, hub.clone(), subs.clone(), leaving));
                        serve(sink, reader, &mut attempt).await
                    }
                    Err(error) => Err(error),
                }
            }
        };
        match outcome {
            Ok(()) => backoff = MIN_BACKOFF,
            Err(error) => {
                if first.is_some() && node + 1 < nodes {
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
/// What one connection attempt of the subscription task works with.
struct Attempt<'a> {
    subs: &'a Arc<Subs>,
    hub: &'a Arc<Hub>,
    config: &'a SubConfig,
    /// Told the first connection's outcome (then `None`).
    first: &'a mut Option<oneshot::Sender<BackendResult<()>>>,
    doorbell: &'a mut mpsc::Receiver<()>,
}

async fn serve(
    mut sink: impl NoticeSink,
    reader: JoinHandle<String>,
    attempt: &mut Attempt<'_>,
) -> BackendResult<()> {
    let Attempt {
        subs,
        hub,
        config,
        first,
        doorbell,
    } = attempt;
    let (subs, hub, config) = (*subs, *hub, *config);
    let mut reader = AbortOnDrop(reader);
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
    let mut next_ping = Instant::now() + config.ping_interval;
    let reason = loop {
        tokio::select! {
            ended = &mut reader.0 => break ended.unwrap_or_else(|_| "the notice reader stopped".to_owned()),
            () = tokio::time::sleep_until(next_ping) => {
                match tokio::time::timeout(config.timeout, sink.ping()).await {
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
pub(super) async fn reconcile(
    sink: &mut impl NoticeSink,
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
pub(super) async fn read(mut stream: PubSubStream, hub: Arc<Hub>, subs: Arc<Subs>) {
    while let Some(msg) = stream.next().await {
        subs.notices.fetch_add(1, Ordering::Relaxed);
        dispatch(&hub, &subs, msg.get_channel_name(), msg.get_payload_bytes());
    }
}

/// Routes one notice by its channel (see [`slot`](super::slot)).
pub(super) fn dispatch(hub: &Hub, subs: &Subs, channel: &str, payload: &[u8]) {
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
