//! WebSocket frames: what clients send, what the server answers.
//!
//! Client frames are parsed without copying the message body: `body` stays a
//! borrowed [`RawValue`] until the router decides where it goes. Server
//! frames are encoded from borrowed parts by the `encode_*` functions, and
//! decoded into the owned [`ServerFrame`] by clients (the client library, the
//! tests, the load generator).

use std::borrow::Cow;
use std::fmt::{self, Write};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::history::{
    ConversationsRequest, DEFAULT_PAGE, HistoryRequest, MAX_PAGE, PageRange, ReadRequest, Thread,
};
use super::ids::{ClientId, DeviceId, GroupId, NodeId};
use super::watch::{MAX_SIGNAL_BODY_BYTES, MAX_WATCH_IDS, SignalRequest};

/// Longest `id` a client may attach to a frame, in bytes.
pub const MAX_FRAME_ID_BYTES: usize = 128;

/// Deepest nesting of arrays and objects allowed in a message body. The
/// body is passed through unparsed, so without this check a node would
/// forward bodies that crash recipients' recursive JSON parsers.
pub const MAX_BODY_DEPTH: usize = 64;

/// The most a `message` frame adds around its body: the type, a msg_id, two
/// client ids of up to 128 bytes and a timestamp, with room to spare.
pub const MESSAGE_FRAME_OVERHEAD: usize = 512;

/// The largest `message` frame a node with this `--max-frame-bytes` can
/// produce: its body came in a client frame (or API request) no larger.
pub fn max_message_frame(max_frame_bytes: usize) -> usize {
    max_frame_bytes + MESSAGE_FRAME_OVERHEAD
}

/// The error codes of the protocol's `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    UnknownType,
    InvalidRecipient,
    TooLarge,
    RateLimited,
    Unavailable,
    Internal,
    /// v2: a send to a group the sender is not a member of.
    NotMember,
    /// v3: a `watch` beyond `--max-watched` clients per session.
    TooManyWatched,
    /// v3: reading or marking a conversation that is not one's own.
    NotAllowed,
    /// v3: history, conversations or read on a node without history.
    NoHistory,
    /// v3: the application's backend refused a send (backend hooks).
    Rejected,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadFrame,
        ErrorCode::UnknownType,
        ErrorCode::InvalidRecipient,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::NotMember,
        ErrorCode::TooManyWatched,
        ErrorCode::NotAllowed,
        ErrorCode::NoHistory,
        ErrorCode::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidRecipient => "invalid_recipient",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::NotMember => "not_member",
            ErrorCode::TooManyWatched => "too_many_watched",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::NoHistory => "no_history",
            ErrorCode::Rejected => "rejected",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The branch the sender's node took for a `send` to a client; `fanout`
/// for a send to a group (v2), whose ack counts each branch instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    Local,
    Remote,
    Offline,
    Fanout,
}

impl AckStatus {
    /// The three branches of the design (what `switchboard_sends_total`
    /// counts by).
    pub const BRANCHES: [AckStatus; 3] = [AckStatus::Local, AckStatus::Remote, AckStatus::Offline];
    /// Every status an ack can have.
    pub const ALL: [AckStatus; 4] = [
        AckStatus::Local,
        AckStatus::Remote,
        AckStatus::Offline,
        AckStatus::Fanout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AckStatus::Local => "local",
            AckStatus::Remote => "remote",
            AckStatus::Offline => "offline",
            AckStatus::Fanout => "fanout",
        }
    }
}

/// The later outcome of a routed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    Delivered,
    Offline,
}

/// Why a message is offline (v2): on `offline` acks, `offline` receipts and
/// `events.offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineReason {
    /// The recipient was never connected (or not within the last-seen TTL).
    NeverSeen,
    /// The recipient's session ended (it left, or its connection dropped).
    Disconnected,
    /// The recipient's node crashed or could not be reached.
    NodeDead,
    /// The recipient did not keep up and was closed (4008).
    SlowConsumer,
    /// The recipient's session detached and did not resume in time.
    ResumeExpired,
    /// The recipient's node was shutting down.
    ShuttingDown,
}

impl OfflineReason {
    pub const ALL: [OfflineReason; 6] = [
        OfflineReason::NeverSeen,
        OfflineReason::Disconnected,
        OfflineReason::NodeDead,
        OfflineReason::SlowConsumer,
        OfflineReason::ResumeExpired,
        OfflineReason::ShuttingDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OfflineReason::NeverSeen => "never_seen",
            OfflineReason::Disconnected => "disconnected",
            OfflineReason::NodeDead => "node_dead",
            OfflineReason::SlowConsumer => "slow_consumer",
            OfflineReason::ResumeExpired => "resume_expired",
            OfflineReason::ShuttingDown => "shutting_down",
        }
    }
}

/// Why a session ended, as the close frame says it: the only place close
/// codes and their reasons are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disconnect {
    /// 1000: the client closed the session.
    Normal,
    /// 1001: the node is shutting down; reconnect elsewhere.
    GoingAway,
    /// 1007 (RFC 6455 "invalid frame payload data"): a text frame that is
    /// not UTF-8.
    InvalidPayload,
    /// 1008: nothing heard from the client (no frame, no pong) for the
    /// idle timeout.
    Idle,
    /// 1008: over its rate limit for the whole abuse window.
    RateAbuse,
    /// 1009: a frame far over the size limit.
    TooBig,
    /// 1011 (RFC 6455 "internal error"): the session could not be set up.
    Internal,
    /// 4001: replaced by a newer session of the same client (and device).
    Replaced,
    /// 4008: the session's outbound queue filled up, or a write to its
    /// socket timed out.
    SlowConsumer,
}

