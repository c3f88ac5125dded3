//! An in-process bus: nodes living in one process hand envelopes to each
//! other through bounded channels. It is the embedded default's bus (where
//! it has a single member) and lets several nodes share one process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::bus::{Bounce, Bus, BusError, Delivery, Responder, Subscription};
use crate::lock::Locked;
use crate::protocol::NodeId;

/// How many deliveries may wait in one node's inbox. A full inbox refuses
/// the publish (the sender hears `unavailable`) instead of growing.
pub const INBOX_CAPACITY: usize = 65_536;
/// The largest envelope the hub carries: nats-server's default
/// `max_payload`, so that nodes sharing a process meet the limits of a
/// cluster.
pub const MAX_ENVELOPE: usize = 1 << 20;

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
            .locked()
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
            BusError::unavailable(format!("inbox of node {node} is full"))
        }
        mpsc::error::TrySendError::Closed(_) => {
            BusError::unavailable(format!("node {node} stopped"))
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
        if envelope.len() > MAX_ENVELOPE {
            return Err(BusError::TooLarge {
                size: envelope.len(),
                limit: MAX_ENVELOPE,
            });
        }
        if let Some(inbox) = self.hub.inbox(node) {
            return deliver(&inbox, node, Delivery::Envelope(envelope));
        }
        // Nobody there: bounce like NATS' "no responders" would; without a
        // bounce address it is gone, as on NATS.
        let Some(bounce) = bounce else {
            return Ok(());
        };
        match self.hub.inbox(bounce.node) {
            Some(origin) => deliver(&origin, bounce.node, Delivery::Bounced(bounce.tag)),
            None => Ok(()),
        }
    }

    /// Nobody outside the process listens: the event goes nowhere (a lone
    /// node's events reach the backend through the webhook).
    async fn publish_event(&self, _kind: &str, _event: Bytes) -> Result<(), BusError> {
        Ok(())
    }

    async fn broadcast(&self, envelope: Bytes) -> Result<(), BusError> {
        let inboxes: Vec<_> = self
            .hub
            .inboxes
            .locked()
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(node, tx)| (node.clone(), tx.clone()))
            .collect();
        for (node, inbox) in inboxes {
            // One full inbox must not keep the others from hearing it.
            if let Err(e) = deliver(&inbox, &node, Delivery::Envelope(envelope.clone())) {
                tracing::debug!(%node, error = %e, "broadcast not delivered");
            }
        }
        Ok(())
    }

    async fn request(
        &self,
        node: &NodeId,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, BusError> {
        let inbox = self.hub.inbox(node).ok_or_else(|| BusError::NoListener {
            what: format!("node {node} has no inbox"),
        })?;
        let (tx, rx) = oneshot::channel();
        let responder = Responder::new(move |answer| {
            let _ = tx.send(answer);
            std::future::ready(())
        });
        deliver(&inbox, node, Delivery::Request { payload, responder })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(BusError::unavailable(format!("node {node} did not answer"))),
            Err(_) => Err(BusError::NoAnswer {
                what: format!("node {node} did not answer within {timeout:?}"),
            }),
        }
    }

    async fn subscribe(&self, node: &NodeId) -> Result<Subscription, BusError> {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        self.hub.inboxes.locked().insert(node.clone(), tx);
        Ok(Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|delivery| (delivery, rx))
        })))
    }

    fn connected(&self) -> bool {
        true
    }

    fn max_envelope(&self) -> usize {
        MAX_ENVELOPE
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}
