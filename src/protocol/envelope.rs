//! The envelope nodes exchange over the bus (NATS subject
//! `<prefix>.node.<node id>`).
//!
//! Wire form, one JSON object per bus message, holding one hop (`hop`) or
//! several (`hops`, in order):
//!
//! ```json
//! {"v":1,"hops":[
//!   {"message":{"msg_id":"…","from":"alice","to":"bob","forwarded":false,
//!     "reply":{"node":"node-a","session":"…"},
//!     "frame":{"type":"message","msg_id":"…","from":"alice","to":"bob","body":{"text":"hi"},"ts":1764220000000}}},
//!   {"outcomes":[{"msg_id":"…","status":"delivered"},{"msg_id":"…","status":"offline"}]}]}
//! {"v":1,"hop":{"replaced":{"client":"alice","session":"…"}}}
//! {"v":1,"hop":{"forwarded":{"msg_id":"…","node":"node-c"}}}
//! ```
//!
//! A busy node packs everything it has for one node into one bus message
//! (see `router::courier`): the bus then carries a few large messages
//! rather than many small ones.
//!
//! A message hop carries the recipient's `message` frame already rendered
//! by the sender's node, as a JSON value: the recipient's node writes those
//! bytes to the socket as they are, without parsing the body or rendering
//! the frame again. The hop kind is serde's externally tagged form, which
//! decodes in one pass without buffering, so `frame` stays a borrowed raw
//! value from the bus message to the socket.

use std::fmt::Write;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use switchboard_protocol::frames::{ReceiptStatus, check_body_text};
use switchboard_protocol::{ClientId, NodeId};

/// The envelope version this node writes and understands.
pub const ENVELOPE_VERSION: u8 = 1;

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
    /// A client message for a client this node is believed to hold.
    Message(#[serde(borrow)] MessageHop<'a>),
    /// Outcomes of messages, for the node that sent them: many per
    /// envelope, so that a busy node sends few of these.
    Outcomes(Vec<Outcome>),
    /// A newer session of `client` opened elsewhere: close `session` with 4001.
    Replaced(ReplacedHop),
    /// For the message's origin node: the message was re-routed to `node`,
    /// whose fate now decides its outcome.
    Forwarded(ForwardedHop),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MessageHop<'a> {
    pub msg_id: Uuid,
    pub from: ClientId,
    pub to: ClientId,
    /// Set when a node re-routed the message after finding its recipient
    /// gone; such a message is never forwarded again, so a stale record
    /// cannot bounce it between nodes.
    #[serde(default)]
    pub forwarded: bool,
    /// The sending session, whose node awaits the outcome. Absent for
    /// server-side sends (HTTP API), which have no session to tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyTo>,
    /// The `message` frame for the recipient, as the sender's node
    /// rendered it.
    #[serde(borrow)]
    pub frame: &'a RawValue,
}

impl MessageHop<'_> {
    /// Whether `frame` really is the message this hop says it carries. A
    /// node writes the frame to the recipient's socket without re-encoding
    /// it, so without this check a faulty or hostile peer could hand a
    /// client a frame addressed to someone else, one that is not a message
    /// at all, or one whose body the client's parser cannot read.
    ///
    /// Every node renders the frame in one fixed form
    /// ([`encode_message`](crate::protocol::frames::encode_message)): this prefix
    /// with the hop's `msg_id`, `from` and `to`, then the body, then
    /// `,"ts":<digits>}`. The check compares the prefix and the tail and
    /// walks the body between them once, without building it, under the
    /// same rules a sender's body met
    /// ([`check_body`](crate::protocol::frames::check_body)). Being exact about the
    /// form also rules out a repeated `"type"` or `"to"` key after the
    /// body.
    pub fn frame_matches(&self) -> bool {
        // Compared piece by piece, so that no copy of the expected start is
        // built for every message received. Ids need no JSON escaping.
        let mut msg_id = Uuid::encode_buffer();
        let msg_id: &str = self.msg_id.hyphenated().encode_lower(&mut msg_id);
        let pieces = [
            r#"{"type":"message","msg_id":""#,
            msg_id,
            r#"","from":""#,
            self.from.as_str(),
            r#"","to":""#,
            self.to.as_str(),
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
        let Some(ts) = tail[r#","ts":"#.len()..].strip_suffix('}') else {
            return false;
        };
        !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()) && check_body_text(body).is_ok()
    }
}

/// The sender's session, whose node tracks the message's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplyTo {
    pub node: NodeId,
    pub session: Uuid,
    /// The sender asked for a `delivered` receipt: its outcome is sent at
    /// once rather than with later traffic. Absent means false (nodes that
    /// predate it never ask).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub receipt: bool,
}

