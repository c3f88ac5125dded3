//! Configuration: command-line flags, each with an environment twin, and
//! their validation into a [`Config`] the rest of the node can trust.
//!
//! Every check here fails with a sentence that says what to change, because
//! the person reading it is an operator looking at a service that did not
//! start.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::protocol::NodeId;

/// Flags of `switchboard serve` (also accepted by a bare `switchboard`).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on for WebSocket and HTTP.
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// This node's id (1-64 of A-Z a-z 0-9 _ -). Default: the host name
    /// plus a short random suffix.
    #[arg(long, env = "SWITCHBOARD_NODE_ID")]
    pub node_id: Option<String>,

    /// Redis URL for the shared presence registry, e.g. redis://127.0.0.1:6379.
    /// Needs --nats-url too; leave both unset to run one node on its own.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,

    /// NATS server URL(s) for node-to-node hops, comma-separated,
    /// e.g. nats://127.0.0.1:4222. Needs --redis-url too.
    #[arg(long, env = "SWITCHBOARD_NATS_URL")]
    pub nats_url: Option<String>,

    /// HS256 secret for client JWTs. Without it, authentication is off and
    /// clients name themselves with ?client_id= (development only).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Bearer key for the HTTP API (/api/v1/...). Without it the API answers 403.
    #[arg(long, env = "SWITCHBOARD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Prefix of every Redis key this node writes.
    #[arg(long, env = "SWITCHBOARD_KEY_PREFIX", default_value = "sb:")]
    pub key_prefix: String,

    /// Prefix of the NATS subjects nodes listen on (<prefix>.node.<node id>).
    #[arg(long, env = "SWITCHBOARD_SUBJECT_PREFIX", default_value = "sb")]
    pub subject_prefix: String,

    /// Largest client frame accepted, in bytes. Larger frames get a
    /// too_large error; frames over four times this close the session (1009).
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,

    /// Frames that may wait for one session's socket. A session whose queue
    /// fills up is closed with 4008 (slow consumer).
    #[arg(long, env = "SWITCHBOARD_SESSION_QUEUE", default_value_t = 1024)]
    pub session_queue: usize,

    /// Longest a write to one client socket may take, in milliseconds,
    /// before the session is closed with 4008 (slow consumer).
    #[arg(long, env = "SWITCHBOARD_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,

    /// How long a node's heartbeat lasts, in milliseconds. A node that
    /// stops heartbeating (crashed, or cut off from presence) is believed
    /// dead after at most this plus a third of it: its presence records are
    /// no longer believed and its in-flight messages are answered offline.
    #[arg(long, env = "SWITCHBOARD_NODE_TTL_MS", default_value_t = 3000)]
    pub node_ttl_ms: u64,

    /// Longest a cross-node message waits for its outcome from the
    /// recipient's node before its sender is told offline, in milliseconds.
    /// A last resort: lost nodes and bounced messages are answered sooner.
    #[arg(long, env = "SWITCHBOARD_HOP_TIMEOUT_MS", default_value_t = 20_000)]
    pub hop_timeout_ms: u64,

    /// Remote routes this node remembers (client -> node), sparing a
    /// presence lookup per message. 0 turns the route cache off.
    #[arg(long, env = "SWITCHBOARD_ROUTE_CACHE", default_value_t = 100_000)]
    pub route_cache: usize,

    /// Sends per second one session may make on average; excess sends get
    /// a rate_limited error. 0 turns the limit off.
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,

    /// Sends one session may make in a burst above the rate.
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", default_value_t = 200)]
    pub rate_burst: u32,

    /// Allow authentication off on a non-loopback address. Anyone who can
    /// reach the port can then speak as any client.
    #[arg(long, env = "SWITCHBOARD_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Log filter, e.g. info or switchboard=debug.
    #[arg(long, env = "SWITCHBOARD_LOG", default_value = "info")]
    pub log: String,
}

