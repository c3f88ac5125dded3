//! The opt-in features around the offline branch (v2): the inbox
//! (`--inbox …`), last-seen (`--last-seen-ttl`) and events (`--events`,
//! `--webhook-*`); and history (v3, `--history …`). Each is checked here
//! into a form the node can trust.

use std::time::Duration;

use super::{ConfigError, RedisTarget, ServeArgs, in_range, non_empty};
use crate::redact::Secret;

/// Where stored messages wait (`--inbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxTarget {
    /// This process's memory: for a node on its own (lost when it stops).
    Memory,
    /// Redis Streams on one Redis server (which may be the presence one).
    Redis(RedisTarget),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxConfig {
    pub target: InboxTarget,
    /// Most messages one client's inbox holds.
    pub max_messages: usize,
    /// How long a stored message waits before it is dropped.
    pub ttl: Duration,
}

/// The backend hooks (`--hook-*`, v3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    pub url: Secret,
    pub secret: Secret,
    pub connect: bool,
    pub send: bool,
    pub timeout: Duration,
    pub concurrency: usize,
    /// `--hook-failure closed`: a failed call refuses.
    pub closed: bool,
}

/// Where conversations are kept (`--history`, `--history-cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryTarget {
    /// This process's memory: for a node on its own.
    Memory,
    /// Redis: one server or a Cluster (which may be the presence one).
    Redis(RedisTarget),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryConfig {
    pub target: HistoryTarget,
    /// Messages older than this are gone (`--history-ttl`).
    pub ttl: Duration,
    /// Messages kept per conversation (`--history-max`).
    pub max_messages: usize,
}

/// What a node publishes about sessions and offline messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Publish on NATS (`<prefix>.events.*`); only clustered nodes have it.
    pub nats: bool,
    pub webhook: Option<WebhookConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: Secret,
    /// Signs every body (HMAC-SHA256).
    pub secret: Secret,
    /// Events waiting to be POSTed; beyond it they are counted and dropped.
    pub queue: usize,
}

/// A duration as operators write one: `500ms`, `30s`, `15m`, `12h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write e.g. 30s, 12h or 7d"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 30s, 12h or 7d"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: the unit must be ms, s, m, h or d")),
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn duration_flag(
    flag: &str,
    text: &str,
    range: std::ops::RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let d = parse_duration(text).map_err(|e| ConfigError(format!("--{flag}: {e}")))?;
    if !range.contains(&d) {
        return Err(ConfigError(format!(
            "--{flag} {text} is out of range: use {:?} to {:?}",
            range.start(),
            range.end()
        )));
    }
    Ok(d)
}

pub(super) fn inbox(args: &ServeArgs, clustered: bool) -> Result<Option<InboxConfig>, ConfigError> {
    let Some(target) = non_empty(args.inbox.clone()) else {
        return Ok(None);
    };
    let target = match target.trim() {
        "memory" if clustered => {
            return Err(ConfigError(
                "--inbox memory keeps messages in one node's memory, where other nodes of a \
                 cluster cannot read them: give a clustered node a Redis URL (it may be the \
                 presence Redis)"
                    .into(),
            ));
        }
        "memory" => InboxTarget::Memory,
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            InboxTarget::Redis(RedisTarget {
                urls: vec![Secret::new(url)],
                cluster: false,
                ca_file: args.presence.redis_ca.clone(),
            })
        }
        other => {
            return Err(ConfigError(format!(
                "--inbox {:?} is not an inbox: use memory (one node on its own) or a Redis URL \
                 (redis://host:port, rediss:// for TLS; it may be the presence Redis)",
                crate::redact::url(other)
            )));
        }
    };
    Ok(Some(InboxConfig {
        target,
        max_messages: in_range("inbox-max-messages", args.inbox_max_messages, 1..=1_000_000)?,
        ttl: duration_flag(
            "inbox-ttl",
            &args.inbox_ttl,
            Duration::from_secs(1)..=Duration::from_secs(365 * 86_400),
        )?,
    }))
}

