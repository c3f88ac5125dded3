//! Messages this node published to another node whose outcome has not come
//! back yet.
//!
//! Every cross-node message with a sender session is tracked here from
//! publish until its recipient's node reports the outcome (a receipt hop).
//! An entry that cannot get an outcome any more is answered `offline` to
//! its sender: when the bus bounces the hop (nobody listening), when the
//! liveness view sees the recipient node die or restart, or, as a last
//! resort, when the entry is older than the hop timeout. This is what turns
//! "published into a subject nobody reads" and "recipient node died with
//! the message" into `offline` receipts instead of silence.
//!
//! Entries live for about one round trip in steady state, so the map stays
//! small; it is bounded all the same, and a full map refuses new sends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::hub::ReceiptTo;
use crate::protocol::{ClientId, NodeId};

struct Entry {
    to: ReceiptTo,
    /// Who the message is for: when its outcome says the recipient was not
    /// where the route cache thought, the cache entry goes.
    recipient: ClientId,
    node: NodeId,
    epoch: u64,
    /// Order of insertion: the bus bounces batches as ranges of these.
    seq: u64,
    deadline: Instant,
}

pub struct InFlight {
    entries: Mutex<HashMap<Uuid, Entry>>,
    next_seq: AtomicU64,
    capacity: usize,
    timeout: Duration,
}

/// The in-flight map is at capacity.
#[derive(Debug)]
pub struct Full;

impl InFlight {
    pub fn new(capacity: usize, timeout: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            next_seq: AtomicU64::new(1),
            capacity,
            timeout,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts tracking a message for `recipient` published to `node` in
    /// liveness `epoch`. Returns its sequence number.
    pub fn insert(
        &self,
        to: ReceiptTo,
        recipient: ClientId,
        node: NodeId,
        epoch: u64,
    ) -> Result<u64, Full> {
        let mut entries = self.entries();
        if entries.len() >= self.capacity {
            return Err(Full);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + self.timeout;
        entries.insert(
            to.msg_id,
            Entry {
                to,
                recipient,
                node,
                epoch,
                seq,
                deadline,
            },
        );
        Ok(seq)
    }

    /// The outcome arrived (or the hop bounced): stop tracking. Returns
    /// the sender to tell and the recipient.
    pub fn complete(&self, msg_id: Uuid) -> Option<(ReceiptTo, ClientId)> {
        self.entries().remove(&msg_id).map(|e| (e.to, e.recipient))
    }

    /// The message was forwarded to `node`: its outcome now depends on
    /// that node. Returns the recipient, who has moved.
    pub fn moved(&self, msg_id: Uuid, node: NodeId, epoch: u64) -> Option<ClientId> {
        let mut entries = self.entries();
        let entry = entries.get_mut(&msg_id)?;
        entry.node = node;
        entry.epoch = epoch;
        Some(entry.recipient.clone())
    }

    /// Removes and returns the messages sent to `node` before
    /// `before_epoch`: their outcome will never come.
    pub fn lost(&self, node: &NodeId, before_epoch: u64) -> Vec<ReceiptTo> {
        self.take_where(|e| e.node == *node && e.epoch < before_epoch)
    }

    /// Removes and returns the messages of a batch sent to `node` that
    /// reached nobody: sequence numbers `first..=last` (others in that
    /// range went to other nodes, or moved, and stay).
    pub fn lost_batch(&self, node: &NodeId, first: u64, last: u64) -> Vec<(ReceiptTo, ClientId)> {
        let mut entries = self.entries();
        let ids: Vec<Uuid> = entries
            .iter()
            .filter(|(_, e)| e.node == *node && (first..=last).contains(&e.seq))
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .filter_map(|id| entries.remove(id))
            .map(|e| (e.to, e.recipient))
            .collect()
    }

    /// Removes and returns the messages whose outcome is overdue.
    pub fn expired(&self, now: Instant) -> Vec<ReceiptTo> {
        self.take_where(|e| e.deadline <= now)
    }

    fn take_where(&self, lost: impl Fn(&Entry) -> bool) -> Vec<ReceiptTo> {
        let mut entries = self.entries();
        let ids: Vec<Uuid> = entries
            .iter()
            .filter(|(_, e)| lost(e))
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .filter_map(|id| entries.remove(id))
            .map(|e| e.to)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> ReceiptTo {
        ReceiptTo {
            node: NodeId::parse("a").unwrap(),
            client: ClientId::parse("alice").unwrap(),
            session: Uuid::new_v4(),
            msg_id: Uuid::now_v7(),
            id: None,
            receipt: false,
            tracked: false,
        }
    }

    #[test]
    fn entries_leave_by_outcome_loss_or_timeout() {
        let b = NodeId::parse("b").unwrap();
        let c = NodeId::parse("c").unwrap();
        let flight = InFlight::new(10, Duration::from_secs(60));
        let (o1, o2, o3) = (origin(), origin(), origin());
        let bob = ClientId::parse("bob").unwrap();
        flight
            .insert(o1.clone(), bob.clone(), b.clone(), 0)
            .unwrap();
        flight
            .insert(o2.clone(), bob.clone(), b.clone(), 1)
            .unwrap();
        flight
            .insert(o3.clone(), bob.clone(), c.clone(), 0)
            .unwrap();

        let (origin, recipient) = flight.complete(o1.msg_id).unwrap();
        assert_eq!((origin.msg_id, recipient), (o1.msg_id, bob.clone()));
        assert!(flight.complete(o1.msg_id).is_none(), "only once");

        // b restarted into epoch 1: what was sent in epoch 0 is lost.
        assert!(flight.lost(&b, 1).is_empty());
        assert_eq!(flight.moved(o3.msg_id, b.clone(), 0), Some(bob));
        let lost: Vec<_> = flight.lost(&b, 1).into_iter().map(|o| o.msg_id).collect();
        assert_eq!(lost, vec![o3.msg_id]);

        let later = Instant::now() + Duration::from_secs(61);
        let expired: Vec<_> = flight
            .expired(later)
            .into_iter()
            .map(|o| o.msg_id)
            .collect();
        assert_eq!(expired, vec![o2.msg_id]);
        assert!(flight.is_empty());
    }

    #[test]
    fn a_bounced_batch_takes_only_its_node_and_range() {
        let flight = InFlight::new(10, Duration::from_secs(60));
        let (b, c) = (NodeId::parse("b").unwrap(), NodeId::parse("c").unwrap());
        let bob = ClientId::parse("bob").unwrap();
        let s1 = flight.insert(origin(), bob.clone(), b.clone(), 0).unwrap();
        let s2 = flight.insert(origin(), bob.clone(), c.clone(), 0).unwrap();
        let s3 = flight.insert(origin(), bob.clone(), b.clone(), 0).unwrap();
        let _s4 = flight.insert(origin(), bob.clone(), b.clone(), 0).unwrap();
        assert!(s1 < s2 && s2 < s3);
        assert_eq!(flight.lost_batch(&b, s1, s3).len(), 2);
        assert_eq!(flight.len(), 2, "c's and the one after the range stay");
    }

    #[test]
    fn a_full_map_refuses() {
        let flight = InFlight::new(1, Duration::from_secs(1));
        let b = NodeId::parse("b").unwrap();
        let bob = ClientId::parse("bob").unwrap();
        flight.insert(origin(), bob.clone(), b.clone(), 0).unwrap();
        assert!(flight.insert(origin(), bob, b, 0).is_err());
    }
}
