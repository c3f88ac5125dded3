//! An in-process bus: nodes living in one process hand envelopes to each
//! other through bounded channels. It is the embedded default's bus (where
//! it has a single member) and lets several nodes share one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Bus, BusError, Inbox};
use crate::protocol::NodeId;

/// How many envelopes may wait in one node's inbox. A full inbox refuses
/// the publish (the sender hears `unavailable`) instead of growing.
pub const INBOX_CAPACITY: usize = 65_536;

/// The meeting point of the nodes of one process.
#[derive(Clone, Default)]
pub struct MemoryHub {
    inboxes: Arc<Mutex<HashMap<NodeId, mpsc::Sender<Bytes>>>>,
}

impl MemoryHub {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bus(&self) -> MemoryBus {
        MemoryBus { hub: self.clone() }
    }
}

/// One node's handle on a [`MemoryHub`].
pub struct MemoryBus {
    hub: MemoryHub,
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, node: &NodeId, envelope: Bytes) -> Result<(), BusError> {
        let inbox = self
            .hub
            .inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned();
        // Unlike NATS, the hub knows who listens: publishing to a node that
        // is not there is an error rather than a message into the void.
        let inbox = inbox.ok_or_else(|| BusError::Unavailable(format!("no node {node} here")))?;
        inbox.try_send(envelope).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                BusError::Unavailable(format!("inbox of node {node} is full"))
            }
            mpsc::error::TrySendError::Closed(_) => {
                BusError::Unavailable(format!("node {node} stopped"))
            }
        })
    }

    async fn subscribe(&self, node: &NodeId) -> Result<Inbox, BusError> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        self.hub
            .inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.clone(), tx);
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|envelope| (envelope, rx))
        })))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn envelopes_reach_the_addressed_node_in_order() {
        let hub = MemoryHub::new();
        let (a, b) = (hub.bus(), hub.bus());
        let node_b = NodeId::parse("b").unwrap();
        let mut inbox = b.subscribe(&node_b).await.unwrap();
        for i in 0..10u8 {
            a.publish(&node_b, Bytes::from(vec![i])).await.unwrap();
        }
        for i in 0..10u8 {
            assert_eq!(inbox.next().await.unwrap(), Bytes::from(vec![i]));
        }
        let nobody = NodeId::parse("nobody").unwrap();
        assert!(a.publish(&nobody, Bytes::new()).await.is_err());
    }
}