pub(super) fn hooks(args: &ServeArgs) -> Result<Option<HookConfig>, ConfigError> {
    let (url, secret) = match (
        non_empty(args.hook_url.clone()),
        non_empty(args.hook_secret.clone()),
    ) {
        (None, None) => return Ok(None),
        (Some(url), Some(secret)) => (url, secret),
        (Some(_), None) => {
            return Err(ConfigError(
                "--hook-url needs --hook-secret: every call is signed with it, so that the \
                 backend can tell the node's calls from anyone else's"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError(
                "--hook-secret without --hook-url: say where the hooks are".into(),
            ));
        }
    };
    let web = url.starts_with("http://") || url.starts_with("https://");
    if !web || reqwest::Url::parse(&url).is_err() {
        return Err(ConfigError(format!(
            "--hook-url {:?} must be an http:// or https:// URL",
            crate::redact::url(&url)
        )));
    }
    let (mut connect, mut send) = (false, false);
    for hook in args
        .hooks
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        match hook {
            "connect" => connect = true,
            "send" => send = true,
            other => {
                return Err(ConfigError(format!(
                    "--hooks: {other:?} is not a hook; use connect, send, or both (connect,send)"
                )));
            }
        }
    }
    if !connect && !send {
        return Err(ConfigError(
            "--hooks names no hook: use connect, send, or both (connect,send)".into(),
        ));
    }
    let closed = match args.hook_failure.trim() {
        "closed" => true,
        "open" => false,
        other => {
            return Err(ConfigError(format!(
                "--hook-failure {other:?}: use closed (refuse when the backend fails) or open (go on)"
            )));
        }
    };
    Ok(Some(HookConfig {
        url: Secret::new(url),
        secret: Secret::new(secret),
        connect,
        send,
        timeout: Duration::from_millis(in_range(
            "hook-timeout-ms",
            args.hook_timeout_ms,
            10..=60_000,
        )?),
        concurrency: in_range("hook-concurrency", args.hook_concurrency, 1..=10_000)?,
        closed,
    }))
}

pub(super) fn history(
    args: &ServeArgs,
    clustered: bool,
) -> Result<Option<HistoryConfig>, ConfigError> {
    let redis = |urls: Vec<&str>, cluster: bool| {
        for url in &urls {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError(format!(
                    "--history{} {:?} is not a Redis URL: use redis://host:port (rediss:// for TLS)",
                    if cluster { "-cluster" } else { "" },
                    crate::redact::url(url)
                )));
            }
        }
        Ok(HistoryTarget::Redis(RedisTarget {
            urls: urls.into_iter().map(Secret::new).collect(),
            cluster,
            ca_file: args.presence.redis_ca.clone(),
        }))
    };
    let target = match (
        non_empty(args.history.clone()),
        non_empty(args.history_cluster.clone()),
    ) {
        (None, None) => return Ok(None),
        (Some(one), None) => match one.trim() {
            "memory" if clustered => {
                return Err(ConfigError(
                    "--history memory keeps conversations in one node's memory, where other \
                     nodes of a cluster cannot read them: give a clustered node a Redis URL (it \
                     may be the presence Redis), or --history-cluster"
                        .into(),
                ));
            }
            "memory" => HistoryTarget::Memory,
            url => redis(vec![url], false)?,
        },
        (None, Some(seeds)) => redis(seeds.split(',').map(str::trim).collect(), true)?,
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "--history and --history-cluster: give one (a server, or a cluster's seeds)".into(),
            ));
        }
    };
    Ok(Some(HistoryConfig {
        target,
        ttl: duration_flag(
            "history-ttl",
            &args.history_ttl,
            Duration::from_secs(1)..=Duration::from_secs(10 * 365 * 86_400),
        )?,
        max_messages: in_range("history-max", args.history_max, 1..=10_000_000)?,
    }))
}

pub(super) fn last_seen_ttl(args: &ServeArgs) -> Result<Duration, ConfigError> {
    duration_flag(
        "last-seen-ttl",
        &args.last_seen_ttl,
        Duration::from_secs(1)..=Duration::from_secs(10 * 365 * 86_400),
    )
}

pub(super) fn events(args: &ServeArgs, clustered: bool) -> Result<EventsConfig, ConfigError> {
    let webhook = match (
        non_empty(args.webhook_url.clone()),
        non_empty(args.webhook_secret.clone()),
    ) {
        (None, None) => None,
        (Some(url), Some(secret)) => {
            let web = url.starts_with("http://") || url.starts_with("https://");
            if !web || reqwest::Url::parse(&url).is_err() {
                return Err(ConfigError(format!(
                    "--webhook-url {:?} must be an http:// or https:// URL",
                    crate::redact::url(&url)
                )));
            }
            Some(WebhookConfig {
                url: Secret::new(url),
                secret: Secret::new(secret),
                queue: in_range("webhook-queue", args.webhook_queue, 1..=10_000_000)?,
            })
        }
        (Some(_), None) => {
            return Err(ConfigError(
                "--webhook-url needs --webhook-secret: every body is signed with it, so that \
                 the receiver can tell the node's events from anyone else's"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError(
                "--webhook-secret is set but --webhook-url is not: say where to POST events".into(),
            ));
        }
    };
    Ok(EventsConfig {
        nats: args.events && clustered,
        webhook,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "7", "d", "7w", "-1s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
