//! Devices whose detached session this node handed to another node lately
//! (acks mode, v2): a message that still arrives here for such a device is
//! forwarded to where the session went, in arrival order, until every
//! sender's cache has followed the presence change; and an outcome of a
//! message the session sent from here, which comes back here, is told to
//! it there (v3: [`Outcomes`](super::Outcomes)).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::lock::Locked;
use crate::protocol::{ClientId, DeviceId, NodeId};

/// How long this node forwards what arrives for a session it handed over.
const MOVED_FOR: Duration = Duration::from_secs(30);

/// A device whose session this node handed over: where, which session,
/// since when.
type MovedTo = HashMap<(ClientId, DeviceId), (NodeId, Uuid, Instant)>;

/// The notes of recent hand-overs. Bounded by time: notes older than their
/// use are dropped whenever one is added, so the map holds at most the
/// hand-overs of the last [`MOVED_FOR`].
#[derive(Default)]
pub struct Moved {
    to: Mutex<Notes>,
}

#[derive(Default)]
struct Notes {
    by_device: MovedTo,
    /// The same notes by session id (receipts name the sender's session).
    by_session: HashMap<Uuid, (NodeId, Instant)>,
}

impl Notes {
    /// Drops the notes older than their use.
    fn prune(&mut self) {
        let sessions = &mut self.by_session;
        self.by_device.retain(|_, (_, session, at)| {
            let keep = at.elapsed() < MOVED_FOR;
            if !keep {
                sessions.remove(session);
            }
            keep
        });
    }
}

impl Moved {
    /// Notes that `client`'s `device` session went to `node` as `session`.
    pub fn note(&self, client: &ClientId, device: &DeviceId, node: &NodeId, session: Uuid) {
        let mut notes = self.to.locked();
        notes.prune();
        notes
            .by_session
            .insert(session, (node.clone(), Instant::now()));
        let older = notes.by_device.insert(
            (client.clone(), device.clone()),
            (node.clone(), session, Instant::now()),
        );
        if let Some((_, older, _)) = older.filter(|(_, older, _)| *older != session) {
            notes.by_session.remove(&older);
        }
    }

    /// Takes back a note: the hand-over did not happen after all.
    pub fn forget(&self, client: &ClientId, device: &DeviceId) {
        let mut notes = self.to.locked();
        if let Some((_, session, _)) = notes.by_device.remove(&(client.clone(), device.clone())) {
            notes.by_session.remove(&session);
        }
    }

    /// Where `client`'s `device` session went, if this node handed it over
    /// recently.
    pub fn get(&self, client: &ClientId, device: &DeviceId) -> Option<(NodeId, Uuid)> {
        let mut notes = self.to.locked();
        let key = (client.clone(), device.clone());
        match notes.by_device.get(&key) {
            Some((node, session, at)) if at.elapsed() < MOVED_FOR => Some((node.clone(), *session)),
            Some(_) => {
                notes.prune();
                None
            }
            None => None,
        }
    }

    /// Where session `session` went, if this node handed it over recently.
    pub fn node_of(&self, session: Uuid) -> Option<NodeId> {
        match self.to.locked().by_session.get(&session) {
            Some((node, at)) if at.elapsed() < MOVED_FOR => Some(node.clone()),
            _ => None,
        }
    }

    /// Whether any session was handed over lately (a draining node then
    /// keeps forwarding a moment longer).
    pub fn any(&self) -> bool {
        !self.to.locked().by_device.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    #[test]
    fn a_session_is_found_by_its_id_until_its_device_moves_again() {
        let moved = Moved::default();
        let (alice, phone) = (id("alice"), DeviceId::parse("phone").unwrap());
        let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
        let (b, c) = (NodeId::parse("b").unwrap(), NodeId::parse("c").unwrap());
        moved.note(&alice, &phone, &b, first);
        assert_eq!(moved.node_of(first), Some(b.clone()));
        assert_eq!(moved.get(&alice, &phone), Some((b, first)));
        // A newer session of the same device replaces the note.
        moved.note(&alice, &phone, &c, second);
        assert_eq!(moved.node_of(first), None);
        assert_eq!(moved.node_of(second), Some(c));
        moved.forget(&alice, &phone);
        assert_eq!(moved.node_of(second), None);
        assert!(!moved.any());
    }
}
