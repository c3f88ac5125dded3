//! The presence registry, as the rest of the node sees it: client id ->
//! {node, session, since}, the nodes' heartbeats, and (v2) the members of
//! each group, which live beside the records in the same store.
//!
//! Every node of a cluster shares one registry; it is how a node finds out
//! where a recipient is. This is a port: the router and the node's upkeep
//! see only the [`PresenceStore`] trait. The stores behind it (memory,
//! Redis, Redis Cluster, memcached) live in [`crate::backends`].

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use serde::{Deserialize, Serialize};

use crate::cause::Cause;
use crate::protocol::{ClientId, DeviceId, GroupId, NodeId, SessionEnd};

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

/// When a client's last session ended, and why (v2): kept per client,
/// beside its record, with a TTL (`--last-seen-ttl`). Written when the
/// last device's session ends, never on the path of a message; read only
/// on the offline branch, to explain it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSeen {
    /// ms since the Unix epoch.
    pub at: u64,
    pub reason: SessionEnd,
}

impl LastSeen {
    /// The value as the stores keep it: `{"at":1764220000000,"reason":"closed"}`.
    pub fn value(&self) -> String {
        format!(
            r#"{{"at":{},"reason":"{}"}}"#,
            self.at,
            self.reason.as_str()
        )
    }

    /// A stored value; `None` for anything unreadable (last-seen only
    /// explains an offline answer, so a corrupt one is treated as unknown).
    pub fn parse(value: &str) -> Option<Self> {
        serde_json::from_str(value).ok()
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

/// What adding a member to a group did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAdded {
    Added,
    /// It was a member already: nothing changed.
    Already,
    /// Not added: the group has the most members allowed.
    Full,
}

/// What one heartbeat returned from the presence store (see
/// [`crate::routing::liveness`]).
#[derive(Debug, Clone, Default)]
pub struct HeartbeatReport {
    /// The store's clock when it took the heartbeat, ms since the epoch.
    pub server_now_ms: u64,
    /// Every heartbeat entry (member, expiry in the store's ms).
    pub members: Vec<(String, u64)>,
    /// This node's entry was not there before this heartbeat: the store
    /// lost its data (restart, flush, failover) or this is the first beat.
    pub own_was_missing: bool,
}

/// A presence operation that did not complete. Callers answer the client
/// with `unavailable` (the store could not be reached) or `internal` (the
/// store answered with something that is not a presence record).
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence store unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    #[error("presence record for {client} is corrupt: {why}")]
    Corrupt { client: String, why: String },
}

impl PresenceError {
    /// The store could not be reached, or did not answer in time.
    pub fn unavailable(what: impl Into<String>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    /// The same, keeping the error that said so.
    pub fn caused(what: impl Into<String>, cause: impl Into<Cause>) -> Self {
        Self::Unavailable {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// The same error with a hint for the operator appended (which flag to
    /// check).
    pub fn hint(self, hint: &str) -> Self {
        match self {
            Self::Unavailable { what, cause } => Self::Unavailable {
                what: format!("{what} ({hint})"),
                cause,
            },
            other => other,
        }
    }
}

/// The presence registry as the router and the upkeep see it. A client's
/// record holds one field per device (v2); every write is one atomic step
/// on one client's record.
#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
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

    /// Writes this node's heartbeat entry `member`, expiring `ttl` from
    /// now by the store's clock, drops entries expired longer than
    /// `retention`, and returns every entry (see
    /// [`crate::routing::liveness`]).
    async fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
        retention: Duration,
    ) -> Result<HeartbeatReport, PresenceError>;

    /// Writes each device field back if it is absent, or names this same
    /// session: what a node does for its live sessions after the store
    /// lost data. Never overwrites another session's field; for each
    /// entry, returns that other session when there is one (a newer
    /// session of the device elsewhere won, and this one must close).
    async fn reregister(
        &self,
        entries: &[(ClientId, PresenceRecord)],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError>;

    /// Deletes the fields naming `node` that were written before
    /// `before_since`: the ghosts a crashed or restarted run of `node`
    /// left. `lost_run` (that run's start, in ms) is given when every node
    /// of a cluster may notice the same loss: then only one of them
    /// sweeps. Returns the fields deleted (whose sessions ended with their
    /// node).
    async fn sweep(
        &self,
        node: &NodeId,
        lost_run: Option<u64>,
        before_since: u64,
    ) -> Result<Vec<(ClientId, PresenceRecord)>, PresenceError>;

    /// Adds `client` to `group`, atomically refusing a new member once the
    /// group has `max_members`.
    async fn add_member(
        &self,
        group: &GroupId,
        client: &ClientId,
        max_members: usize,
    ) -> Result<MemberAdded, PresenceError>;

    /// Removes `client` from `group`; answers whether it was a member. The
    /// group goes with its last member.
    async fn remove_member(
        &self,
        group: &GroupId,
        client: &ClientId,
    ) -> Result<bool, PresenceError>;

    /// Every member of `group`, in no particular order; empty when it has
    /// none.
    async fn members(&self, group: &GroupId) -> Result<Vec<ClientId>, PresenceError>;

    /// Writes `client`'s last-seen record, expiring after `ttl`.
    async fn set_last_seen(
        &self,
        client: &ClientId,
        seen: LastSeen,
        ttl: Duration,
    ) -> Result<(), PresenceError>;

    /// The last-seen records of `clients`, in one round trip where the
    /// store allows; `None` for a client never seen (or not within the TTL).
    async fn last_seen_many(
        &self,
        clients: &[ClientId],
    ) -> Result<Vec<Option<LastSeen>>, PresenceError>;

    /// A real round trip to the backend, for `/readyz`.
    async fn ping(&self) -> Result<(), PresenceError>;

    /// Lets go of the store's connections, at the end of a node's
    /// shutdown. Nothing is called after it.
    async fn close(&self) {}

    /// How often a node writes its live sessions' records back
    /// ([`reregister`](Self::reregister)), given the operator's
    /// `--presence-refresh-ms`: so that a record that vanished while its
    /// session lives (evicted, lost in a failover, deleted by mistake)
    /// comes back within that time. Stores whose records expire may need
    /// it sooner. `None`: records cannot vanish (one process's memory).
    fn refresh_interval(&self, configured: Duration) -> Option<Duration> {
        Some(configured)
    }

    /// Short name for logs and `/readyz` ("memory", "redis").
    fn backend(&self) -> &'static str;
}
