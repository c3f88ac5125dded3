//! Last-seen records: written when a client's last device's session ends
//! (never on the path of a message), read only on the offline branch to
//! explain it (`reason`, `last_seen` on the ack).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::Offline;
use crate::lock::Locked;
use crate::presence::{LastSeen, LastSeenStore, PresenceRecord, SessionRecords};
use crate::protocol::{ClientId, OfflineReason, SessionEnd, now_ms};
use crate::rate::LogThrottle;

/// Last-seen writes queued at most; beyond, they are dropped (and logged).
const LAST_SEEN_QUEUE: usize = 1 << 16;
/// Clients whose last-seen one batch writes, at most.
const LAST_SEEN_BATCH: usize = 512;

/// Last-seen records to write, from sessions that ended here: a bounded
/// queue and one task that writes them in batches (a node closing ten
/// thousand sessions at once writes them in a few dozen round trips, and
/// a store that is away costs the sessions nothing).
pub(super) struct LastSeenWriter {
    queue: mpsc::Sender<(ClientId, LastSeen)>,
    complaints: Mutex<LogThrottle>,
    settled: Arc<OnceLock<Settled>>,
}

/// Told the clients of each batch once their last-seen is written (or
/// found not owed: a device is left): presence for clients (v3) shows a
/// client offline with its `last_seen` only then.
pub type Settled = Box<dyn Fn(Vec<ClientId>) + Send + Sync>;

/// The two ports last-seen needs: the records (is any device left?) and
/// the last-seen store itself. One backend serves both.
#[derive(Clone)]
pub struct LastSeenPorts {
    pub records: Arc<dyn SessionRecords>,
    pub last_seen: Arc<dyn LastSeenStore>,
    /// How long a client's last-seen record is kept (`--last-seen-ttl`).
    pub ttl: Duration,
}

impl LastSeenWriter {
    /// The writer, and its task (ends when the writer is dropped and its
    /// queue is empty).
    pub(super) fn new(ports: LastSeenPorts) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, mut rx) = mpsc::channel::<(ClientId, LastSeen)>(LAST_SEEN_QUEUE);
        let settled: Arc<OnceLock<Settled>> = Arc::default();
        let told = settled.clone();
        let task = async move {
            let mut batch = Vec::with_capacity(LAST_SEEN_BATCH);
            while rx.recv_many(&mut batch, LAST_SEEN_BATCH).await > 0 {
                let batch = std::mem::take(&mut batch);
                let clients = batch.iter().map(|(c, _)| c.clone()).collect();
                write_if_gone(&ports, batch).await;
                if let Some(tell) = told.get() {
                    tell(clients);
                }
            }
        };
        let writer = Self {
            queue,
            complaints: Mutex::new(LogThrottle::new(Duration::from_secs(1))),
            settled,
        };
        (writer, task)
    }

    pub(super) fn write(&self, client: ClientId, end: SessionEnd) {
        let seen = LastSeen {
            at: now_ms(),
            reason: end,
        };
        if let Err(full) = self.queue.try_send((client, seen)) {
            // Not written: whoever waits for it is told at once.
            let (client, _) = full.into_inner();
            if let Some(tell) = self.settled.get() {
                tell(vec![client]);
            }
            if let Some(skipped) = self.complaints.locked().ready() {
                tracing::warn!(
                    also_dropped = skipped,
                    "last-seen queue full: a last-seen record not written"
                );
            }
        }
    }
}

/// Writes the last-seen records of `batch` whose clients have no device
/// left: one read of their records, then the writes, concurrently.
async fn write_if_gone(ports: &LastSeenPorts, batch: Vec<(ClientId, LastSeen)>) {
    let clients: Vec<ClientId> = batch.iter().map(|(c, _)| c.clone()).collect();
    let devices = match ports.records.lookup_many(&clients).await {
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
        .map(|((client, seen), _)| ports.last_seen.set_last_seen(client, *seen, ports.ttl));
    for result in futures_util::future::join_all(writes).await {
        if let Err(e) = result {
            tracing::debug!(error = %e, "last-seen not written");
        }
    }
}

impl Offline {
    /// Whom to tell once last-seen records are settled (set once, by the
    /// node, for presence for clients).
    pub fn when_last_seen_settled(&self, settled: Settled) {
        if self.writer.settled.set(settled).is_err() {
            tracing::warn!("last-seen hook set twice; the first one stays");
        }
    }

    /// Writes `client`'s last-seen record (in the background, after a
    /// read of its record: one round trip more per client going offline)
    /// if it has no device left.
    pub(super) fn write_last_seen(&self, client: ClientId, end: SessionEnd) {
        self.writer.write(client, end);
    }

    /// A field of a dead node's session (`record`) was deleted: that
    /// session ended with its node (`node_dead`), announced, and written as
    /// its client's last-seen if it was the last.
    pub async fn ended_with_its_node(&self, client: &ClientId, record: &PresenceRecord) {
        self.announce
            .ended_elsewhere(client, record, SessionEnd::NodeDead);
        let ports = &self.last_seen;
        let seen = LastSeen {
            at: now_ms(),
            reason: SessionEnd::NodeDead,
        };
        match ports.records.lookup(client).await {
            Ok(devices) if devices.is_empty() => {
                if let Err(e) = ports.last_seen.set_last_seen(client, seen, ports.ttl).await {
                    tracing::debug!(%client, error = %e, "last-seen not written");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%client, error = %e, "last-seen not written"),
        }
        if let Some(tell) = self.writer.settled.get() {
            tell(vec![client.clone()]);
        }
    }

    /// Fields of a dead node's sessions, swept: each session ended with
    /// its node.
    pub async fn ended_with_their_node(&self, swept: Vec<(ClientId, PresenceRecord)>) {
        for (client, record) in swept {
            self.ended_with_its_node(&client, &record).await;
        }
    }

    /// Why `to`, with no session, is offline: `node_dead` when its record
    /// named a dead node (`dead`), else what its last-seen record says
    /// (`never_seen` without one). A store that cannot be read says
    /// `disconnected`, without `last_seen`.
    pub async fn why_offline(&self, to: &ClientId, dead: bool) -> super::Why {
        let seen = self.read_last_seen(to).await;
        let (reason, last_seen) = match seen {
            _ if dead => (OfflineReason::NodeDead, seen.ok().flatten().map(|s| s.at)),
            Ok(Some(seen)) => (seen.reason.offline_reason(), Some(seen.at)),
            Ok(None) => (OfflineReason::NeverSeen, None),
            Err(e) => {
                tracing::debug!(client = %to, error = %e, "last-seen not read");
                (OfflineReason::Disconnected, None)
            }
        };
        super::Why {
            reason: Some(reason),
            last_seen,
            members: Vec::new(),
        }
    }

    /// `client`'s last-seen record, if it has one (and it can be read).
    pub async fn last_seen(&self, client: &ClientId) -> Option<LastSeen> {
        self.read_last_seen(client).await.ok().flatten()
    }

    async fn read_last_seen(
        &self,
        client: &ClientId,
    ) -> Result<Option<LastSeen>, crate::presence::PresenceError> {
        let read = self
            .last_seen
            .last_seen
            .last_seen_many(std::slice::from_ref(client));
        Ok(read.await?.pop().flatten())
    }
}
