//! In-process presence: the embedded default when no Redis is configured.
//!
//! It gives one node (or several nodes in one process) the same semantics as
//! the Redis store, so the local and offline branches behave identically
//! with or without a cluster.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::presence::{HeartbeatReport, PresenceError, PresenceRecord, PresenceStore};
use crate::protocol::{ClientId, NodeId, now_ms};

#[derive(Default)]
pub struct MemoryPresence {
    // Plain mutexes: every critical section is a few map operations.
    records: Mutex<HashMap<ClientId, PresenceRecord>>,
    /// Heartbeat entries: member -> expiry (ms since the epoch).
    heartbeats: Mutex<HashMap<String, u64>>,
}

impl MemoryPresence {
    pub fn new() -> Self {
        Self::default()
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, PresenceRecord>> {
        // A panic while holding the lock cannot leave a half-written map
        // entry, so a poisoned lock is still safe to use.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn register(
        &self,
        client: &ClientId,
        record: &PresenceRecord,
    ) -> Result<Option<PresenceRecord>, PresenceError> {
        Ok(self.records().insert(client.clone(), record.clone()))
    }

    async fn lookup(&self, client: &ClientId) -> Result<Option<PresenceRecord>, PresenceError> {
        Ok(self.records().get(client).cloned())
    }

    async fn remove(
        &self,
        client: &ClientId,
        _node: &NodeId,
        session: Uuid,
    ) -> Result<bool, PresenceError> {
        let mut records = self.records();
        match records.get(client) {
            Some(record) if record.session == session => {
                records.remove(client);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn heartbeat(
        &self,
        member: &str,
        ttl: Duration,
        retention: Duration,
    ) -> Result<HeartbeatReport, PresenceError> {
        let now = now_ms();
        let mut beats = self.heartbeats.lock().unwrap_or_else(|p| p.into_inner());
        let own_was_missing = beats
            .insert(member.to_owned(), now + ttl.as_millis() as u64)
            .is_none();
        let oldest = now.saturating_sub(retention.as_millis() as u64);
        beats.retain(|_, expires| *expires >= oldest);
        Ok(HeartbeatReport {
            server_now_ms: now,
            members: beats.iter().map(|(m, e)| (m.clone(), *e)).collect(),
            own_was_missing,
        })
    }

    async fn reregister(
        &self,
        entries: &[(ClientId, PresenceRecord)],
    ) -> Result<Vec<Option<PresenceRecord>>, PresenceError> {
        let mut records = self.records();
        Ok(entries
            .iter()
            .map(|(client, record)| match records.get(client) {
                Some(current) if current.session != record.session => Some(current.clone()),
                _ => {
                    records.insert(client.clone(), record.clone());
                    None
                }
            })
            .collect())
    }

    async fn sweep(
        &self,
        node: &NodeId,
        _lost_run: Option<u64>,
        before_since: u64,
    ) -> Result<usize, PresenceError> {
        let mut records = self.records();
        let before = records.len();
        records.retain(|_, r| !(r.node == *node && r.since < before_since));
        Ok(before - records.len())
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        Ok(())
    }

    /// Nothing but the nodes' own deletes removes a record here.
    fn refresh_interval(&self, _configured: Duration) -> Option<Duration> {
        None
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(node: &str, session: Uuid) -> PresenceRecord {
        PresenceRecord {
            node: NodeId::parse(node).unwrap(),
            session,
            since: 1,
        }
    }

    #[tokio::test]
    async fn register_returns_what_it_replaced_and_remove_compares() {
        let store = MemoryPresence::new();
        let alice = ClientId::parse("alice").unwrap();
        let (s1, s2) = (Uuid::new_v4(), Uuid::new_v4());

        assert_eq!(
            store.register(&alice, &record("a", s1)).await.unwrap(),
            None
        );
        let prev = store.register(&alice, &record("b", s2)).await.unwrap();
        assert_eq!(prev, Some(record("a", s1)));

        // The older session's late disconnect leaves the newer record alone.
        let a = NodeId::parse("a").unwrap();
        let b = NodeId::parse("b").unwrap();
        assert!(!store.remove(&alice, &a, s1).await.unwrap());
        assert_eq!(store.lookup(&alice).await.unwrap(), Some(record("b", s2)));

        assert!(store.remove(&alice, &b, s2).await.unwrap());
        assert_eq!(store.lookup(&alice).await.unwrap(), None);
    }
}
