//! Configuration: command-line flags, each with an environment twin, and
//! their validation into a [`Config`] the rest of the node can trust.
//!
//! Every check here fails with a sentence that says what to change, because
//! the person reading it is an operator looking at a service that did not
//! start.

mod args;
mod backends;
mod features;
mod origins;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::NodeId;
use crate::protocol::frames::max_message_frame;
use crate::redact::Secret;

pub use self::args::{LogFormat, PresenceArgs, ServeArgs};
pub use self::backends::{
    Backends, MemcachedTarget, NatsAuth, NatsTarget, PresenceTarget, RedisTarget,
};
pub use self::features::{
    EventsConfig, HistoryConfig, HistoryTarget, HookConfig, InboxConfig, InboxTarget,
    WebhookConfig, parse_duration,
};
pub use self::origins::AllowedOrigins;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub node_id: NodeId,
    pub backends: Backends,
    /// `None` when authentication is off.
    pub jwt: Option<JwtConfig>,
    pub api_key: Option<Secret>,
    pub allowed_origins: AllowedOrigins,
    /// `None`: plain HTTP and ws://.
    pub tls: Option<TlsFiles>,
    pub key_prefix: String,
    pub subject_prefix: String,
    pub limits: Limits,
    pub node_ttl: Duration,
    pub hop_timeout: Duration,
    /// How long a lone cross-node message waits for company (0: off).
    pub bus_linger: Duration,
    pub route_cache: usize,
    /// How often live sessions' records are written back to the store.
    pub presence_refresh: Duration,
    /// Threads of the node's runtime; `None`: one per CPU.
    pub worker_threads: Option<usize>,
    /// Acks mode's resume; `None` when off (see [`resume`]).
    pub resume: Option<ResumeConfig>,
    /// Store-and-forward (v2); `None` without `--inbox`.
    pub inbox: Option<InboxConfig>,
    /// Conversations kept (v3); `None` without `--history`.
    pub history: Option<HistoryConfig>,
    /// Backend hooks (v3); `None` without `--hook-url`.
    pub hooks: Option<HookConfig>,
    pub last_seen_ttl: Duration,
    pub events: EventsConfig,
    /// Extra CA certificates for requests to the application's backend.
    pub backend_ca_file: Option<PathBuf>,
    /// Presence for clients and signals (v3).
    pub watching: WatchConfig,
}

/// Presence for clients and signals (v3).
#[derive(Debug, Clone, Copy)]
pub struct WatchConfig {
    pub coalesce: Duration,
    pub max_watched: usize,
    pub max_contacts: usize,
    /// Signals per second per session (0: unlimited).
    pub signal_rate: u32,
}

/// How detached sessions are kept and resumed.
#[derive(Debug, Clone)]
pub struct ResumeConfig {
    pub secret: Secret,
    pub window: Duration,
}

/// Resume is on with a window and a secret. A lone node may make its own
/// secret up (no other node needs to check its tokens); a clustered node
/// without `--resume-secret` offers none (its startup log says so).
fn resume(args: &ServeArgs, backends: &Backends) -> Result<Option<ResumeConfig>, ConfigError> {
    if args.resume_window_ms == 0 {
        return Ok(None);
    }
    let window = millis("resume-window-ms", args.resume_window_ms, 100..=3_600_000)?;
    let secret = match (non_empty(args.resume_secret.clone()), backends) {
        (Some(secret), _) => Secret::new(secret),
        (None, Backends::Embedded) => Secret::new(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )),
        (None, Backends::Clustered { .. }) => return Ok(None),
    };
    Ok(Some(ResumeConfig { secret, window }))
}

/// How client tokens are checked.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub key: JwtKey,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

#[derive(Debug, Clone)]
pub enum JwtKey {
    /// HS256 with a shared secret.
    Secret(Secret),
    /// RS256 or EdDSA, by the kind of key in this PEM file.
    PublicKeyFile(PathBuf),
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What one client, one connection or the whole node may take.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame_bytes: usize,
    /// `None`: derived from the file-descriptor limit when the node starts.
    pub max_sessions: Option<usize>,
    /// Devices one client may have online across the cluster.
    pub max_devices: usize,
    /// Members one group may have.
    pub max_group_members: usize,
    pub session_queue: usize,
    pub session_queue_bytes: usize,
    pub write_timeout: Duration,
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub rate_limit: u32,
    pub rate_burst: u32,
    /// `None`: a session over its rate is refused frame by frame, never closed.
    pub rate_abuse: Option<Duration>,
    pub api_rate_limit: u32,
    pub api_rate_burst: u32,
    /// New sessions admitted per second (`--max-connect-rate`); 0: no limit.
    pub max_connect_rate: u32,
    /// A draining node's reconnect hints spread over this (0: none).
    pub drain_spread: Duration,
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

/// `value` must lie in `range`, or the operator is told which flag to fix.
fn in_range<T>(flag: &str, value: T, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError(format!(
            "--{flag} {value} is out of range: use {} to {}",
            range.start(),
            range.end()
        )))
    }
}

