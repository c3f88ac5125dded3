//! Events (v2): what nodes publish for the application's backend, one
//! JSON object per NATS message on `<prefix>.events.presence` and
//! `<prefix>.events.offline` (and, with a webhook, POSTed as
//! `{"subject":…,"event":…}`). They name clients, devices, sessions and
//! messages, never a token or a resume token: events leave the cluster's
//! trust boundary.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::frames::{Disconnect, OfflineReason};
use crate::ids::{ClientId, DeviceId, GroupId, NodeId};

/// Why a session ended (`reason` of a presence event going `offline`, and
/// what the last-seen record keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEnd {
    /// The client closed, or the connection was lost.
    Closed,
    /// A newer session of the same device took its place (4001).
    Replaced,
    /// It did not keep up (4008).
    SlowConsumer,
    /// Closed for a policy: idle, rate abuse, a frame too large (1008, 1009).
    Policy,
    /// Its node shut down (1001).
    ShuttingDown,
    /// It detached (acks mode) and was not resumed within the window.
    ResumeExpired,
    /// Its node died; another node swept its record.
    NodeDead,
}

impl SessionEnd {
    pub const ALL: [SessionEnd; 7] = [
        SessionEnd::Closed,
        SessionEnd::Replaced,
        SessionEnd::SlowConsumer,
        SessionEnd::Policy,
        SessionEnd::ShuttingDown,
        SessionEnd::ResumeExpired,
        SessionEnd::NodeDead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Closed => "closed",
            SessionEnd::Replaced => "replaced",
            SessionEnd::SlowConsumer => "slow_consumer",
            SessionEnd::Policy => "policy",
            SessionEnd::ShuttingDown => "shutting_down",
            SessionEnd::ResumeExpired => "resume_expired",
            SessionEnd::NodeDead => "node_dead",
        }
    }

    /// Why a message to a client whose last session ended so is offline.
    pub fn offline_reason(self) -> OfflineReason {
        match self {
            SessionEnd::SlowConsumer => OfflineReason::SlowConsumer,
            SessionEnd::ShuttingDown => OfflineReason::ShuttingDown,
            SessionEnd::ResumeExpired => OfflineReason::ResumeExpired,
            SessionEnd::NodeDead => OfflineReason::NodeDead,
            SessionEnd::Closed | SessionEnd::Replaced | SessionEnd::Policy => {
                OfflineReason::Disconnected
            }
        }
    }
}

impl From<Disconnect> for SessionEnd {
    /// Why a session closed with this code ended.
    fn from(why: Disconnect) -> Self {
        match why {
            Disconnect::Normal | Disconnect::Internal => SessionEnd::Closed,
            Disconnect::GoingAway => SessionEnd::ShuttingDown,
            Disconnect::InvalidPayload
            | Disconnect::Idle
            | Disconnect::RateAbuse
            | Disconnect::TooBig => SessionEnd::Policy,
            Disconnect::Replaced => SessionEnd::Replaced,
            Disconnect::SlowConsumer => SessionEnd::SlowConsumer,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Online,
    Offline,
}

/// `<prefix>.events.presence`: a session opened or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub client_id: ClientId,
    pub device: DeviceId,
    pub session: Uuid,
    pub node: NodeId,
    pub state: PresenceState,
    /// Why it ended; absent when `online`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<SessionEnd>,
    pub ts: u64,
}

/// `<prefix>.events.offline`: a send took the offline branch, or a routed
/// message ended `offline` at one of its recipient's sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineEvent {
    pub msg_id: Uuid,
    pub from: ClientId,
    pub to: ClientId,
    /// Present only for group sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// Whether the message was stored in the recipient's inbox.
    pub stored: bool,
    pub reason: OfflineReason,
    pub ts: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_the_protocols() {
        let online = PresenceEvent {
            client_id: ClientId::parse("bob").unwrap(),
            device: DeviceId::parse("phone").unwrap(),
            session: Uuid::nil(),
            node: NodeId::parse("node-a").unwrap(),
            state: PresenceState::Online,
            reason: None,
            ts: 7,
        };
        assert_eq!(
            serde_json::to_string(&online).unwrap(),
            r#"{"client_id":"bob","device":"phone","session":"00000000-0000-0000-0000-000000000000","node":"node-a","state":"online","ts":7}"#
        );
        let offline = OfflineEvent {
            msg_id: Uuid::nil(),
            from: ClientId::parse("alice").unwrap(),
            to: ClientId::parse("bob").unwrap(),
            group: None,
            stored: false,
            reason: OfflineReason::NeverSeen,
            ts: 7,
        };
        assert_eq!(
            serde_json::to_string(&offline).unwrap(),
            r#"{"msg_id":"00000000-0000-0000-0000-000000000000","from":"alice","to":"bob","stored":false,"reason":"never_seen","ts":7}"#
        );
        for end in SessionEnd::ALL {
            let json = serde_json::to_string(&end).unwrap();
            assert_eq!(json, format!("\"{}\"", end.as_str()));
        }
    }
}
