//! Randomised model-based test of the fleet protocol (issue 9).
//!
//! Each seed runs a few pods (caches of one name on one `LocalBackend`, as
//! processes on one Redis) on the paused clock, with a random configuration,
//! and drives random interleavings over a few keys: calls on any pod whose
//! loader succeeds, errors, panics or hangs; `insert`, `invalidate` and
//! `invalidate_all` on any pod; pods restarted (their L1 gone, their loads
//! still running). Checked against a reference model — a "database" with a
//! version per key, bumped by every write:
//!
//! - at most one origin call per key and database version runs fleet-wide
//!   at any moment (a write may start a new load beside a superseded one);
//! - no call that starts after a write has completed is served an older
//!   version, on any pod, nor another key's value;
//! - every call finishes within its bound;
//! - after the storm every key loads again at once on every pod.
//!
//! `FLEET_SEEDS=N` runs N seeds (default 1000); `FLEET_SEED=S` runs one. A
//! failure prints its seed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastrand::Rng;
use stampede_cache::{Cache, LoadTimeout, LocalBackend, RemoteLoadError, Strategy};
use tokio::time::{Instant, sleep, timeout};

const KEYS: u32 = 3;
const OPS: usize = 40;
const MAX_LOAD_MS: u64 = 80;
/// A write (`insert`, `invalidate`) is applied by a spawned task: this long
/// after the call it has reached the backend and every pod.
const SETTLE: Duration = Duration::from_millis(1);

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Row {
    key: u32,
    version: u64,
}

#[derive(Clone, Debug, PartialEq)]
enum ModelError {
    Down,
    Timeout,
    Remote,
}

impl From<LoadTimeout> for ModelError {
    fn from(_: LoadTimeout) -> Self {
        ModelError::Timeout
    }
}

impl From<RemoteLoadError> for ModelError {
    fn from(_: RemoteLoadError) -> Self {
        ModelError::Remote
    }
}

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Ok,
    Error,
    Panic,
    Hang,
}

#[derive(Default)]
struct Model {
    db: HashMap<u32, u64>,
    running: HashMap<(u32, u64), usize>,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Model>>;

struct Running(Shared, (u32, u64));

impl Drop for Running {
    fn drop(&mut self) {
        let mut model = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = model.running.get_mut(&self.1) {
            *n -= 1;
        }
    }
}

type Load = Pin<Box<dyn Future<Output = Result<Row, ModelError>> + Send>>;

fn loader(
    model: Shared,
    behaviour: Behaviour,
    delay: Duration,
) -> impl FnOnce(u32) -> Load + Send + 'static {
    move |key| {
        let version = {
            let mut m = model.lock().unwrap();
            let version = m.db.get(&key).copied().unwrap_or(0);
            let n = m.running.entry((key, version)).or_insert(0);
            *n += 1;
            if *n > 1 {
                let msg = format!("{n} origin calls of key {key} at version {version} at once");
                m.violations.push(msg);
            }
            version
        };
        let guard = Running(model, (key, version));
        Box::pin(async move {
            let _guard = guard;
            sleep(delay).await;
            match behaviour {
                Behaviour::Ok => Ok(Row { key, version }),
                Behaviour::Error => Err(ModelError::Down),
                Behaviour::Panic => panic!("model loader panic"),
                Behaviour::Hang => std::future::pending().await,
            }
        })
    }
}

struct Fleet {
    backend: LocalBackend,
    name: String,
    strategy: Strategy,
    ttl: Duration,
    lock_ttl: Duration,
    backoff: Duration,
    fail_safe: Option<Duration>,
    load_timeout: Option<Duration>,
}

impl Fleet {
    fn random(rng: &mut Rng, seed: u64) -> Fleet {
        Fleet {
            backend: LocalBackend::new(),
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
            backoff: Duration::from_millis(rng.u64(0..100)),
            fail_safe: rng.bool().then(|| Duration::from_millis(rng.u64(50..2000))),
            load_timeout: rng.bool().then(|| Duration::from_millis(rng.u64(20..150))),
        }
    }

