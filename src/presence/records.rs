//! Session records: client id -> one field per device (v2), naming the
//! device's session and the node it is on. Written when a session opens,
//! compare-and-deleted when it ends; read on every send whose route is not
//! cached.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use uuid::Uuid;

use super::PresenceError;
use crate::protocol::{ClientId, DeviceId, NodeId};

/// One session of a client, as the client's record holds it: a device's
/// field (v2), naming the device, its session and the node it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRecord {
    pub device: DeviceId,
    pub node: NodeId,
    pub session: Uuid,
    /// When the session opened, in ms since the Unix epoch.
    pub since: u64,
}

/// A field's value as the stores keep it: the JSON of docs/protocol.md.
#[derive(Deserialize)]
struct FieldValue<'a> {
    #[serde(borrow)]
    node: &'a str,
    #[serde(borrow)]
    session: &'a str,
    since: u64,
}

impl PresenceRecord {
    /// The field's value: `{"node":"node-b","session":"6f1c…","since":1764220000000}`.
    pub fn value(&self) -> String {
        format!(
            r#"{{"node":"{}","session":"{}","since":{}}}"#,
            self.node, self.session, self.since
        )
    }

    /// A record from a device field as a store holds it; anything
    /// unreadable is [`PresenceError::Corrupt`].
    pub fn from_field(client: &ClientId, device: &str, value: &str) -> Result<Self, PresenceError> {
        let corrupt = |why: String| PresenceError::Corrupt {
            client: client.to_string(),
            why,
        };
        let field: FieldValue<'_> = serde_json::from_str(value)
            .map_err(|e| corrupt(format!("field {device:?} is not a presence value: {e}")))?;
        Ok(Self {
            device: DeviceId::parse(device).map_err(|e| corrupt(e.to_string()))?,
            node: NodeId::parse(field.node).map_err(|e| corrupt(e.to_string()))?,
            session: field
                .session
                .parse()
                .map_err(|e| corrupt(format!("session {:?}: {e}", field.session)))?,
            since: field.since,
        })
    }
}

/// What registering a session did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Written. `replaced` is the same device's older session, if any (it
    /// is to be closed with 4001); `devices` the client's whole record
    /// after the write.
    Done {
        replaced: Option<PresenceRecord>,
        devices: Vec<PresenceRecord>,
    },
    /// Not written: the client already holds the most devices allowed, and
    /// this session's device is not one of them.
    TooManyDevices { devices: Vec<PresenceRecord> },
}

/// The session records as the router and registration see them. A
/// client's record holds one field per device (v2); every write is one
/// atomic step on one client's record.
#[async_trait]
pub trait SessionRecords: Send + Sync + 'static {
    /// Writes `record`'s device field for `client`: inserts it if absent,
    /// updates it if present, atomically; refuses a new device when the
    /// client already has `max_devices` (a same-device replacement never
    /// counts against it).
    async fn register(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
        max_devices: usize,
    ) -> Result<Registered, PresenceError>;

    /// Every device of `client`; empty when it has none.
    async fn lookup(&self, client: &ClientId) -> Result<Vec<PresenceRecord>, PresenceError>;

    /// [`lookup`](Self::lookup) for many clients, in as few round trips as
    /// the store allows (one pipelined batch on Redis, a multi-get per
    /// memcached server).
    async fn lookup_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Vec<PresenceRecord>>, PresenceError> {
        let mut all = Vec::with_capacity(clients.len());
        for client in clients {
            all.push(self.lookup(client).await?);
        }
        Ok(all)
    }

    /// Deletes `client`'s `device` field only if it still names `session`
    /// (registered by `node`); answers whether it did. A late disconnect
    /// must never delete a newer session's field. The record goes with its
    /// last field.
    async fn remove(
        &self,
        client: &ClientId,
        device: &DeviceId,
        node: &NodeId,
        session: Uuid,
    ) -> Result<bool, PresenceError>;

    /// Writes each device field back if it is absent, or names this same
    /// session: what a node does for its live sessions after the store
    /// lost data. Never overwrites another session's field; for each
    /// entry, returns that other session when there is one (a newer
    /// session of the device elsewhere won, and this one must close).
    async fn reregister(
        &self,
        entries: &[(ClientId, PresenceRecord)],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError>;

    /// How often a node writes its live sessions' records back
    /// ([`reregister`](Self::reregister)), given the operator's
    /// `--presence-refresh-ms`: so that a record that vanished while its
    /// session lives (evicted, lost in a failover, deleted by mistake)
    /// comes back within that time. Stores whose records expire may need
    /// it sooner. `None`: records cannot vanish (one process's memory).
    fn refresh_interval(&self, configured: Duration) -> Option<Duration> {
        Some(configured)
    }
}