impl Disconnect {
    pub const ALL: [Disconnect; 9] = [
        Disconnect::Normal,
        Disconnect::GoingAway,
        Disconnect::InvalidPayload,
        Disconnect::Idle,
        Disconnect::RateAbuse,
        Disconnect::TooBig,
        Disconnect::Internal,
        Disconnect::Replaced,
        Disconnect::SlowConsumer,
    ];

    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Disconnect::Normal => 1000,
            Disconnect::GoingAway => 1001,
            Disconnect::InvalidPayload => 1007,
            Disconnect::Idle | Disconnect::RateAbuse => 1008,
            Disconnect::TooBig => 1009,
            Disconnect::Internal => 1011,
            Disconnect::Replaced => 4001,
            Disconnect::SlowConsumer => 4008,
        }
    }

    /// The close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            Disconnect::Normal => "",
            Disconnect::GoingAway => "node shutting down",
            Disconnect::InvalidPayload => "text frame is not valid UTF-8",
            Disconnect::Idle => "idle: no answer to pings",
            Disconnect::RateAbuse => "rate limit abuse",
            Disconnect::TooBig => "frame too large",
            Disconnect::Internal => "presence unavailable",
            Disconnect::Replaced => "replaced by a newer session",
            Disconnect::SlowConsumer => "slow consumer",
        }
    }
}

/// The key of a draining node's reconnect hint in its 1001 close reason
/// (Switchboard, v3): `node shutting down; reconnect_after_ms=1234`.
pub const RECONNECT_HINT: &str = "reconnect_after_ms=";

/// The 1001 close reason of a draining node that asks the client to wait
/// `after` before it reconnects (spreading the return of its sessions).
pub fn going_away_reason(after: std::time::Duration) -> String {
    format!(
        "{}; {RECONNECT_HINT}{}",
        Disconnect::GoingAway.reason(),
        after.as_millis()
    )
}

/// The reconnect hint in a close reason, if it has one: how long the
/// node asks the client to wait before it reconnects.
pub fn reconnect_hint(reason: &str) -> Option<std::time::Duration> {
    let (_, rest) = reason.split_once(RECONNECT_HINT)?;
    let digits: &str = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
    // At most a minute: a hint is a spread, never a ban.
    let ms: u64 = digits.parse().ok()?;
    Some(std::time::Duration::from_millis(ms.min(60_000)))
}

/// A frame the server refused, ready to be answered with an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    /// The refused frame's `id`, when it carried a valid one.
    pub id: Option<String>,
    /// The refused frame is one the client hears nothing about: a signal
    /// without an `id` (the error is only counted).
    pub unanswered: bool,
    /// v3, `rejected`: the application's reason (its hook's `error`).
    pub reason: Option<String>,
}

impl FrameError {
    pub fn new(code: ErrorCode, message: impl Into<String>, id: Option<&str>) -> Self {
        Self {
            code,
            message: message.into(),
            id: id.map(str::to_owned),
            unanswered: false,
            reason: None,
        }
    }

    /// v3: a send the application's backend refused (`rejected`, with its
    /// reason).
    pub fn rejected(reason: &str, message: impl Into<String>, id: Option<&str>) -> Self {
        Self {
            reason: Some(reason.to_owned()),
            ..Self::new(ErrorCode::Rejected, message, id)
        }
    }
}

/// A parsed client frame. Borrows from the text it was parsed from.
#[derive(Debug)]
pub enum ClientFrame<'a> {
    Send(SendRequest<'a>),
    Ping {
        id: Option<Cow<'a, str>>,
    },
    /// v2, acks mode: every message up to `seq` `upto` has arrived.
    Received {
        upto: u64,
    },
    /// v3: watch these clients' presence (deduplicated, in order).
    Watch {
        id: Option<Cow<'a, str>>,
        clients: Vec<ClientId>,
    },
    /// v3: stop watching these clients.
    Unwatch {
        id: Option<Cow<'a, str>>,
        clients: Vec<ClientId>,
    },
    /// v3: invisible (`false`) or visible again (`true`).
    Visibility {
        id: Option<Cow<'a, str>>,
        visible: bool,
    },
    /// v3: an ephemeral note to a client or a group.
    Signal(SignalRequest<'a>),
    /// v3: a page of a conversation.
    History(HistoryRequest<'a>),
    /// v3: this client's conversations.
    Conversations(ConversationsRequest<'a>),
    /// v3: this client has read a conversation up to a `cseq`.
    Read(ReadRequest<'a>),
}

/// Whom a `send` is for: a client (every session of it), or (v2) every
/// member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Client(ClientId),
    Group(GroupId),
}

impl Recipient {
    /// How a `message` frame names it.
    pub fn addressee(&self) -> Addressee<'_> {
        match self {
            Recipient::Client(client) => Addressee::Client(client),
            Recipient::Group(group) => Addressee::Group(group),
        }
    }

    /// The group, for a message to a group.
    pub fn group(&self) -> Option<&GroupId> {
        match self {
            Recipient::Client(_) => None,
            Recipient::Group(group) => Some(group),
        }
    }
}

/// A `send` frame after validation: the recipient is a valid client or
/// group id and the body is a JSON value, still as the client wrote it.
#[derive(Debug)]
pub struct SendRequest<'a> {
    pub id: Option<Cow<'a, str>>,
    pub to: Recipient,
    pub body: &'a RawValue,
    pub receipt: bool,
    /// v2: keep it in the recipient's inbox if the recipient is offline.
    pub store: bool,
    /// v3: append it to its conversation's history (unless
    /// `"history": false`), on a node with history.
    pub history: bool,
}

/// Distinguishes a field that is absent from one that is `null`: serde maps
/// both to `None` for an `Option`, but `"body": null` is a valid body while a
/// missing body is a malformed frame.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Every field any client frame may carry, each left raw so that a wrongly
/// typed field yields a precise message instead of serde's generic one.
/// Unknown fields are ignored, so clients may add their own.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    to: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    body: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    receipt: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    group: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    store: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    upto: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    clients: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    visible: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    with: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    before: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    after: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    limit: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    history: Option<&'a RawValue>,
}

