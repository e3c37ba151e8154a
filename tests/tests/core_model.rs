//! Randomised model-based test of the in-process flight protocol (issue 8).
//!
//! Each seed builds a cache with a random configuration (strategy,
//! fail-safe, soft and load timeouts, a tags function or none) and drives
//! random interleavings on the paused clock over a few keys: calls whose
//! loader succeeds, errors, panics or hangs after a random delay; `insert`;
//! `invalidate`; `invalidate_tag`; callers cancelled mid-wait; calls made on
//! a short-lived runtime dropped before its load ran. It checks against a
//! reference model — a "database" holding a version per key, bumped by
//! every write (a tag invalidation writes every key carrying the tag):
//!
//! - at most one load per key runs at any moment for one database version
//!   (a write may start a new load beside an older, superseded one);
//! - every call finishes within its bound;
//! - no call is served a value older than the last write completed before
//!   the call started, nor another key's value;
//! - the failure rule: a failed flight's outcome (`Err`, a load timeout)
//!   reaches only the callers that waited on that flight — a call's `Err`
//!   comes from a load of its key that was still running when the call
//!   began, never from one that had ended before (the call then starts a
//!   new flight, or is served a value the failure left servable);
//! - after the storm, every key loads again at once (nothing is wedged).
//!
//! `MODEL_SEEDS=N` runs N seeds (default 2000); `MODEL_SEED=S` runs one. A
//! failure prints its seed.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use fastrand::Rng;
use stampede_cache::{Cache, Strategy};
use stampede_cache_tests::model::{
    Behaviour, ModelError, Row, Shared, batch_loader_on, begin_batch_call, cancellable,
    draw_cancel, draw_key_tags, draw_load, end_batch_call, loader, run_seeds, settle,
};
use tokio::time::{Instant, sleep};

const KEYS: u32 = 3;
const OPS: usize = 40;
const MAX_LOAD_MS: u64 = 80;

struct Config {
    cache: Cache<u32, Row>,
    hangs: bool,
    bound: Duration,
    /// The tags of each key's entry (empty without a tags function).
    tags: Vec<Vec<String>>,
    /// The tags an `invalidate_tag` op picks from (some carried by no key).
    tag_names: Vec<String>,
}

/// The seed's tag names: process-wide, so unique per seed.
fn tag_names(seed: u64) -> Vec<String> {
    vec![
        format!("core_model.{seed}.t0"),
        format!("core_model.{seed}.t1"),
        format!("core_model.{seed}.all"),
    ]
}

fn config(rng: &mut Rng, seed: u64) -> Config {
    let strategy = match rng.u8(0..3) {
        0 => Strategy::Lock,
        1 => Strategy::XFetch {
            beta: 0.5 + rng.f64() * 2.0,
        },
        _ => Strategy::Swr {
            stale: Duration::from_millis(rng.u64(10..300)),
        },
    };
    let mut builder = Cache::builder(format!("model.{seed}"))
        .max_batch(rng.usize(1..=KEYS as usize))
        .ttl(Duration::from_millis(rng.u64(20..400)))
        .strategy(strategy)
        .failed_refresh_backoff(Duration::from_millis(rng.u64(0..100)));
    let fail_safe = rng.bool();
    if fail_safe {
        builder = builder.fail_safe(Duration::from_millis(rng.u64(50..2000)));
    }
    if (fail_safe || matches!(strategy, Strategy::Swr { .. })) && rng.bool() {
        builder = builder.soft_timeout(Duration::from_millis(rng.u64(1..60)));
    }
    let load_timeout = rng.bool().then(|| Duration::from_millis(rng.u64(20..150)));
    if let Some(bound) = load_timeout {
        builder = builder.load_timeout::<ModelError>(bound);
    }
    let tag_names = tag_names(seed);
    let tags = draw_key_tags(rng, &tag_names, KEYS);
    if tags.iter().any(|t| !t.is_empty()) {
        let of_key = tags.clone();
        builder = builder.tags(move |key: &u32| of_key[*key as usize].clone());
    }
    // A call waits for at most two flights (a panicked one, then its retry),
    // each as long as the longest load, or a hung one (cut at the load timeout).
    let per_flight = load_timeout.map_or(Duration::from_millis(MAX_LOAD_MS), |t| {
        t.max(Duration::from_millis(MAX_LOAD_MS))
    });
    Config {
        cache: builder.build(),
        hangs: load_timeout.is_some(),
        bound: per_flight * 2 + Duration::from_millis(5),
        tags,
        tag_names,
    }
}

