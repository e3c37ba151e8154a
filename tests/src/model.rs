//! The machinery shared by the seeded model-based tests (`core_model`,
//! `fleet_model`): a reference "database" with a version per key, loaders
//! that check the at-most-one-load rule against it, and the seed runner.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::sleep;

/// A row as the origin returns it: its key and the version it read.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    pub key: u32,
    pub version: u64,
}

/// The origin's error, and what a timeout or another process's failure becomes.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelError {
    Down,
    Timeout,
    Remote,
}

impl From<stampede_cache::LoadTimeout> for ModelError {
    fn from(_: stampede_cache::LoadTimeout) -> Self {
        ModelError::Timeout
    }
}

impl From<stampede_cache::RemoteLoadError> for ModelError {
    fn from(_: stampede_cache::RemoteLoadError) -> Self {
        ModelError::Remote
    }
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

/// The panic message of a model loader.
pub const LOADER_PANIC: &str = "model loader panic";

/// Panics a call may end with: a loader's, or the cache's after a retry.
pub const EXPECTED_PANICS: [&str; 2] = [LOADER_PANIC, "panicked or was dropped"];

/// The reference model: the database and the loads running against it.
#[derive(Default)]
pub struct Model {
    /// Version of each key's row; bumped by every write.
    pub db: HashMap<u32, u64>,
    /// Loads running, by (key, database version they read).
    running: HashMap<(u32, u64), usize>,
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
        let version = self.db.entry(key).or_insert(0);
        *version += 1;
        *version
    }

    /// Records what is wrong with one finished call of `key`: it waited
    /// longer than `bound`, or was served another key's row or a version
    /// older than the one written before it started.
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
    for call in calls {
        match tokio::time::timeout(Duration::from_secs(600), call).await {
            Err(_) => panic!("a call never finished"),
            Ok(joined) => expect_finished(joined),
        }
    }
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
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Decrements the running count when the load ends, however it ends
/// (returned, panicked, dropped at the load timeout or runtime shutdown).
struct Running(Shared, (u32, u64));

impl Drop for Running {
    fn drop(&mut self) {
        let mut model = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = model.running.get_mut(&self.1) {
            *n -= 1;
        }
    }
}

/// A boxed model load.
pub type Load = Pin<Box<dyn Future<Output = Result<Row, ModelError>> + Send>>;

/// The loader of one call: reads the row version when the load starts
/// (`make_loader` runs right where the flight is registered) and records a
/// violation if another load of that key and version is running; then it
/// waits `delay` and behaves.
pub fn loader(
    model: Shared,
    behaviour: Behaviour,
    delay: Duration,
) -> impl FnOnce(u32) -> Load + Send + 'static {
    move |key| {
        let version = {
            let mut m = model.lock().unwrap();
            let version = m.version(key);
            let n = m.running.entry((key, version)).or_insert(0);
            *n += 1;
            if *n > 1 {
                let msg = format!("{n} loads of key {key} at version {version} at once");
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
                Behaviour::Panic => panic!("{LOADER_PANIC}"),
                Behaviour::Hang => std::future::pending().await,
            }
        })
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
