//! Configuring and connecting a [`RedisBackend`]: URL or cluster seeds,
//! prefix, timeouts, TLS and credentials.

use super::*;

/// Configures a [`RedisBackend`]; from [`RedisBackend::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .connect()"]
pub struct RedisBackendBuilder {
    pub(super) url: String,
    /// With [`RedisBackend::cluster_builder`]: the other seed nodes (`url`
    /// is the first), and that it is a Cluster.
    pub(super) seeds: Vec<String>,
    pub(super) cluster: bool,
    pub(super) prefix: String,
    pub(super) command_timeout: Duration,
    pub(super) breaker_cooldown: Duration,
    pub(super) ping_interval: Duration,
    pub(super) tls: Option<RedisTls>,
    /// ACL user and password, overriding the URL's.
    pub(super) credentials: Option<(Option<String>, String)>,
}

/// TLS settings of a `rediss://` connection beyond the URL: the CA that
/// signed the server's certificate (instead of the system's roots) and a
/// client certificate for mutual TLS. Without them a `rediss://` URL
/// verifies the server against the system's trust store.
///
/// ```no_run
/// # async fn start() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use stampede_cache::redis::{RedisBackend, RedisTls};
///
/// let tls = RedisTls::new().ca_pem(std::fs::read("/etc/redis/ca.crt")?);
/// let backend = RedisBackend::builder("rediss://cache.internal:6380/")
///     .tls(tls)
///     .credentials(Some("stampede"), "secret")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct RedisTls {
    ca_pem: Option<Vec<u8>>,
    client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl RedisTls {
    /// The system's trust store, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the CA(s) in `pem` (PEM-encoded certificates) instead of the
    /// system's roots: what a managed Redis's own CA, or a private one, needs.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Present this client certificate and key (both PEM) for mutual TLS.
    pub fn client_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client_pem = Some((cert.into(), key.into()));
        self
    }
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never prints key material.
        f.debug_struct("RedisTls")
            .field("custom_ca", &self.ca_pem.is_some())
            .field("client_certificate", &self.client_pem.is_some())
            .finish()
    }
}

