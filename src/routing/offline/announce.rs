//! What the application's backend hears (v2 events): sessions opening and
//! ending, and messages ending offline. Emitting never waits
//! ([`Events::emit`]), and nothing is computed for an event when no sink
//! is configured.

use crate::events::{Event, Events};
use crate::hub::SessionHandle;
use crate::presence::PresenceRecord;
use crate::protocol::{
    ClientId, GroupId, NodeId, OfflineEvent, OfflineReason, PresenceEvent, PresenceState,
    SessionEnd, now_ms,
};

/// This node's voice on the events port.
#[derive(Clone)]
pub struct Announcer {
    node: NodeId,
    events: Events,
}

impl Announcer {
    pub fn new(node: NodeId, events: Events) -> Self {
        Self { node, events }
    }

    pub fn is_on(&self) -> bool {
        self.events.is_on()
    }

    /// A session opened here.
    pub fn online(&self, handle: &SessionHandle) {
        self.session(handle, PresenceState::Online, None);
    }

    /// A session here ended for `end`.
    pub fn ended(&self, handle: &SessionHandle, end: SessionEnd) {
        self.session(handle, PresenceState::Offline, Some(end));
    }

    /// A session on another node ended for `end` (`record` was its
    /// field): a dead node's sessions, found by this node.
    pub fn ended_elsewhere(&self, client: &ClientId, record: &PresenceRecord, end: SessionEnd) {
        if self.events.is_on() {
            self.events.emit(Event::Presence(PresenceEvent {
                client_id: client.clone(),
                device: record.device.clone(),
                session: record.session,
                node: record.node.clone(),
                state: PresenceState::Offline,
                reason: Some(end),
                ts: now_ms(),
            }));
        }
    }

    fn session(&self, handle: &SessionHandle, state: PresenceState, end: Option<SessionEnd>) {
        if self.events.is_on() {
            self.events.emit(Event::Presence(PresenceEvent {
                client_id: handle.client.clone(),
                device: handle.device.clone(),
                session: handle.id,
                node: self.node.clone(),
                state,
                reason: end,
                ts: now_ms(),
            }));
        }
    }

    /// `msg_id` from `from` to `to` (a member of `group`, for a group
    /// send) ended offline.
    pub fn offline(
        &self,
        msg_id: uuid::Uuid,
        from: &ClientId,
        to: &ClientId,
        group: Option<&GroupId>,
        stored: bool,
        reason: OfflineReason,
    ) {
        if self.events.is_on() {
            self.events.emit(Event::Offline(OfflineEvent {
                msg_id,
                from: from.clone(),
                to: to.clone(),
                group: group.cloned(),
                stored,
                reason,
                ts: now_ms(),
            }));
        }
    }
}
