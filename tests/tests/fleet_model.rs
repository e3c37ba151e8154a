//! Randomised model-based test of the fleet protocol (issue 9).
//!
//! Each seed runs a few pods (caches of one name on one `LocalBackend`, as
//! processes on one Redis) on the paused clock, with a random configuration
//! (a tags function or none), and drives random interleavings over a few
//! keys: calls on any pod whose loader succeeds, errors, panics or hangs;
//! `insert`, `invalidate` and `invalidate_all` on any pod; `invalidate_tag`;
//! pods with and without `remote_errors`;
//! pods restarted (their L1 gone, their loads still running); backend
//! outages (`LocalBackend::set_outage`, 10–500 ms, at most two a seed).
//! Checked against a reference model — a "database" with a version per key,
//! bumped by every write (a tag invalidation writes every key carrying it):
//!
//! - at most one origin call per key and database version runs fleet-wide
//!   at any moment (a write may start a new load beside a superseded one),
//!   except while loads may fail open: during an outage and for
//!   [`FAIL_OPEN_AFTER`] after it;
//! - no call that starts after a write has completed is served an older
//!   version, on any pod, nor another key's value. A write is completed on
//!   the pod that made it at once (and a tag invalidation on every pod at
//!   once: the pods share one process), elsewhere once it has landed in the
//!   backend — at once, or, when made during an outage (or queued behind
//!   one), by [`LAND_AFTER_OUTAGE`] after the outage ended;
//! - the failure rule: a failed flight's outcome reaches only the callers
//!   that waited on that flight, in every pod. An `Err(Down)` comes from a
//!   load of the call's pod that was still running when the call began; an
//!   `Err(Remote)` (another pod's failure record) from a flight that had not
//!   ended before the call's instant — unless the pod had a value to serve
//!   at the call's start (then the record throttles it); an `Err(Timeout)`
//!   from a load cut at or after the call's start, or a wait of at least
//!   the load timeout by a flight the call joined;
//! - every call finishes within its bound (widened around outages);
//! - after the storm every key loads again at once on every pod.
//!
//! `FLEET_SEEDS=N` runs N seeds (default 1000); `FLEET_SEED=S` runs one. A
//! failure prints its seed; `FLEET_TRACE=1` prints what a seed did.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastrand::Rng;
use stampede_cache::{Cache, LocalBackend, Strategy};
use stampede_cache_tests::model::{
    CallRecord, End, Model, ModelError, Row, Shared, Stamp, batch_loader_on, begin_batch_call,
    draw_key_tags, draw_load, end_batch_call, join_calls, loader_on, run_seeds, settle,
};
use tokio::time::{Instant, sleep};

const KEYS: u32 = 3;
const OPS: usize = 40;
const MAX_LOAD_MS: u64 = 80;
/// A write (`insert`, `invalidate`) is applied by a spawned task: this long
/// after the call (plus a backend round trip) it has reached the backend
/// and every pod.
const SETTLE: Duration = Duration::from_millis(1);
/// The most outages a seed starts.
const MAX_OUTAGES: usize = 2;
/// A write that failed is retried with a backoff capped at 1 s: once an
/// outage has ended, the writes queued meanwhile have landed by then.
const LAND_AFTER_OUTAGE: Duration = Duration::from_millis(1010);
/// How long a flight waits for the pending writes of its key before it
/// loads without the shared tier (the runtime's bound).
const SETTLE_BOUND: Duration = Duration::from_secs(1);
/// After an outage, flights that waited for pending writes (at most
/// [`SETTLE_BOUND`], and those land within [`LAND_AFTER_OUTAGE`]) may
/// still load without the shared tier: a second load beside a running one
/// is no violation until this long after the outage ended.
const FAIL_OPEN_AFTER: Duration = Duration::from_millis(1500);

struct Fleet {
    backend: LocalBackend,
    /// How long each backend operation takes (zero: at once), so another
    /// pod's command can land between two of a flight's.
    round_trip: Duration,
    name: String,
    strategy: Strategy,
    ttl: Duration,
    lock_ttl: Duration,
    /// The most keys one batch loader call is given.
    max_batch: usize,
    backoff: Duration,
    fail_safe: Option<Duration>,
    load_timeout: Option<Duration>,
    /// The tags of each key's entry (empty without a tags function).
    tags: Vec<Vec<String>>,
    /// The tags an `invalidate_tag` op picks from (some carried by no key).
    tag_names: Vec<String>,
    /// Whether this seed's backend has outages.
    outages: bool,
    /// Whether the pods take remote failures as `ModelError::Remote`
    /// (`remote_errors`); without, a remote failure never reaches a call.
    remote_errors: bool,
}