/// The outcome of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub msg_id: Uuid,
    pub status: ReceiptStatus,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReplacedHop {
    pub client: ClientId,
    pub session: Uuid,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedHop {
    pub msg_id: Uuid,
    pub node: NodeId,
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
                // A newer node may use a hop shape we do not know; say so
                // rather than calling its envelope garbage.
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

/// Encodes a message hop (`{"message":{...}}`, to go in an envelope's
/// `hops`) around an already rendered frame, which is spliced in as it is
/// (it is the node's own output, valid JSON by construction). This is the
/// per-message path, so it writes the JSON directly rather than through an
/// intermediate value.
pub fn encode_message_hop(
    msg_id: Uuid,
    from: &ClientId,
    to: &ClientId,
    forwarded: bool,
    reply: Option<&ReplyTo>,
    frame: &str,
) -> Vec<u8> {
    // Ids are validated to a character set that never needs escaping.
    let mut out = String::with_capacity(frame.len() + 200);
    let _ = write!(
        out,
        r#"{{"message":{{"msg_id":"{msg_id}","from":"{from}","to":"{to}","forwarded":{forwarded},"#
    );
    if let Some(reply) = reply {
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
    out.push_str(r#""frame":"#);
    out.push_str(frame);
    out.push_str("}}");
    out.into_bytes()
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

    #[test]
    fn message_hop_round_trips_with_the_frame_untouched() {
        let body = RawValue::from_string(r#"{"text":"hi \"you\"","n":[1, 2]}"#.into()).unwrap();
        let (alice, bob) = (
            ClientId::parse("alice").unwrap(),
            ClientId::parse("bob").unwrap(),
        );
        let msg_id = Uuid::now_v7();
        let frame = encode_message(msg_id, &alice, &bob, &body, 7);
        let reply = ReplyTo {
            node: NodeId::parse("node-a").unwrap(),
            session: Uuid::new_v4(),
            receipt: true,
        };
        for reply in [Some(&reply), None] {
            let hop = encode_message_hop(msg_id, &alice, &bob, true, reply, &frame);
            let outcomes = encode_hop(&Hop::Outcomes(vec![]));
            let bytes = encode_envelope([hop.as_slice(), outcomes.as_slice()]);
            let mut hops = Envelope::decode(&bytes).unwrap().into_hops();
            let Some(Hop::Message(m)) = hops.next() else {
                panic!()
            };
            assert!(matches!(hops.next(), Some(Hop::Outcomes(_))));
            assert_eq!(m.frame.get(), frame);
            assert_eq!(
                (m.msg_id, m.from, m.to, m.forwarded),
                (msg_id, alice.clone(), bob.clone(), true)
            );
            assert_eq!(
                m.reply.map(|r| (r.session, r.receipt)),
                reply.map(|r| (r.session, r.receipt))
            );
        }
    }

    #[test]
    fn a_frame_must_match_its_hop() {
        let body = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
        let id = |s: &str| ClientId::parse(s).unwrap();
        let msg_id = Uuid::now_v7();
        let hop_with = |frame: &str| {
            let bytes = encode_envelope([encode_message_hop(
                msg_id,
                &id("alice"),
                &id("bob"),
                false,
                None,
                frame,
            )
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
        assert!(hop_with(&encode_message(
            msg_id,
            &id("alice"),
            &id("bob"),
            &body,
            7
        )));
        // Addressed to someone else, from someone else, another message, not a message.
        assert!(!hop_with(&encode_message(
            msg_id,
            &id("alice"),
            &id("carol"),
            &body,
            7
        )));
        assert!(!hop_with(&encode_message(
            msg_id,
            &id("mallory"),
            &id("bob"),
            &body,
            7
        )));
        assert!(!hop_with(&encode_message(
            Uuid::now_v7(),
            &id("alice"),
            &id("bob"),
            &body,
            7
        )));
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
    fn outcomes_round_trip() {
        let outcomes = vec![
            Outcome {
                msg_id: Uuid::now_v7(),
                status: ReceiptStatus::Delivered,
            },
            Outcome {
                msg_id: Uuid::now_v7(),
                status: ReceiptStatus::Offline,
            },
        ];
        let bytes = Envelope::new(Hop::Outcomes(outcomes.clone())).encode();
        let Some(Hop::Outcomes(back)) = Envelope::decode(&bytes).unwrap().hop else {
            panic!()
        };
        assert_eq!(back, outcomes);
    }

    #[test]
    fn bad_envelopes_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"\xff\xfe",
            b"{}",
            b"[]",
            br#"{"v":1}"#,
            br#"{"v":1,"hops":[]}"#,
            br#"{"v":1,"hop":{"message":{}}}"#,
            br#"{"v":1,"hop":{"teleport":{}}}"#,
            br#"{"v":1,"hop":{"replaced":{"client":"a b","session":"x"}}}"#,
            br#"{"v":1,"hop":{"outcomes":[{"msg_id":"x","status":"maybe"}]}}"#,
        ] {
            assert!(matches!(
                Envelope::decode(bytes),
                Err(EnvelopeError::Malformed(_))
            ));
        }
        assert_eq!(
            Envelope::decode(br#"{"v":2,"hop":{"teleport":{}}}"#).unwrap_err(),
            EnvelopeError::UnknownVersion(2)
        );
        let ok = br#"{"v":2,"hop":{"replaced":{"client":"a","session":"6f1c7b38-4c5a-4f0e-9a5e-3b1f8d7c6a21"}}}"#;
        assert_eq!(
            Envelope::decode(ok).unwrap_err(),
            EnvelopeError::UnknownVersion(2)
        );
    }
}
