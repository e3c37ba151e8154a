//! Shared helpers of the integration tests: bounded waits, fleet scenarios
//! run against every backend, and (feature `redis`) a real `redis-server`.

use std::future::Future;
use std::time::Duration;

pub mod batch_scenarios;
pub mod model;
#[cfg(feature = "redis")]
pub mod redis_cluster;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod scenarios;

/// How long any one awaited step of a test may take before it counts as a
/// hang (on the paused clock this costs nothing).
pub const BOUND: Duration = Duration::from_secs(60);

/// Awaits `future`, failing the test if it takes longer than [`BOUND`].
pub async fn bounded<F: Future>(future: F) -> F::Output {
    match tokio::time::timeout(BOUND, future).await {
        Ok(output) => output,
        Err(_) => panic!("a step of the test did not finish within {BOUND:?}: a hang"),
    }
}

/// A `tracing` writer that keeps everything in memory (give a clone to
/// `tracing_subscriber::fmt().with_writer(move || writer.clone())`).
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}
