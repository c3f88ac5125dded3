//! Devices whose detached session this node handed to another node lately
//! (acks mode, v2): a message that still arrives here for such a device is
//! forwarded to where the session went, in arrival order, until every
//! sender's cache has followed the presence change.

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
    to: Mutex<MovedTo>,
}

impl Moved {
    /// Notes that `client`'s `device` session went to `node` as `session`.
    pub fn note(&self, client: &ClientId, device: &DeviceId, node: &NodeId, session: Uuid) {
        let mut to = self.to.locked();
        to.retain(|_, (_, _, at)| at.elapsed() < MOVED_FOR);
        to.insert(
            (client.clone(), device.clone()),
            (node.clone(), session, Instant::now()),
        );
    }

    /// Takes back a note: the hand-over did not happen after all.
    pub fn forget(&self, client: &ClientId, device: &DeviceId) {
        self.to.locked().remove(&(client.clone(), device.clone()));
    }

    /// Where `client`'s `device` session went, if this node handed it over
    /// recently.
    pub fn get(&self, client: &ClientId, device: &DeviceId) -> Option<(NodeId, Uuid)> {
        let mut to = self.to.locked();
        let key = (client.clone(), device.clone());
        match to.get(&key) {
            Some((node, session, at)) if at.elapsed() < MOVED_FOR => Some((node.clone(), *session)),
            Some(_) => {
                to.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Whether any session was handed over lately (a draining node then
    /// keeps forwarding a moment longer).
    pub fn any(&self) -> bool {
        !self.to.locked().is_empty()
    }
}
