//! The envelope nodes exchange over the bus: on a node's own subject
//! (`<prefix>.node.<node id>`) and on the subject every node listens to
//! (`<prefix>.nodes`).
//!
//! Wire form, one JSON object per bus message, holding one hop (`hop`) or
//! several (`hops`, in order):
//!
//! ```json
//! {"v":2,"hops":[
//!   {"message":{"msg_id":"…","from":"alice","to":"bob","forwarded":false,
//!     "reply":{"node":"node-a","session":"…","receipt":true},
//!     "targets":[{"to":"bob","device":"phone","session":"…"},{"to":"bob","device":"tab","session":"…"}],
//!     "carbons":[{"device":"laptop","session":"…"}],
//!     "frame":{"type":"message","msg_id":"…","from":"alice","to":"bob","body":{"text":"hi"},"ts":1764220000000}}},
//!   {"outcomes":[
//!     {"msg_id":"…","status":"delivered","to":"bob","device":"phone"},
//!     {"msg_id":"…","status":"offline","to":"bob","device":"tab","reason":"disconnected"},
//!     {"msg_id":"…","status":"forwarded","to":"bob","device":"tab","node":"node-c"},
//!     {"msg_id":"…","status":"done","node":"node-b"}]}]}
//! {"v":2,"hop":{"replaced":{"client":"alice","device":"phone","session":"…"}}}
//! {"v":2,"hop":{"changed":{"node":"node-a","clients":["bob"],"groups":["team"]}}}
//! ```
//!
//! A message hop goes to one node and names every recipient session there
//! (`targets`, one per device of each recipient: a whole group's members
//! on that node share one hop) and the sender's other sessions there that
//! get a carbon copy (`carbons`). It carries the recipients' `message`
//! frame already rendered by the sender's node, as a JSON value: the
//! recipient's node writes those bytes to every target's socket as they
//! are, without parsing the body or rendering the frame again. The hop
//! kind is serde's externally tagged form, which decodes in one pass
//! without buffering, so `frame` stays a borrowed raw value from the bus
//! message to the socket.
//!
//! Outcomes go back to the sender's node: per target, or (`done`) for every
//! target of a hop that was handed over without anything to report (see
//! `routing::delivery`). When the sender's session has moved to another
//! node since (acks mode), the receipt follows it there as an `owed` hop
//! (v3, see `routing::outcomes`).
//!
//! A busy node packs everything it has for one node into one bus message
//! (see `routing::courier`): the bus then carries a few large messages
//! rather than many small ones.

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use smallvec::SmallVec;
use uuid::Uuid;

use switchboard_protocol::frames::check_body_text;
use switchboard_protocol::{Addressee, ClientId, DeviceId, GroupId, NodeId, OfflineReason};

