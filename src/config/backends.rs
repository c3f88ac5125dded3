//! Which presence store and bus the node uses, and the credentials it
//! presents to them.

use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::{ConfigError, PresenceArgs, ServeArgs, in_range, non_empty};
use crate::redact::{self, Secret};

/// Which presence store and bus the node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backends {
    /// One node on its own: in-memory presence, in-process routing.
    Embedded,
    /// A cluster member: shared presence, NATS hops.
    Clustered {
        presence: PresenceTarget,
        nats: NatsTarget,
    },
}

/// The shared presence store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceTarget {
    /// `--redis-url` (one server) or `--redis-cluster` (seeds).
    Redis(RedisTarget),
    /// `--memcached-url`: one or several servers.
    Memcached(MemcachedTarget),
}

impl PresenceTarget {
    /// The flag that chose this store, for error messages.
    pub fn flag(&self) -> &'static str {
        match self {
            Self::Redis(RedisTarget { cluster: false, .. }) => "--redis-url",
            Self::Redis(RedisTarget { cluster: true, .. }) => "--redis-cluster",
            Self::Memcached(_) => "--memcached-url",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// The URLs as given, passwords included: the redis crate reads AUTH
    /// credentials (`redis://user:password@host`) and TLS (`rediss://`)
    /// from them. One for a single server; a cluster's seeds otherwise.
    /// Show them only through [`RedisTarget::shown`].
    pub urls: Vec<Secret>,
    /// A Redis Cluster (`--redis-cluster`), not a single server.
    pub cluster: bool,
    /// Trust anchor for a `rediss://` server with a private CA.
    pub ca_file: Option<PathBuf>,
}

impl RedisTarget {
    /// The URLs fit for logs and error messages.
    pub fn shown(&self) -> String {
        let urls: Vec<String> = self.urls.iter().map(|u| redact::url(u.expose())).collect();
        urls.join(",")
    }
}

/// memcached servers, as `host:port`, and how long records live there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemcachedTarget {
    pub servers: Vec<String>,
    pub record_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsTarget {
    /// Server URLs without credentials: async-nats ignores user info in
    /// URLs, so it is taken out here and passed as [`NatsAuth`].
    pub urls: Vec<String>,
    pub auth: NatsAuth,
}

/// How the node proves itself to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    /// From `nats://user:password@host`.
    UserPassword {
        user: String,
        password: Secret,
    },
    /// From `nats://token@host`.
    Token(Secret),
    /// `--nats-creds`: a user JWT and its nkey seed.
    CredsFile(PathBuf),
    /// `--nats-nkey`: a file holding an nkey seed.
    NkeyFile(PathBuf),
}

impl Backends {
    pub(super) fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let presence = args.presence.target()?;
        let nats = non_empty(args.nats_url.clone());
        match (presence, nats) {
            (None, None) => {
                if args.nats_creds.is_some()
                    || args.nats_nkey.is_some()
                    || args.presence.redis_ca.is_some()
                {
                    return Err(ConfigError(
                        "--nats-creds, --nats-nkey and --redis-ca only apply to a clustered node: \
                         set a presence store (--redis-url, --redis-cluster or --memcached-url) \
                         and --nats-url too"
                            .into(),
                    ));
                }
                Ok(Self::Embedded)
            }
            (Some(presence), Some(nats_urls)) => Ok(Self::Clustered {
                presence,
                nats: nats_target(&nats_urls, args)?,
            }),
            (Some(presence), None) => Err(ConfigError(format!(
                "{} is set but --nats-url is not: a clustered node needs both \
                 (set SWITCHBOARD_NATS_URL), or neither for a single embedded node",
                presence.flag()
            ))),
            (None, Some(_)) => Err(ConfigError(
                "--nats-url is set but no presence store is: a clustered node needs \
                 --redis-url, --redis-cluster or --memcached-url too (or SWITCHBOARD_REDIS_URL), \
                 or neither for a single embedded node"
                    .into(),
            )),
        }
    }
}

