//! The backends behind the ports (presence's four, the bus, the inbox,
//! event sinks): what a node runs on. Each lives in a module of its own
//! and depends on the port it serves, never the other way round; the rest
//! of the node meets them only here, when it connects.
//!
//! | port | embedded (one process) | clustered |
//! | --- | --- | --- |
//! | presence (records, heartbeats, groups, last-seen) | [`MemoryPresence`] | [`RedisPresence`] (one server or a cluster), [`MemcachedPresence`] |
//! | bus | [`MemoryHub`] | [`NatsBus`] |
//! | inbox (v2, opt-in) | [`MemoryInbox`] | [`RedisInbox`] (Redis Streams) |
//! | history (v3, opt-in) | [`MemoryHistory`] | [`RedisHistory`] (one server or a cluster) |
//! | events (v2) | (the webhook only) | [`NatsBus`] subjects, and [`Webhook`] |
//! | hooks (v3, opt-in) | [`HttpHooks`] | [`HttpHooks`] |

mod hook_http;
mod memcached;
mod memory_bus;
mod memory_clock;
mod memory_history;
mod memory_inbox;
mod memory_presence;
mod nats;
mod redis;
pub mod webhook;

use std::sync::Arc;

use crate::bus::Bus;
use crate::config::{
    Backends, HistoryConfig, HistoryTarget, InboxConfig, InboxTarget, PresenceTarget,
};
use crate::history::{HistoryLimits, HistoryStore};
use crate::inbox::{InboxLimits, InboxStore};
use crate::presence::{PresenceError, PresenceStore};
use crate::protocol::NodeId;

pub use self::hook_http::HttpHooks;
pub use self::memcached::MemcachedPresence;
pub use self::memory_bus::{MemoryBus, MemoryHub};
pub use self::memory_history::MemoryHistory;
pub use self::memory_inbox::MemoryInbox;
pub use self::memory_presence::MemoryPresence;
pub use self::nats::NatsBus;
pub use self::redis::{RedisHistory, RedisInbox, RedisPresence};
pub use self::webhook::Webhook;

/// Why a backend could not be connected: which, and the flag to check.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect the presence store (check {flag})")]
    Presence {
        flag: &'static str,
        #[source]
        source: PresenceError,
    },
    #[error("cannot connect to NATS (check --nats-url)")]
    Bus(#[source] crate::bus::BusError),
    #[error("cannot connect the inbox (check --inbox)")]
    Inbox(#[source] crate::inbox::InboxError),
    #[error("cannot connect the history store (check --history or --history-cluster)")]
    History(#[source] crate::history::HistoryError),
}

/// Connects the shared presence store `target` names, with every key
/// under `key_prefix`.
pub async fn connect_presence(
    target: &PresenceTarget,
    key_prefix: &str,
) -> Result<Arc<dyn PresenceStore>, ConnectError> {
    let failed = |source| ConnectError::Presence {
        flag: target.flag(),
        source,
    };
    Ok(match target {
        PresenceTarget::Redis(redis) => Arc::new(
            RedisPresence::connect(redis, key_prefix)
                .await
                .map_err(failed)?,
        ),
        PresenceTarget::Memcached(memcached) => Arc::new(
            MemcachedPresence::connect(memcached, key_prefix)
                .await
                .map_err(failed)?,
        ),
    })
}

/// The presence store and bus `backends` name: in-process ones for a node
/// on its own, or the shared ones of a cluster.
pub async fn connect(
    backends: &Backends,
    key_prefix: &str,
    subject_prefix: &str,
    node: &NodeId,
) -> Result<(Arc<dyn PresenceStore>, Arc<dyn Bus>), ConnectError> {
    Ok(match backends {
        Backends::Embedded => (
            Arc::new(MemoryPresence::new()),
            Arc::new(MemoryHub::new().bus()),
        ),
        Backends::Clustered { presence, nats } => {
            let presence = connect_presence(presence, key_prefix).await?;
            let bus = NatsBus::connect(nats, subject_prefix, node.as_str())
                .await
                .map_err(ConnectError::Bus)?;
            (presence, Arc::new(bus))
        }
    })
}

/// Connects the inbox `config` names, with every key under `key_prefix`.
pub async fn connect_inbox(
    config: &InboxConfig,
    key_prefix: &str,
) -> Result<Arc<dyn InboxStore>, ConnectError> {
    let limits = InboxLimits {
        max_messages: config.max_messages,
        ttl: config.ttl,
    };
    Ok(match &config.target {
        InboxTarget::Memory => Arc::new(MemoryInbox::new(limits)),
        InboxTarget::Redis(target) => Arc::new(
            RedisInbox::connect(target, key_prefix, limits)
                .await
                .map_err(ConnectError::Inbox)?,
        ),
    })
}

/// Connects the history store `config` names, with every key under
/// `key_prefix`.
pub async fn connect_history(
    config: &HistoryConfig,
    key_prefix: &str,
) -> Result<Arc<dyn HistoryStore>, ConnectError> {
    let limits = HistoryLimits {
        ttl: config.ttl,
        max_messages: config.max_messages,
    };
    Ok(match &config.target {
        HistoryTarget::Memory => Arc::new(MemoryHistory::new(limits)),
        HistoryTarget::Redis(target) => Arc::new(
            RedisHistory::connect(target, key_prefix, limits)
                .await
                .map_err(ConnectError::History)?,
        ),
    })
}

/// Events on the bus (`<subject prefix>.events.<kind>` on NATS): one
/// bounded publish each, no retry (a disconnected bus refuses at once; the
/// event is dropped and counted).
pub struct BusEvents(pub Arc<dyn Bus>);

#[async_trait::async_trait]
impl crate::events::EventSink for BusEvents {
    async fn deliver(
        &self,
        kind: &'static str,
        event: bytes::Bytes,
        _stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), crate::events::SinkError> {
        self.0
            .publish_event(kind, event)
            .await
            .map_err(|e| crate::events::SinkError::Refused(e.into()))
    }

    fn name(&self) -> &'static str {
        "nats"
    }
}
