//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (cargo
//! feature `metrics`): install any recorder (Prometheus, StatsD, OTLP, …)
//! and every cache of the process shows up, labelled by its name.
//!
//! **Counters and gauges are published, not pushed per call**: the hit path
//! bumps the cache's own striped counters (as without the feature) and
//! [`report`] copies them to the facade — call it before each scrape, or
//! let [`spawn_reporter`] do it on an interval. Events that already cost a
//! load or a wait (load durations, waits, backend round trips) are recorded
//! as they happen.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `stampede_cache_<counter>_total` for every [`CacheStats`](crate::CacheStats) field (`hits`, `stale_hits`, `misses`, `loads`, `batch_calls`, `load_errors`, `load_panics`, `coalesced`, `early_refreshes`, `background_refreshes`, `fail_safe_hits`, `soft_timeouts`, `load_timeouts`, `lock_acquired`, `lock_contended`, `remote_hits`, `backend_errors`, `fallbacks`, `remote_failures`, `superseded_loads`) | counter | `cache` |
//! | `stampede_cache_entries` | gauge | `cache` |
//! | `stampede_cache_loads_in_flight` | gauge | `cache` |
//! | `stampede_cache_load_seconds` — one origin call (a batch loader call counts once) | histogram | `cache`, `outcome` (`ok`, `error`, `timeout`, `panic`, `dropped`), `batch` (`true`, `false`) |
//! | `stampede_cache_wait_seconds` — a caller that waited on a flight, from the miss to its answer | histogram | `cache`, `answer` (`value`, `soft_timeout`, `failure`) |
//! | `stampede_cache_backend_round_trip_seconds` — one shared-tier command | histogram | `backend`, `outcome` (`ok`, `error`, `timeout`) |
//! | `stampede_cache_backend_breaker_open` — 1 while the circuit breaker is open | gauge | `backend` |
//! | `stampede_cache_backend_breaker_trips_total`, `stampede_cache_backend_commands_total`, `stampede_cache_backend_write_retries_total`, `stampede_cache_backend_writes_lost_total` | counter | `backend` |
//!
//! `backend` is the backend's kind and a process-unique number
//! (`redis-1`), so two backends of one process are told apart.
//!
//! ```
//! # #[cfg(feature = "metrics")]
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache: stampede_cache::Cache<u32, u32> = stampede_cache::Cache::builder("doc.metrics").build();
//! cache.get_or_load(1, |k| async move { k }).await;
//! // Before an exporter renders (e.g. in the scrape handler):
//! stampede_cache::metrics::report();
//! # }
//! # #[cfg(not(feature = "metrics"))] fn main() {}
//! ```

use std::time::Duration;

/// What a live cache shows to [`report`].
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) trait Reported: Send + Sync {
    fn name(&self) -> &str;
    fn stats(&self) -> crate::CacheStats;
    fn entries(&self) -> usize;
    fn in_flight(&self) -> usize;
}

/// What a live backend shows to [`report`].
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct BackendHealth {
    /// Kind and number, e.g. `redis-1`.
    pub label: String,
    pub breaker_open: bool,
    pub breaker_trips: u64,
    pub commands: u64,
    pub write_retries: u64,
    pub writes_lost: u64,
}

/// Publishes every live cache's counters and gauges, and every live shared
/// backend's health, to the installed `metrics` recorder (absolute values:
/// calling it often costs nothing but the copy). Without the `metrics`
/// feature it does nothing.
pub fn report() {
    #[cfg(feature = "metrics")]
    publish::report();
}

/// Spawns a task that calls [`report`] every `every` (for exporters that
/// render on their own schedule). Drop or abort the handle to stop it.
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn_reporter(every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
        loop {
            ticks.tick().await;
            report();
        }
    })
}

/// Times one origin call: records it when dropped — `ok`, `error` or
/// `timeout` as set, `panic` when dropped by an unwinding loader,
/// `dropped` when its future was dropped before it ended (a deadline
/// elsewhere, runtime shutdown).
pub(crate) struct LoadTimer {
    cache: std::sync::Arc<str>,
    started: tokio::time::Instant,
    batch: bool,
    outcome: Option<&'static str>,
}

impl LoadTimer {
    pub(crate) fn start(cache: std::sync::Arc<str>, batch: bool) -> Self {
        Self {
            cache,
            started: tokio::time::Instant::now(),
            batch,
            outcome: None,
        }
    }