impl Fleet {
    /// How long after a write's call it has landed and reached every pod:
    /// a tagged insert takes up to three operations (the generation, if
    /// not known; its tag record; the value).
    fn settle(&self) -> Duration {
        SETTLE + self.round_trip * 3
    }

    fn random(rng: &mut Rng, seed: u64) -> Fleet {
        let tag_names: Vec<String> = ["t0", "t1", "all"]
            .iter()
            .map(|t| format!("fleet_model.{seed}.{t}"))
            .collect();
        // Whole milliseconds: tokio's timer does not resolve less.
        let round_trip = match rng.u8(0..3) {
            0 => Duration::ZERO,
            _ => Duration::from_millis(2 * rng.u64(1..3)),
        };
        Fleet {
            backend: LocalBackend::with_round_trip(round_trip),
            round_trip,
            name: format!("fleet_model.{seed}"),
            strategy: match rng.u8(0..3) {
                0 => Strategy::Lock,
                1 => Strategy::XFetch {
                    beta: 0.5 + rng.f64() * 2.0,
                },
                _ => Strategy::Swr {
                    stale: Duration::from_millis(rng.u64(10..300)),
                },
            },
            ttl: Duration::from_millis(rng.u64(20..400)),
            lock_ttl: Duration::from_millis(rng.u64(200..2000)),
            max_batch: rng.usize(1..=KEYS as usize),
            backoff: Duration::from_millis(rng.u64(0..100)),
            fail_safe: rng.bool().then(|| Duration::from_millis(rng.u64(50..2000))),
            load_timeout: rng.bool().then(|| Duration::from_millis(rng.u64(20..150))),
            tags: draw_key_tags(rng, &tag_names, KEYS),
            tag_names,
            outages: rng.u8(0..3) != 0,
            remote_errors: rng.u8(0..4) != 0,
        }
    }

    fn pod(&self) -> Cache<u32, Row> {
        let mut builder = Cache::builder(self.name.clone())
            .ttl(self.ttl)
            .strategy(self.strategy)
            .failed_refresh_backoff(self.backoff)
            .backend(self.backend.clone())
            .lock_ttl(self.lock_ttl)
            .max_batch(self.max_batch);
        if self.remote_errors {
            builder = builder.remote_errors::<ModelError>();
        }
        if let Some(window) = self.fail_safe {
            builder = builder.fail_safe(window);
        }
        if let Some(bound) = self.load_timeout {
            builder = builder.load_timeout::<ModelError>(bound);
        }
        if self.tags.iter().any(|t| !t.is_empty()) {
            let of_key = self.tags.clone();
            builder = builder.tags(move |key: &u32| of_key[*key as usize].clone());
        }
        builder.build()
    }

    /// A call waits for a few flights at most (a panicked one and its
    /// retry, each possibly followed by a takeover), each as long as the
    /// longest load or a hung one cut at the load timeout.
    fn bound(&self) -> Duration {
        let per_flight = self
            .load_timeout
            .map_or(Duration::from_millis(MAX_LOAD_MS), |t| {
                t.max(Duration::from_millis(MAX_LOAD_MS))
            });
        per_flight * 4 + Duration::from_millis(20)
    }

    /// What an outage may add to one flight: waiting for the pending
    /// writes of its key ([`SETTLE_BOUND`]), then for a lock its leader
    /// could not release during the outage (its lease, `lock_ttl`, and
    /// the waiter's re-read period, at most 3/16 of it).
    fn outage_delay(&self) -> Duration {
        SETTLE_BOUND + self.lock_ttl + self.lock_ttl * 3 / 16 + Duration::from_millis(50)
    }

    /// The bound of a call that started at `start`: [`bound`](Self::bound),
    /// plus, near an outage, its delay for each of two flights.
    fn bound_at(&self, start: Instant, outages: &[(Instant, Instant)]) -> Duration {
        let base = self.bound();
        let near = outages.iter().any(|&(from, to)| {
            start + base >= from && start <= to + LAND_AFTER_OUTAGE + self.outage_delay()
        });
        if near {
            base + self.outage_delay() * 2
        } else {
            base
        }
    }