impl RedisBackendBuilder {
    /// Prefix of every key and channel. Default [`DEFAULT_PREFIX`]. Give
    /// each application (or environment) sharing a Redis its own.
    ///
    /// # Panics
    /// If `prefix` is empty or contains `{` or `}` (it would break the hash tag).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(
            !prefix.is_empty() && !prefix.contains(['{', '}']),
            "stampede-cache: the Redis key prefix must be non-empty and free of braces, got {prefix:?}"
        );
        self.prefix = prefix;
        self
    }

    /// Bound on one Redis command (and on a connection attempt); past it the
    /// call runs its loader in process. Also the bound on a liveness PING
    /// of the notice connection. Default [`DEFAULT_COMMAND_TIMEOUT`].
    ///
    /// Saturated at [`MAX_SETTING`].
    ///
    /// # Panics
    /// If `timeout` is zero.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = positive("command timeout", timeout);
        self
    }

    /// How long the circuit breaker stays open after
    /// [`BREAKER_THRESHOLD`] consecutive command timeouts before one probe
    /// command may try Redis again: a hung Redis costs this process at most
    /// one command timeout per cool-down. Shorter notices a recovered Redis
    /// sooner; longer wastes fewer timeouts on a hung one. Default
    /// [`DEFAULT_BREAKER_COOLDOWN`].
    ///
    /// Saturated at [`MAX_SETTING`].
    ///
    /// # Panics
    /// If `cooldown` is zero.
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.breaker_cooldown = positive("circuit-breaker cool-down", cooldown);
        self
    }

    /// Interval of the liveness PING on the notice connection: a dead
    /// subscription (invalidations silently lost) is noticed within
    /// `ping_interval + command_timeout`, and the process's L1 copies are
    /// dropped then. Default [`DEFAULT_PING_INTERVAL`].
    ///
    /// Saturated at [`MAX_SETTING`].
    ///
    /// # Panics
    /// If `interval` is zero.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = positive("ping interval", interval);
        self
    }

    /// TLS settings for a `rediss://` URL: a custom CA, a client
    /// certificate (see [`RedisTls`]). Applies to every connection of the
    /// backend (commands and notices).
    pub fn tls(mut self, tls: RedisTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The ACL user (`None`: the `default` user) and password to
    /// authenticate with, instead of any in the URL. The user needs the
    /// permissions listed in the [module docs](crate::redis#acl-permissions).
    pub fn credentials(mut self, username: Option<&str>, password: &str) -> Self {
        self.credentials = Some((username.map(str::to_owned), password.to_owned()));
        self
    }

    /// The client, with TLS and credentials applied. A `rediss://` URL uses
    /// rustls; its crypto provider (ring) is installed as the process
    /// default unless the application installed one already.
    fn client(&self, url: &str) -> Result<(Client, ::redis::ConnectionInfo), BackendError> {
        let mut info = url.into_connection_info().map_err(|error| {
            BackendError::new(format!("redis: bad URL {:?}: {error}", redact(url)))
        })?;
        if let Some((username, password)) = &self.credentials {
            let mut settings = info.redis_settings().clone().set_password(password);
            if let Some(username) = username {
                settings = settings.set_username(username);
            }
            info = info.set_redis_settings(settings);
        }
        let tls = matches!(info.addr(), ::redis::ConnectionAddr::TcpTls { .. });
        if tls && rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err: another thread installed one meanwhile; either is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if self.tls.is_some() && !tls {
            return Err(BackendError::new(format!(
                "redis: TLS settings were given but {:?} is not a rediss:// URL",
                redact(url)
            )));
        }
        let client = match self.certificates() {
            Some(certificates) => Client::build_with_tls(info.clone(), certificates),
            None => Client::open(info.clone()),
        };
        Ok((client.map_err(connect_error)?, info))
    }

    /// The TLS certificates given with [`tls`](Self::tls), in redis-rs's terms.
    fn certificates(&self) -> Option<::redis::TlsCertificates> {
        self.tls.as_ref().map(|settings| ::redis::TlsCertificates {
            client_tls: settings
                .client_pem
                .as_ref()
                .map(|(cert, key)| ::redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: settings.ca_pem.clone(),
        })
    }

    /// Connects the command connection and the notice subscription.
    ///
    /// # Errors
    /// Redis unreachable within four command timeouts; a wrong user or
    /// password (the error says `authentication failed`); an untrusted or
    /// mismatched server certificate (`TLS`); a malformed URL.
    pub async fn connect(self) -> Result<RedisBackend, BackendError> {
        if self.url.is_empty() {
            return Err(BackendError::new("redis: no node URL given"));
        }
        let urls: Vec<String> = std::iter::once(self.url.clone())
            .chain(self.seeds.iter().cloned())
            .collect();
        let mut clients = Vec::with_capacity(urls.len());
        let mut infos = Vec::with_capacity(urls.len());
        for url in &urls {
            let (client, info) = self.client(url)?;
            clients.push(client);
            infos.push(info);
        }
        let connect_bound = self.command_timeout * 4;
        let topology = self.cluster.then(|| ClusterTopology {
            seeds: infos,
            credentials: self.credentials.clone(),
            tls: self.certificates(),
            timeout: self.command_timeout,
        });
        let commands = match &topology {
            Some(topology) => Commands::cluster(topology).boxed(),
            None => Commands::single(clients[0].clone(), self.command_timeout).boxed(),
        };
        let conn = match tokio::time::timeout(connect_bound, commands).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => return Err(connect_error(error)),
            Err(_) => return Err(BackendError::timeout(connect_bound)),
        };
        let conn_is_cluster = conn.is_cluster();
        let source = match topology {
            Some(topology) => NoticeSource::Shards(topology),
            None => NoticeSource::Nodes(clients),
        };
        let (subs, doorbell) = Subs::new(self.prefix.clone());
        let hub = Arc::new(Hub::with_subscriber(subs.clone(), self.command_timeout));
        let (subscribed_tx, subscribed_rx) = oneshot::channel();
        let subscriber = tokio::spawn(subscription(
            source,
            subs.clone(),
            hub.clone(),
            SubConfig {
                timeout: self.command_timeout,
                ping_interval: self.ping_interval,
            },
            subscribed_tx,
            doorbell,
        ));
        match tokio::time::timeout(connect_bound * 2, subscribed_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                subscriber.abort();
                return Err(error);
            }
            _ => {
                subscriber.abort();
                return Err(BackendError::timeout(connect_bound * 2));
            }
        }
        Ok(RedisBackend {
            inner: Arc::new(RedisInner {
                prefix: self.prefix,
                timeout: self.command_timeout,
                conn,
                hub,
                writes: Arc::default(),
                held: Arc::default(),
                scripts: Scripts::new(conn_is_cluster),
                breaker: Breaker::new(self.breaker_cooldown),
                subs,
                subscriber,
                commands: AtomicU64::new(0),
                label: std::sync::OnceLock::new(),
            }),
        })
    }
}

/// The longest any duration setting of the builder is taken as: longer ones
/// (`Duration::MAX` included) saturate here, so no bound, timer or backoff
/// derived from them can overflow.
pub const MAX_SETTING: Duration = Duration::from_secs(24 * 60 * 60);

/// `duration`, after checking it is not zero (a builder setting's
/// contract), saturated at [`MAX_SETTING`].
fn positive(what: &str, duration: Duration) -> Duration {
    assert!(
        !duration.is_zero(),
        "stampede-cache: the {what} must be > 0"
    );
    duration.min(MAX_SETTING)
}