/// The envelope version this node writes and understands. Version 2 (the
/// devices of protocol version 2) names sessions in hops and outcomes;
/// nodes of version 1 and 2 cannot share a cluster.
pub const ENVELOPE_VERSION: u8 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<'a> {
    pub v: u8,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub hop: Option<Hop<'a>>,
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<Hop<'a>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hop<'a> {
    /// A client message for sessions this node is believed to hold.
    Message(#[serde(borrow)] MessageHop<'a>),
    /// Outcomes of messages, for the node that sent them: many per
    /// envelope, so that a busy node sends few of these.
    Outcomes(Vec<Outcome>),
    /// A newer session of `client` on `device` opened elsewhere: close
    /// `session` with 4001.
    Replaced(ReplacedHop),
    /// On the subject every node reads: what a node may have cached about
    /// these clients' presence, or these groups' members, is stale.
    Changed(Changed),
    /// v3: a signal for sessions this node is believed to hold. Never
    /// tracked, answered or forwarded.
    Signal(#[serde(borrow)] SignalHop<'a>),
    /// v3: these clients' presence changed, told to a node that has
    /// sessions watching them (and to no other).
    Watched(WatchedHop),
    /// v3: a read cursor moved: a receipt for sessions this node is
    /// believed to hold. Packed like a signal.
    Read(#[serde(borrow)] ReadHop<'a>),
    /// v3: a receipt for a sender session that this node handed to the
    /// node it goes to (acks mode): the outcome came back to the node the
    /// message was sent from. Packed like a signal.
    Owed(#[serde(borrow)] OwedHop<'a>),
}

/// v3: a signal's way to the recipient sessions on one node. Goes in an
/// envelope of its own, never packed with messages or outcomes, so that a
/// node of version 2 (which cannot read it) drops only the signal.
#[derive(Debug, Serialize, Deserialize)]
pub struct SignalHop<'a> {
    pub from: ClientId,
    /// The sessions to hand it to.
    pub targets: SmallVec<[Target; 1]>,
    /// The `signal` frame, as the sender's node rendered it.
    #[serde(borrow)]
    pub frame: &'a RawValue,
}

impl SignalHop<'_> {
    /// Whether the frame is a `signal` frame from the hop's sender, as the
    /// sending node writes it (a hop claiming another sender is refused).
    pub fn frame_matches(&self) -> bool {
        let head = r#"{"type":"signal","from":""#;
        self.frame
            .get()
            .strip_prefix(head)
            .and_then(|rest| rest.strip_prefix(self.from.as_str()))
            .is_some_and(|rest| rest.starts_with('"'))
    }
}

/// v3: a read receipt's way to the recipient sessions on one node.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadHop<'a> {
    /// Whose cursor moved.
    pub by: ClientId,
    pub targets: SmallVec<[Target; 1]>,
    /// The `read` frame, as the reader's node rendered it.
    #[serde(borrow)]
    pub frame: &'a RawValue,
}

impl ReadHop<'_> {
    /// Whether the frame is a `read` frame about the hop's reader:
    /// `{"type":"read","by":"<by>",…,"upto":<digits>}`.
    pub fn frame_matches(&self) -> bool {
        let head = r#"{"type":"read","by":""#;
        let Some(rest) = self
            .frame
            .get()
            .strip_prefix(head)
            .and_then(|rest| rest.strip_prefix(self.by.as_str()))
            .and_then(|rest| rest.strip_prefix('"'))
        else {
            return false;
        };
        let Some((_, upto)) = rest.rsplit_once(r#","upto":"#) else {
            return false;
        };
        upto.strip_suffix('}')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    }

    /// What a session keeps one of: the frame up to its cursor (the
    /// reader and the conversation).
    pub fn key(frame: &str) -> &str {
        frame
            .rsplit_once(r#","upto":"#)
            .map_or(frame, |(key, _)| key)
    }
}

/// v3: a receipt owed to a sender session that moved to the receiving
/// node (see `routing::outcomes`).
#[derive(Debug, Serialize, Deserialize)]
pub struct OwedHop<'a> {
    pub client: ClientId,
    pub session: Uuid,
    /// How many nodes passed it on already: a session that moved twice
    /// meanwhile is followed, a loop is not.
    #[serde(default)]
    pub hops: u8,
    /// The `receipt` frame, as the sender's old node rendered it.
    #[serde(borrow)]
    pub frame: &'a RawValue,
}

impl OwedHop<'_> {
    /// Whether the frame is a `receipt` frame (a hop claiming to carry a
    /// receipt must not write anything else to a client).
    pub fn frame_matches(&self) -> bool {
        self.frame.get().starts_with(r#"{"type":"receipt","#)
    }
}

/// v3: presence changes for a node that watches these clients. Packed like
/// a signal (an envelope of its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedHop {
    pub clients: Vec<ClientId>,
}

/// One recipient session of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub to: ClientId,
    pub device: DeviceId,
    pub session: Uuid,
}

/// One of the sender's own other sessions, which gets a carbon copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carbon {
    pub device: DeviceId,
    pub session: Uuid,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MessageHop<'a> {
    pub msg_id: Uuid,
    pub from: ClientId,
    /// The recipient of a message to a client...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ClientId>,
    /// ...or the group of a message to a group (exactly one of the two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// Set when a node re-routed the message after finding its recipient
    /// gone; such a message is never forwarded again, so a stale record
    /// cannot bounce it between nodes. Its outcomes are always reported
    /// per target.
    #[serde(default)]
    pub forwarded: bool,
    /// The sending session, whose node awaits the outcome. Absent for
    /// server-side sends (HTTP API), which have no session to tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyTo>,
    /// The recipient sessions on the node this hop goes to.
    #[serde(default)]
    pub targets: SmallVec<[Target; 1]>,
    /// Which part of a split hop this is (1, 2, …): a group's sessions on
    /// one node that would not fit in one bus message go in several hops.
    /// 0 (absent) for a hop that was not split. Echoed in the `done`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: u32,
    /// The sender's other sessions there (messages to a client only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carbons: Vec<Carbon>,
    /// The `message` frame for the recipients, as the sender's node
    /// rendered it.
    #[serde(borrow)]
    pub frame: &'a RawValue,
}

