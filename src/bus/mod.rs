//! The bus carries envelopes from node to node. Each node has one inbox,
//! addressed by its node id; a cross-node message is one publish to the
//! recipient node's inbox.
//!
//! The router sees only the [`Bus`] trait. NATS is the clustered backend;
//! the in-process hub serves the embedded default (and several nodes inside
//! one process).

mod memory;
mod nats;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::protocol::NodeId;

pub use self::memory::{MemoryBus, MemoryHub};
pub use self::nats::NatsBus;

/// The envelopes addressed to this node, in the order the bus delivered them.
pub type Inbox = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The envelope did not leave this node; the sender must hear
    /// `unavailable`.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The envelope is larger than the bus accepts.
    #[error("envelope of {size} bytes exceeds the bus limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Hands one envelope to the bus for `node`. Returns once the bus has
    /// taken it, within a bounded time; it does not wait for the far node.
    async fn publish(&self, node: &NodeId, envelope: Bytes) -> Result<(), BusError>;

    /// Starts receiving the envelopes addressed to `node`.
    async fn subscribe(&self, node: &NodeId) -> Result<Inbox, BusError>;

    /// A real round trip to the backend, for `/readyz`.
    async fn ping(&self) -> Result<(), BusError>;

    /// Short name for logs and `/readyz` ("memory", "nats").
    fn backend(&self) -> &'static str;
}
