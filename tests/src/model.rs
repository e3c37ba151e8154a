//! The machinery shared by the seeded model-based tests (`core_model`,
//! `fleet_model`): a reference "database" with a version per key, loaders
//! that check the at-most-one-load rule against it, a record of every load
//! and call (for the failure rule), and the seed runner.
//!
//! Every loader invocation gets an id (its index in [`Model::loads`]) that
//! its failure carries — in its error, `ModelError::Down { load }`, in its
//! panic message, and so across processes in the failure record's text,
//! `ModelError::Remote { load }` — so a call's `Err` names the load that
//! produced it, and the model can tell whether that load was still running
//! when the call began.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};

/// A row as the origin returns it: its key and the version it read.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub key: u32,
    pub version: u64,
}

/// The origin's error, and what a timeout or another process's failure
/// becomes. A failure names the loader invocation that produced it.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelError {
    /// The origin failed in this process: loader invocation `load`.
    Down { load: usize },
    /// A load timeout: this process's flight's (its origin cut, or its wait
    /// bounded) or, in a fleet, another process's (its failure record).
    Timeout,
    /// The load failed or panicked in another process: the invocation its
    /// failure record names (`None`: the record named none).
    Remote { load: Option<usize> },
}

impl From<stampede_cache::LoadTimeout> for ModelError {
    fn from(_: stampede_cache::LoadTimeout) -> Self {
        ModelError::Timeout
    }
}

impl From<stampede_cache::RemoteLoadError> for ModelError {
    fn from(remote: stampede_cache::RemoteLoadError) -> Self {
        // The record carries the leader's error as its `Debug` text
        // (`Down { load: 7 }`) or its panic message (`... (load: 7)`).
        ModelError::Remote {
            load: load_named_in(remote.message()),
        }
    }
}

/// The loader invocation a failure's text names (`load: N`), if any.
pub fn load_named_in(text: &str) -> Option<usize> {
    let (_, rest) = text.rsplit_once("load: ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// How a load ends.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    Ok,
    Error,
    Panic,
    Hang,
}

impl Behaviour {
    /// Mostly `Ok`, sometimes an error or a panic, and a hang only when
    /// `hangs` (a load timeout will cut it).
    pub fn random(rng: &mut fastrand::Rng, hangs: bool) -> Behaviour {
        match rng.u8(0..20) {
            0..=12 => Behaviour::Ok,
            13..=15 => Behaviour::Error,
            16..=17 => Behaviour::Panic,
            _ if hangs => Behaviour::Hang,
            _ => Behaviour::Ok,
        }
    }
}

/// The panic message of a model loader (followed by `(load: N)`).
pub const LOADER_PANIC: &str = "model loader panic";

/// Panics a call may end with: a loader's, or the cache's after a retry.
pub const EXPECTED_PANICS: [&str; 2] = [LOADER_PANIC, "panicked or was dropped"];

/// A point in a seed's run: a logical clock (total order of the model's
/// events on the one runtime thread) and the paused clock's instant.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub seq: u64,
    pub at: Instant,
}

/// How a loader invocation ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum End {
    Returned,
    Failed,
    Panicked,
    /// Dropped before it finished: cut at the load timeout (or its runtime shut down).
    Cut,
}

/// One loader invocation.
#[derive(Clone, Debug)]
pub struct LoadRecord {
    pub key: u32,
    /// The database version it read.
    pub version: u64,
    /// The cache (instance) whose flight ran it.
    pub cache: usize,
    pub start: Stamp,
    pub end: Option<(Stamp, End)>,
}

/// One call of `try_get_or_load_with`.
#[derive(Clone, Debug)]
pub struct CallRecord {
    pub key: u32,
    /// The cache (instance) it was made on.
    pub cache: usize,
    pub start: Stamp,
    /// `get` served a value at the call's start (no load needed then).
    pub hit_at_start: bool,
    /// Its end and answer; `None` while running, or if it was cancelled
    /// or panicked.
    pub end: Option<(Stamp, Result<Row, ModelError>)>,
}

impl CallRecord {
    /// Whether the call had not finished when `stamp` happened.
    pub fn running_at(&self, stamp: Stamp) -> bool {
        self.start.seq <= stamp.seq && self.end.as_ref().is_none_or(|(end, _)| end.seq > stamp.seq)
    }
}