impl MessageHop<'_> {
    /// Whom the frame is addressed to; `None` for a hop that names both a
    /// client and a group, or neither.
    pub fn addressee(&self) -> Option<Addressee<'_>> {
        match (&self.to, &self.group) {
            (Some(to), None) => Some(Addressee::Client(to)),
            (None, Some(group)) => Some(Addressee::Group(group)),
            _ => None,
        }
    }

    /// Whether `frame` really is the message this hop says it carries. A
    /// node writes the frame to the recipients' sockets without
    /// re-encoding it, so without this check a faulty or hostile peer
    /// could hand a client a frame addressed to someone else, one that is
    /// not a message at all, or one whose body the client's parser cannot
    /// read.
    ///
    /// Every node renders the frame in one fixed form
    /// ([`encode_message`](crate::protocol::frames::encode_message)): this
    /// prefix with the hop's `msg_id`, `from` and `to` (or `group`), then
    /// the body, then `,"ts":<digits>}` (v3: `,"ts":<digits>,"cseq":<digits>}`).
    /// The check compares the prefix and
    /// the tail and walks the body between them once, without building it,
    /// under the same rules a sender's body met
    /// ([`check_body`](crate::protocol::frames::check_body)). Being exact
    /// about the form also rules out a repeated `"type"` or `"to"` key
    /// after the body.
    pub fn frame_matches(&self) -> bool {
        let Some(addressee) = self.addressee() else {
            return false;
        };
        let (key, value) = match addressee {
            Addressee::Client(to) => (r#"","to":""#, to.as_str()),
            Addressee::Group(group) => (r#"","group":""#, group.as_str()),
        };
        // Compared piece by piece, so that no copy of the expected start is
        // built for every message received. Ids need no JSON escaping.
        let mut msg_id = Uuid::encode_buffer();
        let msg_id: &str = self.msg_id.hyphenated().encode_lower(&mut msg_id);
        let pieces = [
            r#"{"type":"message","msg_id":""#,
            msg_id,
            r#"","from":""#,
            self.from.as_str(),
            key,
            value,
            r#"","body":"#,
        ];
        let Some(rest) = pieces
            .iter()
            .try_fold(self.frame.get(), |rest, piece| rest.strip_prefix(piece))
        else {
            return false;
        };
        // The last `,"ts":` is the frame's own: anything after the real one
        // would have to be digits and `}`, which no body ends with.
        let Some(ts_at) = rest.rfind(r#","ts":"#) else {
            return false;
        };
        let (body, tail) = rest.split_at(ts_at);
        let Some(tail) = tail[r#","ts":"#.len()..].strip_suffix('}') else {
            return false;
        };
        // v3: `,"cseq":<digits>` may follow the ts.
        let (ts, cseq) = match tail.split_once(r#","cseq":"#) {
            Some((ts, cseq)) => (ts, Some(cseq)),
            None => (tail, None),
        };
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        digits(ts) && cseq.is_none_or(digits) && check_body_text(body).is_ok()
    }
}

/// The sender's session, whose node tracks the message's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplyTo {
    pub node: NodeId,
    pub session: Uuid,
    /// The sender asked for `delivered` receipts: each target's outcome is
    /// reported on its own, at once, rather than with later traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub receipt: bool,
}

/// What became of a message at the node it was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    /// `to`'s `device` session took it.
    Delivered,
    /// `to`'s `device` session could not be reached, for `reason`.
    Offline,
    /// `to`'s `device` had moved: the message was sent on to `node`, whose
    /// outcome for that target now counts.
    Forwarded,
    /// Every target of the hop not reported on its own was delivered, at
    /// the reporting `node`.
    Done,
}

