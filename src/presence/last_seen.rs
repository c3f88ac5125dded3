//! Last-seen records (v2): when a client's last session ended, and why,
//! kept per client with a TTL beside its record. Written when the last
//! device's session ends, never on the path of a message; read only on the
//! offline branch, to explain it.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::PresenceError;
use crate::protocol::{ClientId, SessionEnd};

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

/// Last-seen records, as the offline branch sees them.
#[async_trait]
pub trait LastSeenStore: Send + Sync + 'static {
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
}
