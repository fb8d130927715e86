//! Where the Redis store's commands go: one server, the primary that a set
//! of sentinels names (followed through failovers), or a Redis Cluster (each
//! room's keys on the shard of their hash tag). The store above sees one
//! connection type either way, and every call stays one script on one node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionInfo, IntoConnectionInfo, RedisError, RedisFuture, TlsCertificates,
    TlsMode, Value,
};

use super::{StoreError, now_millis};
use crate::config::{Deployment, RedisConfig};

/// The least time between two questions to the sentinels.
const RESOLVE_EVERY_MS: u64 = 200;

/// A connection of any deployment: a reconnecting one to a server, or a
/// cluster connection that routes each command to the shard of its keys.
#[derive(Clone)]
pub(super) enum Connection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Server(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Server(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Server(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// The connections to one deployment, made on first use (from inside a
/// Tokio runtime: the clients spawn their reconnection tasks there), so
/// anteroom starts while Redis is down.
pub(super) struct Link {
    kind: Kind,
    pool_size: usize,
    next: AtomicUsize,
    manager_config: ConnectionManagerConfig,
    connect_timeout: Duration,
}

enum Kind {
    Server {
        client: Client,
        pool: tokio::sync::OnceCell<Vec<ConnectionManager>>,
    },
    Sentinel(Sentinel),
    Cluster {
        client: ClusterClient,
        config: ClusterConfig,
        /// One client per seed node, to subscribe to the reservations
        /// (a cluster carries every PUBLISH to every node).
        seeds: Vec<Client>,
        pool: tokio::sync::OnceCell<Vec<ClusterConnection>>,
    },
}

/// The primary the sentinels name, asked again when a call suggests it moved.
struct Sentinel {
    resolver: tokio::sync::Mutex<SentinelClient>,
    primary: ArcSwapOption<Primary>,
    /// A call failed in a way a failover explains: ask the sentinels again.
    stale: AtomicBool,
    asked: AtomicU64,
}

struct Primary {
    address: String,
    client: Client,
    pool: Vec<ConnectionManager>,
}

impl Link {
    /// The clients for `config`'s deployment; nothing is sent yet.
    pub(super) fn new(config: &RedisConfig) -> Result<Link, StoreError> {
        let setup = |e: RedisError| StoreError::Unavailable(format!("store: {e}"));
        let certs = match &config.ca_file {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                StoreError::Unavailable(format!("store.ca_file {}: {e}", path.display()))
            })?),
        };
        let certificates = || TlsCertificates {
            client_tls: None,
            root_cert: certs.clone(),
        };
        let with_credentials = |url: &str| -> Result<ConnectionInfo, StoreError> {
            let info = url.into_connection_info().map_err(setup)?;
            let mut settings = info.redis_settings().clone();
            if let Some(user) = &config.username {
                settings = settings.set_username(user);
            }
            if let Some(password) = &config.password {
                settings = settings.set_password(password.expose());
            }
            Ok(info.set_redis_settings(settings))
        };
        let client = |info: ConnectionInfo| match certs {
            None => Client::open(info),
            Some(_) => Client::build_with_tls(info, certificates()),
        };
        let kind = match &config.deployment {
            Deployment::Server(url) => Kind::Server {
                client: client(with_credentials(url)?).map_err(setup)?,
                pool: tokio::sync::OnceCell::new(),
            },
            Deployment::Cluster(nodes) => {
                let mut builder = ClusterClientBuilder::new(
                    nodes
                        .iter()
                        .map(|n| n.as_str().into_connection_info())
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(setup)?,
                )
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(200);
                if let Some(user) = &config.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &config.password {
                    builder = builder.password(password.expose());
                }
                if certs.is_some() {
                    builder = builder.certs(certificates());
                }
                let seeds = nodes
                    .iter()
                    .map(|n| with_credentials(n).and_then(|i| client(i).map_err(setup)))
                    .collect::<Result<Vec<_>, _>>()?;
                Kind::Cluster {
                    client: builder.build().map_err(setup)?,
                    config: ClusterConfig::new()
                        .set_connection_timeout(config.connect_timeout)
                        .set_response_timeout(config.timeout),
                    seeds,
                    pool: tokio::sync::OnceCell::new(),
                }
            }
            Deployment::Sentinel {
                sentinels,
                master,
                username,
                password,
            } => {
                let addresses = sentinels
                    .iter()
                    .map(|s| s.as_str().into_connection_info().map(|i| i.addr().clone()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(setup)?;
                let mut builder =
                    SentinelClientBuilder::new(addresses, master, SentinelServerType::Master)
                        .map_err(setup)?;
                if config.deployment.tls() {
                    builder = builder
                        .set_client_to_redis_tls_mode(TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(TlsMode::Secure);
                    if certs.is_some() {
                        builder = builder
                            .set_client_to_redis_certificates(certificates())
                            .set_client_to_sentinel_certificates(certificates());
                    }
                }
                if let Some(user) = &config.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(p) = &config.password {
                    builder = builder.set_client_to_redis_password(p.expose());
                }
                if let Some(user) = username {
                    builder = builder.set_client_to_sentinel_username(user);
                }
                if let Some(p) = password {
                    builder = builder.set_client_to_sentinel_password(p.expose());
                }
                Kind::Sentinel(Sentinel {
                    resolver: tokio::sync::Mutex::new(builder.build().map_err(setup)?),
                    primary: ArcSwapOption::empty(),
                    stale: AtomicBool::new(false),
                    asked: AtomicU64::new(0),
                })
            }
        };
        Ok(Link {
            kind,
            pool_size: config.connections.max(1),
            next: AtomicUsize::new(0),
            manager_config: ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1)),
            connect_timeout: config.connect_timeout,
        })
    }

    /// A connection for the next call (connections taken in turn).
    pub(super) async fn connection(&self) -> Result<Connection, StoreError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        match &self.kind {
            Kind::Server { client, pool } => {
                let pool = pool
                    .get_or_try_init(|| async { self.managers(client) })
                    .await?;
                Ok(Connection::Server(pool[n % pool.len()].clone()))
            }
            Kind::Cluster {
                client,
                config,
                pool,
                ..
            } => {
                let pool = pool
                    .get_or_init(|| async {
                        (0..self.pool_size)
                            .map(|_| {
                                client.get_pending_async_connection_with_config(config.clone())
                            })
                            .collect()
                    })
                    .await;
                Ok(Connection::Cluster(pool[n % pool.len()].clone()))
            }
            Kind::Sentinel(sentinel) => {
                let primary = self.primary(sentinel).await?;
                Ok(Connection::Server(
                    primary.pool[n % primary.pool.len()].clone(),
                ))
            }
        }
    }

    /// A subscriber's connection, for the reservations every instance publishes.
    pub(super) async fn pubsub(&self) -> Result<PubSub, StoreError> {
        let clients = match &self.kind {
            Kind::Server { client, .. } => vec![client.clone()],
            Kind::Cluster { seeds, .. } => seeds.clone(),
            Kind::Sentinel(sentinel) => vec![self.primary(sentinel).await?.client.clone()],
        };
        let mut last = StoreError::Unavailable("no node to subscribe on".to_owned());
        for client in clients {
            match tokio::time::timeout(self.connect_timeout, client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last = StoreError::Unavailable(e.to_string()),
                Err(_) => last = StoreError::Unavailable("connecting timed out".to_owned()),
            }
        }
        // A subscription that cannot be made may mean the primary moved.
        self.failed(None);
        Err(last)
    }

    /// A call failed with `error` (None: no answer in time). If a failover
    /// can explain it, the sentinels are asked for the primary again
    /// before the next call.
    pub(super) fn failed(&self, error: Option<&RedisError>) {
        let Kind::Sentinel(sentinel) = &self.kind else {
            return;
        };
        let moved = error.is_none_or(|e| {
            e.is_io_error()
                || e.is_connection_refusal()
                || e.is_connection_dropped()
                || e.is_timeout()
                || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
        });
        if moved {
            sentinel.stale.store(true, Ordering::Relaxed);
        }
    }

    fn managers(&self, client: &Client) -> Result<Vec<ConnectionManager>, StoreError> {
        (0..self.pool_size)
            .map(|_| {
                ConnectionManager::new_lazy_with_config(client.clone(), self.manager_config.clone())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// The primary's connections: the known ones, or those of the primary
    /// the sentinels name now when there are none yet or a call suspected a
    /// failover (one caller asks; the others go on meanwhile).
    async fn primary(&self, sentinel: &Sentinel) -> Result<Arc<Primary>, StoreError> {
        if let Some(primary) = sentinel.primary.load_full() {
            let due = sentinel.stale.load(Ordering::Relaxed)
                && now_millis().saturating_sub(sentinel.asked.load(Ordering::Relaxed))
                    >= RESOLVE_EVERY_MS;
            if !due {
                return Ok(primary);
            }
            let Ok(mut resolver) = sentinel.resolver.try_lock() else {
                return Ok(primary);
            };
            sentinel.stale.store(false, Ordering::Relaxed);
            return Ok(self
                .resolve(sentinel, &mut resolver)
                .await
                .unwrap_or(primary));
        }
        let mut resolver = sentinel.resolver.lock().await;
        if let Some(primary) = sentinel.primary.load_full() {
            return Ok(primary);
        }
        self.resolve(sentinel, &mut resolver).await
    }

    /// Asks the sentinels which node is the primary (verified by asking it)
    /// and moves the connections there if it changed.
    async fn resolve(
        &self,
        sentinel: &Sentinel,
        resolver: &mut SentinelClient,
    ) -> Result<Arc<Primary>, StoreError> {
        sentinel.asked.store(now_millis(), Ordering::Relaxed);
        let client = tokio::time::timeout(self.connect_timeout, resolver.async_get_client())
            .await
            .map_err(|_| StoreError::Unavailable("the sentinels did not answer in time".into()))?
            .map_err(|e| StoreError::Unavailable(format!("sentinels: {e}")))?;
        let address = client.get_connection_info().addr().to_string();
        if let Some(known) = sentinel.primary.load_full()
            && known.address == address
        {
            return Ok(known);
        }
        let primary = Arc::new(Primary {
            address,
            pool: self.managers(&client)?,
            client,
        });
        tracing::info!(
            primary = primary.address,
            "store primary named by the sentinels"
        );
        sentinel.primary.store(Some(primary.clone()));
        Ok(primary)
    }
}
