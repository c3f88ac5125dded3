//! History, read state and sync (v3): the `history`, `conversations` and
//! `read` frames, and what the server answers.
//!
//! ```text
//! → {"type":"history","with":"bob","before":120,"limit":50,"id":"h1"}
//! ← {"type":"history","id":"h1","with":"bob","messages":[{message frame with "cseq"},…],"more":true}
//! → {"type":"conversations","limit":50,"id":"c1"}
//! ← {"type":"conversations","id":"c1","items":[{"with":"bob","last":{…},"cseq":120,"read":118,"unread":2,"peer_read":117}],"more":false}
//! → {"type":"read","with":"bob","upto":118,"id":"r1"}
//! ← {"type":"ok","id":"r1"}
//! ← (alice's other sessions, bob's sessions) {"type":"read","by":"alice","with":…,"upto":118}
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;

use super::frames::MessageFrame;
use super::ids::{ClientId, GroupId};

/// Messages one `history` page holds at most, and by default.
pub const MAX_PAGE: usize = 200;
pub const DEFAULT_PAGE: usize = 50;

/// A conversation as a client names it: the other client, or a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Thread {
    With(ClientId),
    Group(GroupId),
}

impl Thread {
    /// `"with":"bob"` or `"group":"team"`, for a frame being written.
    fn write_key(&self, out: &mut String) {
        match self {
            Thread::With(client) => {
                let _ = write!(out, r#""with":"{client}""#);
            }
            Thread::Group(group) => {
                let _ = write!(out, r#""group":"{group}""#);
            }
        }
    }
}

/// Which page a `history` frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRange {
    Latest,
    Before(u64),
    After(u64),
}

/// A `history` request, validated.
#[derive(Debug)]
pub struct HistoryRequest<'a> {
    pub id: Option<Cow<'a, str>>,
    pub thread: Thread,
    pub range: PageRange,
    pub limit: usize,
}

/// A `conversations` request, validated.
#[derive(Debug)]
pub struct ConversationsRequest<'a> {
    pub id: Option<Cow<'a, str>>,
    /// Only conversations whose last message is older (ms).
    pub before: Option<u64>,
    pub limit: usize,
}

/// A `read` request, validated.
#[derive(Debug)]
pub struct ReadRequest<'a> {
    pub id: Option<Cow<'a, str>>,
    pub thread: Thread,
    pub upto: u64,
}

fn write_id(out: &mut String, id: Option<&str>) {
    if let Some(id) = id {
        out.push_str(r#","id":"#);
        out.push_str(&serde_json::to_string(id).expect("a string serializes"));
    }
}

/// `{"type":"history","id":…,"with":…|"group":…,"messages":[…],"more":…}`;
/// `messages` are message frames as this crate writes them.
pub fn encode_history(
    id: Option<&str>,
    thread: &Thread,
    messages: &[String],
    more: bool,
) -> String {
    let size: usize = messages.iter().map(|m| m.len() + 1).sum();
    let mut out = String::with_capacity(size + 96);
    out.push_str(r#"{"type":"history""#);
    write_id(&mut out, id);
    out.push(',');
    thread.write_key(&mut out);
    out.push_str(r#","messages":["#);
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(message);
    }
    let _ = write!(out, r#"],"more":{more}}}"#);
    out
}

/// One conversation in a `conversations` answer, as written.
#[derive(Debug, Clone)]
pub struct ConversationOut {
    pub thread: Thread,
    /// The last message's frame.
    pub last: String,
    pub cseq: u64,
    pub read: u64,
    pub unread: u64,
    pub peer_read: Option<u64>,
}

/// `{"type":"conversations","id":…,"items":[…],"more":…}`.
pub fn encode_conversations(id: Option<&str>, items: &[ConversationOut], more: bool) -> String {
    let size: usize = items.iter().map(|i| i.last.len() + 96).sum();
    let mut out = String::with_capacity(size + 64);
    out.push_str(r#"{"type":"conversations""#);
    write_id(&mut out, id);
    out.push_str(r#","items":["#);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        item.thread.write_key(&mut out);
        let _ = write!(
            out,
            r#","last":{},"cseq":{},"read":{},"unread":{}"#,
            item.last, item.cseq, item.read, item.unread
        );
        if let Some(peer) = item.peer_read {
            let _ = write!(out, r#","peer_read":{peer}"#);
        }
        out.push('}');
    }
    let _ = write!(out, r#"],"more":{more}}}"#);
    out
}

/// A read receipt: `{"type":"read","by":…,"with":…|"group":…,"upto":…}`,
/// the conversation named from the recipient's side.
pub fn encode_read(by: &ClientId, thread: &Thread, upto: u64) -> String {
    let mut out = String::with_capacity(96);
    let _ = write!(out, r#"{{"type":"read","by":"{by}","#);
    thread.write_key(&mut out);
    let _ = write!(out, r#","upto":{upto}}}"#);
    out
}

/// A `history` answer as a client reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HistoryFrame {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub with: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub messages: Vec<MessageFrame>,
    pub more: bool,
}

/// One conversation of a `conversations` answer, as a client reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConversationItem {
    #[serde(default)]
    pub with: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub last: MessageFrame,
    pub cseq: u64,
    pub read: u64,
    pub unread: u64,
    #[serde(default)]
    pub peer_read: Option<u64>,
}

/// A `conversations` answer as a client reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConversationsFrame {
    #[serde(default)]
    pub id: Option<String>,
    pub items: Vec<ConversationItem>,
    pub more: bool,
}

/// A read receipt as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadFrame {
    pub by: String,
    #[serde(default)]
    pub with: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub upto: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_frames_read_back() {
        let bob = ClientId::parse("bob").unwrap();
        let msg = r#"{"type":"message","msg_id":"0193a5a0-0000-7000-8000-000000000001","from":"bob","to":"alice","body":"hi","ts":5,"cseq":3}"#;
        let with = Thread::With(bob.clone());
        let text = encode_history(Some("h\"1"), &with, &[msg.to_owned()], true);
        let page: HistoryFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (page.id.as_deref(), page.with.as_deref(), page.more),
            (Some("h\"1"), Some("bob"), true)
        );
        assert_eq!(page.messages[0].cseq, Some(3));

        let team = Thread::Group(GroupId::parse("team").unwrap());
        let items = [
            ConversationOut {
                thread: with.clone(),
                last: msg.to_owned(),
                cseq: 3,
                read: 1,
                unread: 2,
                peer_read: Some(3),
            },
            ConversationOut {
                thread: team.clone(),
                last: msg.to_owned(),
                cseq: 9,
                read: 9,
                unread: 0,
                peer_read: None,
            },
        ];
        let list: ConversationsFrame =
            serde_json::from_str(&encode_conversations(None, &items, false)).unwrap();
        assert_eq!(list.items.len(), 2);
        assert_eq!(
            (list.items[0].unread, list.items[0].peer_read),
            (2, Some(3))
        );
        assert_eq!(
            (list.items[1].group.as_deref(), list.items[1].peer_read),
            (Some("team"), None)
        );

        let read: ReadFrame = serde_json::from_str(&encode_read(&bob, &team, 7)).unwrap();
        assert_eq!(
            read,
            ReadFrame {
                by: "bob".into(),
                with: None,
                group: Some("team".into()),
                upto: 7
            }
        );
    }
}