/// A JSON boolean field, absent meaning false.
fn flag(raw: Option<&RawValue>) -> Result<bool, ()> {
    match raw.map(RawValue::get) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(()),
    }
}

fn as_string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if !raw.get().starts_with('"') {
        return None;
    }
    // `Cow` borrows when the string has no escapes, which is the usual case.
    serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
}

/// Parses one client text frame. Every failure maps to a protocol error code
/// and a message that says what to fix.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame<'_>, FrameError> {
    let raw: RawFrame<'_> = serde_json::from_str(text).map_err(|e| {
        let message = if e.is_data() {
            format!("a frame must be a JSON object with a string \"type\": {e}")
        } else {
            format!("frame is not valid JSON: {e}")
        };
        FrameError::new(ErrorCode::BadFrame, message, None)
    })?;

    let id = match raw.id {
        None => None,
        Some(value) => match as_string(value) {
            Some(id) if id.len() <= MAX_FRAME_ID_BYTES => Some(id),
            Some(_) => {
                return Err(FrameError::new(
                    ErrorCode::BadFrame,
                    format!("\"id\" must be at most {MAX_FRAME_ID_BYTES} bytes"),
                    None,
                ));
            }
            None => {
                return Err(FrameError::new(
                    ErrorCode::BadFrame,
                    "\"id\" must be a string",
                    None,
                ));
            }
        },
    };
    let bad = |message: &str| FrameError::new(ErrorCode::BadFrame, message, id.as_deref());

    let kind = raw
        .kind
        .ok_or_else(|| bad("missing \"type\""))
        .and_then(|k| as_string(k).ok_or_else(|| bad("\"type\" must be a string")))?;

    let invalid = |e: super::ids::InvalidId| {
        FrameError::new(ErrorCode::InvalidRecipient, e.to_string(), id.as_deref())
    };
    // Exactly one of "to" and "group", for a send or a signal.
    let recipient = |what: &str| -> Result<Recipient, FrameError> {
        match (raw.to, raw.group) {
            (Some(to), None) => {
                let to = as_string(to).ok_or_else(|| bad("\"to\" must be a string"))?;
                Ok(Recipient::Client(ClientId::parse(&to).map_err(invalid)?))
            }
            (None, Some(group)) => {
                let group = as_string(group).ok_or_else(|| bad("\"group\" must be a string"))?;
                Ok(Recipient::Group(GroupId::parse(&group).map_err(invalid)?))
            }
            (None, None) => Err(bad(&format!("a {what} needs \"to\" (or \"group\")"))),
            (Some(_), Some(_)) => Err(bad(&format!(
                "a {what} has either \"to\" or \"group\", not both"
            ))),
        }
    };

    match kind.as_ref() {
        "send" => {
            let to = recipient("send")?;
            let body = raw.body.ok_or_else(|| bad("a send needs \"body\""))?;
            check_body(body).map_err(|why| bad(&why))?;
            let receipt =
                flag(raw.receipt).map_err(|()| bad("\"receipt\" must be true or false"))?;
            let store = flag(raw.store).map_err(|()| bad("\"store\" must be true or false"))?;
            let history = match raw.history.map(RawValue::get) {
                None | Some("true") => true,
                Some("false") => false,
                Some(_) => return Err(bad("\"history\" must be true or false")),
            };
            Ok(ClientFrame::Send(SendRequest {
                id,
                to,
                body,
                receipt,
                store,
                history,
            }))
        }
        "ping" => Ok(ClientFrame::Ping { id }),
        "received" => {
            let upto = raw
                .upto
                .ok_or_else(|| bad("\"received\" needs \"upto\""))?
                .get()
                .parse::<u64>()
                .map_err(|_| bad("\"upto\" must be a whole number, at least 0"))?;
            Ok(ClientFrame::Received { upto })
        }
        "history" | "conversations" | "read" => {
            history_request(&raw, &kind, id).map_err(|(wrong, id)| {
                let (code, why) = match wrong {
                    Wrong::Bad(why) => (ErrorCode::BadFrame, why),
                    Wrong::Invalid(why) => (ErrorCode::InvalidRecipient, why),
                };
                FrameError::new(code, why, id.as_deref())
            })
        }
        "watch" | "unwatch" => {
            let clients = watched_ids(raw.clients, &kind, id.as_deref())?;
            Ok(if kind == "watch" {
                ClientFrame::Watch { id, clients }
            } else {
                ClientFrame::Unwatch { id, clients }
            })
        }
        "visibility" => {
            let visible = match raw.visible.map(RawValue::get) {
                Some("true") => true,
                Some("false") => false,
                Some(_) => return Err(bad("\"visible\" must be true or false")),
                None => return Err(bad("\"visibility\" needs \"visible\": true or false")),
            };
            Ok(ClientFrame::Visibility { id, visible })
        }
        "signal" => {
            // Only a signal with an `id` hears of its errors.
            let quiet = |mut e: FrameError| {
                e.unanswered = id.is_none();
                e
            };
            let to = recipient("signal").map_err(quiet)?;
            let body = raw
                .body
                .ok_or_else(|| quiet(bad("a signal needs \"body\"")))?;
            if body.get().len() > MAX_SIGNAL_BODY_BYTES {
                return Err(quiet(FrameError::new(
                    ErrorCode::TooLarge,
                    format!(
                        "a signal body is at most {MAX_SIGNAL_BODY_BYTES} bytes of JSON; this one is {}",
                        body.get().len()
                    ),
                    id.as_deref(),
                )));
            }
            check_body(body).map_err(|why| quiet(bad(&why)))?;
            Ok(ClientFrame::Signal(SignalRequest { id, to, body }))
        }
        other => Err(FrameError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown frame type {other:?}; expected \"send\", \"ping\", \"received\", \
                 \"watch\", \"unwatch\", \"visibility\", \"signal\", \"history\", \
                 \"conversations\" or \"read\""
            ),
            id.as_deref(),
        )),
    }
}