    fn refreshes(&self) -> bool {
        !matches!(self.strategy, Strategy::Lock)
    }
}

/// A pod: its cache and the id of that cache instance (a restart makes a
/// new one).
struct Pod {
    cache: Cache<u32, Row>,
    id: usize,
}

/// A write as the model sees it.
struct Write {
    key: u32,
    /// The version it made.
    version: u64,
    /// The cache instance that made it; `None` for a tag invalidation,
    /// applied in every pod of this process at once.
    by: Option<usize>,
    /// Whether it was an `insert` (it leaves a value in its pod).
    insert: bool,
    at: Stamp,
}

/// When a write made at `at` has landed in the backend (and reached every
/// pod): at once, unless an outage was on or its queue was still held up
/// by one — then by [`LAND_AFTER_OUTAGE`] after that outage ended.
fn landed_by(at: Instant, outages: &[(Instant, Instant)], settle: Duration) -> Instant {
    let mut landed = at;
    for &(from, to) in outages {
        if landed < from {
            break;
        }
        if landed <= to + LAND_AFTER_OUTAGE {
            // Queued during the outage, or behind a write retried since.
            landed = to + LAND_AFTER_OUTAGE;
        }
    }
    landed + settle
}

/// The version a call must at least be served: the newest of its key's
/// writes completed before it started — on its own pod (and tags
/// everywhere) at once, elsewhere once landed.
fn required_version(
    fleet: &Fleet,
    c: &CallRecord,
    writes: &[Write],
    outages: &[(Instant, Instant)],
) -> u64 {
    writes
        .iter()
        .filter(|w| w.key == c.key)
        .filter(|w| {
            let here = w.by.is_none_or(|by| by == c.cache);
            (here && w.at.seq < c.start.seq)
                || landed_by(w.at.at, outages, fleet.settle()) <= c.start.at
        })
        .map(|w| w.version)
        .max()
        .unwrap_or(0)
}

/// Whether call `c`'s pod may have had a value of its key to serve instead
/// of a failure (fresh, stale or fail-safe) at the call's start. Without
/// `fail_safe` that is exactly whether `get` served one then; with it, a
/// fail-safe value may be servable while `get` says load, so any value the
/// pod may still hold counts: one a call there was answered with (or a
/// refresh it started may have landed since), or one inserted there.
fn possibly_servable(fleet: &Fleet, m: &Model, c: &CallRecord, writes: &[Write]) -> bool {
    if c.hit_at_start {
        return true;
    }
    let Some(fail_safe) = fleet.fail_safe else {
        return false;
    };
    let stale = match fleet.strategy {
        Strategy::Swr { stale } => stale,
        _ => Duration::ZERO,
    };
    let life = fleet.ttl + fail_safe.max(stale) + Duration::from_millis(5);
    let refresh_lands_within = if fleet.refreshes() {
        fleet.bound() + fleet.outage_delay() * 2
    } else {
        Duration::ZERO
    };
    let answered = m.calls.iter().any(|o| {
        o.key == c.key
            && o.cache == c.cache
            && matches!(&o.end, Some((end, Ok(_)))
                if end.seq < c.start.seq
                    && end.at + refresh_lands_within + life > c.start.at)
    });
    let inserted = writes.iter().any(|w| {
        w.insert
            && w.key == c.key
            && w.by == Some(c.cache)
            && w.at.seq < c.start.seq
            && w.at.at + life > c.start.at
    });
    answered || inserted
}

