//! The offline branch, explained and (when asked) kept (v2).
//!
//! The branch itself is unchanged: a send to a client with no session goes
//! no further than the sender's node, and the ack says `offline`. Around
//! it:
//!
//! - **why**: the ack carries a `reason` and, when the client was seen
//!   before, `last_seen`. Both come from the client's last-seen record
//!   ([`LastSeen`]), written when its last device's session ends (never on
//!   the path of a message) and read only on the offline branch; a record
//!   that named a dead node says `node_dead`.
//! - **the inbox**: a send with `"store": true` is also appended to the
//!   recipient's inbox ([`crate::inbox`]); its next session claims the
//!   inbox and gets the stored messages first. Each leaves the inbox once
//!   delivered (in acks mode: confirmed); one that is not stays.
//! - **events**: sessions opening and ending, and messages ending offline,
//!   go to the application's backend ([`crate::events`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::lock::Locked;
use crate::rate::LogThrottle;

use super::{Message, Router};
use crate::events::{Event, Events};
use crate::hub::{Handover, Outbound, SessionHandle};
use crate::inbox::{InboxError, InboxStore, InboxSummary};
use crate::presence::{LastSeen, PresenceRecord, PresenceStore};
use crate::protocol::frames::with_field;
use crate::protocol::{
    ClientId, GroupId, OfflineEvent, OfflineReason, PresenceEvent, PresenceState, SessionEnd,
    now_ms,
};

/// How long a session's claim on its client's inbox lasts. A drain that
/// takes longer may be shared with a device connecting after it.
pub const INBOX_LEASE: Duration = Duration::from_secs(60);

/// Why a send found nobody: for the ack, and for events.
#[derive(Debug, Clone, Default)]
pub struct Offline {
    pub reason: Option<OfflineReason>,
    pub last_seen: Option<u64>,
    /// Group sends, with events on: the members with no session.
    pub members: Vec<ClientId>,
}

/// What storing an offline send did: `Ok` stored, or its `store_error`.
pub type Stored = Result<(), &'static str>;

/// Inbox entries delivered and not yet deleted, gathered so that a drain
/// of many messages deletes them in a few round trips, not one each.
#[derive(Default)]
pub(super) struct Delivered {
    entries: Mutex<Vec<(ClientId, Box<str>)>>,
}

/// Last-seen records to write, from sessions that ended here: a bounded
/// queue and one task that writes them in batches (a node closing ten
/// thousand sessions at once writes them in a few dozen round trips, and
/// a store that is away costs the sessions nothing).
pub(super) struct LastSeenWriter {
    queue: mpsc::Sender<(ClientId, LastSeen)>,
    complaints: Mutex<LogThrottle>,
}

/// Last-seen writes queued at most; beyond, they are dropped (and logged).
const LAST_SEEN_QUEUE: usize = 1 << 16;
/// Clients whose last-seen one batch writes, at most.
const LAST_SEEN_BATCH: usize = 512;

impl LastSeenWriter {
    /// The writer, and its task (ends when the writer is dropped and its
    /// queue is empty).
    pub(super) fn new(
        presence: Arc<dyn PresenceStore>,
        ttl: Duration,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, mut rx) = mpsc::channel::<(ClientId, LastSeen)>(LAST_SEEN_QUEUE);
        let task = async move {
            let mut batch = Vec::with_capacity(LAST_SEEN_BATCH);
            while rx.recv_many(&mut batch, LAST_SEEN_BATCH).await > 0 {
                write_if_gone(&*presence, ttl, std::mem::take(&mut batch)).await;
            }
        };
        let writer = Self {
            queue,
            complaints: Mutex::new(LogThrottle::new(Duration::from_secs(1))),
        };
        (writer, task)
    }

    fn write(&self, client: ClientId, end: SessionEnd) {
        let seen = LastSeen {
            at: now_ms(),
            reason: end,
        };
        if self.queue.try_send((client, seen)).is_err()
            && let Some(skipped) = self.complaints.locked().ready()
        {
            tracing::warn!(
                also_dropped = skipped,
                "last-seen queue full: a last-seen record not written"
            );
        }
    }
}

/// Writes the last-seen records of `batch` whose clients have no device
/// left: one read of their records, then the writes, concurrently.
async fn write_if_gone(
    presence: &dyn PresenceStore,
    ttl: Duration,
    batch: Vec<(ClientId, LastSeen)>,
) {
    let clients: Vec<ClientId> = batch.iter().map(|(c, _)| c.clone()).collect();
    let devices = match presence.lookup_many(&clients).await {
        Ok(devices) => devices,
        Err(e) => {
            tracing::debug!(clients = clients.len(), error = %e, "last-seen not written");
            return;
        }
    };
    let writes = batch
        .iter()
        .zip(devices)
        .filter(|(_, devices)| devices.is_empty())
        .map(|((client, seen), _)| presence.set_last_seen(client, *seen, ttl));
    for result in futures_util::future::join_all(writes).await {
        if let Err(e) = result {
            tracing::debug!(error = %e, "last-seen not written");
        }
    }
}

