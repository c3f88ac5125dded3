//! What travels with a message handed to sessions on this node, so that
//! its outcomes reach its sender.
//!
//! A message is handed to one or more sessions here at once (the devices
//! of its recipient, or the members of a group, that are on this node).
//! They share one [`Handover`]: the message's identity, the sender to
//! tell, and the way outcomes go back ([`Report`]). Each session reports
//! its own target's fate (written to its socket, or not) by itself; the
//! handover counts them, so that the many quiet deliveries of a group
//! message go back to the sender's node as one `done`, not one outcome
//! per member.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use uuid::Uuid;

use crate::protocol::{ClientId, GroupId, NodeId, Recipient, ReplyTo};

/// The session that sent a message, to be told its outcomes.
#[derive(Debug, Clone)]
pub struct Sender {
    pub node: NodeId,
    pub client: ClientId,
    pub session: Uuid,
    /// The `id` of the sender's `send` frame, echoed in the ack and in
    /// receipts. Shared, since both the ack and the in-flight entry keep a
    /// copy.
    pub id: Option<Arc<str>>,
    /// The sender asked for `delivered` receipts.
    pub receipt: bool,
    /// The group the message went to, for a group send (told in
    /// `offline` events).
    pub group: Option<GroupId>,
}

impl Sender {
    /// The sender as a hop names it, for the node a message goes to.
    pub fn reply(&self) -> ReplyTo {
        ReplyTo {
            node: self.node.clone(),
            session: self.session,
            receipt: self.receipt,
        }
    }
}

/// Where the outcomes of a handed-over message go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// The sender's session is on this node and the message never left
    /// it: the sender is told directly.
    Sender,
    /// The sender is on this node, but the message came back over the bus
    /// (forwarded here): its outcomes settle the in-flight entry.
    InFlight,
    /// The sender is on another node: outcomes go back over the bus.
    /// `per_target` (forwarded hops) reports every target on its own;
    /// otherwise only what someone waits for (offline, receipts asked
    /// for) goes on its own, and one `done` covers the rest.
    Node { per_target: bool },
    /// A message from the recipient's inbox (v2): its sender heard
    /// `offline` long ago; once delivered it leaves the inbox, and
    /// otherwise it stays there for the next session.
    Stored,
}

/// A message handed to sessions on this node.
#[derive(Debug)]
pub struct Handover {
    pub msg_id: Uuid,
    pub from: ClientId,
    pub to: Recipient,
    /// `None` for server-side sends (HTTP API): nobody to tell.
    pub sender: Option<Sender>,
    pub report: Report,
    /// Already re-routed once by a node that found its recipient gone; it
    /// is never forwarded again.
    pub forwarded: bool,
    /// The part of a split hop it came in (see `MessageHop::part`), for
    /// its `done`.
    pub part: u32,
    /// [`Report::Stored`]: the inbox entry to delete once delivered.
    pub entry: Option<Box<str>>,
    /// Targets handed over whose fate is not known yet.
    pending: AtomicU32,
    /// Targets settled without an outcome of their own, to be covered by
    /// the `done`.
    quiet: AtomicU32,
    /// Some target's outcome went on its own, urgently: the `done` must
    /// follow it through the same queue.
    spoke: AtomicBool,
}

/// The last target of a handover settled, and some went quietly: the
/// sender's node needs a `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoneNow {
    /// Send it through the urgent queue, behind the outcomes that went on
    /// their own.
    pub urgent: bool,
}

impl Handover {
    /// A handover to `targets` sessions.
    pub fn new(
        msg_id: Uuid,
        from: ClientId,
        to: Recipient,
        sender: Option<Sender>,
        report: Report,
        forwarded: bool,
        targets: u32,
    ) -> Self {
        Self {
            msg_id,
            from,
            to,
            sender,
            report,
            forwarded,
            part: 0,
            entry: None,
            pending: AtomicU32::new(targets),
            quiet: AtomicU32::new(0),
            spoke: AtomicBool::new(false),
        }
    }

    /// A message from `to`'s inbox, stored as `entry`.
    pub fn stored(msg_id: Uuid, from: ClientId, to: ClientId, entry: impl Into<Box<str>>) -> Self {
        let mut handover = Self::new(
            msg_id,
            from,
            Recipient::Client(to),
            None,
            Report::Stored,
            false,
            1,
        );
        handover.entry = Some(entry.into());
        handover
    }

    /// Counts one target as settled, with an outcome of its own sent
    /// (`spoke`) or not. Returns whether a `done` is due now.
    pub fn settle_one(&self, spoke: bool) -> Option<DoneNow> {
        if spoke {
            self.spoke.store(true, Ordering::SeqCst);
        } else {
            self.quiet.fetch_add(1, Ordering::SeqCst);
        }
        let last = self.pending.fetch_sub(1, Ordering::SeqCst) == 1;
        (last && self.quiet.load(Ordering::SeqCst) > 0).then(|| DoneNow {
            urgent: self.spoke.load(Ordering::SeqCst),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handover(targets: u32) -> Handover {
        Handover::new(
            Uuid::now_v7(),
            ClientId::parse("alice").unwrap(),
            Recipient::Client(ClientId::parse("bob").unwrap()),
            None,
            Report::Node { per_target: false },
            false,
            targets,
        )
    }

    #[test]
    fn the_last_quiet_target_brings_the_done() {
        let h = handover(3);
        assert_eq!(h.settle_one(false), None);
        assert_eq!(h.settle_one(false), None);
        assert_eq!(h.settle_one(false), Some(DoneNow { urgent: false }));
    }

    #[test]
    fn a_done_follows_outcomes_sent_on_their_own() {
        let h = handover(2);
        assert_eq!(h.settle_one(true), None);
        assert_eq!(h.settle_one(false), Some(DoneNow { urgent: true }));
        // Every target spoke for itself: nothing left for a done.
        let h = handover(2);
        assert_eq!(h.settle_one(true), None);
        assert_eq!(h.settle_one(true), None);
    }
}