/// The reference model: the database and the loads running against it.
#[derive(Default)]
pub struct Model {
    /// Version of each key's row; bumped by every write.
    pub db: HashMap<u32, u64>,
    /// Loads running, by (key, database version they read): how many, and
    /// how many of them may have lost their lock to a write (see
    /// [`Model::lock_loss_window`]).
    running: HashMap<(u32, u64), (usize, usize)>,
    /// The instant of each key's last write.
    written_at: HashMap<u32, Instant>,
    /// With a backend whose operations take a round trip, a write landing
    /// during a leader's last round trip before its origin call (its lock
    /// taken, then deleted by the write) is unseen by it: it loads the new
    /// version, superseded, beside the flight the write let start. A load
    /// that starts within this window after a write of its key may have a
    /// twin (zero: operations complete at once, no twin is excused).
    pub lock_loss_window: Duration,
    /// How long after its loader returned a flight may still be running:
    /// the leader's last backend write (its value or failure record) takes
    /// a round trip. Zero when operations complete at once.
    pub flight_end_slack: Duration,
    /// Until this instant a second load of a key and version beside a
    /// running one is no violation: the shared backend was unreachable
    /// (fleet_model's outages), so loads fail open, in every process.
    pub fail_open_until: Option<Instant>,
    /// The logical clock of [`Stamp`].
    seq: u64,
    /// The instant of the first stamp: messages give times from it.
    epoch: Option<Instant>,
    /// Every loader invocation, by id (a batch invocation records one
    /// load per key).
    pub loads: Vec<LoadRecord>,
    /// The loads of one batch invocation, by each of its load ids: its
    /// error (one value for every key) names the first of them.
    pub batch_of: HashMap<usize, Arc<Vec<usize>>>,
    /// Every call, by id.
    pub calls: Vec<CallRecord>,
    /// Every broken invariant, reported at the end of the seed.
    pub violations: Vec<String>,
}

/// The model, shared by the test and its loaders.
pub type Shared = Arc<Mutex<Model>>;

impl Model {
    /// The current version of `key`'s row.
    pub fn version(&self, key: u32) -> u64 {
        self.db.get(&key).copied().unwrap_or(0)
    }

    /// A write to `key`'s row: its new version.
    pub fn write(&mut self, key: u32) -> u64 {
        self.written_at.insert(key, Instant::now());
        let version = self.db.entry(key).or_insert(0);
        *version += 1;
        *version
    }

    /// Now, on both clocks.
    pub fn stamp(&mut self) -> Stamp {
        self.seq += 1;
        let at = Instant::now();
        self.epoch.get_or_insert(at);
        Stamp { seq: self.seq, at }
    }

    /// `at` for a message: the time since the seed's first event.
    pub fn ms(&self, at: Instant) -> String {
        let since = at.saturating_duration_since(self.epoch.unwrap_or(at));
        format!("{:.3} ms", since.as_secs_f64() * 1e3)
    }

    /// The load of `key` in the same batch invocation as `load` (a batch's
    /// error names its first load, and answers every key of it); `load`
    /// itself otherwise.
    pub fn sibling(&self, load: usize, key: u32) -> usize {
        self.batch_of
            .get(&load)
            .and_then(|group| group.iter().copied().find(|l| self.loads[*l].key == key))
            .unwrap_or(load)
    }

    /// The keys whose calls a batch's `error` answers: those of the batch
    /// invocation it names (all of them got it); none for a timeout.
    pub fn keys_answered_by(&self, error: &ModelError) -> Vec<u32> {
        let load = match error {
            ModelError::Down { load } | ModelError::Remote { load: Some(load) } => *load,
            _ => return Vec::new(),
        };
        match self.batch_of.get(&load) {
            Some(group) => group.iter().map(|l| self.loads[*l].key).collect(),
            None => self
                .loads
                .get(load)
                .map(|l| vec![l.key])
                .unwrap_or_default(),
        }
    }

    /// Records the start of a call of `key` on `cache` (right before its
    /// future is first polled): its id.
    pub fn begin_call(&mut self, key: u32, cache: usize, hit_at_start: bool) -> usize {
        let start = self.stamp();
        self.calls.push(CallRecord {
            key,
            cache,
            start,
            hit_at_start,
            end: None,
        });
        self.calls.len() - 1
    }

