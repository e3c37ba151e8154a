//! The Redis backend's command connection: one primary (redis-rs's
//! `ConnectionManager`, which reconnects by itself) or a Redis Cluster
//! (redis-rs's async `ClusterConnection`, which follows MOVED/ASK, refreshes
//! its slot map and reconnects by itself). Both are cheap to clone and
//! shared; every command of the backend goes through [`Commands`].

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{
    Client, Cmd, ConnectionInfo, Pipeline, PushInfo, RedisFuture, TlsCertificates, Value,
};
use tokio::sync::mpsc;

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

    /// A connection to the cluster (any reachable seed reveals the rest).
    ///
    /// Explicit bounds, not redis-rs's defaults (16 retries, no response
    /// timeout): a command gets `timeout` per node request and up to six
    /// retries — redirects while the slot map is refreshed after a
    /// fail-over (with two, keys on shards that stayed up failed open
    /// during a fail-over: 3 origin calls each for 3 pods, measured) —
    /// within three timeouts overall; past that the backend's own bound
    /// fails it open.
    pub(crate) async fn cluster(topology: &ClusterTopology) -> Result<Self, ::redis::RedisError> {
        let client = topology.builder().build()?;
        Ok(Commands::Cluster(client.get_async_connection().await?))
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Commands::Cluster(_))
    }
}

/// How to reach a Cluster: its seeds, credentials, TLS and the command
/// timeout. Commands and the notice connection are each made from it.
#[derive(Clone)]
pub(crate) struct ClusterTopology {
    pub(crate) seeds: Vec<ConnectionInfo>,
    pub(crate) credentials: Option<(Option<String>, String)>,
    pub(crate) tls: Option<TlsCertificates>,
    pub(crate) timeout: Duration,
}

impl ClusterTopology {
    /// A notice connection: RESP3 (sharded pub/sub arrives as pushes), its
    /// pushes — messages, the server's `SUNSUBSCRIBE` when a slot moves,
    /// a node connection's loss — on the returned receiver. Its own
    /// connections, so no command's reply can be mistaken for a push.
    pub(crate) async fn notices(
        &self,
    ) -> Result<(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>), ::redis::RedisError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self
            .builder()
            .use_protocol(::redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .build()?;
        Ok((client.get_async_connection().await?, rx))
    }

    fn builder(&self) -> ClusterClientBuilder {
        let timeout = self.timeout;
        let mut builder = ClusterClientBuilder::new(self.seeds.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout * 3))
            .retries(6)
            .min_retry_wait(10)
            .max_retry_wait(200);
        if let Some((username, password)) = &self.credentials {
            builder = builder.password(password);
            if let Some(username) = username {
                builder = builder.username(username);
            }
        }
        if let Some(certificates) = &self.tls {
            builder = builder.certs(certificates.clone());
        }
        builder
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
