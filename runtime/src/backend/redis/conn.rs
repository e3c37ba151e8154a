//! The Redis backend's command connection: one primary (redis-rs's
//! `ConnectionManager`, which reconnects by itself) or a Redis Cluster
//! (redis-rs's async `ClusterConnection`, which follows MOVED/ASK, refreshes
//! its slot map and reconnects by itself). Both are cheap to clone and
//! shared; every command of the backend goes through [`Commands`].

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, Cmd, ConnectionInfo, Pipeline, RedisFuture, TlsCertificates, Value};

/// Where commands go.
#[derive(Clone)]
pub(crate) enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Commands {
    /// A connection to one primary; each command bounded by `timeout`,
    /// retried once after a reconnect.
    pub(crate) async fn single(
        client: Client,
        timeout: Duration,
    ) -> Result<Self, ::redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500));
        Ok(Commands::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }

    /// A connection to the cluster that `seeds` belong to (any reachable
    /// one reveals the rest), with the seeds' credentials and `tls`.
    ///
    /// Explicit bounds, not redis-rs's defaults (16 retries, no response
    /// timeout): a command gets `timeout` per node request and two retries
    /// — a redirect, a fail-over in progress — within about three timeouts
    /// overall; past that the backend's own bound fails it open.
    pub(crate) async fn cluster(
        seeds: Vec<ConnectionInfo>,
        credentials: Option<(Option<String>, String)>,
        tls: Option<TlsCertificates>,
        timeout: Duration,
    ) -> Result<Self, ::redis::RedisError> {
        let mut builder = ClusterClientBuilder::new(seeds)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout * 3))
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200);
        if let Some((username, password)) = credentials {
            builder = builder.password(password);
            if let Some(username) = username {
                builder = builder.username(username);
            }
        }
        if let Some(certificates) = tls {
            builder = builder.certs(certificates);
        }
        let client = builder.build()?;
        Ok(Commands::Cluster(client.get_async_connection().await?))
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Commands::Cluster(_))
    }
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(conn) => conn.req_packed_command(cmd),
            Commands::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(conn) => conn.get_db(),
            Commands::Cluster(conn) => conn.get_db(),
        }
    }
}