    /// Records the answer of call `call`.
    pub fn end_call(&mut self, call: usize, served: &Result<Row, ModelError>) {
        let end = self.stamp();
        self.calls[call].end = Some((end, served.clone()));
    }

    /// Records what is wrong with one finished call of `key`: it waited
    /// longer than `bound`, or was served another key's row or a version
    /// older than `started_at_version` (the last write completed before it
    /// started).
    pub fn check_call(
        &mut self,
        key: u32,
        started_at_version: u64,
        served: &Result<Row, ModelError>,
        waited: Duration,
        bound: Duration,
    ) {
        if waited > bound {
            let msg = format!("a call of key {key} waited {waited:?} > {bound:?}");
            self.violations.push(msg);
        }
        if let Ok(row) = served {
            if row.key != key {
                self.violations.push(format!("key {key} served {row:?}"));
            }
            if row.version < started_at_version {
                self.violations.push(format!(
                    "key {key} served version {} after version {started_at_version} was written",
                    row.version
                ));
            }
        }
    }

    /// The failure rule for an error produced in the call's own process
    /// (`Down`: its flight's origin failed): the failing loader invocation
    /// loaded this key for this cache and ended after the call began — the
    /// call joined (or started) that flight while it ran. A call that began
    /// after a failed flight had ended starts a new flight, so it can never
    /// be answered with that flight's error. (A flight ends in the very poll
    /// its loader returns in: `Landing::fail` runs right after, and the
    /// fleet tier's failure record is written by a backend whose operations
    /// complete at once — else within [`Model::flight_end_slack`].)
    pub fn check_own_failure(&mut self, call: usize, load: usize) {
        let load = self.sibling(load, self.calls[call].key);
        let c = &self.calls[call];
        let Some(l) = self.loads.get(load) else {
            let msg = format!(
                "call {call} of key {} got the error of unknown load {load}",
                c.key
            );
            self.violations.push(msg);
            return;
        };
        let wrong = if l.key != c.key {
            Some(format!("loaded key {}", l.key))
        } else if l.cache != c.cache {
            Some(format!(
                "ran on cache {}, not the call's {}",
                l.cache, c.cache
            ))
        } else {
            match l.end {
                Some((end, End::Failed))
                    if end.seq > c.start.seq
                        || (self.batch_of.contains_key(&load) && end.at >= c.start.at)
                        || (!self.flight_end_slack.is_zero()
                            && c.start.at <= end.at + self.flight_end_slack) =>
                {
                    None
                }
                Some((end, End::Failed)) => Some(format!(
                    "had failed at {} (seq {}), before the call began at {} (seq {}): \
                     an ended flight's error answered a later call",
                    self.ms(end.at),
                    end.seq,
                    self.ms(c.start.at),
                    c.start.seq
                )),
                other => Some(format!("ended {other:?}, not with this error")),
            }
        };
        if let Some(wrong) = wrong {
            let msg = format!(
                "call {call} (key {}, cache {}) got Err(Down) of load {load}, which {wrong}",
                c.key, c.cache
            );
            self.violations.push(msg);
        }
    }

    /// Whether a load of `key` (on `cache`, if given) was cut (dropped at
    /// the load timeout) at or after `stamp` (by the logical clock when
    /// `by_seq`, else at the same instant or later).
    ///
    /// A batch invocation's keys land in their own flights' tasks, after
    /// the invocation ended but in the same instant (a call joining in
    /// between joined the flight that gets the outcome): for those loads
    /// the instant counts, not the order.
    pub fn cut_since(&self, key: u32, cache: Option<usize>, stamp: Stamp, by_seq: bool) -> bool {
        self.loads.iter().enumerate().any(|(id, l)| {
            let by_seq = by_seq && !self.batch_of.contains_key(&id);
            l.key == key
                && cache.is_none_or(|c| c == l.cache)
                && matches!(l.end, Some((end, End::Cut))
                    if if by_seq { end.seq > stamp.seq } else { end.at >= stamp.at })
        })
    }

