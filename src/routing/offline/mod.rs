//! The offline branch, explained and (when asked) kept (v2): the
//! [`Offline`] service.
//!
//! The branch itself is unchanged: a send to a client with no session goes
//! no further than the sender's node, and the ack says `offline`. Around
//! it:
//!
//! - **why** ([`last_seen`]): the ack carries a `reason` and, when the
//!   client was seen before, `last_seen`. Both come from the client's
//!   last-seen record, written when its last device's session ends (never
//!   on the path of a message) and read only on the offline branch; a
//!   record that named a dead node says `node_dead`.
//! - **the inbox** ([`stored`]): a send with `"store": true` is also
//!   appended to the recipient's inbox ([`crate::inbox`]); its next
//!   session claims the inbox and gets the stored messages first. Each
//!   leaves the inbox once delivered (in acks mode: confirmed); one that is
//!   not stays.
//! - **events** ([`announce`]): sessions opening and ending, and messages
//!   ending offline, go to the application's backend ([`crate::events`]).

pub mod announce;
pub mod last_seen;
pub mod stored;

use std::sync::Arc;

use self::announce::Announcer;
use self::last_seen::{LastSeenPorts, LastSeenWriter};
use self::stored::Delivered;
use super::Message;
use super::background::Background;
use crate::hub::SessionHandle;
use crate::inbox::InboxStore;
use crate::metrics::Metrics;
use crate::protocol::{ClientId, GroupId, OfflineReason, SessionEnd};

pub use self::stored::{INBOX_LEASE, Stored};

/// Why a send found nobody: for the ack, and for events.
#[derive(Debug, Clone, Default)]
pub struct Why {
    pub reason: Option<OfflineReason>,
    pub last_seen: Option<u64>,
    /// Group sends, with events on: the members with no session.
    pub members: Vec<ClientId>,
}

/// The offline branch's service: last-seen, the inbox, events. Its state
/// is the last-seen writer's queue and the batch of delivered inbox
/// entries to delete.
pub struct Offline {
    last_seen: LastSeenPorts,
    writer: LastSeenWriter,
    inbox: Option<Arc<dyn InboxStore>>,
    delivered: Arc<Delivered>,
    announce: Announcer,
    metrics: Arc<Metrics>,
    background: Background,
}

impl Offline {
    /// The service, with its last-seen writer running on `background`.
    pub fn new(
        last_seen: LastSeenPorts,
        inbox: Option<Arc<dyn InboxStore>>,
        announce: Announcer,
        metrics: Arc<Metrics>,
        background: Background,
    ) -> Self {
        let (writer, task) = LastSeenWriter::new(last_seen.clone());
        background.spawn(task);
        Self {
            last_seen,
            writer,
            inbox,
            delivered: Arc::default(),
            announce,
            metrics,
            background,
        }
    }

    /// What the backend hears.
    pub fn announce(&self) -> &Announcer {
        &self.announce
    }

    /// A session opened here.
    pub fn session_opened(&self, handle: &SessionHandle) {
        self.announce.online(handle);
    }

    /// A session here ended for `end`; `field_deleted` when its presence
    /// field went with it, `last_here` when its client has no other session
    /// on this node. When the client has no device left anywhere, its
    /// last-seen record is written. Answers whether a write was queued
    /// (the hook set by [`when_last_seen_settled`](Self::when_last_seen_settled)
    /// hears of the client once it is done).
    pub fn session_ended(
        &self,
        handle: &SessionHandle,
        end: SessionEnd,
        field_deleted: bool,
        last_here: bool,
    ) -> bool {
        self.announce.ended(handle, end);
        self.release_inbox(handle);
        let write = field_deleted && last_here;
        if write {
            self.write_last_seen(handle.client.clone(), end);
        }
        write
    }

    /// The events of a group send's members with no session: their
    /// reasons read in one round trip, in the background.
    pub(crate) fn group_offline_events(
        &self,
        msg: &Message,
        group: &GroupId,
        members: Vec<ClientId>,
    ) {
        if members.is_empty() || !self.announce.is_on() {
            return;
        }
        let (store, announce) = (self.last_seen.last_seen.clone(), self.announce.clone());
        let (msg_id, from, group) = (msg.msg_id, msg.from.clone(), group.clone());
        // Past the bound, the events are dropped: they explain, they are
        // not owed to anyone.
        let _ = self.background.try_spawn(async move {
            let seen = store
                .last_seen_many(&members)
                .await
                .unwrap_or_else(|_| vec![None; members.len()]);
            for (to, seen) in members.into_iter().zip(seen) {
                let reason = seen.map_or(OfflineReason::NeverSeen, |s| s.reason.offline_reason());
                announce.offline(msg_id, &from, &to, Some(&group), false, reason);
            }
        });
    }
}