/// The outcome of one message at one node, for the sender's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub msg_id: Uuid,
    pub status: OutcomeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<ClientId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<OfflineReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// For a `done`: the part of a split hop it settles (0: not split).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub part: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An outcome, read: what the sender's node acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled<'a> {
    /// One target's own outcome.
    Target {
        to: &'a ClientId,
        device: &'a DeviceId,
        fate: Fate<'a>,
    },
    /// Every target of the hop (its `part`, when split) sent to `node`
    /// not reported on its own.
    Done { node: &'a NodeId, part: u32 },
}

/// What became of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate<'a> {
    Delivered,
    Offline(OfflineReason),
    Forwarded(&'a NodeId),
}

impl Outcome {
    /// One target's outcome.
    pub fn target(msg_id: Uuid, to: ClientId, device: DeviceId, fate: Fate<'_>) -> Self {
        let (status, reason, node) = match fate {
            Fate::Delivered => (OutcomeStatus::Delivered, None, None),
            Fate::Offline(reason) => (OutcomeStatus::Offline, Some(reason), None),
            Fate::Forwarded(node) => (OutcomeStatus::Forwarded, None, Some(node.clone())),
        };
        Self {
            msg_id,
            status,
            to: Some(to),
            device: Some(device),
            reason,
            node,
            part: 0,
        }
    }

    /// Every other target of the hop (or its `part`) sent to `node` was
    /// delivered.
    pub fn done(msg_id: Uuid, node: NodeId, part: u32) -> Self {
        Self {
            msg_id,
            status: OutcomeStatus::Done,
            to: None,
            device: None,
            reason: None,
            node: Some(node),
            part,
        }
    }

    /// The outcome as the sender's node reads it; `None` when a field its
    /// status needs is missing.
    pub fn settled(&self) -> Option<Settled<'_>> {
        let target = |fate| {
            Some(Settled::Target {
                to: self.to.as_ref()?,
                device: self.device.as_ref()?,
                fate,
            })
        };
        match self.status {
            OutcomeStatus::Delivered => target(Fate::Delivered),
            OutcomeStatus::Offline => target(Fate::Offline(self.reason?)),
            OutcomeStatus::Forwarded => target(Fate::Forwarded(self.node.as_ref()?)),
            OutcomeStatus::Done => Some(Settled::Done {
                node: self.node.as_ref()?,
                part: self.part,
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReplacedHop {
    pub client: ClientId,
    pub device: DeviceId,
    pub session: Uuid,
}

/// Cached views that are stale, told to every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The node whose change it was (it has already forgotten its own).
    pub node: NodeId,
    /// Clients whose presence record changed (a device came or went).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientId>,
    /// Groups whose members changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupId>,
    /// v3: clients whose contacts changed (watches they hold may have
    /// ended).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<ClientId>,
}

/// Why a bus message was not a usable envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Not JSON, or not the shape of any hop.
    Malformed(String),
    /// Well-formed JSON from a node speaking another envelope version.
    UnknownVersion(u64),
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvelopeError::Malformed(why) => write!(f, "malformed envelope: {why}"),
            EnvelopeError::UnknownVersion(v) => {
                write!(
                    f,
                    "envelope version {v}; this node speaks {ENVELOPE_VERSION}"
                )
            }
        }
    }
}

impl<'a> Envelope<'a> {
    pub fn new(hop: Hop<'a>) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            hop: Some(hop),
            hops: Vec::new(),
        }
    }

    /// The hops, in order.
    pub fn into_hops(self) -> impl Iterator<Item = Hop<'a>> {
        self.hop.into_iter().chain(self.hops)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes always serialize")
    }

    /// Decodes a bus message. Never panics, whatever the bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        match serde_json::from_slice::<Envelope<'a>>(bytes) {
            Ok(env) if env.v == ENVELOPE_VERSION && env.hop.is_none() && env.hops.is_empty() => {
                Err(EnvelopeError::Malformed("an envelope without a hop".into()))
            }
            Ok(env) if env.v == ENVELOPE_VERSION => Ok(env),
            Ok(env) => Err(EnvelopeError::UnknownVersion(env.v.into())),
            Err(e) => {
                // A node of another version may use a hop shape we do not
                // know; say so rather than calling its envelope garbage.
                #[derive(Deserialize)]
                struct VersionOnly {
                    v: u64,
                }
                match serde_json::from_slice::<VersionOnly>(bytes) {
                    Ok(VersionOnly { v }) if v != u64::from(ENVELOPE_VERSION) => {
                        Err(EnvelopeError::UnknownVersion(v))
                    }
                    _ => Err(EnvelopeError::Malformed(e.to_string())),
                }
            }
        }
    }
}

