//! History, read state and sync (v3): the [`History`] service. It keeps
//! each message of a conversation in the [`HistoryStore`] before the
//! message is routed (so that its `cseq` is on every copy), answers the
//! `history`, `conversations` and `read` frames, and tells a client's
//! other sessions, and the other client of a two-client conversation,
//! when a read cursor moves ([`receipts`]).
//!
//! **Who may read.** Over the WebSocket a client names a conversation from
//! its own side (`"with":"bob"` is always its own conversation with bob),
//! so only groups need a check: the current members may read and mark a
//! group's conversation (`not_allowed` otherwise). The HTTP API, behind
//! the API key, reads and deletes any conversation.
//!
//! **When the store fails**, a message is still routed by the patent's
//! branches; its ack says `history_error` and it has no `cseq`.

mod receipts;

use std::sync::Arc;

use serde_json::value::RawValue;

use self::receipts::Receipts;
use super::{Message, Router};
use crate::history::{Conversation, Entry, HistoryError, HistoryStore, NewEntry, Page, Range};
use crate::presence::{GroupStore, PresenceError};
use crate::protocol::frames::{encode_numbered_message, message_body_and_ts, with_field};
use crate::protocol::history::{ConversationOut, PageRange, Thread};
use crate::protocol::{Addressee, ClientId, Recipient};

/// What became of a message's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kept {
    /// Not kept: history is off, or the send said `"history": false`.
    #[default]
    No,
    /// Appended as `cseq`.
    As(u64),
    /// The store could not take it (`history_error` on the ack).
    Failed,
}

