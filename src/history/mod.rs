//! History (v3): every message of a conversation, kept so that any device
//! can page through it, catch up on what it missed, and show what was read.
//!
//! A **conversation** is two clients or a group. Its messages are numbered
//! `cseq` 1, 2, 3, … by the store in the same atomic step as the append,
//! so senders on several nodes at once get no gap and no repeat; the
//! number survives retention and deletion (a deleted conversation goes on
//! after its last `cseq`, never from 1 again). Each client of a
//! conversation has a read cursor that only moves forward.
//!
//! This is a port: the routing core's `History` service sees the
//! [`HistoryStore`] trait; memory and Redis (one server or a Cluster)
//! implement it in [`crate::backends`].

use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::cause::Cause;
use crate::protocol::{ClientId, GroupId};

/// Two clients (in order, so that alice-bob and bob-alice are one), or a
/// group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Conversation {
    Pair(ClientId, ClientId),
    Group(GroupId),
}

impl Conversation {
    /// The conversation of `a` and `b`, whichever writes first.
    pub fn pair(a: &ClientId, b: &ClientId) -> Self {
        if a <= b {
            Self::Pair(a.clone(), b.clone())
        } else {
            Self::Pair(b.clone(), a.clone())
        }
    }

    /// The other client of a two-client conversation, seen from `me`.
    pub fn peer(&self, me: &ClientId) -> Option<&ClientId> {
        match self {
            Self::Pair(a, b) if a == me => Some(b),
            Self::Pair(a, b) if b == me => Some(a),
            _ => None,
        }
    }

    /// Whether `client` is one of a two-client conversation's two.
    pub fn has(&self, client: &ClientId) -> bool {
        matches!(self, Self::Pair(a, b) if a == client || b == client)
    }

    /// Its name in keys and logs: `p:<a>|<b>` or `g:<group>` (`|` is in
    /// no id, so the name is never ambiguous).
    pub fn key(&self) -> String {
        match self {
            Self::Pair(a, b) => format!("p:{a}|{b}"),
            Self::Group(g) => format!("g:{g}"),
        }
    }

    /// The conversation a [`key`](Self::key) names.
    pub fn from_key(key: &str) -> Option<Self> {
        if let Some(group) = key.strip_prefix("g:") {
            return GroupId::parse(group).ok().map(Self::Group);
        }
        let (a, b) = key.strip_prefix("p:")?.split_once('|')?;
        Some(Self::pair(
            &ClientId::parse(a).ok()?,
            &ClientId::parse(b).ok()?,
        ))
    }
}

/// A message to append: what its frame says, less the `cseq` the store
/// gives it.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub msg_id: Uuid,
    pub from: &'a ClientId,
    /// When the sender's node stamped it (ms since the epoch).
    pub ts: u64,
    /// The body's JSON, as the message frame carries it (checked valid).
    pub body: &'a str,
}

/// A kept message.
#[derive(Debug, Clone)]
pub struct Entry {
    pub cseq: u64,
    pub msg_id: Uuid,
    pub from: ClientId,
    pub ts: u64,
    pub body: Box<RawValue>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.cseq, self.msg_id, &self.from, self.ts, self.body.get())
            == (
                other.cseq,
                other.msg_id,
                &other.from,
                other.ts,
                other.body.get(),
            )
    }
}

/// Which page of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The newest.
    Latest,
    /// Just before this `cseq`, newest last.
    Before(u64),
    /// Just after this `cseq`, oldest first.
    After(u64),
}

/// Up to `limit` messages, oldest first, and whether more lie beyond in
/// the page's direction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub more: bool,
}

/// A conversation as one client's list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub conversation: Conversation,
    /// Its last `cseq` (numbering goes on across retention and deletion).
    pub cseq: u64,
    /// Its newest kept message.
    pub last: Entry,
    /// The client's read cursor.
    pub read: u64,
    /// Messages after `read` that are still kept (by others: a client's
    /// own send moves its cursor past it).
    pub unread: u64,
    /// A two-client conversation: the other client's cursor.
    pub peer_read: Option<u64>,
}

/// What a `read` did to a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Where it is now (clamped to the last `cseq`).
    pub upto: u64,
    /// Whether it moved.
    pub moved: bool,
}

/// Retention, applied by the store on its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages older than this are gone (`--history-ttl`).
    pub ttl: Duration,
    /// Messages kept per conversation (`--history-max`): the newest.
    pub max_messages: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("history store unavailable: {what}")]
pub struct HistoryError {
    pub what: String,
    #[source]
    pub cause: Option<Cause>,
}

impl HistoryError {
    pub fn caused(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            cause: None,
        }
    }
}

#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Appends a message and answers its `cseq`: the next number of the
    /// conversation, given in the same atomic step. The sender's read
    /// cursor moves to it. Trims what is beyond the limits.
    async fn append(
        &self,
        conversation: &Conversation,
        entry: NewEntry<'_>,
    ) -> Result<u64, HistoryError>;

    /// A page of kept messages, oldest first (`limit` at least 1).
    async fn page(
        &self,
        conversation: &Conversation,
        range: Range,
        limit: usize,
    ) -> Result<Page, HistoryError>;

    /// `client`'s conversations with a kept message, most recent first:
    /// its two-client ones and those of `groups`; with `before`, only
    /// those whose last message is older than it (ms). Answers up to
    /// `limit` and whether there are more.
    async fn conversations(
        &self,
        client: &ClientId,
        groups: &[GroupId],
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Summary>, bool), HistoryError>;

    /// Moves `client`'s cursor forward to `upto` (never past the last
    /// `cseq`, never back).
    async fn mark_read(
        &self,
        conversation: &Conversation,
        client: &ClientId,
        upto: u64,
    ) -> Result<Cursor, HistoryError>;

    /// Deletes the conversation's messages and cursors; its numbering
    /// goes on where it was.
    async fn delete(&self, conversation: &Conversation) -> Result<(), HistoryError>;

    /// A real round trip, for `/readyz`.
    async fn ping(&self) -> Result<(), HistoryError>;

    fn backend(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    #[test]
    fn a_pair_is_one_conversation_whoever_writes_first() {
        let (a, b) = (id("alice"), id("bob"));
        assert_eq!(Conversation::pair(&a, &b), Conversation::pair(&b, &a));
        let c = Conversation::pair(&b, &a);
        assert_eq!(c.key(), "p:alice|bob");
        assert_eq!(c.peer(&a), Some(&b));
        assert_eq!(c.peer(&id("carol")), None);
        assert_eq!(Conversation::from_key(&c.key()), Some(c));
        // Ids may hold ':' but never '|'.
        let odd = Conversation::pair(&id("a:b"), &id("c@d"));
        assert_eq!(Conversation::from_key(&odd.key()), Some(odd));
        let team = Conversation::Group(GroupId::parse("team").unwrap());
        assert_eq!(Conversation::from_key(&team.key()), Some(team));
        assert_eq!(Conversation::from_key("x:nonsense"), None);
    }
}
