//! Read receipts (v3): when a client's read cursor moves, its other
//! sessions hear of it (so every device shows the same unread count), and
//! in a two-client conversation so do the other client's sessions (the ✓✓
//! "read" mark). In a group only the reader's own sessions do.
//!
//! They are coalesced where the cursor moved: per conversation and
//! reader, the first move goes at once, later ones within a second wait
//! for its end and go as one receipt with the latest cursor. Each session
//! also keeps only the latest receipt per conversation and reader while
//! it waits to be written ([`Outbox::put_read`](crate::hub::Outbox::put_read)).
//! A receipt is a note, like a signal: routed by the records, never
//! tracked, kept or answered; a lost one is healed by the next, or by
//! `conversations`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::history::Conversation;
use crate::lock::Locked;
use crate::protocol::history::{Thread, encode_read};
use crate::protocol::{ClientId, Recipient};
use crate::routing::{Message, Router};

/// At most one receipt per conversation and reader per this window.
pub const RECEIPT_WINDOW: Duration = Duration::from_secs(1);
/// Coalescing slots kept before the finished ones are swept.
const SWEEP_ABOVE: usize = 4096;

type Key = (Conversation, ClientId);

/// One conversation and reader's coalescing.
struct Slot {
    /// When its last receipt went.
    sent_at: Instant,
    /// A later cursor waiting for the window's end, and the session that
    /// moved it (which needs no receipt of its own move).
    waiting: Option<(u64, Option<Uuid>)>,
}

pub struct Receipts {
    router: Arc<Router>,
    slots: Mutex<HashMap<Key, Slot>>,
}

impl Receipts {
    pub fn new(router: Arc<Router>) -> Arc<Self> {
        Arc::new(Self {
            router,
            slots: Mutex::default(),
        })
    }

    /// `by`'s cursor in `conversation` moved to `upto` (from session
    /// `except`, when a session moved it).
    pub fn moved(
        self: &Arc<Self>,
        conversation: Conversation,
        by: ClientId,
        upto: u64,
        except: Option<Uuid>,
    ) {
        let now = Instant::now();
        let key = (conversation, by);
        {
            let mut slots = self.slots.locked();
            if slots.len() > SWEEP_ABOVE {
                slots.retain(|_, s| s.waiting.is_some() || now < s.sent_at + RECEIPT_WINDOW);
            }
            if let Some(slot) = slots.get_mut(&key)
                && now < slot.sent_at + RECEIPT_WINDOW
            {
                let schedule = slot.waiting.is_none();
                let latest = slot.waiting.map_or(upto, |(w, _)| w.max(upto));
                slot.waiting = Some((latest, except));
                if schedule {
                    let (receipts, due) = (self.clone(), slot.sent_at + RECEIPT_WINDOW);
                    let key = key.clone();
                    self.router.background().spawn(async move {
                        tokio::time::sleep_until(due).await;
                        receipts.window_ended(key).await;
                    });
                }
                return;
            }
            slots.insert(
                key.clone(),
                Slot {
                    sent_at: now,
                    waiting: None,
                },
            );
        }
        let receipts = self.clone();
        self.router.background().spawn(async move {
            receipts.send(&key.0, &key.1, upto, except).await;
        });
    }

    /// The window of `key` ended: the cursor that waited goes now.
    async fn window_ended(&self, key: Key) {
        let waiting = {
            let mut slots = self.slots.locked();
            let Some(slot) = slots.get_mut(&key) else {
                return;
            };
            slot.sent_at = Instant::now();
            slot.waiting.take()
        };
        if let Some((upto, except)) = waiting {
            self.send(&key.0, &key.1, upto, except).await;
        }
    }

    /// The receipt of `by`'s cursor at `upto`: to `by`'s sessions but
    /// `except`, and to the other client's in a two-client conversation.
    async fn send(
        &self,
        conversation: &Conversation,
        by: &ClientId,
        upto: u64,
        except: Option<Uuid>,
    ) {
        let own_side = match conversation {
            Conversation::Pair(..) => match conversation.peer(by) {
                Some(peer) => Thread::With(peer.clone()),
                None => return,
            },
            Conversation::Group(group) => Thread::Group(group.clone()),
        };
        self.deliver(by, by, encode_read(by, &own_side, upto), except)
            .await;
        if let Some(peer) = conversation.peer(by) {
            let frame = encode_read(by, &Thread::With(by.clone()), upto);
            self.deliver(by, peer, frame, None).await;
        }
    }

    /// Hands `frame` to `to`'s sessions (but `except`), here and on their
    /// nodes. Best effort: a lookup that fails drops the receipt.
    async fn deliver(&self, by: &ClientId, to: &ClientId, frame: String, except: Option<Uuid>) {
        let msg = Message::note(by.clone(), Recipient::Client(to.clone()), frame);
        let Ok(mut route) = self.router.locate(&msg).await else {
            return;
        };
        if let Some(except) = except {
            route.local.retain(|s| s.id != except);
            for leg in &mut route.remote {
                leg.targets.retain(|t| t.session != except);
            }
        }
        let frame: Utf8Bytes = msg.frame;
        self.router.dispatch_read(by, frame, route).await;
    }
}
