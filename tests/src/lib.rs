//! Shared helpers of the integration tests.

#[cfg(feature = "redis")]
pub mod redis_server;
