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

use std::sync::Arc;
use std::time::Duration;

use fastrand::Rng;
use stampede_cache::{Cache, LocalBackend, Strategy};
use stampede_cache_tests::model::{Behaviour, ModelError, Row, Shared, loader, run_seeds, settle};
use tokio::time::{Instant, sleep};

const KEYS: u32 = 3;
const OPS: usize = 40;
const MAX_LOAD_MS: u64 = 80;
/// A write (`insert`, `invalidate`) is applied by a spawned task: this long
/// after the call it has reached the backend and every pod.
const SETTLE: Duration = Duration::from_millis(1);

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
                let started_at_version = model.lock().unwrap().version(key);
                let load = loader(
                    model.clone(),
                    Behaviour::random(&mut rng, fleet.load_timeout.is_some()),
                    Duration::from_millis(rng.u64(0..MAX_LOAD_MS)),
                );
                let (cache, model) = (pods[pod].clone(), model.clone());
                calls.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let served = cache.try_get_or_load_with(key, move || load).await;
                    let waited = started.elapsed();
                    model.lock().unwrap().check_call(
                        key,
                        started_at_version,
                        &served,
                        waited,
                        bound,
                    );
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
                model.lock().unwrap().write(key);
                pods[pod].invalidate(&key);
                sleep(SETTLE).await;
            }
            20 => {
                {
                    let mut m = model.lock().unwrap();
                    for key in 0..KEYS {
                        m.write(key);
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

    settle(&model, calls, &pods, KEYS).await;
}

#[test]
fn random_fleet_interleavings_keep_the_protocol_invariants() {
    run_seeds("FLEET_SEED", "FLEET_SEEDS", 1000, run_seed);
}