/// Which presence store and bus the node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backends {
    /// One node on its own: in-memory presence, in-process routing.
    Embedded,
    /// A cluster member: Redis presence, NATS hops.
    Clustered {
        redis_url: String,
        nats_urls: Vec<String>,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub node_id: NodeId,
    pub backends: Backends,
    pub jwt_secret: Option<String>,
    pub api_key: Option<String>,
    pub key_prefix: String,
    pub subject_prefix: String,
    pub max_frame_bytes: usize,
    pub session_queue: usize,
    pub write_timeout: Duration,
    pub rate_limit: u32,
    pub rate_burst: u32,
    pub node_ttl: Duration,
    pub hop_timeout: Duration,
    pub route_cache: usize,
}

/// A configuration that cannot work, with the reason and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Empty environment variables (`SWITCHBOARD_REDIS_URL=`) mean "unset": that
/// is how compose files and shell scripts switch an option off.
fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    // Leave room for "-" and the suffix within the 64-byte limit.
    format!("{}-{suffix}", NodeId::sanitize(&host, 57))
}

fn check_subject_prefix(prefix: &str) -> Result<(), ConfigError> {
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if prefix.len() > 64 || !prefix.split('.').all(token_ok) {
        return Err(ConfigError(format!(
            "--subject-prefix {prefix:?} is not a NATS subject prefix: use up to 64 bytes of \
             dot-separated tokens of A-Z a-z 0-9 _ - (e.g. \"sb\" or \"chat.prod\")"
        )));
    }
    Ok(())
}