    /// The failure rule in one process (no shared tier): a call's `Err` is
    /// the outcome of the flight it joined or started, so it names a load
    /// of its key that was still running when the call began — `Down` by
    /// its id, `Timeout` by a load of the key cut after the call began.
    /// Never `Remote`.
    pub fn check_failure_in_process(&mut self, call: usize) {
        let c = self.calls[call].clone();
        let Some((_, Err(error))) = &c.end else {
            return;
        };
        match error {
            ModelError::Down { load } => self.check_own_failure(call, *load),
            ModelError::Timeout => {
                if !self.cut_since(c.key, Some(c.cache), c.start, true) {
                    let msg = format!(
                        "call {call} (key {}) began at {} and got Err(Timeout), but no load of \
                         the key was cut after it began: an ended flight's timeout answered it",
                        c.key,
                        self.ms(c.start.at)
                    );
                    self.violations.push(msg);
                }
            }
            ModelError::Remote { .. } => {
                let msg = format!(
                    "call {call} (key {}) got {error:?} without a shared tier",
                    c.key
                );
                self.violations.push(msg);
            }
        }
    }
}

/// The end of a seed: every call finished (or panicked as expected); once
/// the loads still running ended, every key loads or is served at once on
/// every cache (nothing wedged); no invariant was broken.
pub async fn settle(
    model: &Shared,
    calls: Vec<tokio::task::JoinHandle<()>>,
    caches: &[stampede_cache::Cache<u32, Row>],
    keys: u32,
) {
    join_calls(calls).await;
    // Background refreshes and failure records are bounded: let them end.
    sleep(Duration::from_secs(1)).await;
    for (i, cache) in caches.iter().enumerate() {
        for key in 0..keys {
            let load = loader(model.clone(), Behaviour::Ok, Duration::ZERO);
            let served = tokio::time::timeout(
                Duration::from_secs(1),
                cache.try_get_or_load_with(key, move || load),
            )
            .await;
            assert!(
                matches!(served, Ok(Ok(ref row)) if row.key == key),
                "cache {i}, key {key} after the storm: {served:?}"
            );
        }
    }
    let violations = std::mem::take(&mut model.lock().unwrap().violations);
    if !violations.is_empty() && std::env::var_os("MODEL_TRACE").is_some() {
        let m = model.lock().unwrap();
        for (id, l) in m.loads.iter().enumerate() {
            eprintln!("load {id}: {l:?}");
        }
        for (id, c) in m.calls.iter().enumerate() {
            eprintln!("call {id}: {c:?}");
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Awaits every call task: each finished, or panicked with an expected panic.
pub async fn join_calls(calls: Vec<tokio::task::JoinHandle<()>>) {
    for call in calls {
        match tokio::time::timeout(Duration::from_secs(600), call).await {
            Err(_) => panic!("a call never finished"),
            Ok(joined) => expect_finished(joined),
        }
    }
}

/// Decrements the running count when the load ends, however it ends
/// (returned, panicked, dropped at the load timeout or runtime shutdown),
/// and records a load dropped before it finished as cut.
struct Running {
    model: Shared,
    key_version: (u32, u64),
    load: usize,
    /// Started within [`Model::lock_loss_window`] of a write of its key.
    at_risk: bool,
}

impl Running {
    fn end(&self, how: End) {
        let mut model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        let stamp = model.stamp();
        model.loads[self.load].end = Some((stamp, how));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut model = self.model.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, risky)) = model.running.get_mut(&self.key_version) {
            *n -= 1;
            *risky -= usize::from(self.at_risk);
        }
        if model.loads[self.load].end.is_none() {
            let stamp = model.stamp();
            model.loads[self.load].end = Some((stamp, End::Cut));
        }
    }
}

/// A boxed model load.
pub type Load = Pin<Box<dyn Future<Output = Result<Row, ModelError>> + Send>>;

/// The loader of one call on cache 0 (see [`loader_on`]).
pub fn loader(
    model: Shared,
    behaviour: Behaviour,
    delay: Duration,
) -> impl FnOnce(u32) -> Load + Send + 'static {
    loader_on(model, 0, behaviour, delay)
}

