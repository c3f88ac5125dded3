//! One connection type for a single Redis server and for a Redis Cluster.
//!
//! The presence code is the same for both: every command and script
//! touches one key, so a cluster connection can route each of them by its
//! key's slot. The one difference is batching. A pipeline to one server
//! can mix any keys; on a cluster a pipeline must stay within one slot,
//! and a batch of clients spreads over all 16,384 of them. So
//! [`Conn::batch`] pipelines on a single server and, on a cluster, sends
//! the commands concurrently: the cluster connection multiplexes them over
//! its one connection per master, which pipelines them on the wire all the
//! same.

use std::time::Duration;

use futures_util::{StreamExt, stream};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

use crate::config::RedisTarget;
use crate::presence::PresenceError;

/// How long one command may take before the caller hears `unavailable`.
/// The redis crate's default is 500 ms; a presence lookup sits on the path
/// of every send, so a slow Redis must surface as an error promptly rather
/// than stall sessions.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long startup waits for Redis before giving up with an error.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands of one batch in flight at once on a cluster.
const CLUSTER_BATCH_CONCURRENCY: usize = 512;

/// A connection that reconnects by itself, to one server or a cluster.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connects to `target`, failing with a message that names the URL
    /// (password redacted) when Redis cannot be reached within
    /// [`STARTUP_TIMEOUT`].
    pub async fn open(target: &RedisTarget) -> Result<Self, PresenceError> {
        crate::tls::install_default_provider();
        let shown = target.shown();
        let opened = tokio::time::timeout(STARTUP_TIMEOUT, async {
            if target.cluster {
                Self::open_cluster(target).await
            } else {
                Self::open_single(target).await
            }
        })
        .await;
        match opened {
            Err(_) => Err(PresenceError::unavailable(format!(
                "no answer from Redis at {shown} within {STARTUP_TIMEOUT:?}"
            ))),
            Ok(Err(e)) => Err(PresenceError::unavailable(format!(
                "cannot connect to Redis at {shown}: {e}"
            ))),
            Ok(Ok(conn)) => Ok(conn),
        }
    }

    async fn open_single(target: &RedisTarget) -> Result<Self, RedisError> {
        let info = connection_info(target.urls[0].expose())?;
        let client = match read_ca(target)? {
            Some(root_cert) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            None => redis::Client::open(info)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        Ok(Self::Single(
            ConnectionManager::new_with_config(client, config).await?,
        ))
    }

    /// Any reachable seed is enough: the client learns the cluster's
    /// layout from it, follows MOVED and ASK redirections, and refreshes
    /// the layout when a master fails over to its replica.
    async fn open_cluster(target: &RedisTarget) -> Result<Self, RedisError> {
        let seeds = target
            .urls
            .iter()
            .map(|url| connection_info(url.expose()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = ClusterClientBuilder::new(seeds)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(3)
            .max_retry_wait(1000)
            .tcp_settings(nodelay());
        if let Some(root_cert) = read_ca(target)? {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            });
        }
        Ok(Self::Cluster(
            builder.build()?.get_async_connection().await?,
        ))
    }

    /// Runs `commands` and returns their replies in order: one pipeline
    /// per [`batch size`](Self::batch) on a single server, concurrent
    /// commands on a cluster (see the module comment).
    /// [`batch`](Self::batch), with each command's own error kept apart
    /// (a key of the wrong type fails its command, not the batch); the
    /// outer error is the connection's.
    pub async fn batch_each(
        &self,
        commands: Vec<Cmd>,
    ) -> Result<Vec<Result<Value, RedisError>>, RedisError> {
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                for cmd in commands {
                    pipe.add_command(cmd);
                }
                pipe.ignore_errors().query_async(&mut conn.clone()).await
            }
            Self::Cluster(conn) => Ok(stream::iter(commands)
                .map(|cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                })
                .buffered(CLUSTER_BATCH_CONCURRENCY)
                .collect::<Vec<_>>()
                .await),
        }
    }

    pub async fn batch(&self, commands: Vec<Cmd>) -> Result<Vec<Value>, RedisError> {
        match self {
            Self::Single(conn) => {
                let mut pipe = redis::pipe();
                for cmd in commands {
                    pipe.add_command(cmd);
                }
                pipe.query_async(&mut conn.clone()).await
            }
            Self::Cluster(conn) => stream::iter(commands)
                .map(|cmd| {
                    let mut conn = conn.clone();
                    async move { cmd.query_async::<Value>(&mut conn).await }
                })
                .buffered(CLUSTER_BATCH_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect(),
        }
    }
}

/// The redis crate leaves Nagle's algorithm on; with several lookups in
/// flight on one multiplexed connection it would hold requests back for
/// the server's delayed ACK (up to 40 ms).
fn nodelay() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

fn connection_info(url: &str) -> Result<ConnectionInfo, RedisError> {
    Ok(url.into_connection_info()?.set_tcp_settings(nodelay()))
}

fn read_ca(target: &RedisTarget) -> Result<Option<Vec<u8>>, RedisError> {
    let Some(ca_file) = &target.ca_file else {
        return Ok(None);
    };
    std::fs::read(ca_file).map(Some).map_err(|e| {
        RedisError::from(std::io::Error::new(
            e.kind(),
            format!("cannot read --redis-ca {}: {e}", ca_file.display()),
        ))
    })
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}
