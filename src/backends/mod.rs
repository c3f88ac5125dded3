//! The backends behind the two ports, [`PresenceStore`] and [`Bus`]: what
//! a node runs on. Each lives in a module of its own and depends on the
//! port it serves, never the other way round; the rest of the node meets
//! them only here, when it connects.
//!
//! | port | embedded (one process) | clustered |
//! | --- | --- | --- |
//! | presence | [`MemoryPresence`] | [`RedisPresence`] (one server or a cluster), [`MemcachedPresence`] |
//! | bus | [`MemoryHub`] | [`NatsBus`] |

mod memcached;
mod memory_bus;
mod memory_presence;
mod nats;
mod redis;

use std::sync::Arc;

use crate::bus::Bus;
use crate::config::{Backends, PresenceTarget};
use crate::presence::{PresenceError, PresenceStore};
use crate::protocol::NodeId;

pub use self::memcached::MemcachedPresence;
pub use self::memory_bus::{MemoryBus, MemoryHub};
pub use self::memory_presence::MemoryPresence;
pub use self::nats::NatsBus;
pub use self::redis::RedisPresence;

/// Connects the shared presence store `target` names, with every key
/// under `key_prefix`. Errors say which flag to check.
pub async fn connect_presence(
    target: &PresenceTarget,
    key_prefix: &str,
) -> Result<Arc<dyn PresenceStore>, PresenceError> {
    let hint = format!("check {}", target.flag());
    Ok(match target {
        PresenceTarget::Redis(redis) => Arc::new(
            RedisPresence::connect(redis, key_prefix)
                .await
                .map_err(|e| e.hint(&hint))?,
        ),
        PresenceTarget::Memcached(memcached) => Arc::new(
            MemcachedPresence::connect(memcached, key_prefix)
                .await
                .map_err(|e| e.hint(&hint))?,
        ),
    })
}

/// The presence store and bus `backends` name: in-process ones for a node
/// on its own, or the shared ones of a cluster. Errors say what to check.
pub async fn connect(
    backends: &Backends,
    key_prefix: &str,
    subject_prefix: &str,
    node: &NodeId,
) -> Result<(Arc<dyn PresenceStore>, Arc<dyn Bus>), String> {
    Ok(match backends {
        Backends::Embedded => (
            Arc::new(MemoryPresence::new()),
            Arc::new(MemoryHub::new().bus()),
        ),
        Backends::Clustered { presence, nats } => {
            let presence = connect_presence(presence, key_prefix)
                .await
                .map_err(|e| crate::cause::chain(&e))?;
            let bus = NatsBus::connect(nats, subject_prefix, node.as_str())
                .await
                .map_err(|e| format!("{} (check --nats-url)", crate::cause::chain(&e)))?;
            (presence, Arc::new(bus))
        }
    })
}