/// The loader of one call on cache `cache`: reads the row version when the
/// load starts (the flight's task calls it when first polled) and records a
/// violation if another load of that key and version is running (unless
/// loads may fail open, [`Model::fail_open_until`]); then it waits `delay`
/// and behaves. Its start and end are recorded in [`Model::loads`], its id
/// carried by its failure.
pub fn loader_on(
    model: Shared,
    cache: usize,
    behaviour: Behaviour,
    delay: Duration,
) -> impl FnOnce(u32) -> Load + Send + 'static {
    move |key| {
        let guard = start_load(&model, cache, key);
        let (version, load) = (guard.key_version.1, guard.load);
        Box::pin(async move {
            let guard = guard;
            sleep(delay).await;
            match behaviour {
                Behaviour::Ok => {
                    guard.end(End::Returned);
                    Ok(Row { key, version })
                }
                Behaviour::Error => {
                    guard.end(End::Failed);
                    Err(ModelError::Down { load })
                }
                Behaviour::Panic => {
                    guard.end(End::Panicked);
                    panic!("{LOADER_PANIC} (load: {load})")
                }
                Behaviour::Hang => std::future::pending().await,
            }
        })
    }
}

/// Records a load of `key` by `cache` starting now (a violation if another
/// of that key and version runs and nothing excuses it): its guard.
fn start_load(model: &Shared, cache: usize, key: u32) -> Running {
    let mut m = model.lock().unwrap();
    let version = m.version(key);
    let excused = m
        .fail_open_until
        .is_some_and(|until| Instant::now() <= until);
    let now = Instant::now();
    let at_risk = m
        .written_at
        .get(&key)
        .is_some_and(|at| now <= *at + m.lock_loss_window && !m.lock_loss_window.is_zero());
    let (n, risky) = m.running.entry((key, version)).or_insert((0, 0));
    *n += 1;
    *risky += usize::from(at_risk);
    let n = *n;
    let excused = excused || *risky > 0;
    if n > 1 && !excused {
        let msg = format!("{n} loads of key {key} at version {version} at once");
        m.violations.push(msg);
    }
    let start = m.stamp();
    m.loads.push(LoadRecord {
        key,
        version,
        cache,
        start,
        end: None,
    });
    Running {
        model: model.clone(),
        key_version: (key, version),
        load: m.loads.len() - 1,
        at_risk,
    }
}

/// A boxed model batch load.
pub type BatchLoad = Pin<Box<dyn Future<Output = Result<HashMap<u32, Row>, ModelError>> + Send>>;

/// The batch loader of one `try_get_many_or_load` call on cache `cache`:
/// each invocation (a chunk, or a key retried alone) records one load per
/// key as [`loader_on`] does, waits `delay`, and behaves as `behaviour` for
/// all of them — its error names its first load (see [`Model::sibling`]).
pub fn batch_loader_on(
    model: Shared,
    cache: usize,
    behaviour: Behaviour,
    delay: Duration,
) -> impl Fn(Vec<u32>) -> BatchLoad + Clone + Send + Sync + 'static {
    move |keys: Vec<u32>| {
        let guards: Vec<Running> = keys
            .iter()
            .map(|key| start_load(&model, cache, *key))
            .collect();
        let group = Arc::new(guards.iter().map(|g| g.load).collect::<Vec<_>>());
        {
            let mut m = model.lock().unwrap();
            for load in group.iter() {
                m.batch_of.insert(*load, group.clone());
            }
        }
        Box::pin(async move {
            let guards = guards;
            sleep(delay).await;
            let first = guards.first().map_or(0, |g| g.load);
            let end = match behaviour {
                Behaviour::Ok => End::Returned,
                Behaviour::Error => End::Failed,
                Behaviour::Panic => End::Panicked,
                Behaviour::Hang => std::future::pending().await,
            };
            for guard in &guards {
                guard.end(end);
            }
            match behaviour {
                Behaviour::Ok => Ok(guards
                    .iter()
                    .map(|g| {
                        (
                            g.key_version.0,
                            Row {
                                key: g.key_version.0,
                                version: g.key_version.1,
                            },
                        )
                    })
                    .collect()),
                Behaviour::Panic => panic!("{LOADER_PANIC} (load: {first})"),
                _ => Err(ModelError::Down { load: first }),
            }
        })
    }
}

/// Records the start of one batch call of `keys` on `cache`: one call
/// record per distinct key (`hit` tells whether a value was served at its
/// start), returned as `(key, call id)`.
pub fn begin_batch_call(
    model: &Shared,
    keys: &[u32],
    cache: usize,
    hit: impl Fn(&u32) -> bool,
) -> Vec<(u32, usize)> {
    let mut ids: Vec<(u32, usize)> = Vec::new();
    for key in keys {
        if !ids.iter().any(|(seen, _)| seen == key) {
            let hit = hit(key);
            ids.push((*key, model.lock().unwrap().begin_call(*key, cache, hit)));
        }
    }
    ids
}