/// The `clients` of a `watch` or `unwatch`: an array of at most
/// [`MAX_WATCH_IDS`] client ids, without repeats (the first kept).
fn watched_ids(
    raw: Option<&RawValue>,
    kind: &str,
    id: Option<&str>,
) -> Result<Vec<ClientId>, FrameError> {
    let bad = |message: String| FrameError::new(ErrorCode::BadFrame, message, id);
    let raw = raw.ok_or_else(|| {
        bad(format!(
            "a {kind} needs \"clients\": an array of client ids"
        ))
    })?;
    let names: Vec<Cow<'_, str>> = serde_json::from_str(raw.get())
        .map_err(|_| bad("\"clients\" must be an array of strings".into()))?;
    if names.len() > MAX_WATCH_IDS {
        return Err(bad(format!(
            "a {kind} names at most {MAX_WATCH_IDS} clients; this one names {}",
            names.len()
        )));
    }
    let mut clients: Vec<ClientId> = Vec::with_capacity(names.len());
    for name in names {
        let client = ClientId::parse(&name)
            .map_err(|e| FrameError::new(ErrorCode::InvalidRecipient, e.to_string(), id))?;
        if !clients.contains(&client) {
            clients.push(client);
        }
    }
    Ok(clients)
}

/// What is wrong with a v3 history frame.
enum Wrong {
    Bad(String),
    Invalid(String),
}

/// A whole number, at least 0, or why not.
fn whole(raw: Option<&RawValue>, name: &str) -> Result<Option<u64>, Wrong> {
    raw.map(|v| {
        v.get()
            .parse::<u64>()
            .map_err(|_| Wrong::Bad(format!("\"{name}\" must be a whole number, at least 0")))
    })
    .transpose()
}

/// `"with"` or `"group"`: exactly one.
fn thread(raw: &RawFrame<'_>, kind: &str) -> Result<Thread, Wrong> {
    fn text<'v>(v: &'v RawValue, name: &str) -> Result<Cow<'v, str>, Wrong> {
        as_string(v).ok_or_else(|| Wrong::Bad(format!("\"{name}\" must be a string")))
    }
    match (raw.with, raw.group) {
        (Some(with), None) => {
            let with = text(with, "with")?;
            ClientId::parse(&with)
                .map(Thread::With)
                .map_err(|e| Wrong::Invalid(e.to_string()))
        }
        (None, Some(group)) => {
            let group = text(group, "group")?;
            GroupId::parse(&group)
                .map(Thread::Group)
                .map_err(|e| Wrong::Invalid(e.to_string()))
        }
        (None, None) => Err(Wrong::Bad(format!(
            "a {kind} needs \"with\" (a client) or \"group\""
        ))),
        (Some(_), Some(_)) => Err(Wrong::Bad(format!(
            "a {kind} names either \"with\" or \"group\", not both"
        ))),
    }
}

/// `limit`: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
fn page_limit(raw: &RawFrame<'_>) -> Result<usize, Wrong> {
    match whole(raw.limit, "limit")? {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE as u64).contains(&n) => Ok(n as usize),
        Some(n) => Err(Wrong::Bad(format!(
            "\"limit\" must be 1 to {MAX_PAGE}; this one is {n}"
        ))),
    }
}

/// The v3 history frames: `history`, `conversations`, `read`.
fn history_request<'a>(
    raw: &RawFrame<'a>,
    kind: &str,
    id: Option<Cow<'a, str>>,
) -> Result<ClientFrame<'a>, (Wrong, Option<Cow<'a, str>>)> {
    let attempt = || -> Result<ClientFrame<'a>, Wrong> {
        Ok(match kind {
            "history" => {
                let range = match (whole(raw.before, "before")?, whole(raw.after, "after")?) {
                    (None, None) => PageRange::Latest,
                    (Some(before), None) => PageRange::Before(before),
                    (None, Some(after)) => PageRange::After(after),
                    (Some(_), Some(_)) => {
                        return Err(Wrong::Bad(
                            "a history page is either \"before\" or \"after\" a cseq, not both"
                                .into(),
                        ));
                    }
                };
                ClientFrame::History(HistoryRequest {
                    id: None,
                    thread: thread(raw, kind)?,
                    range,
                    limit: page_limit(raw)?,
                })
            }
            "conversations" => ClientFrame::Conversations(ConversationsRequest {
                id: None,
                before: whole(raw.before, "before")?,
                limit: page_limit(raw)?,
            }),
            _ => {
                let upto = whole(raw.upto, "upto")?
                    .ok_or_else(|| Wrong::Bad("\"read\" needs \"upto\": a cseq".into()))?;
                ClientFrame::Read(ReadRequest {
                    id: None,
                    thread: thread(raw, kind)?,
                    upto,
                })
            }
        })
    };
    match attempt() {
        Ok(ClientFrame::History(h)) => Ok(ClientFrame::History(HistoryRequest { id, ..h })),
        Ok(ClientFrame::Conversations(c)) => {
            Ok(ClientFrame::Conversations(ConversationsRequest { id, ..c }))
        }
        Ok(ClientFrame::Read(r)) => Ok(ClientFrame::Read(ReadRequest { id, ..r })),
        Ok(other) => Ok(other),
        Err(e) => Err((e, id)),
    }
}

/// Checks a message body before the node passes it on, byte for byte, to
/// its recipient: it may nest at most [`MAX_BODY_DEPTH`] levels, and every
/// number in it must fit an IEEE 754 double. JSON's grammar allows
/// `1e400`, and the frame decoder lets it through, but most recipients'
/// parsers (serde_json, Go's encoding/json) refuse such a frame outright;
/// one sender could make every message frame it sends unreadable to them.
/// The body is walked without being built: nothing is allocated but for
/// strings with escapes.
pub fn check_body(body: &RawValue) -> Result<(), String> {
    check_body_text(body.get()).map_err(|e| format!("\"body\" is not usable: {e}"))
}