/// The failure rule across pods, for call `call`'s `error` (see the module docs).
fn check_failure(fleet: &Fleet, m: &mut Model, writes: &[Write], call: usize, error: &ModelError) {
    let c = m.calls[call].clone();
    let Some((end, _)) = c.end.clone() else {
        return;
    };
    let servable = possibly_servable(fleet, m, &c, writes);
    let who = format!(
        "call {call} (key {}, pod cache {}, began at {}, ended at {}, value to serve at its start: {servable})",
        c.key,
        c.cache,
        m.ms(c.start.at),
        m.ms(end.at)
    );
    match *error {
        ModelError::Down { load } => m.check_own_failure(call, load),
        ModelError::Remote { .. } if !fleet.remote_errors => {
            m.violations.push(format!(
                "{who} got {error:?}, but the pods take no remote errors (a remote failure must never reach a call that cannot return it)"
            ));
        }
        ModelError::Remote { load: None } => {
            m.violations
                .push(format!("{who} got a remote error naming no load"));
        }
        ModelError::Remote { load: Some(load) } => {
            let load = m.sibling(load, c.key);
            let Some(l) = m.loads.get(load).cloned() else {
                m.violations
                    .push(format!("{who} got the remote error of unknown load {load}"));
                return;
            };
            match l.end {
                Some((failed, End::Failed | End::Panicked)) if l.key == c.key => {
                    // Waiters are woken in the instant the record is written
                    // (LocalBackend's notices are synchronous): a flight that
                    // waited on that load ends then. One that consults the
                    // record later started after the load had ended. With
                    // round trips, the waiting flight ends a little later.
                    if c.start.at > failed.at + m.flight_end_slack && !servable {
                        m.violations.push(format!(
                            "{who} got Err(Remote) of load {load} (cache {}), which had failed at {}: \
                             an ended flight's failure answered a later call with nothing to serve",
                            l.cache,
                            m.ms(failed.at)
                        ));
                    }
                }
                other => m.violations.push(format!(
                    "{who} got Err(Remote) of load {load} of key {}, which ended {other:?}",
                    l.key
                )),
            }
        }
        ModelError::Timeout => {
            let Some(load_timeout) = fleet.load_timeout else {
                m.violations
                    .push(format!("{who} got Err(Timeout) without a load timeout"));
                return;
            };
            if servable || m.cut_since(c.key, None, c.start, false) {
                return;
            }
            // A flight that gives up waiting on another pod's load has
            // waited its own load timeout since it started, and a call that
            // started it (or retried into it) is still waiting on it.
            let same = |o: &&CallRecord| o.key == c.key && o.cache == c.cache;
            let waited_it = m
                .calls
                .iter()
                .filter(same)
                .any(|o| o.running_at(c.start) && o.start.at + load_timeout <= end.at);
            // A background refresh is started by a call served at once.
            let refreshed = fleet.refreshes()
                && m.calls.iter().filter(same).any(|o| {
                    matches!(&o.end, Some((e, Ok(_))) if e.at == o.start.at)
                        && o.start.at + load_timeout <= end.at
                        && o.start.at + load_timeout + fleet.outage_delay() >= end.at
                });
            if !waited_it && !refreshed {
                m.violations.push(format!(
                    "{who} got Err(Timeout), but no load of the key was cut since it began, and \
                     no flight it could have joined waited {load_timeout:?}: an ended flight's \
                     timeout answered it"
                ));
            }
        }
    }
}

/// The end-of-seed checks of every finished call.
fn check_calls(fleet: &Fleet, m: &mut Model, writes: &[Write], outages: &[(Instant, Instant)]) {
    let calls = m.calls.clone();
    for (id, c) in calls.iter().enumerate() {
        let Some((end, served)) = &c.end else {
            continue;
        };
        let required = required_version(fleet, c, writes, outages);
        let bound = fleet.bound_at(c.start.at, outages);
        m.check_call(c.key, required, served, end.at - c.start.at, bound);
        if let Err(error) = served {
            check_failure(fleet, m, writes, id, error);
        }
    }
}