/// A call's loader behaviour and delay, drawn.
pub fn draw_load(rng: &mut fastrand::Rng, hangs: bool, max_ms: u64) -> (Behaviour, Duration) {
    (
        Behaviour::random(rng, hangs),
        Duration::from_millis(rng.u64(0..max_ms)),
    )
}

/// Whether (and after how long) a call is cancelled: one in six, within 40 ms.
pub fn draw_cancel(rng: &mut fastrand::Rng) -> Option<Duration> {
    (rng.u8(0..6) == 0).then(|| Duration::from_millis(rng.u64(0..40)))
}

/// `call`'s output, or `None` when it is cancelled `after` that long.
pub async fn cancellable<F: Future>(after: Option<Duration>, call: F) -> Option<F::Output> {
    match after {
        Some(after) => tokio::time::timeout(after, call).await.ok(),
        None => Some(call.await),
    }
}

/// Records the answers of one batch call: `ids` are its per-key call
/// records (by key). A value answers its key; an error answers the keys of
/// the batch invocation it names (the others' answers are unknown: no end).
pub fn end_batch_call(
    model: &Shared,
    ids: &[(u32, usize)],
    served: &Result<HashMap<u32, Row>, ModelError>,
) {
    let mut m = model.lock().unwrap();
    match served {
        Ok(rows) => {
            for (key, id) in ids {
                match rows.get(key) {
                    Some(row) => m.end_call(*id, &Ok(row.clone())),
                    None => {
                        let msg =
                            format!("batch call {id}: key {key} not found, but every row exists");
                        m.violations.push(msg);
                    }
                }
            }
        }
        Err(error) => {
            let answered = m.keys_answered_by(error);
            for (key, id) in ids {
                if answered.contains(key) {
                    m.end_call(*id, &Err(error.clone()));
                }
            }
        }
    }
}

/// The text of a panic payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Checks a call task's end: finished, or panicked with an expected panic.
pub fn expect_finished(joined: Result<(), tokio::task::JoinError>) {
    if let Err(join) = joined {
        let message = panic_text(&*join.into_panic());
        assert!(
            EXPECTED_PANICS.iter().any(|p| message.contains(p)),
            "unexpected panic: {message}"
        );
    }
}

/// Runs `run(seed)` on a fresh paused-clock runtime for each seed: `0..N`
/// with N from the env var `count_var` (else `default_count`), or the one
/// seed in `seed_var`. Stops at the first failure and panics with its seed
/// and how to rerun it.
pub fn run_seeds<F, Fut>(seed_var: &str, count_var: &str, default_count: u64, run: F)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let seeds: Vec<u64> = match std::env::var(seed_var) {
        Ok(seed) => vec![seed.parse().expect("the seed is a number")],
        Err(_) => {
            let n = std::env::var(count_var)
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(default_count);
            (0..n).collect()
        }
    };
    // The loaders panic on purpose; keep their messages out of the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = None;
    for &seed in &seeds {
        // The cache draws from this thread's generator too (lock tokens,
        // re-read naps, XFetch leads): seeded, a seed replays alone as it
        // ran among the others.
        fastrand::seed(seed);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
                .block_on(run(seed))
        }));
        if let Err(payload) = outcome {
            failed = Some((seed, panic_text(&*payload)));
            break;
        }
    }
    std::panic::set_hook(default_hook);
    if let Some((seed, message)) = failed {
        panic!("seed {seed} failed (rerun with {seed_var}={seed}): {message}");
    }
    println!("{} seeds passed", seeds.len());
}

/// The tags of a model's `keys` keys, drawn from `tag_names` (`[even, odd,
/// all]`): none; each key its parity; or its parity and the one every key
/// carries.
pub fn draw_key_tags(rng: &mut fastrand::Rng, tag_names: &[String], keys: u32) -> Vec<Vec<String>> {
    let parity = |key: u32| tag_names[(key % 2) as usize].clone();
    match rng.u8(0..3) {
        0 => vec![Vec::new(); keys as usize],
        1 => (0..keys).map(|key| vec![parity(key)]).collect(),
        _ => (0..keys)
            .map(|key| vec![parity(key), tag_names[2].clone()])
            .collect(),
    }
}