impl PresenceArgs {
    /// The one presence store named by `--redis-url`, `--redis-cluster` or
    /// `--memcached-url`, if any.
    pub fn target(&self) -> Result<Option<PresenceTarget>, ConfigError> {
        let args = self;
        let list = |value: &Option<String>| -> Vec<String> {
            non_empty(value.clone())
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let redis = list(&args.redis_url);
        let cluster = list(&args.redis_cluster);
        let memcached = list(&args.memcached_url);
        let given = [
            !redis.is_empty(),
            !cluster.is_empty(),
            !memcached.is_empty(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ConfigError(
                "more than one presence store is set: use one of --redis-url, --redis-cluster \
             and --memcached-url"
                    .into(),
            ));
        }
        if args.redis_ca.is_some() && !memcached.is_empty() {
            return Err(ConfigError(
                "--redis-ca applies to Redis, not to --memcached-url".into(),
            ));
        }
        let redis_target = |urls: Vec<String>, cluster: bool| {
            PresenceTarget::Redis(RedisTarget {
                urls: urls.into_iter().map(Secret::new).collect(),
                cluster,
                ca_file: args.redis_ca.clone(),
            })
        };
        if redis.len() > 1 {
            return Err(ConfigError(
                "--redis-url takes one server; for a Redis Cluster, give its nodes to \
             --redis-cluster instead"
                    .into(),
            ));
        }
        if !redis.is_empty() {
            return Ok(Some(redis_target(redis, false)));
        }
        if !cluster.is_empty() {
            return Ok(Some(redis_target(cluster, true)));
        }
        if memcached.is_empty() {
            return Ok(None);
        }
        let servers = memcached
            .iter()
            .map(|url| memcached_server(url))
            .collect::<Result<Vec<_>, _>>()?;
        // memcached reads TTLs over 30 days as absolute times.
        let ttl = in_range(
            "--memcached-ttl-secs",
            args.memcached_ttl_secs,
            3..=30 * 24 * 3600,
        )?;
        Ok(Some(PresenceTarget::Memcached(MemcachedTarget {
            servers,
            record_ttl: Duration::from_secs(ttl.into()),
        })))
    }
}

/// `memcache://host:port`, `memcached://host:port` or `host:port` (port
/// 11211 when left out) into `host:port`.
fn memcached_server(url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("memcache://")
        .or_else(|| url.strip_prefix("memcached://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    let bad = || {
        ConfigError(format!(
            "--memcached-url {url:?} is not a memcached server: give host:port \
             (or memcache://host:port), several comma-separated"
        ))
    };
    if rest.is_empty() || rest.contains(['/', '@', '?', ' ']) || rest.contains("://") {
        return Err(bad());
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(rest.to_owned())
        }
        Some(_) => Err(bad()),
        None => Ok(format!("{rest}:11211")),
    }
}

/// Splits the URL list and lifts credentials out of the URLs. All URLs
/// must carry the same credentials (the client presents one identity to
/// whichever server it reaches), and at most one way of authenticating may
/// be given.
fn nats_target(list: &str, args: &ServeArgs) -> Result<NatsTarget, ConfigError> {
    let mut urls = Vec::new();
    let mut from_urls: Option<NatsAuth> = None;
    for raw in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (url, auth) = split_credentials(raw);
        if let Some(seen) = &from_urls
            && *seen != auth
        {
            return Err(ConfigError(
                "--nats-url: the URLs carry different credentials; a node presents one identity \
                 to every server, so give them all the same user and password (or none)"
                    .into(),
            ));
        }
        from_urls = Some(auth);
        urls.push(url);
    }
    let from_urls = from_urls.unwrap_or(NatsAuth::None);
    let from_files = match (&args.nats_creds, &args.nats_nkey) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "--nats-creds and --nats-nkey are both set: use the one your NATS server expects"
                    .into(),
            ));
        }
        (Some(creds), None) => NatsAuth::CredsFile(creds.clone()),
        (None, Some(nkey)) => NatsAuth::NkeyFile(nkey.clone()),
        (None, None) => NatsAuth::None,
    };
    let auth = match (from_urls, from_files) {
        (NatsAuth::None, auth) | (auth, NatsAuth::None) => auth,
        _ => {
            return Err(ConfigError(
                "--nats-url carries a user and password and --nats-creds/--nats-nkey is set \
                 too: use one way of authenticating to NATS"
                    .into(),
            ));
        }
    };
    Ok(NatsTarget { urls, auth })
}

/// `nats://user:pass@host:4222` into `nats://host:4222` and the credentials.
fn split_credentials(url: &str) -> (String, NatsAuth) {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return (url.to_owned(), NatsAuth::None);
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), NatsAuth::None);
    };
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let auth = match rest[..at].split_once(':') {
        Some((user, password)) => NatsAuth::UserPassword {
            user: decode(user),
            password: Secret::new(decode(password)),
        },
        None => NatsAuth::Token(Secret::new(decode(&rest[..at]))),
    };
    (format!("{}{}", &url[..scheme_end], &rest[at + 1..]), auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_lifted_out_of_nats_urls() {
        let (url, auth) = split_credentials("nats://node%40a:p%3Ass@127.0.0.1:4222");
        assert_eq!(url, "nats://127.0.0.1:4222");
        assert_eq!(
            auth,
            NatsAuth::UserPassword {
                user: "node@a".into(),
                password: Secret::new("p:ss")
            }
        );
        let (url, auth) = split_credentials("tls://tok@nats:4222");
        assert_eq!(url, "tls://nats:4222");
        assert_eq!(auth, NatsAuth::Token(Secret::new("tok")));
        assert_eq!(
            split_credentials("nats://nats:4222"),
            ("nats://nats:4222".into(), NatsAuth::None)
        );
    }
}
