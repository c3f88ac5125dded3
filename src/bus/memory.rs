//! An in-process bus: nodes living in one process hand envelopes to each
//! other through bounded channels. It is the embedded default's bus (where
//! it has a single member) and lets several nodes share one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Bounce, Bus, BusError, Delivery, Inbox};
use crate::protocol::NodeId;

/// How many deliveries may wait in one node's inbox. A full inbox refuses
/// the publish (the sender hears `unavailable`) instead of growing.
pub const INBOX_CAPACITY: usize = 65_536;

/// The meeting point of the nodes of one process.
#[derive(Clone, Default)]
pub struct MemoryHub {
    inboxes: Arc<Mutex<HashMap<NodeId, mpsc::Sender<Delivery>>>>,
}

impl MemoryHub {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bus(&self) -> MemoryBus {
        MemoryBus { hub: self.clone() }
    }

    fn inbox(&self, node: &NodeId) -> Option<mpsc::Sender<Delivery>> {
        self.inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .filter(|tx| !tx.is_closed())
            .cloned()
    }
}

/// One node's handle on a [`MemoryHub`].
pub struct MemoryBus {
    hub: MemoryHub,
}

fn deliver(inbox: &mpsc::Sender<Delivery>, node: &NodeId, item: Delivery) -> Result<(), BusError> {
    inbox.try_send(item).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => {
            BusError::Unavailable(format!("inbox of node {node} is full"))
        }
        mpsc::error::TrySendError::Closed(_) => {
            BusError::Unavailable(format!("node {node} stopped"))
        }
    })
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(
        &self,
        node: &NodeId,
        envelope: Bytes,
        bounce: Option<Bounce<'_>>,
    ) -> Result<(), BusError> {
        if let Some(inbox) = self.hub.inbox(node) {
            return deliver(&inbox, node, Delivery::Envelope(envelope));
        }
        // Nobody there: bounce like NATS' "no responders" would.
        let bounce = bounce.ok_or_else(|| BusError::Unavailable(format!("no node {node} here")))?;
        let origin = self
            .hub
            .inbox(bounce.node)
            .ok_or_else(|| BusError::Unavailable(format!("no node {} here", bounce.node)))?;
        deliver(&origin, bounce.node, Delivery::Bounced(bounce.tag))
    }

    async fn subscribe(&self, node: &NodeId) -> Result<Inbox, BusError> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        self.hub
            .inboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.clone(), tx);
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|delivery| (delivery, rx))
        })))
    }

    fn connected(&self) -> bool {
        true
    }

    fn max_envelope(&self) -> usize {
        usize::MAX
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
            a.publish(&node_b, Bytes::from(vec![i]), None)
                .await
                .unwrap();
        }
        for i in 0..10u8 {
            assert_eq!(
                inbox.next().await.unwrap(),
                Delivery::Envelope(Bytes::from(vec![i]))
            );
        }
    }

    #[tokio::test]
    async fn a_hop_to_nobody_bounces_to_its_origin() {
        let hub = MemoryHub::new();
        let a = hub.bus();
        let node_a = NodeId::parse("a").unwrap();
        let mut inbox = a.subscribe(&node_a).await.unwrap();
        let nobody = NodeId::parse("nobody").unwrap();
        let msg_id = uuid::Uuid::now_v7();
        let tag = super::super::BounceTag::Message(msg_id);
        let bounce = Bounce {
            node: &node_a,
            tag: tag.clone(),
        };
        a.publish(&nobody, Bytes::new(), Some(bounce))
            .await
            .unwrap();
        assert_eq!(inbox.next().await.unwrap(), Delivery::Bounced(tag));
        assert!(a.publish(&nobody, Bytes::new(), None).await.is_err());
    }
}