/// Writes `client`'s last-seen record (`end`, now) if it has no device
/// left.
async fn last_seen_if_gone(
    presence: &dyn PresenceStore,
    ttl: Duration,
    client: &ClientId,
    end: SessionEnd,
) {
    let seen = LastSeen {
        at: now_ms(),
        reason: end,
    };
    match presence.lookup(client).await {
        Ok(devices) if devices.is_empty() => {
            if let Err(e) = presence.set_last_seen(client, seen, ttl).await {
                tracing::debug!(%client, error = %e, "last-seen not written");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(%client, error = %e, "last-seen not written"),
    }
}

/// A field of a dead node's session (`record`) was deleted: that session
/// ended with its node (`node_dead`).
pub(super) async fn ended_with_its_node(
    presence: &dyn PresenceStore,
    events: &Events,
    ttl: Duration,
    client: &ClientId,
    record: &PresenceRecord,
) {
    if events.is_on() {
        events.emit(Event::Presence(PresenceEvent {
            client_id: client.clone(),
            device: record.device.clone(),
            session: record.session,
            node: record.node.clone(),
            state: PresenceState::Offline,
            reason: Some(SessionEnd::NodeDead),
            ts: now_ms(),
        }));
    }
    last_seen_if_gone(presence, ttl, client, SessionEnd::NodeDead).await;
}

impl Router {
    // ---- Sessions' lives: events and last-seen ------------------------

    /// A session opened here.
    pub(super) fn announce_online(&self, handle: &SessionHandle) {
        self.presence_event(handle, PresenceState::Online, None);
    }

    /// A session here ended for `end`; `field_deleted` when its presence
    /// field went with it. When the client has no device left anywhere,
    /// its last-seen record is written (in the background, after a read of
    /// its record: one round trip more per client going offline).
    pub(super) fn announce_ended(
        &self,
        handle: &SessionHandle,
        end: SessionEnd,
        field_deleted: bool,
    ) {
        self.presence_event(handle, PresenceState::Offline, Some(end));
        self.release_inbox(handle);
        if field_deleted && self.hub.sessions(&handle.client).is_none() {
            self.write_last_seen(handle.client.clone(), end);
        }
    }

    /// Writes `client`'s last-seen record if it has no device left.
    fn write_last_seen(&self, client: ClientId, end: SessionEnd) {
        self.last_seen.write(client, end);
    }

    fn presence_event(
        &self,
        handle: &SessionHandle,
        state: PresenceState,
        end: Option<SessionEnd>,
    ) {
        let events = &self.ports.events;
        if events.is_on() {
            events.emit(Event::Presence(PresenceEvent {
                client_id: handle.client.clone(),
                device: handle.device.clone(),
                session: handle.id,
                node: self.node.clone(),
                state,
                reason: end,
                ts: now_ms(),
            }));
        }
    }

    /// Fields of a dead node's sessions, swept: each session ended with
    /// its node (announced; last-seen written for clients left with no
    /// device).
    pub async fn ended_with_their_node(&self, swept: Vec<(ClientId, PresenceRecord)>) {
        let presence = &*self.ports.presence;
        for (client, record) in swept {
            ended_with_its_node(
                presence,
                &self.ports.events,
                self.settings.last_seen_ttl,
                &client,
                &record,
            )
            .await;
        }
    }

    // ---- The offline branch -------------------------------------------

    /// Why `to`, with no session, is offline: `node_dead` when its record
    /// named a dead node (`dead`), else what its last-seen record says
    /// (`never_seen` without one). A store that cannot be read says
    /// `disconnected`, without `last_seen`.
    pub(super) async fn why_offline(&self, to: &ClientId, dead: bool) -> Offline {
        let seen = match self
            .ports
            .presence
            .last_seen_many(std::slice::from_ref(to))
            .await
        {
            Ok(mut seen) => Ok(seen.pop().flatten()),
            Err(e) => Err(e),
        };
        let (reason, last_seen) = match seen {
            _ if dead => (OfflineReason::NodeDead, seen.ok().flatten().map(|s| s.at)),
            Ok(Some(seen)) => (seen.reason.offline_reason(), Some(seen.at)),
            Ok(None) => (OfflineReason::NeverSeen, None),
            Err(e) => {
                tracing::debug!(client = %to, error = %e, "last-seen not read");
                (OfflineReason::Disconnected, None)
            }
        };
        Offline {
            reason: Some(reason),
            last_seen,
            members: Vec::new(),
        }
    }

    /// Appends an offline send that asked for it to its recipient's inbox.
    /// `None` when there is nothing to say (no `store`, or no inbox).
    pub(super) async fn store(&self, msg: &Message) -> Option<Stored> {
        let (true, Some(inbox), Some(to)) = (msg.store, &self.ports.inbox, msg.client()) else {
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

    /// Tells the backend that `msg_id` to `to` ended offline.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn offline_event(
        &self,
        msg_id: uuid::Uuid,
        from: &ClientId,
        to: &ClientId,
        group: Option<&GroupId>,
        stored: bool,
        reason: OfflineReason,
    ) {
        let events = &self.ports.events;
        if events.is_on() {
            events.emit(Event::Offline(OfflineEvent {
                msg_id,
                from: from.clone(),
                to: to.clone(),
                group: group.cloned(),
                stored,
                reason,
                ts: now_ms(),
            }));
        }
    }

    /// The events of a group send's members with no session: their
    /// reasons read in one round trip, in the background.
    pub(super) fn group_offline_events(
        &self,
        msg: &Message,
        group: &GroupId,
        members: Vec<ClientId>,
    ) {
        if members.is_empty() || !self.ports.events.is_on() {
            return;
        }
        let Some(permit) = self.background_permit() else {
            return;
        };
        let (presence, events) = (self.ports.presence.clone(), self.ports.events.clone());
        let (msg_id, from, group) = (msg.msg_id, msg.from.clone(), group.clone());
        self.in_background(permit, async move {
            let seen = presence
                .last_seen_many(&members)
                .await
                .unwrap_or_else(|_| vec![None; members.len()]);
            let ts = now_ms();
            for (to, seen) in members.into_iter().zip(seen) {
                let reason = seen.map_or(OfflineReason::NeverSeen, |s| s.reason.offline_reason());
                events.emit(Event::Offline(OfflineEvent {
                    msg_id,
                    from: from.clone(),
                    to,
                    group: Some(group.clone()),
                    stored: false,
                    reason,
                    ts,
                }));
            }
        });
    }

    // ---- The inbox ------------------------------------------------------

    /// `client`'s last-seen record, if it has one (and it can be read).
    pub async fn last_seen(&self, client: &ClientId) -> Option<LastSeen> {
        let read = self
            .ports
            .presence
            .last_seen_many(std::slice::from_ref(client));
        read.await.ok()?.pop().flatten()
    }

    /// The inbox, when the node has one (for `/readyz`).
    pub fn inbox(&self) -> Option<&Arc<dyn InboxStore>> {
        self.ports.inbox.as_ref()
    }

    /// Whether the node has an inbox (`--inbox`).
    pub fn has_inbox(&self) -> bool {
        self.ports.inbox.is_some()
    }

    /// A new session claims its client's inbox: what waits there goes into
    /// its outbox, ahead of anything else. Returns how many (`inbox: n` of
    /// the welcome), `None` when the node has no inbox. Another session
    /// draining it meanwhile, or a store that cannot be read, gives 0: the
    /// messages stay for a later session.
    pub async fn claim_inbox(&self, handle: &SessionHandle) -> Option<u64> {
        let inbox = self.ports.inbox.as_ref()?;
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
    pub(super) fn stored_delivered(&self, to: &ClientId, handover: &Handover) {
        let (Some(inbox), Some(entry)) = (&self.ports.inbox, &handover.entry) else {
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
        self.tasks.spawn(async move {
            tokio::task::yield_now().await;
            let batch = std::mem::take(
                &mut *delivered.entries.locked(),
            );
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

    fn release_inbox(&self, handle: &SessionHandle) {
        let Some(inbox) = self.ports.inbox.clone() else {
            return;
        };
        let (client, session) = (handle.client.clone(), handle.id);
        self.tasks.spawn(async move {
            // Best effort: an unreleased claim lapses with its lease.
            let _ = inbox.release(&client, session).await;
        });
    }

    /// `client`'s inbox: how many messages wait, since when (`None`: the
    /// node has no inbox).
    pub async fn inbox_summary(
        &self,
        client: &ClientId,
    ) -> Option<Result<InboxSummary, InboxError>> {
        Some(self.ports.inbox.as_ref()?.summary(client).await)
    }

    /// Empties `client`'s inbox (`None`: the node has no inbox).
    pub async fn clear_inbox(&self, client: &ClientId) -> Option<Result<bool, InboxError>> {
        Some(self.ports.inbox.as_ref()?.clear(client).await)
    }
}