    fn pod(&self) -> Cache<u32, Row> {
        let mut builder = Cache::builder(self.name.clone())
            .ttl(self.ttl)
            .strategy(self.strategy)
            .failed_refresh_backoff(self.backoff)
            .remote_errors::<ModelError>()
            .backend(self.backend.clone())
            .lock_ttl(self.lock_ttl);
        if let Some(window) = self.fail_safe {
            builder = builder.fail_safe(window);
        }
        if let Some(bound) = self.load_timeout {
            builder = builder.load_timeout::<ModelError>(bound);
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
}

fn behaviour(rng: &mut Rng, hangs: bool) -> Behaviour {
    match rng.u8(0..20) {
        0..=12 => Behaviour::Ok,
        13..=15 => Behaviour::Error,
        16..=17 => Behaviour::Panic,
        _ if hangs => Behaviour::Hang,
        _ => Behaviour::Ok,
    }
}

const EXPECTED_PANICS: [&str; 2] = ["model loader panic", "panicked or was dropped"];

async fn run_seed(seed: u64) {
    let mut rng = Rng::with_seed(seed);
    let fleet = Fleet::random(&mut rng, seed);
    let bound = fleet.bound();
    let mut pods: Vec<Cache<u32, Row>> = (0..rng.usize(2..5)).map(|_| fleet.pod()).collect();
    let model: Shared = Arc::default();
    let mut calls = Vec::new();
    for _ in 0..OPS {
        let key = rng.u32(0..KEYS);
        let pod = rng.usize(0..pods.len());
        match rng.u8(0..24) {
            0..=14 => {
                let started_at_version = model.lock().unwrap().db.get(&key).copied().unwrap_or(0);
                let load = loader(
                    model.clone(),
                    behaviour(&mut rng, fleet.load_timeout.is_some()),
                    Duration::from_millis(rng.u64(0..MAX_LOAD_MS)),
                );
                let (cache, model) = (pods[pod].clone(), model.clone());
                calls.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let served = cache.try_get_or_load_with(key, move || load).await;
                    let waited = started.elapsed();
                    let mut m = model.lock().unwrap();
                    if waited > bound {
                        m.violations
                            .push(format!("a call of key {key} waited {waited:?} > {bound:?}"));
                    }
                    if let Ok(row) = served {
                        if row.key != key {
                            m.violations.push(format!("key {key} served {row:?}"));
                        }
                        if row.version < started_at_version {
                            m.violations.push(format!(
                                "key {key} served version {} after version {started_at_version} was written",
                                row.version
                            ));
                        }
                    }
                }));
            }
            15..=17 => {
                let row = {
                    let mut m = model.lock().unwrap();
                    let version = m.db.entry(key).or_insert(0);
                    *version += 1;
                    Row {
                        key,
                        version: *version,
                    }
                };
                pods[pod].insert(key, row);
                sleep(SETTLE).await;
            }
            18..=19 => {
                *model.lock().unwrap().db.entry(key).or_insert(0) += 1;
                pods[pod].invalidate(&key);
                sleep(SETTLE).await;
            }
            20 => {
                {
                    let mut m = model.lock().unwrap();
                    for key in 0..KEYS {
                        *m.db.entry(key).or_insert(0) += 1;
                    }
                }
                pods[pod].invalidate_all();
                sleep(SETTLE).await;
            }
            21 => {
                // A restarted pod: an empty L1; the old one's loads run on.
                pods[pod] = fleet.pod();
            }
            _ => {}
        }
        sleep(Duration::from_millis(rng.u64(0..30))).await;
    }

    for call in calls {
        match timeout(Duration::from_secs(600), call).await {
            Err(_) => panic!("a call never finished"),
            Ok(Ok(())) => {}
            Ok(Err(join)) => {
                let payload = join.into_panic();
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                assert!(
                    EXPECTED_PANICS.iter().any(|p| message.contains(p)),
                    "unexpected panic: {message}"
                );
            }
        }
    }
    // Nothing is wedged, on any pod: once the loads still running have
    // ended and the failure records expired, every key loads or is served.
    sleep(Duration::from_secs(1)).await;
    for (i, pod) in pods.iter().enumerate() {
        for key in 0..KEYS {
            let load = loader(model.clone(), Behaviour::Ok, Duration::ZERO);
            let served = timeout(
                Duration::from_secs(1),
                pod.try_get_or_load_with(key, move || load),
            )
            .await;
            assert!(
                matches!(served, Ok(Ok(ref row)) if row.key == key),
                "pod {i}, key {key} after the storm: {served:?}"
            );
        }
    }
    let violations = std::mem::take(&mut model.lock().unwrap().violations);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn random_fleet_interleavings_keep_the_protocol_invariants() {
    let seeds: Vec<u64> = match std::env::var("FLEET_SEED") {
        Ok(seed) => vec![seed.parse().expect("FLEET_SEED is a number")],
        Err(_) => {
            let n = std::env::var("FLEET_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1000u64);
            (0..n).collect()
        }
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = None;
    for &seed in &seeds {
        let outcome = std::panic::catch_unwind(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
                .block_on(run_seed(seed))
        });
        if let Err(payload) = outcome {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed = Some((seed, message));
            break;
        }
    }
    std::panic::set_hook(default_hook);
    if let Some((seed, message)) = failed {
        panic!("seed {seed} failed (rerun with FLEET_SEED={seed}): {message}");
    }
    println!("{} seeds passed", seeds.len());
}