/// `FLEET_TRACE=1`: the seed's configuration, outages, writes, loads and
/// calls, to read a failure by.
fn trace(fleet: &Fleet, m: &Model, writes: &[Write], outages: &[(Instant, Instant)]) {
    let backend = stampede_cache::SharedBackend::from(fleet.backend.clone());
    eprintln!(
        "{:?}, remote errors {}, round trip {:?}, ttl {:?}, lock_ttl {:?}, backoff {:?}, fail_safe {:?}, load_timeout {:?}, tags {:?}; \
         writes retried {}, lost {}",
        fleet.strategy,
        fleet.remote_errors,
        fleet.round_trip,
        fleet.ttl,
        fleet.lock_ttl,
        fleet.backoff,
        fleet.fail_safe,
        fleet.load_timeout,
        fleet.tags,
        backend.write_retries(),
        backend.writes_lost()
    );
    for &(from, to) in outages {
        eprintln!("outage {} .. {}", m.ms(from), m.ms(to));
    }
    for w in writes {
        let what = match (w.by, w.insert) {
            (None, _) => "tag".to_owned(),
            (Some(by), true) => format!("insert on cache {by}"),
            (Some(by), false) => format!("invalidate on cache {by}"),
        };
        eprintln!(
            "write key {} v{} ({what}) at {}, landed by {}",
            w.key,
            w.version,
            m.ms(w.at.at),
            m.ms(landed_by(w.at.at, outages, fleet.settle()))
        );
    }
    for (i, l) in m.loads.iter().enumerate() {
        let end = l.end.map(|(e, how)| format!("{how:?} at {}", m.ms(e.at)));
        eprintln!(
            "load {i}: key {} v{} on cache {} from {}, {}",
            l.key,
            l.version,
            l.cache,
            m.ms(l.start.at),
            end.unwrap_or_else(|| "running".into())
        );
    }
    for (i, c) in m.calls.iter().enumerate() {
        let end = c
            .end
            .as_ref()
            .map(|(e, served)| format!("{served:?} at {}", m.ms(e.at)));
        eprintln!(
            "call {i}: key {} on cache {} from {} (hit {}, must see v{}), {}",
            c.key,
            c.cache,
            m.ms(c.start.at),
            c.hit_at_start,
            required_version(fleet, c, writes, outages),
            end.unwrap_or_else(|| "cancelled or panicked".into())
        );
    }
}

/// The backend outages drawn so far: when each began and, once over, ended.
type Outages = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

