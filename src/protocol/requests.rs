//! What one node asks another over the bus's request/reply
//! (`<prefix>.req.<node id>` on NATS), and the answers: a detached
//! session's hand-over (acks mode's resume on another node), its pass-on
//! by a draining node, a node's status, and a ping. JSON, like the
//! envelope:
//!
//! ```text
//! request: {"ask":"take_over","v":2,"client":"bob","device":"phone","session":"6f1c…","node":"node-b"}
//! answer:  {"v":2,"found":true,"next_seq":42,"kept":[
//!            {"seq":40,"msg_id":"…","from":"alice","to":"bob","reply":{"node":"node-a","session":"…"},"frame":"{\"type\":\"message\",…}"},
//!            {"msg_id":"…","from":"carol","group":"team","frame":"…"}]}
//! ```
//!
//! A draining node whose detached sessions were not resumed in time passes
//! each to another node instead (`{"ask":"adopt",…}` with the same `kept`),
//! so that a client coming back later, to any node, still finds it.
//!
//! `kept` is every message the old node kept for the session, in order:
//! those written and not confirmed (with their `seq`), then those never
//! written (no `seq` yet). `msg_id`, `from`, `to`/`group` and `reply` are
//! absent for carbons (nobody waits for their outcome).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::envelope::ReplyTo;
use switchboard_protocol::{ClientId, DeviceId, GroupId, NodeId};

pub const VERSION: u8 = 2;

/// What one node asks another on its request subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum Request {
    /// "Hand me this detached session" (answered with [`Handed`]).
    TakeOver(TakeOver),
    /// "Keep this detached session for me": a draining node passing on a
    /// session nobody resumed in time (answered with [`Handed`], `found`
    /// meaning adopted, nothing kept).
    Adopt(Adopt),
    /// "How are you?", from `switchboard status` and the admin page
    /// (answered with [`NodeStatus`](super::status::NodeStatus)).
    Status,
    /// "Are you there?", answered at once with nothing: a take-over that
    /// waits on its holder checks that the holder still listens (see
    /// `routing::resumption::takeover`). A node of an older version
    /// answers it `found: false`, which is an answer all the same.
    Ping,
}

/// A detached session and everything kept for it, passed on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Adopt {
    pub v: u8,
    pub client: ClientId,
    pub device: DeviceId,
    pub session: Uuid,
    /// When the session opened (its presence field's `since`).
    pub since: u64,
    /// What is left of its resume window, in milliseconds.
    pub window_ms: u64,
    pub next_seq: u64,
    pub kept: Vec<KeptMessage>,
    /// v3: the clients the session watches (its watches move with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watching: Vec<ClientId>,
    /// v3: receipt frames owed to the client as a sender, not yet written
    /// (they move with the session, as its kept messages do).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed: Vec<String>,
}

/// "Hand me this detached session": from the node the client resumed on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TakeOver {
    pub v: u8,
    pub client: ClientId,
    pub device: DeviceId,
    pub session: Uuid,
    /// The node taking it.
    pub node: NodeId,
}

/// What the old node kept for the session, if it still had it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Handed {
    pub v: u8,
    pub found: bool,
    #[serde(default)]
    pub next_seq: u64,
    #[serde(default)]
    pub kept: Vec<KeptMessage>,
    /// v3: the clients the session watches (its watches move with it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watching: Vec<ClientId>,
    /// v3: receipt frames owed to the client as a sender, not yet written
    /// (they move with the session, as its kept messages do).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed: Vec<String>,
    /// v3: not here, but handed on to this node lately (a draining node
    /// passed it on): ask there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<NodeId>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ClientId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ClientId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyTo>,
    /// A message from the client's inbox: its entry there, deleted once
    /// the message is delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
    /// The message frame as the session writes it (with its `seq`, when
    /// it has one).
    pub frame: String,
}
