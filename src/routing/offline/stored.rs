//! The inbox, as routing uses it (v2): an offline send that asked for it
//! is appended to its recipient's inbox; the client's next session claims
//! the inbox and gets the stored messages first; each leaves the inbox
//! once delivered (in acks mode: confirmed), in batches of deletes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Offline;
use crate::hub::{Handover, Outbound, SessionHandle};
use crate::inbox::{InboxError, InboxStore, InboxSummary};
use crate::lock::Locked;
use crate::protocol::ClientId;
use crate::protocol::frames::with_field;
use crate::routing::Message;

/// How long a session's claim on its client's inbox lasts. A drain that
/// takes longer may be shared with a device connecting after it.
pub const INBOX_LEASE: Duration = Duration::from_secs(60);

/// What storing an offline send did: `Ok` stored, or its `store_error`.
pub type Stored = Result<(), &'static str>;

/// Inbox entries delivered and not yet deleted, gathered so that a drain
/// of many messages deletes them in a few round trips, not one each.
#[derive(Default)]
pub(super) struct Delivered {
    entries: Mutex<Vec<(ClientId, Box<str>)>>,
}

impl Offline {
    /// The inbox, when the node has one (for `/readyz`).
    pub fn inbox(&self) -> Option<&Arc<dyn InboxStore>> {
        self.inbox.as_ref()
    }

    /// Whether the node has an inbox (`--inbox`).
    pub fn has_inbox(&self) -> bool {
        self.inbox.is_some()
    }

    /// Appends an offline send that asked for it to its recipient's inbox.
    /// `None` when there is nothing to say (no `store`, or no inbox).
    pub(crate) async fn store(&self, msg: &Message) -> Option<Stored> {
        let (true, Some(inbox), Some(to)) = (msg.store, &self.inbox, msg.client()) else {
            return None;
        };
        let frame = with_field(&msg.frame, "stored", "true");
        let stored = inbox.append(to, &frame).await.map_err(|e| {
            if let InboxError::Unavailable { .. } = &e {
                tracing::debug!(client = %to, error = %crate::cause::chain(&e), "message not stored");
            }
            e.code()
        });
        self.metrics.inbox_append(stored.err());
        Some(stored)
    }

    /// A new session claims its client's inbox: what waits there goes into
    /// its outbox, ahead of anything else. Returns how many (`inbox: n` of
    /// the welcome), `None` when the node has no inbox. Another session
    /// draining it meanwhile, or a store that cannot be read, gives 0: the
    /// messages stay for a later session.
    pub async fn claim_inbox(&self, handle: &SessionHandle) -> Option<u64> {
        let inbox = self.inbox.as_ref()?;
        let claimed = inbox
            .claim(&handle.client, &handle.device, handle.id, INBOX_LEASE)
            .await;
        let stored = match claimed {
            Ok(Some(stored)) => stored,
            Ok(None) => return Some(0),
            Err(e) => {
                tracing::warn!(client = %handle.client, error = %crate::cause::chain(&e),
                    "inbox not read; its messages wait for the next session");
                return Some(0);
            }
        };
        // Entries are frames this node family wrote; one that is not (a
        // hand-edited stream) is skipped, logged, and left in place.
        let items: Vec<Outbound> = stored
            .into_iter()
            .filter_map(|s| {
                let Some((msg_id, from)) = crate::protocol::frames::message_head(&s.frame) else {
                    tracing::warn!(client = %handle.client, entry = %s.entry,
                        "an inbox entry is not a message frame; skipped");
                    return None;
                };
                let handover = Handover::stored(msg_id, from, handle.client.clone(), s.entry);
                Some(Outbound {
                    frame: Utf8Bytes::from(s.frame),
                    handover: Some(Arc::new(handover)),
                })
            })
            .collect();
        let count = items.len() as u64;
        handle.outbox.put_stored(items);
        Some(count)
    }

    /// A stored message reached its session: it leaves the inbox (in a
    /// batch with the others delivered meanwhile).
    pub(crate) fn stored_delivered(&self, to: &ClientId, handover: &Handover) {
        let (Some(inbox), Some(entry)) = (&self.inbox, &handover.entry) else {
            return;
        };
        self.metrics.inbox_delivered(1);
        let first = {
            let mut entries = self.delivered.entries.locked();
            entries.push((to.clone(), entry.clone()));
            entries.len() == 1
        };
        if !first {
            return;
        }
        // The first of a batch starts its deletion; what is delivered
        // until it runs goes with it.
        let (inbox, delivered) = (inbox.clone(), self.delivered.clone());
        self.background.spawn(async move {
            tokio::task::yield_now().await;
            let batch = std::mem::take(&mut *delivered.entries.locked());
            let mut by_client: Vec<(ClientId, Vec<String>)> = Vec::new();
            for (client, entry) in batch {
                match by_client.iter_mut().find(|(c, _)| *c == client) {
                    Some((_, entries)) => entries.push(entry.into()),
                    None => by_client.push((client, vec![entry.into()])),
                }
            }
            for (client, entries) in by_client {
                if let Err(e) = inbox.remove(&client, &entries).await {
                    tracing::warn!(%client, error = %crate::cause::chain(&e),
                        "delivered messages not deleted from the inbox; they will be delivered again");
                }
            }
        });
    }

    /// A session that ended lets go of its claim (best effort: an
    /// unreleased claim lapses with its lease).
    pub(super) fn release_inbox(&self, handle: &SessionHandle) {
        let Some(inbox) = self.inbox.clone() else {
            return;
        };
        let (client, session) = (handle.client.clone(), handle.id);
        self.background.spawn(async move {
            let _ = inbox.release(&client, session).await;
        });
    }

    /// `client`'s inbox: how many messages wait, since when (`None`: the
    /// node has no inbox).
    pub async fn inbox_summary(
        &self,
        client: &ClientId,
    ) -> Option<Result<InboxSummary, InboxError>> {
        Some(self.inbox.as_ref()?.summary(client).await)
    }

    /// Empties `client`'s inbox (`None`: the node has no inbox).
    pub async fn clear_inbox(&self, client: &ClientId) -> Option<Result<bool, InboxError>> {
        Some(self.inbox.as_ref()?.clear(client).await)
    }
}
