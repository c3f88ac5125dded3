//! The envelope nodes exchange over the bus (NATS subject
//! `<prefix>.node.<node id>`).
//!
//! Wire form, one JSON object per bus message:
//!
//! ```json
//! {"v":1,"hop":{"message":{"msg_id":"…","from":"alice","to":"bob","ts":1764220000000,
//!   "body":{"text":"hi"},"forwarded":false,
//!   "reply":{"node":"node-a","session":"…","id":"c-17","receipt":true}}}}
//! {"v":1,"hop":{"receipt":{"msg_id":"…","to":"alice","session":"…","id":"c-17","status":"offline"}}}
//! {"v":1,"hop":{"replaced":{"client":"alice","session":"…"}}}
//! {"v":1,"hop":{"forwarded":{"msg_id":"…","node":"node-c"}}}
//! ```
//!
//! The hop kind is serde's externally tagged form on purpose: it decodes in
//! one pass without buffering, so `body` can stay a borrowed raw JSON value
//! from the bus message to the recipient's frame.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::frames::ReceiptStatus;
use super::ids::{ClientId, NodeId};

/// The envelope version this node writes and understands.
pub const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<'a> {
    pub v: u8,
    #[serde(borrow)]
    pub hop: Hop<'a>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hop<'a> {
    /// A client message for a client this node is believed to hold.
    Message(#[serde(borrow)] MessageHop<'a>),
    /// The outcome of a message, for the node holding its sender.
    Receipt(#[serde(borrow)] ReceiptHop<'a>),
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
    pub ts: u64,
    #[serde(borrow)]
    pub body: &'a RawValue,
    /// Set when a node re-routed the message after finding its recipient
    /// gone; such a message is never forwarded again, so a stale record
    /// cannot bounce it between nodes.
    #[serde(default)]
    pub forwarded: bool,
    /// Where the outcome goes. Absent for server-side sends (HTTP API),
    /// which have no session to tell.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyTo<'a>>,
}

/// The sender's session, for receipts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplyTo<'a> {
    pub node: NodeId,
    pub session: Uuid,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    /// The sender asked for a `delivered` receipt. `offline` receipts are
    /// sent regardless.
    #[serde(default)]
    pub receipt: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReceiptHop<'a> {
    pub msg_id: Uuid,
    /// The client that sent the message, and the session it sent it from.
    pub to: ClientId,
    pub session: Uuid,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
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

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            hop,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes always serialize")
    }

    /// Decodes a bus message. Never panics, whatever the bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, EnvelopeError> {
        match serde_json::from_slice::<Envelope<'a>>(bytes) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_hop_round_trips_with_the_body_untouched() {
        let body = RawValue::from_string(r#"{"text":"hi","n":[1, 2]}"#.into()).unwrap();
        let env = Envelope::new(Hop::Message(MessageHop {
            msg_id: Uuid::now_v7(),
            from: ClientId::parse("alice").unwrap(),
            to: ClientId::parse("bob").unwrap(),
            ts: 7,
            body: &body,
            forwarded: false,
            reply: Some(ReplyTo {
                node: NodeId::parse("node-a").unwrap(),
                session: Uuid::new_v4(),
                id: Some("c-1".into()),
                receipt: true,
            }),
        }));
        let bytes = env.encode();
        let back = Envelope::decode(&bytes).unwrap();
        let Hop::Message(m) = back.hop else { panic!() };
        assert_eq!(m.body.get(), r#"{"text":"hi","n":[1, 2]}"#);
        assert_eq!(m.reply.unwrap().id.as_deref(), Some("c-1"));
    }

    #[test]
    fn bad_envelopes_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"\xff\xfe",
            b"{}",
            b"[]",
            br#"{"v":1}"#,
            br#"{"v":1,"hop":{"message":{}}}"#,
            br#"{"v":1,"hop":{"teleport":{}}}"#,
            br#"{"v":1,"hop":{"replaced":{"client":"a b","session":"x"}}}"#,
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