async fn run_seed(seed: u64) {
    let mut rng = Rng::with_seed(seed);
    let fleet = Fleet::random(&mut rng, seed);
    let mut next_id = 0;
    let mut new_pod = || {
        next_id += 1;
        Pod {
            cache: fleet.pod(),
            id: next_id,
        }
    };
    let mut pods: Vec<Pod> = (0..rng.usize(2..5)).map(|_| new_pod()).collect();
    let model: Shared = Arc::default();
    // A leader's lock reply and its origin call are at most a few round
    // trips after the lock landed (a re-read included).
    {
        let mut m = model.lock().unwrap();
        m.lock_loss_window = fleet.round_trip * 3 + SETTLE;
        // The leader's failure record lands half a round trip after its
        // loader returned; a waiter's read of it answers a round trip later.
        m.flight_end_slack = fleet.round_trip * 2;
    }
    let mut calls = Vec::new();
    let mut writes: Vec<Write> = Vec::new();
    // Each outage's start and (once over) end.
    let outages: Outages = Arc::default();
    let mut outage_ends = Vec::new();
    for _ in 0..OPS {
        let key = rng.u32(0..KEYS);
        let pod = rng.usize(0..pods.len());
        let by = pods[pod].id;
        let op = rng.u8(0..28);
        match op {
            0..=14 => {
                let (behaviour, delay) =
                    draw_load(&mut rng, fleet.load_timeout.is_some(), MAX_LOAD_MS);
                let load = loader_on(model.clone(), by, behaviour, delay);
                let (cache, model) = (pods[pod].cache.clone(), model.clone());
                calls.push(tokio::spawn(async move {
                    let hit = cache.get(&key).is_some();
                    let call = model.lock().unwrap().begin_call(key, by, hit);
                    let served = cache.try_get_or_load_with(key, move || load).await;
                    model.lock().unwrap().end_call(call, &served);
                }));
            }
            15..=19 => {
                let insert = op <= 17;
                let (version, at) = {
                    let mut m = model.lock().unwrap();
                    (m.write(key), m.stamp())
                };
                writes.push(Write {
                    key,
                    version,
                    by: Some(by),
                    insert,
                    at,
                });
                if insert {
                    pods[pod].cache.insert(key, Row { key, version });
                } else {
                    pods[pod].cache.invalidate(&key);
                }
                sleep(fleet.settle()).await;
            }
            20 => {
                {
                    let mut m = model.lock().unwrap();
                    for key in 0..KEYS {
                        let (version, at) = (m.write(key), m.stamp());
                        writes.push(Write {
                            key,
                            version,
                            by: Some(by),
                            insert: false,
                            at,
                        });
                    }
                }
                pods[pod].cache.invalidate_all();
                sleep(fleet.settle()).await;
            }
            21 => {
                // A restarted pod: an empty L1; the old one's loads run on.
                pods[pod] = new_pod();
            }
            22..=23 => {
                // Process-wide: every pod at once, and the backend's copies
                // and locks of the tagged keys through the write-behind.
                let tag = &fleet.tag_names[rng.usize(0..fleet.tag_names.len())];
                {
                    let mut m = model.lock().unwrap();
                    for key in 0..KEYS {
                        if fleet.tags[key as usize].contains(tag) {
                            let (version, at) = (m.write(key), m.stamp());
                            writes.push(Write {
                                key,
                                version,
                                by: None,
                                insert: false,
                                at,
                            });
                        }
                    }
                }
                stampede_cache::invalidate_tag(tag);
                sleep(fleet.settle()).await;
            }
            24 => {
                let lasts = Duration::from_millis(rng.u64(10..=500));
                let mut list = outages.lock().unwrap();
                let on = list.last().is_some_and(|(_, to)| to.is_none());
                if fleet.outages && !on && list.len() < MAX_OUTAGES {
                    fleet.backend.set_outage(true);
                    let from = Instant::now();
                    list.push((from, None));
                    model.lock().unwrap().fail_open_until = Some(from + Duration::from_secs(3600));
                    let (backend, model, outages) =
                        (fleet.backend.clone(), model.clone(), outages.clone());
                    outage_ends.push(tokio::spawn(async move {
                        sleep(lasts).await;
                        backend.set_outage(false);
                        let to = Instant::now();
                        model.lock().unwrap().fail_open_until = Some(to + FAIL_OPEN_AFTER);
                        outages.lock().unwrap().last_mut().expect("started").1 = Some(to);
                    }));
                }
            }
            25..=27 => {
                // A list request on one pod: its misses in one batch
                // loader call (split by `max_batch`), each key a call of
                // its own for the checks.
                let keys: Vec<u32> = (0..KEYS).filter(|_| rng.bool()).chain([key]).collect();
                let (behaviour, delay) =
                    draw_load(&mut rng, fleet.load_timeout.is_some(), MAX_LOAD_MS);
                let load = batch_loader_on(model.clone(), by, behaviour, delay);
                let (cache, model) = (pods[pod].cache.clone(), model.clone());
                calls.push(tokio::spawn(async move {
                    let ids = begin_batch_call(&model, &keys, by, |k| cache.get(k).is_some());
                    let served = cache.try_get_many_or_load(keys, load).await;
                    end_batch_call(&model, &ids, &served);
                }));
            }
            _ => {}
        }
        sleep(Duration::from_millis(rng.u64(0..30))).await;
    }

    for end in outage_ends {
        end.await.expect("the outage ends");
    }
    join_calls(calls).await;
    let outages: Vec<(Instant, Instant)> = outages
        .lock()
        .unwrap()
        .iter()
        .map(|&(from, to)| (from, to.expect("ended")))
        .collect();
    {
        let mut m = model.lock().unwrap();
        if std::env::var_os("FLEET_TRACE").is_some() {
            trace(&fleet, &m, &writes, &outages);
        }
        check_calls(&fleet, &mut m, &writes, &outages);
    }
    // Writes queued in an outage land, locks it stranded lapse.
    if let Some(&(_, to)) = outages.last() {
        tokio::time::sleep_until(to + LAND_AFTER_OUTAGE + fleet.outage_delay()).await;
    }
    let caches: Vec<Cache<u32, Row>> = pods.iter().map(|p| p.cache.clone()).collect();
    settle(&model, Vec::new(), &caches, KEYS).await;
}

/// Log lines stamped with tokio's (paused) clock, from the runtime's start
/// (`tokio::time::Instant` read on a runtime thread; the wall clock elsewhere).
struct PausedClock;

impl tracing_subscriber::fmt::time::FormatTime for PausedClock {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let now = Instant::now();
        let since = now.saturating_duration_since(*EPOCH.get_or_init(|| now));
        write!(w, "{:>9.3} ms", since.as_secs_f64() * 1e3)
    }
}

#[test]
fn random_fleet_interleavings_keep_the_protocol_invariants() {
    if std::env::var_os("FLEET_TRACE").is_some() {
        // The runtime's own account (RUST_LOG, e.g. `stampede_cache=debug`),
        // stamped with the paused clock, beside the model's.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_timer(PausedClock)
            .with_test_writer()
            .try_init();
    }
    run_seeds("FLEET_SEED", "FLEET_SEEDS", 1000, run_seed);
}