fn check_key_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError(format!(
            "--key-prefix {prefix:?} must be at most 64 printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

impl TryFrom<ServeArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        let node_id = match non_empty(args.node_id) {
            Some(id) => NodeId::parse(&id)
                .map_err(|e| ConfigError(format!("--node-id {id:?} is not usable: {e}")))?,
            None => NodeId::parse(&default_node_id())
                .map_err(|e| ConfigError(format!("cannot derive a node id: {e}; set --node-id")))?,
        };

        let backends = match (non_empty(args.redis_url), non_empty(args.nats_url)) {
            (None, None) => Backends::Embedded,
            (Some(redis_url), Some(nats)) => Backends::Clustered {
                redis_url,
                nats_urls: nats
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect(),
            },
            (Some(_), None) => {
                return Err(ConfigError(
                    "--redis-url is set but --nats-url is not: a clustered node needs both \
                     (set SWITCHBOARD_NATS_URL), or neither for a single embedded node"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError(
                    "--nats-url is set but --redis-url is not: a clustered node needs both \
                     (set SWITCHBOARD_REDIS_URL), or neither for a single embedded node"
                        .into(),
                ));
            }
        };

        let jwt_secret = non_empty(args.jwt_secret);
        if jwt_secret.is_none() && !args.listen.ip().is_loopback() && !args.insecure_no_auth {
            return Err(ConfigError(format!(
                "refusing to listen on {} with authentication off: anyone reaching it could \
                 speak as any client. Set --jwt-secret, listen on a loopback address, or pass \
                 --insecure-no-auth if you really mean it",
                args.listen
            )));
        }

        check_key_prefix(&args.key_prefix)?;
        check_subject_prefix(&args.subject_prefix)?;

        if !(256..=16 * 1024 * 1024).contains(&args.max_frame_bytes) {
            return Err(ConfigError(format!(
                "--max-frame-bytes {} is out of range: use 256 to 16777216",
                args.max_frame_bytes
            )));
        }
        if !(1..=1_000_000).contains(&args.session_queue) {
            return Err(ConfigError(format!(
                "--session-queue {} is out of range: use 1 to 1000000",
                args.session_queue
            )));
        }
        if !(300..=600_000).contains(&args.node_ttl_ms) {
            return Err(ConfigError(format!(
                "--node-ttl-ms {} is out of range: use 300 to 600000",
                args.node_ttl_ms
            )));
        }
        if args.hop_timeout_ms <= args.write_timeout_ms {
            return Err(ConfigError(format!(
                "--hop-timeout-ms {} must exceed --write-timeout-ms {}: a message may wait \
                 that long for a slow recipient's socket before its outcome is known",
                args.hop_timeout_ms, args.write_timeout_ms
            )));
        }
        if args.rate_limit > 0 && args.rate_burst == 0 {
            return Err(ConfigError(
                "--rate-burst 0 would refuse every send: use at least 1".into(),
            ));
        }
        if !(100..=600_000).contains(&args.write_timeout_ms) {
            return Err(ConfigError(format!(
                "--write-timeout-ms {} is out of range: use 100 to 600000",
                args.write_timeout_ms
            )));
        }

        Ok(Config {
            listen: args.listen,
            node_id,
            backends,
            jwt_secret,
            api_key: non_empty(args.api_key),
            key_prefix: args.key_prefix,
            subject_prefix: args.subject_prefix,
            max_frame_bytes: args.max_frame_bytes,
            session_queue: args.session_queue,
            write_timeout: Duration::from_millis(args.write_timeout_ms),
            rate_limit: args.rate_limit,
            rate_burst: args.rate_burst,
            node_ttl: Duration::from_millis(args.node_ttl_ms),
            hop_timeout: Duration::from_millis(args.hop_timeout_ms),
            route_cache: args.route_cache,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn config(flags: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["switchboard"];
        argv.extend_from_slice(flags);
        Config::try_from(Wrapper::try_parse_from(argv).unwrap().args)
    }

    #[test]
    fn defaults_give_an_embedded_loopback_node() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.backends, Backends::Embedded);
        assert_eq!(
            (c.key_prefix.as_str(), c.subject_prefix.as_str()),
            ("sb:", "sb")
        );
        assert_eq!(c.max_frame_bytes, 65_536);
        assert!(NodeId::parse(c.node_id.as_str()).is_ok());
    }

    #[test]
    fn half_a_cluster_is_refused_with_the_missing_half_named() {
        let e = config(&["--redis-url", "redis://x"]).unwrap_err();
        assert!(e.0.contains("--nats-url"), "{e}");
        let e = config(&["--nats-url", "nats://x"]).unwrap_err();
        assert!(e.0.contains("--redis-url"), "{e}");
        let c = config(&[
            "--redis-url",
            "redis://x",
            "--nats-url",
            "nats://a, nats://b",
        ])
        .unwrap();
        assert_eq!(
            c.backends,
            Backends::Clustered {
                redis_url: "redis://x".into(),
                nats_urls: vec!["nats://a".into(), "nats://b".into()]
            }
        );
    }

    #[test]
    fn no_auth_on_a_public_address_needs_an_explicit_yes() {
        let e = config(&["--listen", "0.0.0.0:8080"]).unwrap_err();
        assert!(e.0.contains("--insecure-no-auth"), "{e}");
        assert!(config(&["--listen", "0.0.0.0:8080", "--insecure-no-auth"]).is_ok());
        assert!(config(&["--listen", "0.0.0.0:8080", "--jwt-secret", "s"]).is_ok());
        assert!(config(&["--listen", "[::1]:8080"]).is_ok());
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        assert!(
            config(&["--node-id", "a.b"])
                .unwrap_err()
                .0
                .contains("--node-id")
        );
        assert!(
            config(&["--subject-prefix", "a..b"])
                .unwrap_err()
                .0
                .contains("--subject-prefix")
        );
        assert!(config(&["--subject-prefix", "a.*"]).is_err());
        assert!(config(&["--subject-prefix", "chat.prod"]).is_ok());
        assert!(config(&["--key-prefix", "a b"]).is_err());
        assert!(config(&["--max-frame-bytes", "10"]).is_err());
        assert!(config(&["--session-queue", "0"]).is_err());
        assert!(config(&["--node-ttl-ms", "10"]).is_err());
        let e = config(&["--hop-timeout-ms", "5000"]).unwrap_err();
        assert!(e.0.contains("--write-timeout-ms"), "{e}");
    }

    #[test]
    fn empty_values_mean_unset() {
        let c = config(&["--redis-url", "", "--nats-url", " ", "--node-id", ""]).unwrap();
        assert_eq!(c.backends, Backends::Embedded);
    }
}