/// A message hop to encode: the per-message path, written directly.
pub struct MessageHopOut<'a> {
    pub msg_id: Uuid,
    pub from: &'a ClientId,
    pub to: Addressee<'a>,
    pub forwarded: bool,
    pub reply: Option<&'a ReplyTo>,
    pub targets: &'a [Target],
    pub carbons: &'a [Carbon],
    /// See [`MessageHop::part`].
    pub part: u32,
    /// The rendered `message` frame, spliced in as it is (it is the node's
    /// own output, valid JSON by construction).
    pub frame: &'a str,
}

/// Encodes a message hop (`{"message":{...}}`, to go in an envelope's
/// `hops`). This is the per-message path, so it writes the JSON directly
/// rather than through an intermediate value; ids are validated to a
/// character set that never needs escaping.
pub fn encode_message_hop(hop: &MessageHopOut<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(hop.frame.len() + 160 + 96 * hop.targets.len());
    let (key, value) = match hop.to {
        Addressee::Client(to) => ("to", to.as_str()),
        Addressee::Group(group) => ("group", group.as_str()),
    };
    let _ = write!(
        out,
        r#"{{"message":{{"msg_id":"{}","from":"{}","{key}":"{value}","forwarded":{},"#,
        hop.msg_id, hop.from, hop.forwarded
    );
    if let Some(reply) = hop.reply {
        let receipt = if reply.receipt {
            r#","receipt":true"#
        } else {
            ""
        };
        let _ = write!(
            out,
            r#""reply":{{"node":"{}","session":"{}"{receipt}}},"#,
            reply.node, reply.session
        );
    }
    let mut uuid = Uuid::encode_buffer();
    if hop.part > 0 {
        let _ = write!(out, r#""part":{},"#, hop.part);
    }
    out.push_str(r#""targets":["#);
    for (i, t) in hop.targets.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"to":""#);
        out.push_str(t.to.as_str());
        out.push_str(r#"","device":""#);
        out.push_str(t.device.as_str());
        out.push_str(r#"","session":""#);
        out.push_str(t.session.hyphenated().encode_lower(&mut uuid));
        out.push_str(r#""}"#);
    }
    out.push_str("],");
    if !hop.carbons.is_empty() {
        out.push_str(r#""carbons":["#);
        for (i, c) in hop.carbons.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(r#"{"device":""#);
            out.push_str(c.device.as_str());
            out.push_str(r#"","session":""#);
            out.push_str(c.session.hyphenated().encode_lower(&mut uuid));
            out.push_str(r#""}"#);
        }
        out.push_str("],");
    }
    out.push_str(r#""frame":"#);
    out.push_str(hop.frame);
    out.push_str("}}");
    out.into_bytes()
}

/// A frame this node rendered, as the raw JSON value a hop carries.
pub fn raw_frame(frame: &str) -> &RawValue {
    serde_json::from_str(frame).expect("frames this node renders are JSON")
}

/// Encodes a hop value (as [`encode_message_hop`] does for messages).
pub fn encode_hop(hop: &Hop<'_>) -> Vec<u8> {
    serde_json::to_vec(hop).expect("hops always serialize")
}

/// Bytes an envelope adds around its hops.
pub const ENVELOPE_OVERHEAD: usize = 32;

/// An envelope around already encoded hops, in order.
pub fn encode_envelope<'h>(hops: impl IntoIterator<Item = &'h [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(format!(r#"{{"v":{ENVELOPE_VERSION},"hops":["#).as_bytes());
    for (i, hop) in hops.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(hop);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frames::encode_message;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    fn dev(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    #[test]
    fn message_hop_round_trips_with_the_frame_untouched() {
        let body = RawValue::from_string(r#"{"text":"hi \"you\"","n":[1, 2]}"#.into()).unwrap();
        let (alice, bob) = (id("alice"), id("bob"));
        let msg_id = Uuid::now_v7();
        let frame = encode_message(msg_id, &alice, Addressee::Client(&bob), &body, 7);
        let reply = ReplyTo {
            node: NodeId::parse("node-a").unwrap(),
            session: Uuid::new_v4(),
            receipt: true,
        };
        let targets = [
            Target {
                to: bob.clone(),
                device: dev("phone"),
                session: Uuid::new_v4(),
            },
            Target {
                to: bob.clone(),
                device: dev("tab.2"),
                session: Uuid::new_v4(),
            },
        ];
        let carbons = [Carbon {
            device: dev("laptop"),
            session: Uuid::new_v4(),
        }];
        for (reply, carbons) in [(Some(&reply), &carbons[..]), (None, &[][..])] {
            let hop = encode_message_hop(&MessageHopOut {
                msg_id,
                from: &alice,
                to: Addressee::Client(&bob),
                forwarded: true,
                reply,
                targets: &targets,
                carbons,
                part: 3,
                frame: &frame,
            });
            let outcomes = encode_hop(&Hop::Outcomes(vec![]));
            let bytes = encode_envelope([hop.as_slice(), outcomes.as_slice()]);
            let mut hops = Envelope::decode(&bytes).unwrap().into_hops();
            let Some(Hop::Message(m)) = hops.next() else {
                panic!()
            };
            assert!(matches!(hops.next(), Some(Hop::Outcomes(_))));
            assert_eq!(m.frame.get(), frame);
            assert!(m.frame_matches());
            assert_eq!(
                (m.msg_id, &m.from, m.to.as_ref(), m.forwarded),
                (msg_id, &alice, Some(&bob), true)
            );
            assert_eq!(&m.targets[..], &targets[..]);
            assert_eq!(m.carbons, carbons);
            assert_eq!(m.part, 3);
            assert_eq!(
                m.reply.map(|r| (r.session, r.receipt)),
                reply.map(|r| (r.session, r.receipt))
            );
        }
    }

    #[test]
    fn a_group_hop_carries_the_group_frame() {
        let body = RawValue::from_string("1".into()).unwrap();
        let team = GroupId::parse("team").unwrap();
        let msg_id = Uuid::now_v7();
        let frame = encode_message(msg_id, &id("alice"), Addressee::Group(&team), &body, 7);
        let hop = encode_message_hop(&MessageHopOut {
            msg_id,
            from: &id("alice"),
            to: Addressee::Group(&team),
            forwarded: false,
            reply: None,
            targets: &[],
            carbons: &[],
            part: 0,
            frame: &frame,
        });
        let bytes = encode_envelope([hop.as_slice()]);
        let Some(Hop::Message(m)) = Envelope::decode(&bytes).unwrap().into_hops().next() else {
            panic!()
        };
        assert_eq!((m.to.as_ref(), m.group.as_ref()), (None, Some(&team)));
        assert!(m.frame_matches());
        // The same frame claimed for a client, or for another group, is refused.
        let other = GroupId::parse("other").unwrap();
        let wrong = encode_message_hop(&MessageHopOut {
            to: Addressee::Group(&other),
            ..MessageHopOut {
                msg_id,
                from: &id("alice"),
                to: Addressee::Group(&team),
                forwarded: false,
                reply: None,
                targets: &[],
                carbons: &[],
                part: 0,
                frame: &frame,
            }
        });
        let bytes = encode_envelope([wrong.as_slice()]);
        let Some(Hop::Message(m)) = Envelope::decode(&bytes).unwrap().into_hops().next() else {
            panic!()
        };
        assert!(!m.frame_matches());
    }

    #[test]
    fn a_frame_must_match_its_hop() {
        let body = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
        let msg_id = Uuid::now_v7();
        let hop_with = |frame: &str| {
            let bytes = encode_envelope([encode_message_hop(&MessageHopOut {
                msg_id,
                from: &id("alice"),
                to: Addressee::Client(&id("bob")),
                forwarded: false,
                reply: None,
                targets: &[],
                carbons: &[],
                part: 0,
                frame,
            })
            .as_slice()]);
            // A frame that is not JSON at all fails the envelope first.
            let Ok(envelope) = Envelope::decode(&bytes) else {
                return false;
            };
            let Some(Hop::Message(m)) = envelope.into_hops().next() else {
                panic!()
            };
            m.frame_matches()
        };
        let message = |msg_id, from: &str, to: &str| {
            encode_message(msg_id, &id(from), Addressee::Client(&id(to)), &body, 7)
        };
        assert!(hop_with(&message(msg_id, "alice", "bob")));
        // Addressed to someone else, from someone else, another message, not a message.
        assert!(!hop_with(&message(msg_id, "alice", "carol")));
        assert!(!hop_with(&message(msg_id, "mallory", "bob")));
        assert!(!hop_with(&message(Uuid::now_v7(), "alice", "bob")));
        assert!(!hop_with(r#"{"type":"welcome","client_id":"bob"}"#));
        assert!(!hop_with(r#""just a string""#));

        // The right start, but not the fixed form, or a body that the
        // recipient could not read.
        let start =
            format!(r#"{{"type":"message","msg_id":"{msg_id}","from":"alice","to":"bob","body":"#);
        for (rest, ok) in [
            (r#"{"a":1},"ts":7}"#, true),
            // A body that itself ends like the tail.
            (r#"{"a":1,"ts":5},"ts":7}"#, true),
            (r#"",\"ts\":5}","ts":7}"#, true),
            (r#"{"a":1,"ts":5}"#, false),
            (r#"1,"to":"carol","ts":7}"#, false),
            (r#"1,"type":"error","ts":7}"#, false),
            (r#"1,"ts":-7}"#, false),
            (r#"1,"ts":}"#, false),
            (r#"1}"#, false),
            (r#"[1e400],"ts":7}"#, false),
        ] {
            assert_eq!(hop_with(&format!("{start}{rest}")), ok, "{rest}");
        }
    }

    #[test]
    fn outcomes_round_trip_and_read() {
        let node = NodeId::parse("node-b").unwrap();
        let msg_id = Uuid::now_v7();
        let outcomes = vec![
            Outcome::target(msg_id, id("bob"), dev("phone"), Fate::Delivered),
            Outcome::target(
                msg_id,
                id("bob"),
                dev("tab"),
                Fate::Offline(OfflineReason::Disconnected),
            ),
            Outcome::target(msg_id, id("bob"), dev("pc"), Fate::Forwarded(&node)),
            Outcome::done(msg_id, node.clone(), 0),
        ];
        let bytes = Envelope::new(Hop::Outcomes(outcomes.clone())).encode();
        let Some(Hop::Outcomes(back)) = Envelope::decode(&bytes).unwrap().hop else {
            panic!()
        };
        assert_eq!(back, outcomes);
        let read: Vec<_> = back.iter().map(|o| o.settled().unwrap()).collect();
        assert_eq!(
            read[3],
            Settled::Done {
                node: &node,
                part: 0
            }
        );
        assert!(matches!(
            read[1],
            Settled::Target {
                fate: Fate::Offline(OfflineReason::Disconnected),
                ..
            }
        ));
        // A status without the fields it needs is not acted on.
        let mut broken = Outcome::done(msg_id, node, 0);
        broken.node = None;
        assert_eq!(broken.settled(), None);
    }

    #[test]
    fn bad_envelopes_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"\xff\xfe",
            b"{}",
            b"[]",
            br#"{"v":2}"#,
            br#"{"v":2,"hops":[]}"#,
            br#"{"v":2,"hop":{"message":{}}}"#,
            br#"{"v":2,"hop":{"teleport":{}}}"#,
            br#"{"v":2,"hop":{"replaced":{"client":"a b","device":"d","session":"x"}}}"#,
            br#"{"v":2,"hop":{"outcomes":[{"msg_id":"x","status":"maybe"}]}}"#,
            br#"{"v":2,"hop":{"changed":{"node":"n","clients":["a b"]}}}"#,
            br#"{"v":2,"hop":{"changed":{"clients":["a"]}}}"#,
        ] {
            assert!(
                matches!(Envelope::decode(bytes), Err(EnvelopeError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            Envelope::decode(br#"{"v":3,"hop":{"teleport":{}}}"#).unwrap_err(),
            EnvelopeError::UnknownVersion(3)
        );
        let v1 = br#"{"v":1,"hop":{"replaced":{"client":"a","session":"6f1c7b38-4c5a-4f0e-9a5e-3b1f8d7c6a21"}}}"#;
        assert_eq!(
            Envelope::decode(v1).unwrap_err(),
            EnvelopeError::UnknownVersion(1)
        );
    }
}