/// Polls `future` once.
fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut future = pin!(future);
    future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
}

async fn run_seed(seed: u64) {
    let mut rng = Rng::with_seed(seed);
    let Config {
        cache,
        hangs,
        bound,
        tags,
        tag_names,
    } = config(&mut rng, seed);
    let model: Shared = Arc::default();
    let mut calls = Vec::new();
    for _ in 0..OPS {
        let key = rng.u32(0..KEYS);
        match rng.u8(0..23) {
            0..=12 => {
                let started_at_version = model.lock().unwrap().version(key);
                let (behaviour, delay) = draw_load(&mut rng, hangs, MAX_LOAD_MS);
                let load = loader(model.clone(), behaviour, delay);
                let cancel_after = draw_cancel(&mut rng);
                let (cache, model) = (cache.clone(), model.clone());
                calls.push(tokio::spawn(async move {
                    let id = model.lock().unwrap().begin_call(key, 0, false);
                    let started = Instant::now();
                    let call = cache.try_get_or_load_with(key, move || load);
                    let Some(served) = cancellable(cancel_after, call).await else {
                        return;
                    };
                    let waited = started.elapsed();
                    let mut m = model.lock().unwrap();
                    m.end_call(id, &served);
                    m.check_call(key, started_at_version, &served, waited, bound);
                    m.check_failure_in_process(id);
                }));
            }
            13..=14 => {
                let row = Row {
                    key,
                    version: model.lock().unwrap().write(key),
                };
                cache.insert(key, row);
            }
            15..=16 => {
                model.lock().unwrap().write(key);
                cache.invalidate(&key);
            }
            17 => {
                // A call on a short-lived runtime that is dropped before the
                // load it may have started ever runs.
                let load = loader(model.clone(), Behaviour::Ok, Duration::ZERO);
                let cache = cache.clone();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_time()
                            .start_paused(true)
                            .build()
                            .unwrap();
                        let polled = runtime.block_on(async {
                            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                                let _ = poll_once(cache.try_get_or_load_with(key, move || load));
                            }));
                            polled.is_ok()
                        });
                        drop(runtime);
                        assert!(polled, "a first poll never panics");
                    });
                });
            }
            18 => {
                // Supersedes the tagged keys' flights and drops their
                // entries, as `invalidate` does for one key.
                let tag = &tag_names[rng.usize(0..tag_names.len())];
                {
                    let mut m = model.lock().unwrap();
                    for key in 0..KEYS {
                        if tags[key as usize].contains(tag) {
                            m.write(key);
                        }
                    }
                }
                stampede_cache::invalidate_tag(tag);
            }
            19..=21 => {
                // A list request: a random set of keys, one batch loader
                // (called per chunk of `max_batch`, and for a key retried
                // alone); each key checked as a call of its own.
                let keys: Vec<u32> = (0..KEYS).filter(|_| rng.bool()).chain([key]).collect();
                let versions: Vec<u64> = {
                    let m = model.lock().unwrap();
                    keys.iter().map(|k| m.version(*k)).collect()
                };
                let (behaviour, delay) = draw_load(&mut rng, hangs, MAX_LOAD_MS);
                let load = batch_loader_on(model.clone(), 0, behaviour, delay);
                let cancel_after = draw_cancel(&mut rng);
                let (cache, model) = (cache.clone(), model.clone());
                calls.push(tokio::spawn(async move {
                    let ids = begin_batch_call(&model, &keys, 0, |_| false);
                    let started = Instant::now();
                    let call = cache.try_get_many_or_load(keys.clone(), load);
                    let Some(served) = cancellable(cancel_after, call).await else {
                        return;
                    };
                    let waited = started.elapsed();
                    end_batch_call(&model, &ids, &served);
                    let mut m = model.lock().unwrap();
                    for (key, id) in &ids {
                        let at_start = versions[keys.iter().position(|k| k == key).unwrap()];
                        if let Some((_, answer)) = m.calls[*id].end.clone() {
                            m.check_call(*key, at_start, &answer, waited, bound);
                            m.check_failure_in_process(*id);
                        }
                    }
                }));
            }
            _ => {}
        }
        sleep(Duration::from_millis(rng.u64(0..30))).await;
    }

    settle(&model, calls, std::slice::from_ref(&cache), KEYS).await;
}

#[test]
fn random_interleavings_keep_the_flight_invariants() {
    run_seeds("MODEL_SEED", "MODEL_SEEDS", 2000, run_seed);
}
