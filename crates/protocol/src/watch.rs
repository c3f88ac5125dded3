//! Presence for clients and signals (v3): the `watch`, `unwatch`,
//! `visibility` and `signal` frames, and what the server answers.
//!
//! ```text
//! → {"type":"watch","clients":["bob","carol"],"id":"w1"}
//! ← {"type":"watching","id":"w1","clients":["bob"],"denied":["carol"]}
//! ← {"type":"presence","client_id":"bob","state":"online","devices":["laptop","phone"],"ts":…}
//! → {"type":"signal","to":"bob","body":{"typing":true}}
//! ← (bob) {"type":"signal","from":"alice","to":"bob","body":{"typing":true}}
//! ```

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::frames::Addressee;
use super::ids::{ClientId, DeviceId};

/// Most client ids one `watch` or `unwatch` frame may name.
pub const MAX_WATCH_IDS: usize = 256;
/// Largest signal body, in bytes of JSON.
pub const MAX_SIGNAL_BODY_BYTES: usize = 1024;

/// A watched client's state, as its watchers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Shown {
    Online,
    Offline,
}

/// A `presence` frame, as written.
#[derive(Debug, Clone, Serialize)]
pub struct PresenceOut<'a> {
    pub client_id: &'a ClientId,
    pub state: Shown,
    /// Sorted; empty when offline.
    pub devices: &'a [DeviceId],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
    pub ts: u64,
}

/// Frames of this module the server writes.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outgoing<'a> {
    Watching {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        clients: &'a [ClientId],
        denied: &'a [ClientId],
    },
    Presence(&'a PresenceOut<'a>),
    Ok {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

fn encode(frame: &Outgoing<'_>) -> String {
    serde_json::to_string(frame).expect("server frames always serialize")
}

/// `{"type":"watching","id":…,"clients":[…],"denied":[…]}`.
pub fn encode_watching(id: Option<&str>, clients: &[ClientId], denied: &[ClientId]) -> String {
    encode(&Outgoing::Watching {
        id,
        clients,
        denied,
    })
}

/// `{"type":"presence",…}`.
pub fn encode_presence(presence: &PresenceOut<'_>) -> String {
    encode(&Outgoing::Presence(presence))
}

/// `{"type":"ok","id":…}`: the answer to `unwatch` and `visibility` (and,
/// with history, `read`).
pub fn encode_ok(id: Option<&str>) -> String {
    encode(&Outgoing::Ok { id })
}

/// The `signal` frame recipients get:
/// `{"type":"signal","from":…,"to":…|"group":…,"body":…}`. Ids need no
/// escaping and the body is valid JSON already, so it is written directly.
pub fn encode_signal(from: &ClientId, to: Addressee<'_>, body: &RawValue) -> String {
    let (key, value) = match to {
        Addressee::Client(client) => ("to", client.as_str()),
        Addressee::Group(group) => ("group", group.as_str()),
    };
    let body = body.get();
    let mut out = String::with_capacity(body.len() + 80);
    out.push_str(r#"{"type":"signal","from":""#);
    out.push_str(from.as_str());
    out.push_str(r#"",""#);
    out.push_str(key);
    out.push_str(r#"":""#);
    out.push_str(value);
    out.push_str(r#"","body":"#);
    out.push_str(body);
    out.push('}');
    out
}

/// A `signal` a client asked for, validated.
#[derive(Debug)]
pub struct SignalRequest<'a> {
    pub id: Option<Cow<'a, str>>,
    pub to: super::frames::Recipient,
    pub body: &'a RawValue,
}

/// What a `watch` answer names: the clients now watched and those denied.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WatchingFrame {
    #[serde(default)]
    pub id: Option<String>,
    pub clients: Vec<String>,
    pub denied: Vec<String>,
}

/// A `presence` frame as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PresenceFrame {
    pub client_id: String,
    pub state: Shown,
    pub devices: Vec<String>,
    #[serde(default)]
    pub last_seen: Option<u64>,
    pub ts: u64,
}

/// A `signal` frame as a client reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SignalFrame {
    pub from: String,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub body: serde_json::Value,
}