    pub(crate) fn end(&mut self, outcome: &'static str) {
        self.outcome = Some(outcome);
    }
}

impl Drop for LoadTimer {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(if std::thread::panicking() {
            "panic"
        } else {
            "dropped"
        });
        load_ended(&self.cache, self.started.elapsed(), outcome, self.batch);
    }
}

/// An origin call of `cache` ended after `took`.
#[inline]
pub(crate) fn load_ended(cache: &str, took: Duration, outcome: &'static str, batch: bool) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(
        "stampede_cache_load_seconds",
        "cache" => cache.to_owned(),
        "outcome" => outcome,
        "batch" => if batch { "true" } else { "false" },
    )
    .record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (cache, took, outcome, batch);
}

/// A caller of `cache` waited `took` on a flight and got `answer`.
#[inline]
pub(crate) fn waited(cache: &str, took: Duration, answer: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(
        "stampede_cache_wait_seconds",
        "cache" => cache.to_owned(),
        "answer" => answer,
    )
    .record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (cache, took, answer);
}

/// One shared-tier command of backend `label` took `took`.
#[inline]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn round_trip(label: &str, took: Duration, outcome: &'static str) {
    #[cfg(feature = "metrics")]
    ::metrics::histogram!(
        "stampede_cache_backend_round_trip_seconds",
        "backend" => label.to_owned(),
        "outcome" => outcome,
    )
    .record(took.as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = (label, took, outcome);
}

/// Runs `f` on every live cache of the process.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) fn each_cache(f: impl FnMut(&dyn Reported)) {
    crate::registry::each(f);
}

#[cfg(feature = "metrics")]
mod publish {
    use super::{BackendHealth, Reported, each_cache};

    pub(super) fn report() {
        each_cache(cache);
        crate::backend::each_health(backend);
    }

    fn cache(cache: &dyn Reported) {
        let name = cache.name().to_owned();
        let s = cache.stats();
        let counters: [(&'static str, u64); 20] = [
            ("stampede_cache_hits_total", s.hits),
            ("stampede_cache_stale_hits_total", s.stale_hits),
            ("stampede_cache_misses_total", s.misses),
            ("stampede_cache_loads_total", s.loads),
            ("stampede_cache_batch_calls_total", s.batch_calls),
            ("stampede_cache_load_errors_total", s.load_errors),
            ("stampede_cache_load_panics_total", s.load_panics),
            ("stampede_cache_coalesced_total", s.coalesced),
            ("stampede_cache_early_refreshes_total", s.early_refreshes),
            (
                "stampede_cache_background_refreshes_total",
                s.background_refreshes,
            ),
            ("stampede_cache_fail_safe_hits_total", s.fail_safe_hits),
            ("stampede_cache_soft_timeouts_total", s.soft_timeouts),
            ("stampede_cache_load_timeouts_total", s.load_timeouts),
            ("stampede_cache_lock_acquired_total", s.lock_acquired),
            ("stampede_cache_lock_contended_total", s.lock_contended),
            ("stampede_cache_remote_hits_total", s.remote_hits),
            ("stampede_cache_backend_errors_total", s.backend_errors),
            ("stampede_cache_fallbacks_total", s.fallbacks),
            ("stampede_cache_remote_failures_total", s.remote_failures),
            ("stampede_cache_superseded_loads_total", s.superseded_loads),
        ];
        for (metric, value) in counters {
            ::metrics::counter!(metric, "cache" => name.clone()).absolute(value);
        }
        ::metrics::gauge!("stampede_cache_entries", "cache" => name.clone())
            .set(cache.entries() as f64);
        ::metrics::gauge!("stampede_cache_loads_in_flight", "cache" => name)
            .set(cache.in_flight() as f64);
    }

    fn backend(health: BackendHealth) {
        let label = health.label;
        ::metrics::gauge!("stampede_cache_backend_breaker_open", "backend" => label.clone())
            .set(if health.breaker_open { 1.0 } else { 0.0 });
        let counters = [
            (
                "stampede_cache_backend_breaker_trips_total",
                health.breaker_trips,
            ),
            ("stampede_cache_backend_commands_total", health.commands),
            (
                "stampede_cache_backend_write_retries_total",
                health.write_retries,
            ),
            (
                "stampede_cache_backend_writes_lost_total",
                health.writes_lost,
            ),
        ];
        for (metric, value) in counters {
            ::metrics::counter!(metric, "backend" => label.clone()).absolute(value);
        }
    }
}