/// [`check_body`] for text not yet known to be JSON: it must be exactly
/// one JSON value, obeying the body's rules.
pub fn check_body_text(text: &str) -> Result<(), serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    BodyCheck { depth: 0 }.deserialize(&mut deserializer)?;
    deserializer.end()
}

/// One value of a body being checked, `depth` containers deep.
struct BodyCheck {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for BodyCheck {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // deserialize_any parses each number, which is what catches the
        // out-of-range ones (RawValue and IgnoredAny only check syntax).
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodyCheck {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while seq.next_element_seed(BodyCheck { depth: inner })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper::<A::Error>()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(BodyCheck { depth: inner })?;
        }
        Ok(())
    }
}

impl BodyCheck {
    /// The depth of a container's contents, if that is still allowed.
    fn deeper<E: de::Error>(&self) -> Result<usize, E> {
        if self.depth >= MAX_BODY_DEPTH {
            return Err(E::custom(format_args!(
                "nests deeper than {MAX_BODY_DEPTH} levels"
            )));
        }
        Ok(self.depth + 1)
    }
}

/// What a welcome says beyond who and where (v2).
#[derive(Debug, Clone, Default, Serialize)]
pub struct WelcomeExtras<'a> {
    /// Acks mode: the token that takes this session back after a drop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_token: Option<&'a str>,
    /// Set on a session that asked to resume: whether it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<bool>,
    /// With an inbox: how many stored messages follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbox: Option<u64>,
}

/// Whom a `message` frame is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressee<'a> {
    Client(&'a ClientId),
    Group(&'a GroupId),
}

/// An ack, as written (every field but the first three optional).
#[derive(Debug, Clone, Serialize)]
pub struct Ack<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub msg_id: Uuid,
    pub status: AckStatus,
    /// v2: sessions the message was handed or published to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u32>,
    /// v2, group acks: sessions handed here, published elsewhere, members
    /// offline, hops published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// v2, offline acks: why, and when the recipient was last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<OfflineReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
    /// v2, offline acks of `store: true` sends with an inbox.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<&'a str>,
    /// v3: its number in its conversation's history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cseq: Option<u64>,
    /// v3: why it could not be appended to history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_error: Option<&'a str>,
}

impl<'a> Ack<'a> {
    /// An ack of `status` with no other field.
    pub fn new(id: Option<&'a str>, msg_id: Uuid, status: AckStatus) -> Self {
        Self {
            id,
            msg_id,
            status,
            sessions: None,
            local: None,
            remote: None,
            offline: None,
            nodes: None,
            reason: None,
            last_seen: None,
            stored: None,
            store_error: None,
            cseq: None,
            history_error: None,
        }
    }
}

/// A receipt, as written. `to` and `device` name the session it is about
/// (v2).
#[derive(Debug, Clone, Serialize)]
pub struct Receipt<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    pub msg_id: Uuid,
    pub status: ReceiptStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a ClientId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<&'a DeviceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<OfflineReason>,
}