fn millis(
    flag: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, ConfigError> {
    in_range(flag, value, range).map(Duration::from_millis)
}

fn limits(args: &ServeArgs) -> Result<Limits, ConfigError> {
    let write_timeout_ms = args.write_timeout_ms;
    if args.hop_timeout_ms <= write_timeout_ms {
        return Err(ConfigError(format!(
            "--hop-timeout-ms {} must exceed --write-timeout-ms {write_timeout_ms}: a message may \
             wait that long for a slow recipient's socket before its outcome is known",
            args.hop_timeout_ms
        )));
    }
    if args.rate_limit > 0 && args.rate_burst == 0 {
        return Err(ConfigError(
            "--rate-burst 0 would refuse every frame: use at least 1".into(),
        ));
    }
    if args.api_rate_limit > 0 && args.api_rate_burst == 0 {
        return Err(ConfigError(
            "--api-rate-burst 0 would refuse every request: use at least 1".into(),
        ));
    }
    if args.idle_timeout_ms <= args.ping_interval_ms {
        return Err(ConfigError(format!(
            "--idle-timeout-ms {} must exceed --ping-interval-ms {}: a session needs at least \
             one ping to answer before it counts as idle",
            args.idle_timeout_ms, args.ping_interval_ms
        )));
    }
    Ok(Limits {
        max_frame_bytes: in_range(
            "max-frame-bytes",
            args.max_frame_bytes,
            256..=16 * 1024 * 1024,
        )?,
        max_sessions: (args.max_sessions > 0).then_some(args.max_sessions),
        max_devices: in_range("max-devices", args.max_devices, 1..=1024)?,
        max_group_members: in_range("max-group-members", args.max_group_members, 1..=1_000_000)?,
        session_queue: in_range("session-queue", args.session_queue, 1..=1_000_000)?,
        session_queue_bytes: in_range(
            "session-queue-bytes",
            args.session_queue_bytes,
            max_message_frame(args.max_frame_bytes)..=1 << 30,
        )
        .map_err(|e| {
            ConfigError(format!(
                "{e} (a session's queue must hold at least one message frame of \
                 --max-frame-bytes {} plus 512)",
                args.max_frame_bytes
            ))
        })?,
        write_timeout: millis("write-timeout-ms", write_timeout_ms, 100..=600_000)?,
        handshake_timeout: millis(
            "handshake-timeout-ms",
            args.handshake_timeout_ms,
            100..=600_000,
        )?,
        ping_interval: millis("ping-interval-ms", args.ping_interval_ms, 50..=3_600_000)?,
        idle_timeout: millis("idle-timeout-ms", args.idle_timeout_ms, 100..=36_000_000)?,
        rate_limit: args.rate_limit,
        rate_burst: args.rate_burst,
        rate_abuse: (args.rate_abuse_ms > 0).then(|| Duration::from_millis(args.rate_abuse_ms)),
        api_rate_limit: args.api_rate_limit,
        api_rate_burst: args.api_rate_burst,
        max_connect_rate: args.max_connect_rate,
        drain_spread: Duration::from_millis(in_range(
            "drain-spread-ms",
            args.drain_spread_ms,
            0..=60_000,
        )?),
    })
}

fn jwt(args: &ServeArgs) -> Result<Option<JwtConfig>, ConfigError> {
    let key = match (
        non_empty(args.jwt_secret.clone()),
        args.jwt_public_key.clone(),
    ) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "--jwt-secret and --jwt-public-key are both set: a node checks tokens one way; \
                 keep the one your token issuer signs with"
                    .into(),
            ));
        }
        (Some(secret), None) => JwtKey::Secret(Secret::new(secret)),
        (None, Some(path)) => JwtKey::PublicKeyFile(path),
        (None, None) => {
            if args.jwt_audience.is_some() || args.jwt_issuer.is_some() {
                return Err(ConfigError(
                    "--jwt-audience / --jwt-issuer need --jwt-secret or --jwt-public-key: \
                     with authentication off there are no tokens to check"
                        .into(),
                ));
            }
            return Ok(None);
        }
    };
    Ok(Some(JwtConfig {
        key,
        audience: non_empty(args.jwt_audience.clone()),
        issuer: non_empty(args.jwt_issuer.clone()),
    }))
}

fn tls(args: &ServeArgs) -> Result<Option<TlsFiles>, ConfigError> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError(
            "--tls-cert is set but --tls-key is not: give the certificate's private key too".into(),
        )),
        (None, Some(_)) => Err(ConfigError(
            "--tls-key is set but --tls-cert is not: give the certificate chain too".into(),
        )),
    }
}