/// Why a history frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not a member of the group (any more).
    #[error("only the members of {0} may read its conversation")]
    NotAllowed(crate::protocol::GroupId),
    #[error(transparent)]
    Store(#[from] HistoryError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

pub struct History {
    store: Arc<dyn HistoryStore>,
    /// Each client's groups (for its list of conversations).
    groups: Arc<dyn GroupStore>,
    router: Arc<Router>,
    receipts: Arc<Receipts>,
}

impl History {
    pub fn new(
        store: Arc<dyn HistoryStore>,
        groups: Arc<dyn GroupStore>,
        router: Arc<Router>,
    ) -> Arc<Self> {
        let receipts = Receipts::new(router.clone());
        Arc::new(Self {
            store,
            groups,
            router,
            receipts,
        })
    }

    pub fn store(&self) -> &Arc<dyn HistoryStore> {
        &self.store
    }

    /// The conversation a message belongs to.
    fn conversation_of(msg: &Message) -> Conversation {
        match &msg.to {
            Recipient::Client(to) => Conversation::pair(&msg.from, to),
            Recipient::Group(group) => Conversation::Group(group.clone()),
        }
    }

    /// Appends `msg` to its conversation before it is routed, and gives
    /// its frame the `cseq`. A group send from a session of a non-member is
    /// not kept (routing refuses it with `not_member`).
    pub async fn keep(&self, msg: &mut Message) {
        if let (Recipient::Group(group), Some(_)) = (&msg.to, &msg.sender) {
            match self.router.groups().members(group).await {
                Ok(members) if members.binary_search(&msg.from).is_ok() => {}
                // Not a member: routing says so. The store away: routing
                // says that too.
                _ => return,
            }
        }
        let Some((body, ts)) = message_body_and_ts(&msg.frame) else {
            msg.kept = Kept::Failed;
            return;
        };
        let entry = NewEntry {
            msg_id: msg.msg_id,
            from: &msg.from,
            ts,
            body,
        };
        let conversation = Self::conversation_of(msg);
        match self.store.append(&conversation, entry).await {
            Ok(cseq) => {
                msg.frame = with_field(&msg.frame, "cseq", &cseq.to_string()).into();
                msg.kept = Kept::As(cseq);
                self.router.metrics().history_appended(true);
            }
            Err(e) => {
                tracing::debug!(error = %crate::cause::chain(&e), "a message not kept in history");
                msg.kept = Kept::Failed;
                self.router.metrics().history_appended(false);
            }
        }
    }

    /// The conversation `thread` names, seen from `client`, if `client`
    /// may read it.
    pub async fn open(&self, client: &ClientId, thread: &Thread) -> Result<Conversation, Refused> {
        match thread {
            Thread::With(peer) => Ok(Conversation::pair(client, peer)),
            Thread::Group(group) => {
                let members = self.router.groups().members(group).await?;
                if members.binary_search(client).is_ok() {
                    Ok(Conversation::Group(group.clone()))
                } else {
                    Err(Refused::NotAllowed(group.clone()))
                }
            }
        }
    }

    /// A page of `thread`, as `client` reads it: message frames, oldest
    /// first, and whether more lie beyond.
    pub async fn page(
        &self,
        client: &ClientId,
        thread: &Thread,
        range: PageRange,
        limit: usize,
    ) -> Result<(Vec<String>, bool), Refused> {
        let conversation = self.open(client, thread).await?;
        let page = self.read(&conversation, range, limit).await?;
        Ok((Self::frames(&conversation, &page), page.more))
    }

    /// A page of any conversation (the HTTP API).
    pub async fn read(
        &self,
        conversation: &Conversation,
        range: PageRange,
        limit: usize,
    ) -> Result<Page, HistoryError> {
        let range = match range {
            PageRange::Latest => Range::Latest,
            PageRange::Before(n) => Range::Before(n),
            PageRange::After(n) => Range::After(n),
        };
        self.store.page(conversation, range, limit).await
    }

    /// Kept messages as the message frames they were delivered as.
    pub fn frames(conversation: &Conversation, page: &Page) -> Vec<String> {
        page.entries
            .iter()
            .map(|entry| frame_of(conversation, entry))
            .collect()
    }

    /// `client`'s conversations, most recent first.
    pub async fn conversations(
        &self,
        client: &ClientId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<ConversationOut>, bool), Refused> {
        let groups = self.groups.groups_of(client).await?;
        let (summaries, more) = self
            .store
            .conversations(client, &groups, before, limit)
            .await?;
        let items = summaries
            .into_iter()
            .filter_map(|s| {
                let thread = match &s.conversation {
                    Conversation::Pair(..) => Thread::With(s.conversation.peer(client)?.clone()),
                    Conversation::Group(group) => Thread::Group(group.clone()),
                };
                Some(ConversationOut {
                    thread,
                    last: frame_of(&s.conversation, &s.last),
                    cseq: s.cseq,
                    read: s.read,
                    unread: s.unread,
                    peer_read: s.peer_read,
                })
            })
            .collect();
        Ok((items, more))
    }

    /// `client` (in session `session`) has read `thread` up to `upto`:
    /// its cursor moves forward (never back, never past the last `cseq`),
    /// and when it moved, the receipts go out. Answers the cursor.
    pub async fn mark_read(
        &self,
        client: &ClientId,
        session: Option<uuid::Uuid>,
        thread: &Thread,
        upto: u64,
    ) -> Result<u64, Refused> {
        let conversation = self.open(client, thread).await?;
        let cursor = self.store.mark_read(&conversation, client, upto).await?;
        if cursor.moved {
            self.receipts
                .moved(conversation, client.clone(), cursor.upto, session);
        }
        Ok(cursor.upto)
    }

    /// Deletes a conversation (the HTTP API).
    pub async fn delete(&self, conversation: &Conversation) -> Result<(), HistoryError> {
        self.store.delete(conversation).await
    }
}

/// A kept message as the message frame its recipients got: `to` is the
/// other client of a two-client conversation, or the group.
fn frame_of(conversation: &Conversation, entry: &Entry) -> String {
    let body: &RawValue = &entry.body;
    let to = match conversation {
        Conversation::Pair(a, b) => Addressee::Client(if *a == entry.from { b } else { a }),
        Conversation::Group(group) => Addressee::Group(group),
    };
    encode_numbered_message(
        entry.msg_id,
        &entry.from,
        to,
        body,
        entry.ts,
        Some(entry.cseq),
    )
}