/// Server frames as they are written: borrowed parts, serialized once.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Outgoing<'a> {
    Welcome {
        client_id: &'a ClientId,
        device: &'a DeviceId,
        session_id: Uuid,
        node: &'a NodeId,
        #[serde(flatten)]
        extras: WelcomeExtras<'a>,
    },
    Ack(&'a Ack<'a>),
    Receipt(&'a Receipt<'a>),
    Error {
        code: ErrorCode,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

fn encode(frame: &Outgoing<'_>) -> String {
    // Serializing these types cannot fail: every key is a string and every
    // body is already valid JSON.
    serde_json::to_string(frame).expect("server frames always serialize")
}

pub fn encode_welcome(
    client_id: &ClientId,
    device: &DeviceId,
    session_id: Uuid,
    node: &NodeId,
    extras: WelcomeExtras<'_>,
) -> String {
    encode(&Outgoing::Welcome {
        client_id,
        device,
        session_id,
        node,
        extras,
    })
}

pub fn encode_ack(ack: &Ack<'_>) -> String {
    encode(&Outgoing::Ack(ack))
}

/// The `message` frame, in the one fixed form every node writes (the
/// recipient's node checks hops against it):
/// `{"type":"message","msg_id":…,"from":…,"to":…|"group":…,"body":…,"ts":…}`.
/// Ids need no JSON escaping, so it is written directly.
pub fn encode_message(
    msg_id: Uuid,
    from: &ClientId,
    to: Addressee<'_>,
    body: &RawValue,
    ts: u64,
) -> String {
    encode_numbered_message(msg_id, from, to, body, ts, None)
}

/// [`encode_message`], with (v3) the message's number in its
/// conversation's history after `ts`: `…,"ts":…,"cseq":…}`.
pub fn encode_numbered_message(
    msg_id: Uuid,
    from: &ClientId,
    to: Addressee<'_>,
    body: &RawValue,
    ts: u64,
    cseq: Option<u64>,
) -> String {
    let (key, value) = match to {
        Addressee::Client(client) => ("to", client.as_str()),
        Addressee::Group(group) => ("group", group.as_str()),
    };
    let body = body.get();
    let mut out = String::with_capacity(body.len() + 160);
    out.push_str(r#"{"type":"message","msg_id":""#);
    out.push_str(msg_id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    out.push_str(r#"","from":""#);
    out.push_str(from.as_str());
    out.push_str(r#"",""#);
    out.push_str(key);
    out.push_str(r#"":""#);
    out.push_str(value);
    out.push_str(r#"","body":"#);
    out.push_str(body);
    out.push_str(r#","ts":"#);
    let _ = write!(out, "{ts}");
    if let Some(cseq) = cseq {
        let _ = write!(out, r#","cseq":{cseq}"#);
    }
    out.push('}');
    out
}

/// The body (as written) and `ts` of a message frame as
/// [`encode_message`] writes it (`None` for anything else). Ids hold no
/// quote or comma, so the first `,"body":` is the frame's own, and the
/// last `,"ts":` too (only digits and a `cseq` follow it).
pub fn message_body_and_ts(frame: &str) -> Option<(&str, u64)> {
    let start = frame.find(r#","body":"#)? + r#","body":"#.len();
    let ts_at = frame.rfind(r#","ts":"#)?;
    let body = frame.get(start..ts_at)?;
    let digits = &frame[ts_at + r#","ts":"#.len()..];
    let end = digits.find(|c: char| !c.is_ascii_digit())?;
    Some((body, digits[..end].parse().ok()?))
}

/// A message frame with one more field spliced in before its closing
/// brace: `"carbon":true`, `"stored":true`, `"seq":7` (v2). The frame is
/// this crate's own output, so the splice keeps it valid JSON.
/// The `msg_id` and `from` of a message frame as [`encode_message`]
/// writes it (`None` for anything else).
pub fn message_head(frame: &str) -> Option<(Uuid, ClientId)> {
    let rest = frame.strip_prefix(r#"{"type":"message","msg_id":""#)?;
    let (id, rest) = rest.split_at_checked(36)?;
    let msg_id = Uuid::parse_str(id).ok()?;
    let rest = rest.strip_prefix(r#"","from":""#)?;
    let from = &rest[..rest.find('"')?];
    Some((msg_id, ClientId::parse(from).ok()?))
}

pub fn with_field(frame: &str, field: &str, value: &str) -> String {
    let body = frame.strip_suffix('}').unwrap_or(frame);
    let mut out = String::with_capacity(frame.len() + field.len() + value.len() + 4);
    out.push_str(body);
    out.push_str(",\"");
    out.push_str(field);
    out.push_str("\":");
    out.push_str(value);
    out.push('}');
    out
}

pub fn encode_receipt(receipt: &Receipt<'_>) -> String {
    encode(&Outgoing::Receipt(receipt))
}

pub fn encode_error(error: &FrameError) -> String {
    encode(&Outgoing::Error {
        code: error.code,
        reason: error.reason.as_deref(),
        message: &error.message,
        id: error.id.as_deref(),
    })
}

pub fn encode_pong(id: Option<&str>) -> String {
    encode(&Outgoing::Pong { id })
}

/// A server frame as a client sees it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    Welcome {
        client_id: String,
        #[serde(default = "default_device")]
        device: String,
        session_id: Uuid,
        node: String,
        #[serde(default)]
        resume_token: Option<String>,
        #[serde(default)]
        resumed: Option<bool>,
        #[serde(default)]
        inbox: Option<u64>,
    },
    Ack(AckFrame),
    Message(MessageFrame),
    Receipt {
        #[serde(default)]
        id: Option<String>,
        msg_id: Uuid,
        status: ReceiptStatus,
        #[serde(default)]
        to: Option<String>,
        #[serde(default)]
        device: Option<String>,
        #[serde(default)]
        reason: Option<OfflineReason>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default)]
        id: Option<String>,
        /// v3, `rejected`: the application's reason.
        #[serde(default)]
        reason: Option<String>,
    },
    Pong {
        #[serde(default)]
        id: Option<String>,
    },
    /// v3: the answer to a `watch`.
    Watching(super::watch::WatchingFrame),
    /// v3: a watched client's state.
    Presence(super::watch::PresenceFrame),
    /// v3: an ephemeral note.
    Signal(super::watch::SignalFrame),
    /// v3: the answer to `unwatch`, `visibility` and `read`.
    Ok {
        #[serde(default)]
        id: Option<String>,
    },
    /// v3: a page of a conversation.
    History(super::history::HistoryFrame),
    /// v3: this client's conversations.
    Conversations(super::history::ConversationsFrame),
    /// v3: a read cursor moved (a read receipt).
    Read(super::history::ReadFrame),
}

fn default_device() -> String {
    "default".into()
}

/// An ack as a client reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AckFrame {
    #[serde(default)]
    pub id: Option<String>,
    pub msg_id: Uuid,
    pub status: AckStatus,
    #[serde(default)]
    pub sessions: Option<u32>,
    #[serde(default)]
    pub local: Option<u32>,
    #[serde(default)]
    pub remote: Option<u32>,
    #[serde(default)]
    pub offline: Option<u32>,
    #[serde(default)]
    pub nodes: Option<u32>,
    #[serde(default)]
    pub reason: Option<OfflineReason>,
    #[serde(default)]
    pub last_seen: Option<u64>,
    #[serde(default)]
    pub stored: Option<bool>,
    #[serde(default)]
    pub store_error: Option<String>,
    /// v3: the message's number in its conversation's history.
    #[serde(default)]
    pub cseq: Option<u64>,
    /// v3: why it was not appended to history (`unavailable`).
    #[serde(default)]
    pub history_error: Option<String>,
}

/// A message as a client reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MessageFrame {
    pub msg_id: Uuid,
    pub from: String,
    /// Absent on group messages.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub body: serde_json::Value,
    pub ts: u64,
    /// A copy of a message this client sent from another device.
    #[serde(default)]
    pub carbon: bool,
    /// Acks mode: the session's sequence number of this message.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Delivered from the inbox.
    #[serde(default)]
    pub stored: bool,
    /// v3: its number in its conversation's history.
    #[serde(default)]
    pub cseq: Option<u64>,
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_going_away_reason_carries_its_hint_and_fits_a_close_frame() {
        let reason = going_away_reason(std::time::Duration::from_millis(1234));
        assert_eq!(reason, "node shutting down; reconnect_after_ms=1234");
        assert!(reason.len() <= 123, "a close reason is at most 123 bytes");
        assert_eq!(
            reconnect_hint(&reason),
            Some(std::time::Duration::from_millis(1234))
        );
        assert_eq!(reconnect_hint("node shutting down"), None);
        assert_eq!(reconnect_hint("reconnect_after_ms="), None);
        assert_eq!(
            reconnect_hint("reconnect_after_ms=99999999"),
            Some(std::time::Duration::from_secs(60)),
            "capped"
        );
    }
    use super::*;

    fn err(text: &str) -> FrameError {
        parse_client_frame(text).unwrap_err()
    }

    #[test]
    fn parses_a_full_send() {
        let frame = parse_client_frame(
            r#"{"type":"send","to":"bob","body":{"t":[1,2]},"id":"c-17","receipt":true}"#,
        )
        .unwrap();
        let ClientFrame::Send(send) = frame else {
            panic!("not a send")
        };
        assert_eq!(send.to, Recipient::Client(ClientId::parse("bob").unwrap()));
        assert_eq!(send.body.get(), r#"{"t":[1,2]}"#);
        assert_eq!(send.id.as_deref(), Some("c-17"));
        assert!(send.receipt);
    }

    #[test]
    fn null_is_a_body_but_absence_is_not() {
        assert!(parse_client_frame(r#"{"type":"send","to":"bob","body":null}"#).is_ok());
        let e = err(r#"{"type":"send","to":"bob"}"#);
        assert_eq!(e.code, ErrorCode::BadFrame);
        assert!(e.message.contains("body"));
    }

    #[test]
    fn ping_echoes_its_id() {
        match parse_client_frame(r#"{"type":"ping","id":"p1"}"#).unwrap() {
            ClientFrame::Ping { id } => assert_eq!(id.as_deref(), Some("p1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_malformation_maps_to_its_code() {
        let cases = [
            ("not json", ErrorCode::BadFrame, None),
            ("[1,2]", ErrorCode::BadFrame, None),
            ("\"send\"", ErrorCode::BadFrame, None),
            (
                r#"{"to":"bob","body":1,"id":"a"}"#,
                ErrorCode::BadFrame,
                Some("a"),
            ),
            (r#"{"type":7,"id":"a"}"#, ErrorCode::BadFrame, Some("a")),
            (
                r#"{"type":"shout","id":"a"}"#,
                ErrorCode::UnknownType,
                Some("a"),
            ),
            (
                r#"{"type":"send","body":1,"id":"a"}"#,
                ErrorCode::BadFrame,
                Some("a"),
            ),
            (
                r#"{"type":"send","to":5,"body":1}"#,
                ErrorCode::BadFrame,
                None,
            ),
            (
                r#"{"type":"send","to":"b b","body":1,"id":"a"}"#,
                ErrorCode::InvalidRecipient,
                Some("a"),
            ),
            (
                r#"{"type":"send","to":"","body":1}"#,
                ErrorCode::InvalidRecipient,
                None,
            ),
            (
                r#"{"type":"send","to":"b","body":1,"receipt":"yes"}"#,
                ErrorCode::BadFrame,
                None,
            ),
            (
                r#"{"type":"send","to":"b","body":1,"id":5}"#,
                ErrorCode::BadFrame,
                None,
            ),
            (
                r#"{"type":"send","to":"b","body":1,"to":"c"}"#,
                ErrorCode::BadFrame,
                None,
            ),
        ];
        for (text, code, id) in cases {
            let e = err(text);
            assert_eq!(e.code, code, "{text}: {}", e.message);
            assert_eq!(e.id.as_deref(), id, "{text}");
        }
        let long_id = format!(r#"{{"type":"ping","id":"{}"}}"#, "i".repeat(129));
        assert_eq!(err(&long_id).code, ErrorCode::BadFrame);
        assert_eq!(err(&long_id).id, None);
    }

    #[test]
    fn escaped_strings_are_understood() {
        let frame = parse_client_frame(r#"{"type":"send","to":"b\u006fb","body":"x"}"#).unwrap();
        let ClientFrame::Send(send) = frame else {
            panic!()
        };
        assert_eq!(send.to, Recipient::Client(ClientId::parse("bob").unwrap()));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let deep = format!(
            r#"{{"type":"send","to":"b","body":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let e = parse_client_frame(&deep).map(|_| ()).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);
        let ok = format!(
            r#"{{"type":"send","to":"b","body":{}{}}}"#,
            "[".repeat(64),
            "]".repeat(64)
        );
        assert!(parse_client_frame(&ok).is_ok());
    }

    #[test]
    fn body_checks_count_containers_not_brackets_in_strings() {
        let check = |json: &str| check_body(&RawValue::from_string(json.to_owned()).unwrap());
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(check(&nested(MAX_BODY_DEPTH)).is_ok());
        let e = check(&nested(MAX_BODY_DEPTH + 1)).unwrap_err();
        assert!(e.contains("nests deeper"), "{e}");
        let in_objects = format!(
            "{}1{}",
            r#"{"a":"#.repeat(MAX_BODY_DEPTH),
            "}".repeat(MAX_BODY_DEPTH)
        );
        assert!(check(&in_objects).is_ok());
        assert!(check(&format!(r#"{{"s":"{}"}}"#, "[".repeat(500))).is_ok());
        assert!(
            check(r#"[1, -2, 3.5e300, 18446744073709551616, "\u00e9", null, true, {}]"#).is_ok()
        );
        let e = check("[1e400]").unwrap_err();
        assert!(e.contains("number out of range"), "{e}");
        assert!(check("-1e400").is_err());
    }

    #[test]
    fn encoded_frames_decode_to_the_same_thing() {
        let msg_id = Uuid::now_v7();
        let alice = ClientId::parse("alice").unwrap();
        let bob = ClientId::parse("bob").unwrap();
        let team = GroupId::parse("team").unwrap();
        let phone = DeviceId::parse("phone").unwrap();
        let node = NodeId::parse("n1").unwrap();
        let body = RawValue::from_string(r#"{"x":[1,"two"]}"#.into()).unwrap();

        let frame = encode_message(msg_id, &alice, Addressee::Client(&bob), &body, 42);
        let decoded: ServerFrame = serde_json::from_str(&frame).unwrap();
        let ServerFrame::Message(m) = decoded else {
            panic!("{frame}")
        };
        assert_eq!(
            (m.msg_id, m.from.as_str(), m.to.as_deref(), m.ts, m.carbon),
            (msg_id, "alice", Some("bob"), 42, false)
        );
        assert_eq!(m.body, serde_json::json!({"x":[1,"two"]}));
        // The same frame serde would write.
        let expected = serde_json::json!({"type":"message","msg_id":msg_id,"from":"alice","to":"bob","body":{"x":[1,"two"]},"ts":42});
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&frame).unwrap(),
            expected
        );
        let carbon = with_field(&frame, "carbon", "true");
        let ServerFrame::Message(c) = serde_json::from_str(&carbon).unwrap() else {
            panic!()
        };
        assert!(c.carbon);
        let group = encode_message(msg_id, &alice, Addressee::Group(&team), &body, 42);
        let ServerFrame::Message(g) = serde_json::from_str(&group).unwrap() else {
            panic!()
        };
        assert_eq!((g.to, g.group.as_deref()), (None, Some("team")));

        let mut ack = Ack::new(Some("c1"), msg_id, AckStatus::Remote);
        ack.sessions = Some(2);
        let ServerFrame::Ack(a) = serde_json::from_str(&encode_ack(&ack)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.id.as_deref(), a.status, a.sessions),
            (Some("c1"), AckStatus::Remote, Some(2))
        );
        assert_eq!(
            encode_ack(&Ack::new(None, msg_id, AckStatus::Offline)),
            format!(r#"{{"type":"ack","msg_id":"{msg_id}","status":"offline"}}"#)
        );

        let welcome = encode_welcome(&alice, &phone, msg_id, &node, WelcomeExtras::default());
        let ServerFrame::Welcome { node, device, .. } = serde_json::from_str(&welcome).unwrap()
        else {
            panic!()
        };
        assert_eq!((node.as_str(), device.as_str()), ("n1", "phone"));

        let error = FrameError::new(ErrorCode::TooLarge, "big", Some("x"));
        assert_eq!(
            encode_error(&error),
            r#"{"type":"error","code":"too_large","message":"big","id":"x"}"#
        );
        assert_eq!(encode_pong(None), r#"{"type":"pong"}"#);
        let receipt = encode_receipt(&Receipt {
            id: None,
            msg_id,
            status: ReceiptStatus::Offline,
            to: Some(&bob),
            device: Some(&phone),
            reason: Some(OfflineReason::NodeDead),
        });
        let ServerFrame::Receipt {
            status,
            to,
            device,
            reason,
            ..
        } = serde_json::from_str(&receipt).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (status, to.as_deref(), device.as_deref(), reason),
            (
                ReceiptStatus::Offline,
                Some("bob"),
                Some("phone"),
                Some(OfflineReason::NodeDead)
            )
        );
    }

    #[test]
    fn v2_sends_name_a_client_or_a_group_and_may_store() {
        let send = parse_client_frame;
        let Ok(ClientFrame::Send(s)) =
            send(r#"{"type":"send","group":"team","body":1,"store":true}"#)
        else {
            panic!()
        };
        assert_eq!(s.to, Recipient::Group(GroupId::parse("team").unwrap()));
        assert!(s.store);
        for (text, code) in [
            (
                r#"{"type":"send","to":"a","group":"b","body":1}"#,
                ErrorCode::BadFrame,
            ),
            (r#"{"type":"send","body":1}"#, ErrorCode::BadFrame),
            (
                r#"{"type":"send","to":"a","body":1,"store":"yes"}"#,
                ErrorCode::BadFrame,
            ),
            (
                r#"{"type":"send","group":"a b","body":1}"#,
                ErrorCode::InvalidRecipient,
            ),
            (r#"{"type":"received"}"#, ErrorCode::BadFrame),
            (r#"{"type":"received","upto":-1}"#, ErrorCode::BadFrame),
        ] {
            assert_eq!(send(text).unwrap_err().code, code, "{text}");
        }
        assert!(matches!(
            send(r#"{"type":"received","upto":12}"#),
            Ok(ClientFrame::Received { upto: 12 })
        ));
    }

    #[test]
    fn v3_watch_visibility_and_signal_frames_parse_or_say_what_is_wrong() {
        let parse = parse_client_frame;
        let Ok(ClientFrame::Watch { clients, .. }) =
            parse(r#"{"type":"watch","clients":["bob","carol"],"id":"w"}"#)
        else {
            panic!()
        };
        assert_eq!(clients.len(), 2);
        let Ok(ClientFrame::Signal(s)) =
            parse(r#"{"type":"signal","group":"team","body":{"typing":true}}"#)
        else {
            panic!()
        };
        assert_eq!(s.to, Recipient::Group(GroupId::parse("team").unwrap()));
        let big = format!(
            r#"{{"type":"signal","to":"bob","body":"{}"}}"#,
            "x".repeat(1100)
        );
        for (text, code, unanswered) in [
            (
                r#"{"type":"visibility","visible":"no"}"#,
                ErrorCode::BadFrame,
                false,
            ),
            (
                r#"{"type":"watch","clients":"bob"}"#,
                ErrorCode::BadFrame,
                false,
            ),
            (
                r#"{"type":"signal","to":"a b","body":1}"#,
                ErrorCode::InvalidRecipient,
                true,
            ),
            (
                r#"{"type":"signal","to":"a b","body":1,"id":"s"}"#,
                ErrorCode::InvalidRecipient,
                false,
            ),
            (r#"{"type":"signal","to":"bob"}"#, ErrorCode::BadFrame, true),
            (big.as_str(), ErrorCode::TooLarge, true),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!((e.code, e.unanswered), (code, unanswered), "{text}");
        }
    }
}