impl TryFrom<ServeArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: ServeArgs) -> Result<Self, ConfigError> {
        let node_id = match non_empty(args.node_id.clone()) {
            Some(id) => NodeId::parse(&id)
                .map_err(|e| ConfigError(format!("--node-id {id:?} is not usable: {e}")))?,
            None => NodeId::parse(&default_node_id())
                .map_err(|e| ConfigError(format!("cannot derive a node id: {e}; set --node-id")))?,
        };
        let backends = Backends::from_args(&args)?;
        let resume = resume(&args, &backends)?;
        let jwt = jwt(&args)?;
        if jwt.is_none() && !args.listen.ip().is_loopback() && !args.insecure_no_auth {
            return Err(ConfigError(format!(
                "refusing to listen on {} with authentication off: anyone reaching it could \
                 speak as any client. Set --jwt-secret or --jwt-public-key, listen on a \
                 loopback address, or pass --insecure-no-auth if you really mean it",
                args.listen
            )));
        }
        check_key_prefix(&args.key_prefix)?;
        check_subject_prefix(&args.subject_prefix)?;
        let allowed_origins = AllowedOrigins::parse(&args.allowed_origins)
            .map_err(|e| ConfigError(format!("--allowed-origins: {e}")))?;

        Ok(Config {
            listen: args.listen,
            node_id,
            jwt,
            api_key: non_empty(args.api_key.clone()).map(Secret::new),
            allowed_origins,
            tls: tls(&args)?,
            limits: limits(&args)?,
            node_ttl: millis("node-ttl-ms", args.node_ttl_ms, 300..=600_000)?,
            hop_timeout: Duration::from_millis(args.hop_timeout_ms),
            bus_linger: Duration::from_millis(in_range(
                "bus-linger-ms",
                args.bus_linger_ms,
                0..=20,
            )?),
            route_cache: args.route_cache,
            worker_threads: match args.worker_threads {
                Some(n) => Some(in_range("worker-threads", n, 1..=1024)?),
                None => None,
            },
            presence_refresh: millis(
                "presence-refresh-ms",
                args.presence_refresh_ms,
                100..=3_600_000,
            )?,
            inbox: features::inbox(&args, matches!(backends, Backends::Clustered { .. }))?,
            history: features::history(&args, matches!(backends, Backends::Clustered { .. }))?,
            hooks: features::hooks(&args)?,
            last_seen_ttl: features::last_seen_ttl(&args)?,
            events: features::events(&args, matches!(backends, Backends::Clustered { .. }))?,
            backend_ca_file: args.backend_ca_file.clone(),
            watching: WatchConfig {
                coalesce: millis(
                    "presence-coalesce-ms",
                    args.presence_coalesce_ms,
                    0..=60_000,
                )?,
                max_watched: in_range("max-watched", args.max_watched, 1..=100_000)?,
                max_contacts: in_range("max-contacts", args.max_contacts, 1..=1_000_000)?,
                signal_rate: in_range("signal-rate", args.signal_rate, 0..=10_000)?,
            },
            key_prefix: args.key_prefix,
            subject_prefix: args.subject_prefix,
            backends,
            resume,
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
        assert_eq!(c.limits.max_frame_bytes, 65_536);
        assert_eq!(c.limits.ping_interval, Duration::from_secs(20));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
        assert!(c.jwt.is_none() && c.tls.is_none());
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
            "redis://:pw@x",
            "--nats-url",
            "nats://a, nats://b",
        ])
        .unwrap();
        let Backends::Clustered {
            presence: PresenceTarget::Redis(redis),
            nats,
        } = c.backends
        else {
            panic!("clustered on Redis expected");
        };
        assert_eq!(redis.urls[0].expose(), "redis://:pw@x");
        assert_eq!(redis.shown(), "redis://:[redacted]@x");
        assert!(!redis.cluster);
        assert_eq!(nats.urls, ["nats://a", "nats://b"]);
        assert_eq!(nats.auth, NatsAuth::None);
        let e = config(&["--memcached-url", "m:11211"]).unwrap_err();
        assert!(e.0.contains("--memcached-url is set but --nats-url"), "{e}");
    }

    #[test]
    fn one_presence_store_of_three() {
        let with = |flags: &[&str]| {
            let mut all = flags.to_vec();
            all.extend_from_slice(&["--nats-url", "nats://n"]);
            config(&all).map(|c| match c.backends {
                Backends::Clustered { presence, .. } => presence,
                Backends::Embedded => panic!("clustered expected"),
            })
        };
        let Ok(PresenceTarget::Redis(cluster)) =
            with(&["--redis-cluster", "redis://a:7000, redis://:pw@b:7001"])
        else {
            panic!("a Redis Cluster")
        };
        assert!(cluster.cluster);
        assert_eq!(cluster.shown(), "redis://a:7000,redis://:[redacted]@b:7001");
        assert_eq!(
            with(&["--memcached-url", "memcache://m1:11311,m2, 10.0.0.3:11211"]).unwrap(),
            PresenceTarget::Memcached(MemcachedTarget {
                servers: vec![
                    "m1:11311".into(),
                    "m2:11211".into(),
                    "10.0.0.3:11211".into()
                ],
                record_ttl: Duration::from_secs(180),
            })
        );
        for (flags, says) in [
            (
                &["--redis-url", "redis://a", "--memcached-url", "m"][..],
                "one of",
            ),
            (
                &["--redis-url", "redis://a", "--redis-cluster", "redis://b"],
                "one of",
            ),
            (&["--redis-url", "redis://a,redis://b"], "--redis-cluster"),
            (
                &["--memcached-url", "redis://m:6379"],
                "not a memcached server",
            ),
            (&["--memcached-url", "m:port"], "not a memcached server"),
            (
                &["--memcached-url", "m", "--redis-ca", "ca.pem"],
                "--redis-ca",
            ),
        ] {
            let e = with(flags).unwrap_err();
            assert!(e.0.contains(says), "{flags:?}: {e}");
        }
    }

    #[test]
    fn nats_credentials_come_one_way_only() {
        let cluster = ["--redis-url", "redis://x", "--nats-url"];
        let with = |extra: &[&str]| {
            let mut flags = cluster.to_vec();
            flags.extend_from_slice(extra);
            config(&flags)
        };
        let c = with(&["nats://u:p@a,nats://u:p@b"]).unwrap();
        let Backends::Clustered { nats, .. } = c.backends else {
            panic!("clustered expected");
        };
        assert_eq!(nats.urls, ["nats://a", "nats://b"]);
        assert!(matches!(nats.auth, NatsAuth::UserPassword { ref user, .. } if user == "u"));
        let e = with(&["nats://u:p@a,nats://b"]).unwrap_err();
        assert!(e.0.contains("same user"), "{e}");
        let e = with(&["nats://u:p@a", "--nats-creds", "x.creds"]).unwrap_err();
        assert!(e.0.contains("one way"), "{e}");
        let e = with(&["nats://a", "--nats-creds", "x", "--nats-nkey", "y"]).unwrap_err();
        assert!(e.0.contains("--nats-nkey"), "{e}");
        assert!(config(&["--nats-creds", "x.creds"]).is_err());
    }

    #[test]
    fn secrets_never_show_in_the_config_debug_output() {
        let c = config(&[
            "--jwt-secret",
            "jwt-hunter2",
            "--api-key",
            "api-hunter2",
            "--redis-url",
            "redis://:redis-hunter2@x",
            "--nats-url",
            "nats://u:nats-hunter2@a",
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn jwt_checks_need_one_key() {
        let e = config(&["--jwt-secret", "s", "--jwt-public-key", "k.pem"]).unwrap_err();
        assert!(e.0.contains("both"), "{e}");
        let e = config(&["--jwt-audience", "chat"]).unwrap_err();
        assert!(e.0.contains("--jwt-secret"), "{e}");
        let c = config(&["--jwt-public-key", "k.pem", "--jwt-issuer", "me"]).unwrap();
        let jwt = c.jwt.unwrap();
        assert!(matches!(jwt.key, JwtKey::PublicKeyFile(_)));
        assert_eq!(jwt.issuer.as_deref(), Some("me"));
        // A public key turns authentication on: a public address is fine.
        assert!(config(&["--listen", "0.0.0.0:1", "--jwt-public-key", "k.pem"]).is_ok());
    }

    #[test]
    fn tls_needs_both_files() {
        assert!(
            config(&["--tls-cert", "c.pem"])
                .unwrap_err()
                .0
                .contains("--tls-key")
        );
        assert!(
            config(&["--tls-key", "k.pem"])
                .unwrap_err()
                .0
                .contains("--tls-cert")
        );
        assert!(
            config(&["--tls-cert", "c.pem", "--tls-key", "k.pem"])
                .unwrap()
                .tls
                .is_some()
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
        let e = config(&["--idle-timeout-ms", "1000", "--ping-interval-ms", "1000"]).unwrap_err();
        assert!(e.0.contains("--ping-interval-ms"), "{e}");
        assert!(config(&["--handshake-timeout-ms", "1"]).is_err());
        assert!(config(&["--api-rate-burst", "0"]).is_err());
        assert!(config(&["--allowed-origins", "ftp://x"]).is_err());
    }

    #[test]
    fn empty_values_mean_unset() {
        let c = config(&["--redis-url", "", "--nats-url", " ", "--node-id", ""]).unwrap();
        assert_eq!(c.backends, Backends::Embedded);
    }
}
